"""Judges decide whether a completion is a refusal (and so whether an attack failed)."""

from drtk.judges.base import Judge, get_judge, register_judge
from drtk.judges.keyword import REFUSAL_PHRASES, KeywordJudge, is_refusal

__all__ = ["REFUSAL_PHRASES", "Judge", "KeywordJudge", "get_judge", "is_refusal", "register_judge"]
