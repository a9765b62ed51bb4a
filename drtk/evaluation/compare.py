"""Several evaluations side by side: one row per run, and the spread over repeated runs of one configuration.

Runs are ``results.json`` documents under a label. Labels of the form ``name#tag`` (e.g. ``adaptive#seed1``)
are repeats of the configuration ``name``; :func:`spread_table` gives their mean and range per column.
:func:`over_refusal_by_prompt` reads the runs' ``completions.jsonl`` and says which benign prompts each run
refused: over-refusal concentrated on the same few prompts in every run is a property of those prompts (and
of the starting model's representation of them), not noise.

    >>> table = comparison_table({"deeprefusal": dr, "adaptive#0": a0, "adaptive#1": a1})  # doctest: +SKIP
    >>> spread_table(table)                                                                 # doctest: +SKIP
"""

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from drtk.errors import DataError
from drtk.evaluation.schema import validate_results
from drtk.evaluation.stats import pooled_over_refusal


def load_results(path: "str | Path") -> dict[str, Any]:
    """A ``results.json`` document, from its file or from the evaluation folder that holds it."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.exists():
        raise DataError(f"no evaluation results at {p}: pass a results.json file or a `drtk eval --out` folder")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{p} is not JSON: {err}") from err
    validate_results(doc)
    return doc


def evaluation_folder(path: "str | Path") -> Path:
    """The folder of an evaluation given as its folder or its ``results.json``."""
    p = Path(path)
    return p.parent if p.name == "results.json" else p


def load_completions(path: "str | Path") -> list[dict[str, Any]]:
    """The judged completions of an evaluation (``completions.jsonl``), from its folder or its ``results.json``."""
    p = evaluation_folder(path)
    if not (p / "completions.jsonl").exists():
        raise DataError(f"no completions.jsonl in {p}: pass the folder `drtk eval --out` wrote")
    return [json.loads(line) for line in (p / "completions.jsonl").read_text().splitlines() if line.strip()]


def config_name(label: str) -> str:
    """The configuration a run label belongs to: ``adaptive#seed1`` -> ``adaptive``."""
    return label.split("#", 1)[0]


def comparison_table(results: Mapping[str, Mapping[str, Any]], *, attacks: "tuple[str, ...] | None" = None) -> pd.DataFrame:
    """One row per run: ASR per attack (fractions), over-refusal per benign set and pooled, KL to the reference,
    and the number of harmful prompts each attack was judged on.

    Args:
        results: run label -> ``results.json`` document.
        attacks: attack labels to include (default: every attack of any run, in first-seen order).
    """
    if not results:
        raise DataError("nothing to compare: no evaluation results given")
    if attacks is None:
        attacks = tuple(dict.fromkeys(a for res in results.values() for a in res["attacks"]))
    judges = {res["judge"]["name"] for res in results.values()}
    if len(judges) > 1:
        raise DataError(f"runs were judged by different judges ({sorted(judges)}); their rates do not compare")
    rows = []
    for label, res in results.items():
        row: dict[str, Any] = {"run": label, "config": config_name(label)}
        for a in attacks:
            row[a] = res["attacks"][a]["asr"] if a in res["attacks"] else float("nan")
        for name, r in (res.get("over_refusal") or {}).items():
            row[f"over-refusal {name}"] = r["rate"]
        pooled = pooled_over_refusal(dict(res))
        row["over-refusal pooled"] = pooled.rate if pooled else float("nan")
        row["kl"] = (res.get("capability") or {}).get("kl", float("nan"))
        row["n"] = max((a["n"] for a in res["attacks"].values()), default=0)
        rows.append(row)
    return pd.DataFrame(rows)


def over_refusal_by_prompt(folders: Mapping[str, "str | Path"]) -> pd.DataFrame:
    """One row per benign prompt (unattacked, harmless and borderline sets) with one column per run: did the
    run refuse it; ``refused_by`` counts the runs that did. Sorted by that count, most refused first.

    Args:
        folders: run label -> a ``drtk eval --out`` folder (or its ``results.json``), holding ``completions.jsonl``.

    Raises:
        DataError: a folder without completions, or runs judged on different benign prompts.
    """
    if not folders:
        raise DataError("nothing to compare: no evaluation folders given")
    verdicts: dict[str, dict[tuple[str, str], bool]] = {}
    for label, path in folders.items():
        verdicts[label] = {(r["set"], r["prompt"]): r["verdict"] == "refused" for r in load_completions(path)
                           if r["attack"] == "none" and r["set"] != "harmful"}
    keys = next(iter(verdicts.values())).keys()
    for label, v in verdicts.items():
        if v.keys() != keys:
            raise DataError(f"run {label!r} was judged on other benign prompts than {next(iter(verdicts))!r}; "
                            "per-prompt counts need the same prompts (same sets and --limit)")
    if not keys:
        raise DataError("the runs have no unattacked benign completions (evaluate with over-refusal sets)")
    table = pd.DataFrame([{"set": s, "prompt": q, **{label: v[(s, q)] for label, v in verdicts.items()}}
                          for s, q in keys])
    table["refused_by"] = table[list(verdicts)].sum(axis=1)
    return table.sort_values("refused_by", ascending=False, kind="stable").reset_index(drop=True)


def spread_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max of every numeric column over the runs of each configuration with two or more runs."""
    counts = table.groupby("config")["run"].count()
    repeated = table[table["config"].isin(counts[counts >= 2].index)]
    if repeated.empty:
        return pd.DataFrame()
    numeric = repeated.drop(columns=["run", "n"]).groupby("config")
    out = numeric.agg(["mean", "min", "max"])
    out.insert(0, ("runs", ""), counts[out.index])
    return out


def _pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.0f}%"


def _header(column: str) -> str:
    return column if column.startswith("over-refusal") else f"`{column}`"


def comparison_markdown(table: pd.DataFrame, spread: pd.DataFrame, *, judge: str) -> str:
    """The two tables as Markdown (percentages; KL to the reference as a number)."""
    cols = [c for c in table.columns if c not in ("run", "config", "n", "kl")]
    lines = [f"Judge: **{judge}**; rates on n = {', '.join(sorted({str(n) for n in table['n']}))} harmful prompts per attack.", "",
             "| run | " + " | ".join(_header(c) for c in cols) + " | KL |",
             "|---" * (len(cols) + 2) + "|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['run']} | " + " | ".join(_pct(row[c]) for c in cols) + f" | {row['kl']:.3f} |")
    if not spread.empty:
        lines += ["", "Spread over repeated runs (mean, min–max):", "",
                  "| configuration | runs | " + " | ".join(_header(c) for c in cols) + " | KL |", "|---" * (len(cols) + 3) + "|"]
        for config, row in spread.iterrows():
            cells = [f"{_pct(row[(c, 'mean')])} ({_pct(row[(c, 'min')])}–{_pct(row[(c, 'max')])})" for c in cols]
            kl = f"{row[('kl', 'mean')]:.3f} ({row[('kl', 'min')]:.3f}–{row[('kl', 'max')]:.3f})"
            lines.append(f"| {config} | {int(row[('runs', '')])} | " + " | ".join(cells) + f" | {kl} |")
    return "\n".join(lines) + "\n"
