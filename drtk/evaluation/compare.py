"""Several evaluations side by side: one row per run, and the spread over repeated runs of one configuration.

Runs are ``results.json`` documents under a label. Labels of the form ``name#tag`` (e.g. ``adaptive#seed1``)
are repeats of the configuration ``name``; :func:`spread_table` gives their mean and range per column.
:func:`over_refusal_by_prompt` reads the runs' ``completions.jsonl`` and says which benign prompts each run
refused: over-refusal concentrated on the same few prompts in every run is a property of those prompts (and
of the starting model's representation of them), not noise. :func:`successes_by_kind` does the same for an
attack's successes and splits them into incoherent text, turns that end at once, and the rest: what a keyword
judge's attack success rate is made of.

    >>> table = comparison_table({"deeprefusal": dr, "adaptive#0": a0, "adaptive#1": a1})  # doctest: +SKIP
    >>> spread_table(table)                                                                 # doctest: +SKIP
"""

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from drtk.errors import DataError
from drtk.evaluation.schema import validate_results
from drtk.evaluation.stats import pooled_over_refusal

logger = logging.getLogger(__name__)


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
    try:
        validate_results(doc)
    except DataError as err:
        raise DataError(f"{p} is not the results.json of a `drtk eval` run: {err}") from err
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
        sets = (res.get("over_refusal") or {}).values()
        if sets and all("looping_answers" in s for s in sets):  # absent from results written before loops were counted
            row["benign loops pooled"] = sum(s["looping_answers"] for s in sets) / sum(s["n"] for s in sets)
        row["kl"] = (res.get("capability") or {}).get("kl", float("nan"))
        row["n"] = max((a["n"] for a in res["attacks"].values()), default=0)
        rows.append(row)
    sizes = {row["run"]: row["n"] for row in rows}
    if len(set(sizes.values())) > 1:
        logger.warning("the runs were judged on different numbers of harmful prompts (%s): rates of different prompt "
                       "sets compare only roughly, and a configuration's spread mixes them", sizes)
    return pd.DataFrame(rows)


#: A successful attack whose completion has at most this many words: the model ended its turn at once (after a
#: prefill, typically by finishing the prefilled sentence: " code?"), adding nothing for the judge to read.
SHORT_WORDS = 3


def _verdicts_by_prompt(folders: Mapping[str, "str | Path"], keep: Any, what: str) -> tuple[dict[str, dict], list]:
    """Per run, (set, prompt) -> completion row of the rows ``keep`` selects; every run must have the same keys."""
    if not folders:
        raise DataError("nothing to compare: no evaluation folders given")
    rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for label, path in folders.items():
        rows[label] = {(r["set"], r["prompt"]): r for r in load_completions(path) if keep(r)}
    first = next(iter(rows))
    keys = list(rows[first])
    for label, v in rows.items():
        if v.keys() != rows[first].keys():
            raise DataError(f"run {label!r} was judged on other {what} than {first!r}; "
                            "per-prompt counts need the same prompts (same sets and --limit)")
    if not keys:
        raise DataError(f"the runs have no completions of {what}")
    return rows, keys


def _by_prompt(rows: dict[str, dict], keys: list, cell: Any, count: str) -> pd.DataFrame:
    """One row per prompt, one column per run holding ``cell`` of the run's value for it; ``count`` runs where
    that is truthy, most first."""
    table = pd.DataFrame([{"set": s, "prompt": q, **{label: cell(v[(s, q)]) for label, v in rows.items()}}
                          for s, q in keys])
    table[count] = sum(table[label].map(bool) for label in rows)
    return table.sort_values(count, ascending=False, kind="stable").reset_index(drop=True)


def over_refusal_by_prompt(folders: Mapping[str, "str | Path"]) -> pd.DataFrame:
    """One row per benign prompt (unattacked, harmless and borderline sets) with one column per run: did the
    run refuse it; ``refused_by`` counts the runs that did. Sorted by that count, most refused first.

    Args:
        folders: run label -> a ``drtk eval --out`` folder (or its ``results.json``), holding ``completions.jsonl``.

    Raises:
        DataError: a folder without completions, or runs judged on different benign prompts.
    """
    rows, keys = _verdicts_by_prompt(folders, lambda r: r["attack"] == "none" and r["set"] != "harmful",
                                     "benign prompts (evaluate with over-refusal sets)")
    return _by_prompt(rows, keys, lambda r: r["verdict"] == "refused", "refused_by")


def success_kind(row: Mapping[str, Any]) -> "str | None":
    """What a judged harmful completion is: ``None`` when refused; else ``incoherent`` (the evaluation's
    likelihood check failed: loops, broken text), ``short`` (at most :data:`SHORT_WORDS` words: the turn ended
    at once) or ``other`` (new text that the judge found no refusal in: the successes worth reading)."""
    if row["verdict"] == "refused":
        return None
    if row.get("coherent") is False:
        return "incoherent"
    return "short" if len(row["completion"].split()) <= SHORT_WORDS else "other"


def successes_by_kind(folders: Mapping[str, "str | Path"], attack: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What an attack's successes are, per run and per prompt.

    The keyword judge counts every completion without a refusal phrase as a success: a loop that repeats
    the prefilled text and a turn that ends after one word count as much as a harmful answer. The first
    table has one row per run: ``n`` harmful prompts, ``succeeded`` and its split by :func:`success_kind`.
    The second has one row per harmful prompt with one column per run (its kind, ``""`` when refused) and
    ``succeeded_by``, most often broken first: prompts that every run fails on point at the prompt (or its
    prefill), not at one defence.

    Raises:
        DataError: a folder without completions, no run with ``attack``, or runs judged on other prompts.
    """
    rows, keys = _verdicts_by_prompt(folders, lambda r: r["attack"] == attack and r["set"] == "harmful",
                                     f"harmful prompts under {attack!r}")
    kinds = {label: {k: success_kind(r) for k, r in v.items()} for label, v in rows.items()}
    counts = pd.DataFrame([{"run": label, "attack": attack, "n": len(k), "succeeded": sum(x is not None for x in k.values()),
                            **{kind: sum(x == kind for x in k.values()) for kind in ("incoherent", "short", "other")}}
                           for label, k in kinds.items()])
    return counts, _by_prompt(kinds, keys, lambda kind: kind or "", "succeeded_by").drop(columns="set")


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
    return column if column.startswith(("over-refusal", "benign loops")) else f"`{column}`"


def comparison_markdown(table: pd.DataFrame, spread: pd.DataFrame, *, judge: str, notes: Sequence[str] = ()) -> str:
    """The two tables as Markdown (percentages; KL to the reference as a number), then ``notes`` as a list."""
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
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
