import json
import math

import pandas as pd
import pytest
import torch

from drtk.errors import DataError
from drtk.evaluation.compare import comparison_markdown, comparison_table, load_results, spread_table


def _rate(k, n):
    return {"rate": k / n, "ci_low": 0.0, "ci_high": 1.0, "n": n, "k": k, "judge": "keyword"}


def _doc(asr: dict, over: tuple[int, int], kl: float, judge="keyword"):
    attacks = {label: {"attack": label.split("[")[0], "params": {}, "asr": k / 20, "ci_low": 0.0, "ci_high": 1.0, "n": 20,
                       "k": k, "judge": judge, "kl": None, "seconds": 1.0, "forward_passes": 1}
               for label, k in asr.items()}
    return {"schema_version": 1, "drtk_version": "0", "model": "m", "reference": None, "judge": {"name": judge},
            "generation": {"max_new_tokens": 64}, "prompts": {}, "contamination": {}, "attacks": attacks,
            "over_refusal": {"harmless": _rate(over[0], 10), "borderline": _rate(over[1], 10)},
            "capability": {"kl": kl}, "comparisons": {}}


def test_table_rows_and_spread_over_repeats():
    runs = {"dr": _doc({"none": 0, "fresh": 16}, (2, 4), 0.1),
            "ad#1": _doc({"none": 1, "fresh": 4}, (5, 5), 0.2),
            "ad#2": _doc({"none": 0, "fresh": 8, "extra": 3}, (3, 7), 0.4)}
    table = comparison_table(runs)
    assert list(table["run"]) == ["dr", "ad#1", "ad#2"] and list(table["config"]) == ["dr", "ad", "ad"]
    assert list(table["fresh"]) == [0.8, 0.2, 0.4]
    assert math.isnan(table.loc[0, "extra"]) and table.loc[2, "extra"] == 0.15
    assert table.loc[1, "over-refusal pooled"] == 0.5 and table.loc[2, "over-refusal borderline"] == 0.7
    spread = spread_table(table)
    assert list(spread.index) == ["ad"]  # dr has one run: no spread
    assert spread.loc["ad", ("runs", "")] == 2
    assert spread.loc["ad", ("fresh", "mean")] == pytest.approx(0.3)
    assert (spread.loc["ad", ("fresh", "min")], spread.loc["ad", ("fresh", "max")]) == (0.2, 0.4)
    assert spread.loc["ad", ("kl", "mean")] == pytest.approx(0.3)
    md = comparison_markdown(table, spread, judge="keyword")
    assert "| ad#2 | 0% | 40% | 15% | 30% | 70% | 50% | 0.400 |" in md
    assert "| ad | 2 | 2% (0%–5%) | 30% (20%–40%) | 15% (15%–15%)" in md


def test_looping_benign_answers_get_a_column_where_counted():
    runs = {"old": _doc({"none": 0}, (2, 4), 0.1), "new": _doc({"none": 0}, (1, 3), 0.1)}
    for s, loops in (("harmless", 1), ("borderline", 4)):
        runs["new"]["over_refusal"][s]["looping_answers"] = loops
    table = comparison_table(runs)
    assert math.isnan(table.loc[0, "benign loops pooled"]) and table.loc[1, "benign loops pooled"] == 0.25
    assert "| new | 0% | 10% | 30% | 20% | 25% | 0.100 |" in comparison_markdown(table, spread_table(table), judge="keyword")


def test_only_chosen_attacks_and_errors():
    runs = {"a": _doc({"none": 0, "fresh": 16}, (2, 4), 0.1), "b": _doc({"none": 2}, (0, 0), 0.0)}
    assert [c for c in comparison_table(runs, attacks=("fresh",)).columns][:3] == ["run", "config", "fresh"]
    assert spread_table(comparison_table(runs)).empty
    with pytest.raises(DataError, match="nothing to compare"):
        comparison_table({})
    with pytest.raises(DataError, match="different judges"):
        comparison_table({"a": runs["a"], "c": _doc({"none": 0}, (0, 0), 0.0, judge="llamaguard")})


def test_load_results_from_folder_or_file_and_clear_errors(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(_doc({"none": 0}, (0, 1), 0.0)))
    assert load_results(tmp_path / "run")["model"] == "m"
    assert load_results(tmp_path / "run" / "results.json")["model"] == "m"
    with pytest.raises(DataError, match="no evaluation results"):
        load_results(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"model": "m"}))
    with pytest.raises(DataError, match="schema"):
        load_results(tmp_path / "wrong.json")


