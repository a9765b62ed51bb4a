"""Bad command-line input: one line on stderr, exit code 2, nothing run and nothing lost."""

import pytest

from drtk.cli import main


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "latin1.txt").write_bytes("Comment d\xe9verrouiller une porte ?\n".encode("latin-1"))
    (tmp_path / "broken.json").write_text('{"lr": 1e-4,')
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["eval", "--model", "drtk-tiny-chat", "--out", "{t}/a_file"], "is a file; give a folder"),
    (["eval", "--model", "drtk-tiny-chat", "--device", "cuda:99", "--out", "{t}/o"], "cuda:99"),
    (["eval", "--model", "drtk-tiny-chat", "--device", "gpu", "--out", "{t}/o"], "not a device torch knows"),
    (["eval", "--model", "drtk-tiny-chat", "--limit", "0", "--out", "{t}/o"], "--limit must be >= 1"),
    (["eval", "--model", "drtk-tiny-chat", "--harmful", "{t}/latin1.txt", "--out", "{t}/o"], "is not UTF-8"),
    (["eval", "--model", "drtk-tiny-chat", "--attacks", "actadd:coeff=nan", "--out", "{t}/o"], "finite float"),
    (["eval", "--model", "drtk-tiny-chat", "--max-new-tokens", "0", "--attacks", "none", "--out", "{t}/o"],
     "max_new_tokens must be >= 1"),
    (["eval", "--model", "drtk-tiny-chat", "--attacks", ",", "--out", "{t}/o"], "names no attack"),
    (["eval", "--model", "drtk-tiny-chat", "--nll-threshold", "-1", "--out", "{t}/o"], "--nll-threshold"),
    (["train", "--model", "drtk-tiny-chat", "--config", "{t}/broken.json", "--out", "{t}/o"], "is not valid JSON"),
    (["train", "--model", "drtk-tiny-chat", "--config", "{t}/missing.json", "--out", "{t}/o"], "cannot read it"),
    (["train", "--model", "drtk-tiny-chat", "--data", "{t}/broken.json", "--out", "{t}/o"], "not a drtk training set"),
    (["sweep", "--aligned", "drtk-tiny-chat", "--direction", "{t}/d", "--p", "0,abc", "--out", "{t}/o"],
     "comma-separated probabilities"),
    (["sweep", "--aligned", "drtk-tiny-chat", "--direction", "{t}/d", "--p", "0.5,0.5", "--out", "{t}/o"],
     "probabilities must be distinct and in [0, 1]"),
    (["sweep", "--aligned", "drtk-tiny-chat", "--direction", "{t}/d", "--limit", "0", "--out", "{t}/o"],
     "steps and limit must be >= 1, got steps=10, limit=0"),
    (["demo", "--model", "drtk-tiny-chat", "--defences", "bogus", "--out", "{t}/o"], "defences must be"),
])
def test_bad_input_is_one_line_and_runs_nothing(files, capsys, argv, message):
    assert main([a.format(t=files) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (files / "o" / "stages").exists()  # the demo ran no stage


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_wrong_direction_path_fails_before_any_model_loads(command, monkeypatch, tmp_path, capsys):
    import importlib

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for where in ("drtk.commands.common", f"drtk.commands.{command}"):
        monkeypatch.setattr(importlib.import_module(where), "load_model_from_args", no_model)
    argv = [command, "--model", "drtk-tiny-chat", "--direction", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    assert main(argv + (["--method", "deeprefusal"] if command == "train" else [])) == 2
    err = capsys.readouterr().err
    assert "no direction at" in err and "run `drtk directions`" in err and "Traceback" not in err


def test_an_interrupt_is_one_line_with_the_way_on(monkeypatch, tmp_path, capsys):
    import drtk.commands.train

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(drtk.commands.train, "run", interrupted)
    assert main(["train", "--model", "drtk-tiny-chat", "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("drtk train: interrupted.") and "--resume" in err and "Traceback" not in err

    # inside a demo stage (its first runs `drtk eval`) only the demo says how to go on: one line, the demo's
    import drtk.commands.eval

    monkeypatch.setattr(drtk.commands.eval, "run", interrupted)
    assert main(["demo", "--model", "drtk-tiny-chat", "--size", "quick", "--out", str(tmp_path / "d")]) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1 and err.startswith("drtk demo: interrupted.") and "--resume" not in err


def test_version_names_drtk_and_the_packages_behind_its_numbers(capsys, monkeypatch):
    from importlib import metadata

    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal
    import drtk
    from drtk.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one line all the same
    line = out.strip()
    assert line.startswith(f"drtk {drtk.__version__} (")
    assert f"torch {metadata.version('torch')}" in line and f"transformer-lens {metadata.version('transformer-lens')}" in line


def test_verbose_goes_before_or_after_the_command():
    from drtk.cli import build_parser

    parser = build_parser()
    assert [parser.parse_args([*a, "--out", "o"]).verbose for a in (["eval"], ["-v", "eval"], ["eval", "-v"])] == [
        False, True, True]
