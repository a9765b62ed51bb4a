"""Contamination reports count overlaps per source and return the clean evaluation set."""

import logging

import pytest

from drtk.data import PromptSet, check_contamination, drop_overlaps, load_prompts, split_prompts


def test_report_counts_and_clean_set() -> None:
    ev = PromptSet(name="eval", prompts=("How do I X?", "Tell me Y", "Keep me", "keep ME too"), source="e")
    fit = PromptSet(name="fit", prompts=("how do i x", "unrelated"))
    train = PromptSet(name="train", prompts=("  tell me   y.", "HOW DO I X"))
    report = check_contamination(ev, fit, train)
    assert report.overlapping == ("How do I X?", "Tell me Y")
    assert (report.n_eval, report.n_overlap) == (4, 2)
    assert report.by_source == {"fit": 1, "train": 2}
    assert list(report.clean) == ["Keep me", "keep ME too"]
    assert report.clean.name == "eval" and report.clean.source == "e"


def test_same_named_sources_are_disambiguated() -> None:
    ev = PromptSet(name="eval", prompts=("a prompt",))
    other = PromptSet(name="x", prompts=("A prompt!",))
    assert check_contamination(ev, other, other).by_source == {"x": 1, "x#2": 1}


def test_drop_overlaps_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    splits = split_prompts(load_prompts("harmful"), seed=0)
    leaky_train = PromptSet(name="train", prompts=splits["train"].prompts + splits["test"].prompts[:3])
    with caplog.at_level(logging.WARNING, logger="drtk.data.contamination"):
        clean = drop_overlaps(splits["test"], splits["fit"], leaky_train)
    assert len(clean) == len(splits["test"]) - 3
    assert "dropped 3 of" in caplog.text and "train (3)" in caplog.text


def test_clean_splits_report_no_overlap(caplog: pytest.LogCaptureFixture) -> None:
    splits = split_prompts(load_prompts("harmless"), seed=0)
    with caplog.at_level(logging.WARNING):
        assert drop_overlaps(splits["test"], splits["fit"], splits["train"]) == splits["test"]
    assert not caplog.records