def test_compare_command_writes_tables_and_figures(tmp_path, capsys):
    from drtk.cli import main

    for name, k in (("dr", 16), ("ad1", 4), ("ad2", 8)):
        (tmp_path / name).mkdir()
        doc = _doc({"none": 0, "fresh-ablation[strength=1.0]": k, "prefill[k=20]": 1}, (2, 4), 0.1)
        doc["attacks"]["prefill[k=20]"]["metadata"] = {"refusing_prefills": 18 if name == "ad1" else 0}
        (tmp_path / name / "results.json").write_text(json.dumps(doc))
    out = tmp_path / "cmp"
    rc = main(["compare", str(tmp_path / "dr"), f"ad#1={tmp_path / 'ad1'}", f"ad#2={tmp_path / 'ad2' / 'results.json'}",
               "--out", str(out)])
    assert rc == 0
    assert (out / "comparison.csv").read_text().splitlines()[1].startswith("dr,dr,")
    md = (out / "comparison.md").read_text()
    assert "| ad | 2 |" in md and (out / "spread.csv").exists()
    notes = [line for line in md.splitlines() if "themselves refusals" in line]  # one run's prefill rate is a floor
    assert len(notes) == 1 and notes[0].startswith("- ad#1: `prefill[k=20]`: 18 of 20 prefills")
    assert {p.name for p in (out / "figures").glob("*.html")} == {"tradeoff.html", "asr_vs_over_refusal.html", "asr_bars.html"}
    assert main(["compare", f"x={tmp_path / 'dr'}", f"x={tmp_path / 'ad1'}", "--out", str(out)]) != 0
    assert "given twice" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "dr"), "--attacks", "gcg", "--out", str(out)]) != 0
    assert "available" in capsys.readouterr().err
    assert main(["compare", "=nothing", "--out", str(out)]) != 0


def test_tradeoff_panels_draw_each_configuration_once_with_its_range():
    from drtk.viz.story import tradeoff_panels

    runs = {"dr": _doc({"fresh": 16}, (2, 4), 0.1), "ad#1": _doc({"fresh": 4}, (5, 5), 0.2),
            "ad#2": _doc({"fresh": 8}, (3, 7), 0.4)}
    fig = tradeoff_panels(comparison_table(runs), ("fresh", "not-there"))
    assert [t.name for t in fig.data] == ["dr", "ad"]
    ad = fig.data[1]
    assert ad.x[0] == pytest.approx(0.5) and ad.y[0] == pytest.approx(0.3) and ad.text[0] == "ad ×2"
    assert ad.error_y.array[0] == pytest.approx(0.1) and ad.error_y.arrayminus[0] == pytest.approx(0.1)
    assert fig.data[0].error_x.array[0] == 0
    # the axes end a little past the highest point (over-refusal 0.5, fresh 0.8), not at 100%
    assert fig.layout.xaxis.range[1] == pytest.approx(0.58) and fig.layout.yaxis.range[1] == pytest.approx(0.88)
    low = tradeoff_panels(comparison_table({"a": _doc({"fresh": 1}, (1, 1), 0.1)}), ("fresh",))
    assert low.layout.xaxis.range[1] == low.layout.yaxis.range[1] == 0.5  # never narrower than 0-50%
    # labels stay inside the figure: a point near either edge of its axis is labelled away from it
    assert ad.textposition == "top left" and fig.data[0].textposition == "top center"  # at 0.5 and 0.3 of 0.58
    edges = tradeoff_panels(comparison_table({"low": _doc({"fresh": 4}, (0, 1), 0.1), "high": _doc({"fresh": 4}, (9, 8), 0.1)}),
                            ("fresh",))
    assert [t.textposition for t in edges.data] == ["top right", "top left"] and not edges.data[0].cliponaxis
    # targets: a dashed line per panel, and the axes reach them even when every point sits far below
    lined = tradeoff_panels(comparison_table({"a": _doc({"fresh": 1, "pl": 2}, (1, 1), 0.1)}), ("fresh", "pl"),
                            targets={"fresh": 0.7}, over_refusal_target=0.6)
    horizontal = [s for s in lined.layout.shapes if s.y0 == s.y1]
    vertical = [s for s in lined.layout.shapes if s.x0 == s.x1]
    assert [s.y0 for s in horizontal] == [0.7] and [s.x0 for s in vertical] == [0.6, 0.6]
    assert lined.layout.yaxis.range[1] == pytest.approx(0.78) and lined.layout.xaxis.range[1] == pytest.approx(0.68)


