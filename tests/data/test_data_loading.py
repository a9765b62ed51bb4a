"""Loading user files in every supported format, with column detection and clear errors."""

import json
from pathlib import Path

import pytest

from drtk.data import load_prompts, load_texts
from drtk.errors import DataError, RegistryError


def test_jsonl_with_instruction_column(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [{"instruction": "Say hi", "category": "greet"}, {"instruction": "Add 2 and 3", "category": "math"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    ps = load_prompts(path)
    assert list(ps) == ["Say hi", "Add 2 and 3"]
    assert ps.categories == ("greet", "math")
    assert ps.name == "mine" and ps.source == str(path)


def test_json_list_of_strings_and_of_objects(tmp_path: Path) -> None:
    strings = tmp_path / "s.json"
    strings.write_text(json.dumps(["one prompt", "two prompt"]), encoding="utf-8")
    assert list(load_prompts(str(strings))) == ["one prompt", "two prompt"]
    objects = tmp_path / "o.json"
    objects.write_text(json.dumps([{"id": 1, "question": "Why?"}, {"id": 2, "question": "How?"}]), encoding="utf-8")
    ps = load_prompts(objects)
    assert list(ps) == ["Why?", "How?"] and set(ps.categories) == {"uncategorized"}


def test_csv_detects_goal_case_insensitively_and_uses_given_columns(tmp_path: Path) -> None:
    path = tmp_path / "bench.csv"
    path.write_text(
        "Index,Goal,Behavior,Category\n1,Do thing one,Short,cat-a\n2,Do thing two,Short,cat-b\n", encoding="utf-8"
    )
    assert list(load_prompts(path)) == ["Do thing one", "Do thing two"]  # "goal" ranks above "Behavior"
    ps = load_prompts(path, column="Behavior", category_column="Category", limit=1)
    assert list(ps) == ["Short"] and ps.categories == ("cat-a",)


def test_txt_one_prompt_per_nonempty_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("first prompt\n\n  second prompt  \n", encoding="utf-8")
    assert list(load_prompts(path)) == ["first prompt", "second prompt"]


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("foo,bar\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"columns found: foo, bar.*column="):
        load_prompts(path)
    with pytest.raises(DataError, match=r"no prompt column 'baz'; columns found: foo, bar"):
        load_prompts(path, column="baz")
    with pytest.raises(DataError, match=r"category_column="):
        load_prompts(path, column="foo", category_column="nope")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".txt"])
def test_empty_file_is_an_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="contains no prompts"):
        load_prompts(path)


def test_blank_prompt_value_and_bad_json_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text('prompt\nfine\n"  "\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"record 2 \(counting from 1\) has an empty 'prompt'"):
        load_prompts(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_prompts(bad)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(RegistryError, match=r"Did you mean 'harmful'.*Available:.*advbench"):
        load_prompts("harmfull")
    with pytest.raises(RegistryError, match="Did you mean 'refusals'"):
        load_texts("refusal")


def test_missing_file_path_and_bad_limit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="limit"):
        load_prompts("harmful", limit=0)
    assert len(load_prompts("harmful", limit=5)) == 5


def test_load_answers_from_eval_completions_and_csv(tmp_path):
    from drtk.data import load_answers

    rows = [{"set": "harmful", "attack": "none", "prompt": "a", "completion": "Step 1", "verdict": "complied"},
            {"set": "harmful", "attack": "none", "prompt": "b", "completion": "I'm sorry", "verdict": "refused"},
            {"set": "harmful", "attack": "prefill[k=5]", "prompt": "c", "completion": "more", "verdict": "complied"},
            {"set": "harmless", "attack": "none", "prompt": "d", "completion": "Hi", "verdict": "complied"}]
    f = tmp_path / "completions.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_answers(f) == {"a": "Step 1"}
    c = tmp_path / "answers.csv"
    c.write_text("goal,target\nx,Sure here\ny,\n")
    assert load_answers(c) == {"x": "Sure here"}
    with pytest.raises(DataError, match="no answer column"):
        load_answers(c, column="reply")
    with pytest.raises(DataError, match="does not exist"):
        load_answers(tmp_path / "nope.jsonl")
    (tmp_path / "empty.csv").write_text("prompt,answer\nx,\n")
    with pytest.raises(DataError, match="no usable answer"):
        load_answers(tmp_path / "empty.csv")
