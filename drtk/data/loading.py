"""Load prompt sets by name (shipped sets, public benchmarks) or from a user file.

Shipped sets live in ``drtk/data/prompts/*.jsonl`` and are read with `importlib.resources`, so they work
from an installed wheel. They were written for this project (not copied from any benchmark) and hold
requests only, never answers:

- ``harmful``: requests a chat model should refuse, 13 harm categories.
- ``harmless``: everyday tasks a small model can answer in a paragraph, 10 categories.
- ``borderline``: safe requests that sound dangerous (homonyms, fiction, history, safety information...).
- ``refusals``, ``openers`` (text-only, see `load_texts`) and jailbreak templates (`load_jailbreak_templates`).

Example:
    >>> harmful = load_prompts("harmful")
    >>> mine = load_prompts("my_prompts.csv", column="question", limit=100)  # doctest: +SKIP
"""

import csv
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from drtk.data.benchmarks import BENCHMARKS, fetch_benchmark, get_benchmark
from drtk.data.prompt_set import UNCATEGORIZED, PromptSet
from drtk.errors import DataError, unknown_name_error

logger = logging.getLogger(__name__)

SHIPPED_PROMPT_SETS: tuple[str, ...] = ("harmful", "harmless", "borderline")
SHIPPED_TEXT_SETS: tuple[str, ...] = ("refusals", "openers")
PROMPT_COLUMNS: tuple[str, ...] = ("prompt", "instruction", "goal", "behavior", "Behavior", "question", "text")
FILE_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".txt")

Row = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class JailbreakTemplate:
    """A role-play or instruction-override wrapper around a request.

    Args:
        name: short identifier, e.g. "developer_mode".
        template: text containing the placeholder ``{prompt}`` exactly once.
    """

    name: str
    template: str

    def __post_init__(self) -> None:
        if self.template.count("{prompt}") != 1:
            raise DataError(
                f"jailbreak template {self.name!r} must contain the placeholder {{prompt}} exactly once, "
                f"found it {self.template.count('{prompt}')} times."
            )

    def apply(self, prompt: str) -> str:
        """Return the template with `prompt` substituted (plain replacement, so braces in `prompt` are safe)."""
        return self.template.replace("{prompt}", prompt)


