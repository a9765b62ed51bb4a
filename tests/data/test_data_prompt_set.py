"""PromptSet validation, transformations and hashing."""

import pytest

from drtk.data import PromptSet, normalize_prompt
from drtk.errors import DataError


def make(prompts: tuple[str, ...] = ("a b", "c d", "e f"), cats: tuple[str, ...] = ("x", "y", "x")) -> PromptSet:
    return PromptSet(name="toy", prompts=prompts, categories=cats, source="inline")


def test_length_mismatch_and_empty_prompt_are_errors() -> None:
    with pytest.raises(DataError, match="3 prompts but 2 categories"):
        make(cats=("x", "y"))
    with pytest.raises(DataError, match="index 1 is empty"):
        make(prompts=("ok", "   ", "fine"))


def test_lists_are_rejected_with_a_fix() -> None:
    with pytest.raises((DataError, TypeError), match="tuple"):
        PromptSet(name="toy", prompts=["a", "b"])  # type: ignore[arg-type]


def test_missing_categories_default_to_uncategorized() -> None:
    ps = PromptSet(name="toy", prompts=("a", "b"))
    assert ps.categories == ("uncategorized", "uncategorized")


def test_empty_set_exists_but_require_nonempty_explains() -> None:
    empty = PromptSet(name="nothing", prompts=())
    assert len(empty) == 0
    with pytest.raises(DataError, match=r"'nothing'.*empty.*fitting"):
        empty.require_nonempty("fitting the direction")
    assert make().require_nonempty("x") is not None


def test_subset_head_filter() -> None:
    ps = make()
    assert list(ps.subset([2, 0])) == ["e f", "a b"]
    assert list(ps.head(2)) == ["a b", "c d"] and len(ps.head(10)) == 3
    assert list(ps.filter(category="x")) == ["a b", "e f"]
    assert len(ps.filter(category=["x", "y"])) == 3
    with pytest.raises(DataError, match="available: x, y"):
        ps.filter(category="z")
    with pytest.raises(DataError, match="out of range"):
        ps.subset([3])


def test_sha256_is_stable_and_content_based() -> None:
    a, b = make(), PromptSet(name="other", prompts=("a  b", "c d", "e f"), categories=("x", "y", "x"), source="f")
    assert a.sha256() == b.sha256()  # name, source and whitespace do not change the hash
    assert a.sha256() != make(cats=("x", "x", "x")).sha256()
    assert a.sha256() != a.subset([1, 0, 2]).sha256()
    assert len(a.sha256()) == 64


def test_frame_round_trip() -> None:
    ps = make()
    frame = ps.to_frame()
    assert list(frame.columns) == ["prompt", "category"]
    back = PromptSet.from_frame(frame, name="toy", source="inline")
    assert back == ps
    with pytest.raises(DataError, match="columns found: prompt, category"):
        PromptSet.from_frame(frame, name="toy", column="goal")


def test_normalize_prompt() -> None:
    assert normalize_prompt("  How do I  bake\tBREAD?! ") == "how do i bake bread"
    assert normalize_prompt("\uff28ello") == "hello"  # NFKC folds full-width letters
    assert normalize_prompt("'quoted'") == "quoted"
    assert normalize_prompt("...") == ""
