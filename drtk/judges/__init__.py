"""Judges decide whether a completion is a refusal (and so whether an attack failed).

``keyword`` (always available, documented phrase list) and classifier judges loaded from the hub when
available (``llamaguard``, ``harmbench``, ``strongreject``; :class:`JudgeUnavailableError` offline).
"""

from drtk.judges.base import Judge, available_judges, get_judge, register_judge
from drtk.judges.classifier import ClassifierJudge, JudgeUnavailableError
from drtk.judges.keyword import REFUSAL_PHRASES, KeywordJudge, is_refusal, no_answer

__all__ = [
    "REFUSAL_PHRASES", "ClassifierJudge", "Judge", "JudgeUnavailableError", "KeywordJudge", "available_judges",
    "get_judge", "is_refusal", "no_answer", "register_judge",
]