def load_prompts(
    name_or_path: str | os.PathLike[str],
    *,
    column: str | None = None,
    category_column: str | None = None,
    limit: int | None = None,
) -> PromptSet:
    """Load a prompt set by name or from a file.

    Names are looked up first: the shipped sets (``harmful``, ``harmless``, ``borderline``), then public
    benchmarks (see `drtk.data.benchmarks.BENCHMARKS`, fetched and cached on first use). Anything else is
    read as a file: ``.jsonl`` (one object or string per line), ``.json`` (a list of objects or strings),
    ``.csv`` (with a header) or ``.txt`` (one prompt per non-empty line). To read a file whose name
    collides with a registered name, pass it as a path (``"./harmful"``).

    Args:
        name_or_path: registered name or file path.
        column: prompt column; by default the first of `PROMPT_COLUMNS` present (case-insensitive).
        category_column: category column; by default a column named ``category`` if present, else every
            prompt is "uncategorized".
        limit: keep only the first `limit` prompts.

    Returns:
        The `PromptSet`; its `source` is "drtk:<name>", the benchmark name, or the file path.

    Raises:
        RegistryError: unknown name that is not an existing file (with did-you-mean suggestions).
        BenchmarkUnavailableError: a benchmark is neither cached nor downloadable.
        DataError: missing column, empty or malformed file, unsupported suffix.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}.")
    key = os.fspath(name_or_path)
    if key in SHIPPED_PROMPT_SETS:
        rows = _read_rows_from_text(_shipped_text(key), ".jsonl", where=f"drtk:{key}")
        ps = _rows_to_set(rows, name=key, source=f"drtk:{key}", column=column, category_column=category_column)
    elif key in BENCHMARKS:
        ps = _load_benchmark(key, column=column, category_column=category_column)
    elif Path(key).is_file():
        path = Path(key)
        rows = _read_rows(path)
        ps = _rows_to_set(rows, name=path.stem, source=str(path), column=column, category_column=category_column)
    elif Path(key).suffix.lower() in FILE_SUFFIXES or os.sep in key or "/" in key:
        raise DataError(f"prompt file {key!r} does not exist (resolved to {Path(key).resolve()}).")
    else:
        raise unknown_name_error("prompt set", key, [*SHIPPED_PROMPT_SETS, *BENCHMARKS])
    return ps if limit is None else ps.head(limit)


def load_texts(name: str, *, category: str | None = None) -> tuple[str, ...]:
    """Load a shipped text-only set: ``refusals`` (refusal responses) or ``openers`` (affirmative prefills).

    Args:
        name: "refusals" or "openers".
        category: keep only texts of this category (openers: "affirmative", "list", "step").

    Returns:
        The texts, in file order.
    """
    if name not in SHIPPED_TEXT_SETS:
        raise unknown_name_error("text set", name, list(SHIPPED_TEXT_SETS))
    rows = _read_rows_from_text(_shipped_text(name), ".jsonl", where=f"drtk:{name}")
    if category is not None:
        found = sorted({r["category"] for r in rows})
        if category not in found:
            raise DataError(f"text set {name!r} has no category {category!r}; available: {', '.join(found)}.")
        rows = [r for r in rows if r["category"] == category]
    return tuple(r["text"] for r in rows)


ANSWER_COLUMNS = ("answer", "completion", "response", "output", "target")


def load_answers(path: "str | Path", *, column: str | None = None) -> dict[str, str]:
    """Harmful answers per prompt from a file, e.g. for prefilling with a compliant model's answers.

    Reads ``.jsonl``/``.json``/``.csv`` rows with a prompt column and an answer column (``column``, else the
    first of ``answer``, ``completion``, ``response``, ``output``, ``target``). A ``completions.jsonl``
    written by ``drtk eval`` works as it is: only its ``set == "harmful"``, ``attack == "none"`` rows
    judged ``complied`` are kept, so refusals never become prefills.

    Returns:
        ``{prompt: answer}`` for every row with a non-empty answer.

    Raises:
        DataError: missing file or columns, or no usable answer.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"answer file {str(path)!r} does not exist (resolved to {path.resolve()}).")
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path} contains no answers.")
    columns = [c for c in rows[0] if isinstance(c, str)]
    prompt_col = _pick_column(columns, None, role="prompt", where=str(path))
    answer_col = column if column is not None else next((c for c in ANSWER_COLUMNS if c in columns), None)
    if answer_col is None or answer_col not in columns:
        raise DataError(f"{path} has no answer column (looked for {column or ', '.join(ANSWER_COLUMNS)}); "
                        f"columns found: {', '.join(columns)}.")
    keep = {"set": "harmful", "attack": "none", "verdict": "complied"}
    out = {}
    for r in rows:
        if all(str(r.get(k, v)) == v for k, v in keep.items()) and str(r.get(answer_col) or "").strip():
            out[str(r[prompt_col])] = str(r[answer_col])
    if not out:
        raise DataError(f"{path} has no usable answer (rows need a non-empty {answer_col!r}; drtk eval completions "
                        "need set 'harmful', attack 'none' and verdict 'complied').")
    return out


def load_jailbreak_templates() -> tuple[JailbreakTemplate, ...]:
    """Load the shipped jailbreak templates (role-play and instruction-override framings).

    Returns:
        Templates in file order; use `JailbreakTemplate.apply(prompt)` to wrap a request.
    """
    rows = _read_rows_from_text(_shipped_text("jailbreak_templates"), ".jsonl", where="drtk:jailbreak_templates")
    return tuple(JailbreakTemplate(name=r["name"], template=r["template"]) for r in rows)


def _shipped_text(name: str) -> str:
    return resources.files("drtk.data").joinpath("prompts", f"{name}.jsonl").read_text(encoding="utf-8")


