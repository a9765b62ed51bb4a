"""Prompt data for refusal research: shipped prompt sets, public benchmarks, splits, contamination checks.

Example:
    >>> from drtk.data import load_prompts, split_prompts, drop_overlaps
    >>> harmful = split_prompts(load_prompts("harmful"), seed=0)
    >>> test = drop_overlaps(harmful["test"], harmful["fit"], harmful["train"])
"""

from drtk.data.benchmarks import BENCHMARKS, Benchmark, benchmark_cache_path, fetch_benchmark
from drtk.data.contamination import ContaminationReport, check_contamination, drop_overlaps
from drtk.data.loading import JailbreakTemplate, load_answers, load_jailbreak_templates, load_prompts, load_texts
from drtk.data.prompt_set import PromptSet, normalize_prompt
from drtk.data.splits import DEFAULT_FRACTIONS, split_prompts, standard_splits

__all__ = [
    "BENCHMARKS",
    "DEFAULT_FRACTIONS",
    "Benchmark",
    "ContaminationReport",
    "JailbreakTemplate",
    "PromptSet",
    "benchmark_cache_path",
    "check_contamination",
    "drop_overlaps",
    "fetch_benchmark",
    "load_jailbreak_templates",
    "load_prompts",
    "load_texts",
    "load_answers",
    "normalize_prompt",
    "split_prompts",
    "standard_splits",
]
