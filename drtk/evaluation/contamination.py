"""The automatic contamination check of an evaluation: prompts that occur in a model's training or
direction-fitting data are reported and dropped.

Known data comes from sets passed in, and from what is recorded next to models and directions
(``drtk_train.json``, ``run.json``, ``drtk_base.json``, a direction's ``data_hashes``): every shipped split
whose ``sha256()`` matches a recorded hash is treated as known data, as is any list of prompts recorded
there (under a key naming prompts).
"""

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

from drtk.data import PromptSet, check_contamination, split_prompts
from drtk.data.loading import SHIPPED_PROMPT_SETS, load_prompts

logger = logging.getLogger(__name__)


def _walk(obj: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        if obj and all(isinstance(x, str) for x in obj):
            yield path, obj
        else:
            for i, v in enumerate(obj):
                yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def sets_from_metadata(meta: dict[str, Any], *, seeds: Sequence[int] = (0,)) -> list[PromptSet]:
    """Prompt sets a metadata dict records: shipped splits matched by sha256, and explicit prompt lists."""
    hashes, lists = set(), []
    for path, value in _walk(meta):
        if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            hashes.add(value)
        elif isinstance(value, list) and "prompt" in path.lower():
            lists.append(PromptSet(name=path, prompts=tuple(value), source="metadata"))
    found = []
    if hashes:
        for name in SHIPPED_PROMPT_SETS:
            full = load_prompts(name)
            if full.sha256() in hashes:
                found.append(full)
            for seed in seeds:
                found += [ps for ps in split_prompts(full, seed=seed).values() if len(ps) and ps.sha256() in hashes]
    return found + lists


def sets_from_folder(folder: "str | Path") -> list[PromptSet]:
    """Known data recorded in a model or run folder (``drtk_train.json``, ``run.json``, ``drtk_base.json``, ``*.json``
    sidecars)."""
    folder = Path(str(folder).split("+", 1)[-1])
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                         "special_tokens_map.json", "vocab.json", "adapter_config.json"):
            continue
        try:
            out += sets_from_metadata(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.debug("skipping unreadable %s", path)
    return out


def clean(eval_set: PromptSet, known: Sequence[PromptSet]) -> tuple[PromptSet, dict[str, Any]]:
    """Drop prompts of ``eval_set`` that occur in ``known``; returns the clean set and a JSON-able report."""
    if not known:
        return eval_set, {"n_eval": len(eval_set), "n_overlap": 0, "by_source": {}, "dropped": []}
    report = check_contamination(eval_set, *known)
    if report.n_overlap:
        logger.warning("dropped %d of %d %r prompts found in training/fitting data: %s", report.n_overlap,
                       report.n_eval, eval_set.name, {k: v for k, v in report.by_source.items() if v})
    return report.clean, {"n_eval": report.n_eval, "n_overlap": report.n_overlap,
                          "by_source": {k: v for k, v in report.by_source.items() if v},
                          "dropped": list(report.overlapping)}
