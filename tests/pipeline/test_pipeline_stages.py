import pytest

import drtk.cli
from drtk.errors import DataError, DrtkError, StageError
from drtk.pipeline.demo import run_demo
from drtk.pipeline.stages import StageRunner


def test_finished_stages_are_not_redone_and_changes_propagate(tmp_path):
    calls = []

    def stage(name, value):
        def fn(folder):
            calls.append(name)
            (folder / "out.txt").write_text(str(value))
            return {"value": value}
        return fn

    r = StageRunner(tmp_path)
    assert r.run("a", stage("a", 1), config={"x": 1}) == {"value": 1}
    r.run("b", stage("b", 2), config={"y": 2}, after=["a"])
    assert calls == ["a", "b"]

    r2 = StageRunner(tmp_path)  # a resumed run
    assert r2.run("a", stage("a", 1), config={"x": 1}) == {"value": 1}
    r2.run("b", stage("b", 2), config={"y": 2}, after=["a"])
    assert calls == ["a", "b"]

    r3 = StageRunner(tmp_path)  # a changed upstream configuration re-runs downstream stages
    r3.run("a", stage("a", 5), config={"x": 5})
    r3.run("b", stage("b", 2), config={"y": 2}, after=["a"])
    assert calls == ["a", "b", "a", "b"]


def test_interrupted_stage_runs_again(tmp_path):
    r = StageRunner(tmp_path)

    def boom(folder):
        raise KeyboardInterrupt

    try:
        r.run("a", boom, config={})
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "stages" / "a.json").exists()
    assert r.run("a", lambda folder: {"ok": True}, config={}) == {"ok": True}


def test_partial_work_is_kept_for_the_same_configuration_and_cleared_for_another(tmp_path):
    r = StageRunner(tmp_path)

    def interrupted(folder):
        (folder / "checkpoint").write_text("step 50")
        raise KeyboardInterrupt

    try:
        r.run("train", interrupted, config={"lr": 1})
    except KeyboardInterrupt:
        pass
    seen = []
    r.run("train", lambda folder: seen.append((folder / "checkpoint").exists()) or {}, config={"lr": 1})
    assert seen == [True]  # the same configuration resumes from its partial work

    r.run("train", lambda folder: seen.append((folder / "checkpoint").exists()) or {}, config={"lr": 2})
    assert seen == [True, False]  # another configuration starts clean
    (tmp_path / "train" / "checkpoint").write_text("step 100, lr 2")
    r.run("train", lambda folder: seen.append((folder / "checkpoint").exists()) or {}, config={"lr": 3})
    assert seen == [True, False, False]  # and so does a change after a finished run


def test_a_stage_that_fails_on_bad_input_names_itself_and_keeps_the_finished_ones(tmp_path):
    r = StageRunner(tmp_path)
    r.run("a", lambda folder: {"ok": True}, config={})

    def bad(folder):
        raise DataError("the harmful prompt set is empty")

    with pytest.raises(StageError, match=r"stage b failed: the harmful prompt set is empty.*run the same command again"):
        r.run("b", bad, config={}, after=["a"])
    assert (tmp_path / "stages" / "a.json").exists() and not (tmp_path / "stages" / "b.json").exists()

    def bug(folder):
        raise ZeroDivisionError  # not drtk's own error: passes through unwrapped, traceback and all

    with pytest.raises(ZeroDivisionError):
        r.run("c", bug, config={})
    assert issubclass(StageError, DrtkError)


def test_demo_stops_with_a_drtk_error_when_a_stage_command_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(drtk.cli, "main", lambda args, **kw: 2)  # the stage's command printed its error and exited 2
    with pytest.raises(StageError, match=r"stage baseline failed: `drtk eval --model drtk-tiny-chat .*exited with code 2"):
        run_demo(tmp_path, model="drtk-tiny-chat", size="smoke")
    assert not (tmp_path / "stages" / "baseline.json").exists()


def test_a_stage_command_resumes_only_from_partial_work_in_its_folder(tmp_path):
    from drtk.evaluation.progress import PARTIAL_LOG
    from drtk.pipeline.stages import resume_flag
    from drtk.training.loop import CHECKPOINT

    train, evaluation = tmp_path / "train", tmp_path / "eval"
    assert resume_flag(train) == [] and resume_flag(evaluation) == []
    (train / CHECKPOINT).mkdir(parents=True)
    assert resume_flag(train) == []  # a checkpoint is complete once its trainer.json is written
    (train / CHECKPOINT / "trainer.json").write_text("{}")
    evaluation.mkdir()
    (evaluation / PARTIAL_LOG).write_text("")
    assert resume_flag(train) == ["--resume"] and resume_flag(evaluation) == ["--resume"]
