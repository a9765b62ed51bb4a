"""Find evaluation prompts that also occur in fitting or training data.

An attack-success or over-refusal number is only meaningful on prompts the direction was not fit on
and the model was not trained on. Prompts are compared after `normalize_prompt` (case, spacing,
Unicode form and end punctuation are ignored); near-paraphrases are not detected.

Example:
    >>> report = check_contamination(test_set, fit_set, train_set)  # doctest: +SKIP
    >>> report.n_overlap, report.by_source  # doctest: +SKIP
    (3, {'harmful:fit': 2, 'harmful:train': 1})
"""

import logging
from dataclasses import dataclass

from drtk.data.prompt_set import PromptSet, normalize_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ContaminationReport:
    """Which prompts of an evaluation set also appear in other sets.

    Args:
        overlapping: evaluation prompts found in any other set, in evaluation order.
        n_eval: size of the evaluation set.
        n_overlap: number of evaluation prompts found elsewhere (``len(overlapping)``).
        by_source: other set's name -> number of evaluation prompts it contains.
        clean: the evaluation set without the overlapping prompts (same name and source).
    """

    overlapping: tuple[str, ...]
    n_eval: int
    n_overlap: int
    by_source: dict[str, int]
    clean: PromptSet


def check_contamination(eval_set: PromptSet, *others: PromptSet) -> ContaminationReport:
    """Compare `eval_set` against `others` after normalization.

    Args:
        eval_set: the held-out set to audit.
        *others: sets it must not share prompts with (fit, train, ...). Sets with the same name are
            reported as "<name>#2", "<name>#3", ...

    Returns:
        A `ContaminationReport`.
    """
    eval_keys = [normalize_prompt(p) for p in eval_set.prompts]
    hit = [False] * len(eval_keys)
    by_source: dict[str, int] = {}
    for other in others:
        label, k = other.name, 1
        while label in by_source:
            k += 1
            label = f"{other.name}#{k}"
        seen = {normalize_prompt(p) for p in other.prompts}
        found = [i for i, key in enumerate(eval_keys) if key in seen]
        by_source[label] = len(found)
        for i in found:
            hit[i] = True
    overlapping = tuple(p for p, h in zip(eval_set.prompts, hit) if h)
    clean = eval_set.subset(i for i, h in enumerate(hit) if not h)
    return ContaminationReport(
        overlapping=overlapping, n_eval=len(eval_set), n_overlap=len(overlapping), by_source=by_source, clean=clean
    )


def drop_overlaps(eval_set: PromptSet, *others: PromptSet) -> PromptSet:
    """Return `eval_set` without the prompts found in `others`, logging a warning if any were dropped.

    Args:
        eval_set: the held-out set.
        *others: sets it must not share prompts with.

    Returns:
        The clean set (see `check_contamination`).
    """
    report = check_contamination(eval_set, *others)
    if report.n_overlap:
        logger.warning(
            "dropped %d of %d prompts from %r that also occur in %s",
            report.n_overlap,
            report.n_eval,
            eval_set.name,
            ", ".join(f"{name} ({n})" for name, n in report.by_source.items() if n),
        )
    return report.clean
