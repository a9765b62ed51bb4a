"""The shipped prompt sets meet their size, category and disjointness contracts."""

import json
from importlib import resources

import pytest

from drtk.data import load_jailbreak_templates, load_prompts, load_texts, normalize_prompt

REFUSAL_PHRASES = (
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "i can't",
    "i cannot",
    "i won't",
    "i will not",
    "i'm not able",
    "i am not able",
    "i'm unable",
    "i am unable",
)


@pytest.mark.parametrize(
    ("name", "min_len", "min_categories", "min_per_category"),
    [("harmful", 330, 10, 20), ("harmless", 330, 8, 1), ("borderline", 110, 8, 1)],
)
def test_shipped_prompt_sets_meet_counts(name: str, min_len: int, min_categories: int, min_per_category: int) -> None:
    ps = load_prompts(name)
    counts = ps.category_counts()
    assert len(ps) >= min_len
    assert len(counts) >= min_categories
    assert min(counts.values()) >= min_per_category
    assert ps.source == f"drtk:{name}"
    keys = [normalize_prompt(p) for p in ps]
    assert len(set(keys)) == len(keys), "duplicate prompts after normalization"
    assert all(5 <= len(p.split()) <= 40 for p in ps)


def test_borderline_has_the_documented_categories() -> None:
    expected = {
        "homonym",
        "figurative",
        "safe_context",
        "history",
        "definitions",
        "fiction",
        "safety_info",
        "privacy_public_figure",
    }
    assert set(load_prompts("borderline").categories) == expected


def test_shipped_prompt_sets_are_mutually_disjoint() -> None:
    sets = {n: {normalize_prompt(p) for p in load_prompts(n)} for n in ("harmful", "harmless", "borderline")}
    assert not sets["harmful"] & sets["harmless"]
    assert not sets["harmful"] & sets["borderline"]
    assert not sets["harmless"] & sets["borderline"]


def test_every_refusal_contains_a_refusal_phrase() -> None:
    refusals = load_texts("refusals")
    assert len(refusals) >= 40 and len(set(refusals)) == len(refusals)
    missing = [r for r in refusals if not any(p in r.lower() for p in REFUSAL_PHRASES)]
    assert not missing


def test_openers_cover_their_categories() -> None:
    openers = load_texts("openers")
    assert len(openers) >= 20 and len(set(openers)) == len(openers)
    for category in ("affirmative", "list", "step"):
        assert load_texts("openers", category=category)


def test_jailbreak_templates_have_one_placeholder() -> None:
    templates = load_jailbreak_templates()
    assert len(templates) == 8 and len({t.name for t in templates}) == 8
    for t in templates:
        wrapped = t.apply("REQ {with braces}")
        assert wrapped.count("REQ {with braces}") == 1 and "{prompt}" not in wrapped


@pytest.mark.parametrize("name", ["harmful", "harmless", "borderline", "refusals", "openers", "jailbreak_templates"])
def test_shipped_files_are_valid_jsonl(name: str) -> None:
    text = resources.files("drtk.data").joinpath("prompts", f"{name}.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows and all(isinstance(r, dict) for r in rows)
    keys = {"name", "template"} if name == "jailbreak_templates" else {"category"}
    assert all(keys <= set(r) for r in rows)
