import json

import pandas as pd

from drtk.cli import main
from drtk.directions import Direction


def test_directions_command_writes_artifacts(tmp_path):
    out = tmp_path / "dirs"
    rc = main(["directions", "--model", "drtk-tiny-chat", "--out", str(out), "--n-fit", "8", "--n-val", "4",
               "--n-test", "6", "--top-k", "2", "--batch-size", "4", "--probe", "--borderline", "borderline"])
    assert rc == 0
    for name in ("direction.safetensors", "direction.json", "candidates.safetensors", "candidates.json",
                 "selection.csv", "summary.json"):
        assert (out / name).exists(), name
    for fig in ("cosine_layers", "cosine_positions", "selection_scores", "projection_by_layer"):
        assert (out / "figures" / f"{fig}.html").exists()
    d = Direction.load(out)
    summary = json.loads((out / "summary.json").read_text())
    assert d.layer == summary["layer"] and 0.0 <= summary["test_auroc"] <= 1.0
    table = pd.read_csv(out / "selection.csv")
    assert table.selected.sum() == 1
    # the summary says whether the selected candidate passed the KL and induce filters, as the table does
    assert summary["passed_filters"] == bool(table.passed[table.selected].iloc[0])
    assert summary["candidates_passed"] == table.passed.sum() and summary["candidates_scored"] == 2
    probe = pd.read_csv(out / "probe.csv")
    assert list(probe.layer) == list(range(d.n_layers))
    assert {"flagged:positive", "flagged:harmless", "flagged:borderline", "auroc:borderline"} <= set(probe.columns)
    assert summary["probe"]["layer"] in set(probe.layer) and 0 <= summary["probe"]["flagged:borderline"] <= 1


def test_bad_model_name_is_a_clean_error(tmp_path, capsys):
    rc = main(["directions", "--model", "no-such-model", "--out", str(tmp_path)])
    assert rc == 2
    assert "is not a folder, a built-in name or a hub id" in capsys.readouterr().err


def test_empty_prompt_file_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import drtk.commands.common as common

    def no_load(args):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(common, "load_model_from_args", no_load)
    empty = tmp_path / "harmful.csv"
    empty.write_text("prompt\n")
    rc = main(["directions", "--harmful", str(empty), "--out", str(tmp_path / "dirs")])
    assert rc == 2
    assert "contains no prompts" in capsys.readouterr().err


def test_help_lists_directions(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "directions" in capsys.readouterr().out
