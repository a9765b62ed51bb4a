"""Evaluation: attack success with intervals, over-refusal, capability retention, contamination, reports.

Example:
    >>> ev = evaluate(model, parse_attack_spec("none") + parse_attack_spec("prefill"), harmful,  # doctest: +SKIP
    ...               harmless=harmless, context=AttackContext(direction=d))
    >>> ev.table()                                                                                 # doctest: +SKIP
"""

from drtk.evaluation.capability import ReferenceAnswers, kl_to_reference, perplexity, reference_answers
from drtk.evaluation.contamination import clean, sets_from_folder, sets_from_metadata
from drtk.evaluation.harness import AttackOutcome, Evaluation, compare, evaluate
from drtk.evaluation.progress import AttackLog
from drtk.evaluation.report import report_markdown
from drtk.evaluation.schema import RESULTS_SCHEMA, schema_errors, validate_results
from drtk.evaluation.stats import (PairedComparison, Rate, mcnemar_exact, paired_comparison, pooled_over_refusal, rate,
                                  wilson_interval)

__all__ = [
    "AttackLog", "AttackOutcome", "Evaluation", "PairedComparison", "RESULTS_SCHEMA", "Rate", "ReferenceAnswers", "clean",
    "compare", "evaluate", "kl_to_reference", "mcnemar_exact", "paired_comparison", "perplexity",
    "pooled_over_refusal", "rate",
    "reference_answers", "report_markdown", "schema_errors", "sets_from_folder", "sets_from_metadata",
    "validate_results", "wilson_interval",
]
