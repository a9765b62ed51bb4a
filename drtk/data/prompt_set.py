"""`PromptSet`: an immutable, named list of prompts with one category per prompt.

Every stage of drtk that consumes instructions (direction fitting, training, attacks, evaluation) takes a
`PromptSet`, so where a prompt came from (`source`) and exactly what was used (`sha256()`) travel with
it into artifact metadata. Operations return new sets; nothing mutates in place.

Example:
    >>> ps = PromptSet(name="toy", prompts=("Hi there", "Say hello"), categories=("a", "b"), source="inline")
    >>> len(ps.filter(category="a"))
    1
"""

import hashlib
import json
import operator
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd

from drtk.errors import DataError

UNCATEGORIZED = "uncategorized"


def normalize_prompt(text: str) -> str:
    """Normalize a prompt for comparison: NFKC, casefold, collapse whitespace, strip end punctuation.

    Two prompts that differ only in case, spacing, Unicode presentation form or a trailing "?" / "." are
    treated as the same prompt by splits and contamination checks.

    Args:
        text: the prompt.

    Returns:
        The normalized text (possibly empty).

    Example:
        >>> normalize_prompt("  How do I  bake BREAD? ")
        'how do i bake bread'
    """
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and _is_edge_char(text[start]):
        start += 1
    while end > start and _is_edge_char(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge_char(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


@dataclass(frozen=True, kw_only=True)
class PromptSet:
    """A named, immutable sequence of prompts, each with a category.

    Args:
        name: short name used in logs, split names and artifact metadata (e.g. "harmful").
        prompts: the prompt strings, as a tuple; none may be empty or whitespace-only.
        categories: one category per prompt (a tuple); leave empty to mark every prompt "uncategorized".
        source: where the prompts came from, e.g. "drtk:harmful", "advbench" or a file path.
    """

    name: str
    prompts: tuple[str, ...]
    categories: tuple[str, ...] = field(default=())
    source: str = "inline"

    def __post_init__(self) -> None:
        # Tuples only (not lists), so a set is hashable and cannot change under an artifact's hash.
        for field_name in ("prompts", "categories"):
            if not isinstance(getattr(self, field_name), tuple):
                raise DataError(
                    f"prompt set {self.name!r}: {field_name} must be a tuple, got a "
                    f"{type(getattr(self, field_name)).__name__}; pass {field_name}=tuple(...)."
                )
        prompts = self.prompts
        categories = self.categories or (UNCATEGORIZED,) * len(prompts)
        object.__setattr__(self, "categories", categories)
        if len(categories) != len(prompts):
            raise DataError(
                f"prompt set {self.name!r}: {len(prompts)} prompts but {len(categories)} categories; "
                "pass exactly one category per prompt (or none at all)."
            )
        for i, (prompt, category) in enumerate(zip(prompts, categories)):
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(
                    f"prompt set {self.name!r} (source {self.source}): prompt at index {i} is "
                    f"{'empty' if isinstance(prompt, str) else f'a {type(prompt).__name__}, not a string'}; "
                    "remove blank rows before building the set."
                )
            if not isinstance(category, str) or not category:
                raise DataError(f"prompt set {self.name!r}: category at index {i} must be a non-empty string.")

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.prompts)

    def sha256(self) -> str:
        """Return a stable hash of the content (prompts and categories, in order; not name or source).

        Each prompt is NFKC-normalized with its whitespace collapsed first, so re-saving a file with other
        line endings or spacing keeps the hash.

        Returns:
            64 hex characters.
        """
        rows = [[" ".join(unicodedata.normalize("NFKC", p).split()), c] for p, c in zip(self.prompts, self.categories)]
        return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()

    def category_counts(self) -> dict[str, int]:
        """Return the number of prompts in each category, in order of first appearance."""
        return dict(Counter(self.categories))

    def subset(self, indices: Iterable[int], *, name: str | None = None) -> "PromptSet":
        """Return the prompts at `indices`, in the order given.

        Args:
            indices: positions in this set (Python or NumPy integers; negative positions are not allowed).
            name: name of the new set; defaults to this set's name.

        Returns:
            A new `PromptSet` with the same source.
        """
        idx = [i if isinstance(i, int) else operator.index(i) for i in indices]  # accepts numpy integers too
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise DataError(
                f"prompt set {self.name!r} has {len(self)} prompts; indices {bad[:5]} are out of range "
                f"(expected integers in [0, {len(self)}))."
            )
        return PromptSet(
            name=self.name if name is None else name,
            prompts=tuple(self.prompts[i] for i in idx),
            categories=tuple(self.categories[i] for i in idx),
            source=self.source,
        )

    def head(self, n: int) -> "PromptSet":
        """Return the first `n` prompts (all of them if the set is shorter)."""
        if not isinstance(n, int) or n < 0:
            raise DataError(f"head(n) needs a non-negative integer n, got {n!r}.")
        return self.subset(range(min(n, len(self))))

    def filter(self, *, category: str | Iterable[str]) -> "PromptSet":
        """Return the prompts whose category is `category` (or one of several).

        Args:
            category: a category name or an iterable of names; each must occur in the set.

        Returns:
            A new `PromptSet` in the original order.
        """
        wanted = {category} if isinstance(category, str) else set(category)
        missing = sorted(wanted - set(self.categories))
        if missing:
            raise DataError(
                f"prompt set {self.name!r} has no categories {missing}; "
                f"available: {', '.join(sorted(set(self.categories))) or '(none, the set is empty)'}."
            )
        return self.subset(i for i, c in enumerate(self.categories) if c in wanted)

    def require_nonempty(self, what: str) -> "PromptSet":
        """Raise `DataError` if the set is empty; otherwise return it, for chaining.

        Args:
            what: what the set is needed for, e.g. "fitting the refusal direction".
        """
        if not self.prompts:
            raise DataError(
                f"prompt set {self.name!r} (source {self.source}) is empty, but {what} needs at least one "
                "prompt; check the file, the category filter, `limit=` and the split fractions."
            )
        return self

    def to_frame(self) -> pd.DataFrame:
        """Return a pandas DataFrame with columns `prompt` and `category`."""
        return pd.DataFrame({"prompt": list(self.prompts), "category": list(self.categories)})

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        name: str,
        column: str = "prompt",
        category_column: str | None = "category",
        source: str = "dataframe",
    ) -> "PromptSet":
        """Build a set from a DataFrame.

        Args:
            frame: the table.
            name: name of the new set.
            column: column holding the prompts.
            category_column: column holding categories; if None or absent, prompts are "uncategorized".
            source: recorded provenance.

        Returns:
            A new `PromptSet`.
        """
        if column not in frame.columns:
            raise DataError(
                f"DataFrame for prompt set {name!r} has no column {column!r}; columns found: "
                f"{', '.join(map(str, frame.columns))}. Pass column=<name of the prompt column>."
            )
        cats = (
            tuple(str(c) for c in frame[category_column])
            if category_column is not None and category_column in frame.columns
            else ()
        )
        return cls(name=name, prompts=tuple(frame[column]), categories=cats, source=source)