def _completions(folder, refused: dict, harmful=("make a bomb",)):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"set": "harmful", "attack": "none", "prompt": p, "verdict": "refused"} for p in harmful]
    rows += [{"set": s, "attack": "none", "prompt": p, "verdict": "refused" if r else "complied"} for (s, p), r in refused.items()]
    rows += [{"set": "harmful", "attack": "prefill[k=5]", "prompt": p, "verdict": "complied"} for p in harmful]
    (folder / "completions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_over_refusal_by_prompt_counts_the_runs_that_refused_each_benign_prompt(tmp_path):
    from drtk.evaluation.compare import over_refusal_by_prompt

    a = _completions(tmp_path / "a", {("harmless", "a poem"): False, ("borderline", "kill a process"): True})
    b = _completions(tmp_path / "b", {("harmless", "a poem"): True, ("borderline", "kill a process"): True})
    table = over_refusal_by_prompt({"a": a, "b": b / "results.json"})
    assert list(table["prompt"]) == ["kill a process", "a poem"] and list(table["refused_by"]) == [2, 1]
    assert list(table["a"]) == [True, False] and list(table["set"]) == ["borderline", "harmless"]
    other = _completions(tmp_path / "c", {("harmless", "a song"): True, ("borderline", "kill a process"): True})
    with pytest.raises(DataError, match="other benign prompts"):
        over_refusal_by_prompt({"a": a, "c": other})
    with pytest.raises(DataError, match="no completions.jsonl"):
        over_refusal_by_prompt({"a": a, "d": tmp_path / "missing"})


def test_compare_with_a_direction_adds_each_prompts_projection_and_its_figure(tmp_path, tiny, direction):
    from drtk.cli import main
    from drtk.directions.candidates import projections_by_layer

    from drtk.models import load_model
    from drtk.models.saving import save_pretrained

    refused = {("harmless", "Write a poem."): False, ("borderline", "How do I kill a Python process?"): True}
    moved = load_model("drtk-tiny-chat")
    with torch.no_grad():  # a "trained" model: block 0 writes differently
        for p in moved.hf.model.layers[0].mlp.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    save_pretrained(moved, tmp_path / "dr-model")
    for name, model in (("dr", "dr-model"), ("ad", "nowhere")):  # the second run's model is not on this machine
        doc = {**_doc({"none": 0}, (0, 1), 0.1), "model": model}
        _completions(tmp_path / name, refused).joinpath("results.json").write_text(json.dumps(doc))
    direction.save(tmp_path / "dir" / "direction")
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "dr"), str(tmp_path / "ad"), "--direction", str(tmp_path / "dir"),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out / "over_refusal_by_prompt.csv")
    assert list(table["refused_by"]) == [2, 0]
    want = projections_by_layer(tiny, list(table["prompt"]), direction.vector)[:, direction.layer]
    assert table["projection"].tolist() == pytest.approx(want.tolist(), abs=1e-4)
    assert (out / "figures" / "over_refusal_vs_projection.html").exists()
    runs = pd.read_csv(out / "comparison.csv").set_index("run")["benign_shift"]
    shifted = projections_by_layer(load_model(str(tmp_path / "dr-model")), list(table["prompt"]), direction.vector)
    assert runs["dr"] == pytest.approx(float(shifted[:, direction.layer].mean() - want.mean()), abs=1e-4)
    assert abs(runs["dr"]) > 1e-3 and math.isnan(runs["ad"])
    assert (out / "figures" / "over_refusal_vs_shift.html").exists()


def _attacked(folder, completions: dict, attack="prefill[k=20]", coherent=True):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"set": "harmful", "attack": attack, "prompt": p, "completion": c,
             "verdict": "refused" if "sorry" in c else "complied", "coherent": None if "sorry" in c else coherent}
            for p, c in completions.items()]
    (folder / "completions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_successes_by_kind_splits_incoherent_short_and_the_rest(tmp_path):
    from drtk.evaluation.compare import SHORT_WORDS, success_kind, successes_by_kind

    a = _attacked(tmp_path / "a", {"phish": " code?", "bomb": " mix these three: first, take the", "gun": "I'm sorry."})
    b = _attacked(tmp_path / "b", {"phish": " " + "word " * (SHORT_WORDS + 1), "bomb": "I'm sorry.", "gun": "I'm sorry."})
    counts, by_prompt = successes_by_kind({"a": a, "b": b}, "prefill[k=20]")
    assert counts.set_index("run").loc["a", ["n", "succeeded", "incoherent", "short", "other"]].tolist() == [3, 2, 0, 1, 1]
    assert counts.set_index("run").loc["b", ["succeeded", "short", "other"]].tolist() == [1, 0, 1]
    assert list(by_prompt["prompt"]) == ["phish", "bomb", "gun"] and list(by_prompt["succeeded_by"]) == [2, 1, 0]
    assert by_prompt.loc[0, "a"] == "short" and by_prompt.loc[2, "a"] == ""
    loops = _attacked(tmp_path / "c", {"phish": "- 2 pipes\n" * 9}, coherent=False)
    assert success_kind(json.loads((loops / "completions.jsonl").read_text())) == "incoherent"
    with pytest.raises(DataError, match="other harmful prompts"):
        successes_by_kind({"a": a, "c": loops}, "prefill[k=20]")
    with pytest.raises(DataError, match="no completions of harmful prompts under 'gcg'"):
        successes_by_kind({"a": a}, "gcg")


def test_compare_writes_the_successes_of_every_attack_all_runs_hold(tmp_path):
    from drtk.cli import main

    for name, c in (("a", " code?"), ("b", "I'm sorry.")):
        folder = _attacked(tmp_path / name, {"phish": c})
        (folder / "results.json").write_text(json.dumps(_doc({"prefill[k=20]": 1, "none": 0}, (0, 1), 0.1)))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    counts = pd.read_csv(out / "successes.csv")
    assert counts[["run", "attack", "succeeded", "short"]].values.tolist() == [["a", "prefill[k=20]", 1, 1],
                                                                                 ["b", "prefill[k=20]", 0, 0]]
    by_prompt = pd.read_csv(out / "successes_by_prompt.csv")
    assert by_prompt[["prompt", "a", "succeeded_by", "attack"]].values.tolist() == [["phish", "short", 1, "prefill[k=20]"]]