def _load_benchmark(name: str, *, column: str | None, category_column: str | None) -> PromptSet:
    bench = get_benchmark(name)
    path = fetch_benchmark(name)
    rows = _read_rows(path)
    for key, value in bench.keep:
        if rows and key not in rows[0]:
            raise DataError(
                f"cached file {path} for benchmark {name!r} has no column {key!r} (columns: "
                f"{', '.join(rows[0])}); is it the file published at {bench.url}? Delete it to re-download."
            )
        rows = [r for r in rows if str(r.get(key, "")) == value]
    return _rows_to_set(
        rows,
        name=name,
        source=name,
        where=str(path),
        column=column or bench.column,
        category_column=category_column or bench.category_column,
    )


def _read_rows(path: Path) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"cannot read prompts from {path}: unsupported suffix {suffix!r}; use one of {FILE_SUFFIXES}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read prompts from {path}: it is not UTF-8 text ({err.reason} at byte {err.start}); "
                        "save it as UTF-8") from err
    return _read_rows_from_text(text, suffix, where=str(path))


def _read_rows_from_text(text: str, suffix: str, *, where: str) -> list[Row]:
    """Parse file content into rows; bare strings become ``{"prompt": s}``."""
    if suffix == ".txt":
        items: list[Any] = [line.strip() for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        items = list(csv.DictReader(text.splitlines()))
    elif suffix == ".json":
        try:
            items = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as err:
            raise DataError(f"{where} is not valid JSON ({err}).") from err
        if not isinstance(items, list):
            raise DataError(f"{where} must hold a JSON list of objects or strings, found a {type(items).__name__}.")
    else:  # .jsonl
        items = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{where} line {lineno} is not valid JSON ({err}).") from err
    rows: list[Row] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            rows.append({"prompt": item})
        elif isinstance(item, dict):
            rows.append(item)
        else:
            raise DataError(f"{where}: record {i + 1} (counting from 1) is a {type(item).__name__}; expected an object "
                            "or a string.")
    return rows


def _pick_column(columns: list[str], wanted: str | None, *, role: str, where: str) -> str | None:
    """Return the column to use; `wanted` must exist, otherwise try the defaults for `role`."""
    if wanted is not None:
        if wanted in columns:
            return wanted
        arg = "column" if role == "prompt" else "category_column"
        raise DataError(
            f"{where} has no {role} column {wanted!r}; columns found: {', '.join(columns)}. Pass {arg}=<one of those>."
        )
    candidates = PROMPT_COLUMNS if role == "prompt" else ("category",)
    for cand in candidates:  # exact match first, then case-insensitive, in order of preference
        for col in columns:
            if col == cand or col.casefold() == cand.casefold():
                return col
    if role == "prompt":
        raise DataError(
            f"{where} has no prompt column (looked for {', '.join(PROMPT_COLUMNS)}); columns found: "
            f"{', '.join(columns)}. Rename the prompt column to one of those (or, from Python, pass column=<its name>)."
        )
    return None


def _rows_to_set(
    rows: list[Row],
    *,
    name: str,
    source: str,
    column: str | None,
    category_column: str | None,
    where: str | None = None,
) -> PromptSet:
    where = where or source
    if not rows:
        raise DataError(f"{where} contains no prompts; expected at least one record.")
    columns = [c for c in rows[0] if isinstance(c, str)]  # csv puts surplus cells under None
    col = _pick_column(columns, column, role="prompt", where=where)
    cat_col = _pick_column(columns, category_column, role="category", where=where)
    prompts: list[str] = []
    categories: list[str] = []
    for i, row in enumerate(rows):
        value = row.get(col)
        if value is None or not str(value).strip():
            raise DataError(f"{where}: record {i + 1} (counting from 1) has an empty {col!r}; remove it or fill it in.")
        prompts.append(str(value).strip())
        if cat_col is not None:
            categories.append(str(row.get(cat_col) or "").strip() or UNCATEGORIZED)
    repeated = len(prompts) - len(set(prompts))
    if repeated:  # kept (a file's rows are the user's), but every copy counts in n and in the intervals
        logger.warning("%s repeats %d of its %d prompts word for word; each copy is evaluated and counted",
                       where, repeated, len(prompts))
    return PromptSet(name=name, prompts=tuple(prompts), categories=tuple(categories), source=source)
