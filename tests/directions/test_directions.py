import json

import pandas as pd
import pytest
import torch

from drtk.data import load_prompts
from drtk.directions import (
    Direction,
    SelectionConfig,
    auroc,
    collect_post_instruction,
    compute_candidates,
    find_direction,
    per_layer_directions,
    per_layer_subspaces,
    probe_by_layer,
    probe_ceiling,
    projections_by_layer,
    refusal_score,
)
from drtk.errors import ConfigError, DataError, DirectionMismatchError
from tests.conftest import PROMPTS

HARMFUL = list(load_prompts("harmful").prompts[:10])
HARMLESS = list(load_prompts("harmless").prompts[:10])


def test_candidates_have_post_by_layer_shape(tiny):
    c = compute_candidates(tiny, HARMFUL[:4], HARMLESS[:4], batch_size=3)
    assert c.diffs.shape == (tiny.chat.n_post, tiny.n_layers, tiny.d_model)
    assert len(c.post_tokens) == tiny.chat.n_post
    # the tokens as text, as labels show them: the template's newline, not byte-level BPE's symbol for it
    assert c.post_tokens[-1] == "\n" and "Ċ" not in c.post_tokens
    assert "".join(c.post_tokens) == tiny.tokenizer.decode(list(tiny.chat.post_instruction_ids))
    torch.testing.assert_close(c.vector(-1, 2), c.harmful_mean[-1, 2] - c.harmless_mean[-1, 2])


def test_batched_means_equal_one_prompt_at_a_time(tiny):
    batched = collect_post_instruction(tiny, PROMPTS, batch_size=4)
    singles = torch.stack([collect_post_instruction(tiny, [p], batch_size=1) for p in PROMPTS]).mean(0)
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)
    per_prompt = collect_post_instruction(tiny, PROMPTS, batch_size=3, reduce="none")
    assert per_prompt.shape == (len(PROMPTS), tiny.chat.n_post, tiny.n_layers, tiny.d_model)
    torch.testing.assert_close(per_prompt.mean(0), batched, atol=1e-5, rtol=1e-5)


def test_collection_reads_block_inputs(tiny):
    # the first layer's input at the last position is the token embedding of the template's last token
    acts = collect_post_instruction(tiny, PROMPTS[:1], batch_size=1)
    emb = tiny.hf.get_input_embeddings().weight[tiny.chat.post_instruction_ids[-1]]
    torch.testing.assert_close(acts[-1, 0], emb.detach(), atol=1e-6, rtol=1e-6)


def test_empty_or_one_sided_sets_are_errors(tiny):
    with pytest.raises(DataError, match="harmless prompt set is empty"):
        compute_candidates(tiny, HARMFUL[:2], [])
    with pytest.raises(DataError, match="harmful prompt set is empty"):
        compute_candidates(tiny, [], HARMLESS[:2])


def test_direction_roundtrip_and_sidecar(tmp_path, tiny):
    d = Direction(torch.randn(40), "single", tiny.model_id, 3, 40, layer=1, position=-1,
                  site="blocks.1.hook_resid_pre", metadata={"bypass": -1.5})
    path = d.save(tmp_path / "direction")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model_id"] == "drtk-tiny-chat" and meta["layer"] == 1 and "drtk_version" in meta
    back = Direction.load(tmp_path)
    assert torch.equal(back.vector, d.vector) and back.metadata == d.metadata and back.site == d.site


def test_direction_from_another_model_is_a_clear_error(tiny):
    d = Direction(torch.randn(576), "single", "smollm2-135m-instruct", 30, 576, layer=14, site="blocks.14.hook_resid_pre")
    with pytest.raises(DirectionMismatchError, match="d_model 576 but the model 'drtk-tiny-chat' has 40"):
        d.for_model(tiny)
    other = Direction(torch.randn(40), "single", "other", 5, 40)
    with pytest.raises(DirectionMismatchError, match="5 layers"):
        other.check_model(tiny)


def test_missing_direction_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="drtk directions"):
        Direction.load(tmp_path)


def test_direction_shape_is_validated():
    with pytest.raises(ValueError, match="per_layer direction needs 2 axes"):
        Direction(torch.randn(40), "per_layer", "m", 3, 40)


def test_per_layer_and_subspace_directions(tiny):
    pl = per_layer_directions(tiny, HARMFUL[:6], HARMLESS[:6])
    assert pl.vector.shape == (3, 40) and pl.kind == "per_layer"
    sub = per_layer_subspaces(tiny, HARMFUL[:6], HARMLESS[:6], k=2)
    assert sub.vector.shape == (3, 2, 40)
    gram = torch.einsum("lkd,ljd->lkj", sub.vector, sub.vector)
    torch.testing.assert_close(gram, torch.eye(2).expand(3, 2, 2), atol=1e-5, rtol=1e-5)
    # first singular direction points the same way as the mean difference (layer 0 at the last
    # position sees one fixed token embedding, so its difference is zero there)
    assert torch.allclose(pl.vector[0], torch.zeros(40))
    assert ((sub.vector[1:, 0] * pl.vector[1:]).sum(-1) > 0).all()
    with pytest.raises(ConfigError, match="at least 4 harmful prompts"):
        per_layer_subspaces(tiny, HARMFUL[:3], HARMLESS[:3], k=4)


def test_a_layer_without_a_direction_projects_to_zero_and_plots_without_warnings(tiny, recwarn):
    from drtk.viz.story import projection_panels

    pl = per_layer_directions(tiny, HARMFUL[:6], HARMLESS[:6])  # zero at layer 0 (one template token there)
    assert torch.equal(pl.vector[0], torch.zeros(40))
    proj = projections_by_layer(tiny, HARMFUL[6:9], pl.vector, position=pl.position)
    assert torch.equal(proj[:, 0], torch.zeros(3)) and torch.isfinite(proj).all() and proj[:, 1:].abs().sum() > 0
    projection_panels({"model": {"harmful": proj}})
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_refusal_score_is_log_odds():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    score = refusal_score(logits, [0, 1])
    torch.testing.assert_close(score, torch.log(torch.tensor([0.5 / 0.5])))
    torch.testing.assert_close(refusal_score(logits, [2, 1]), torch.log(torch.tensor([0.8 / 0.2])))


def test_auroc_known_values():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])) == 0.5
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5


def test_probe_reads_a_planted_feature_at_its_layer_only():
    gen = torch.Generator().manual_seed(0)

    def draw(n, label):  # 2 layers, 16 dims; layer 1 carries the label on dim 3, layer 0 is noise
        x = torch.randn(n, 2, 16, generator=gen)
        x[:, 1, 3] += 3.0 if label else -3.0
        return x

    t = probe_by_layer(draw(60, 1), draw(90, 0), draw(40, 1), {"benign": draw(40, 0), "border": draw(30, 0)})
    assert list(t.layer) == [0, 1]
    signal, noise = t.iloc[1], t.iloc[0]
    assert signal["flagged:positive"] >= 0.95 and signal["flagged:benign"] <= 0.05 and signal["auroc:border"] >= 0.99
    assert 0.2 <= noise["auroc:benign"] <= 0.8  # nothing to read at layer 0: near chance on held-out data
    with pytest.raises(ValueError, match="at least one positive"):
        probe_by_layer(draw(0, 1), draw(5, 0), draw(3, 1), {"b": draw(3, 0)})


def test_probe_ceiling_on_tiny_model(tiny):
    t = probe_ceiling(tiny, HARMFUL[:6], HARMLESS[:6], HARMFUL[6:10], {"harmless": HARMLESS[6:10]}, layers=[0, 2],
                      batch_size=4)
    assert list(t.layer) == [0, 2] and t["flagged:positive"].between(0, 1).all()
    assert {"flagged:harmless", "auroc:harmless"} <= set(t.columns)


def test_find_direction_on_tiny_model(tiny):
    cfg = SelectionConfig(top_k=3, batch_size=4, criterion="bypass")
    res = find_direction(tiny, HARMFUL[:6], HARMLESS[:6], HARMFUL[6:10], HARMLESS[6:10], config=cfg)
    t = res.table
    assert isinstance(t, pd.DataFrame) and len(t) == tiny.chat.n_post * tiny.n_layers
    assert t.bypass.notna().sum() == 3
    chosen = t[t.selected]
    assert len(chosen) == 1 and bool(chosen.eligible.iloc[0])
    assert int(chosen.layer.iloc[0]) < 0.8 * tiny.n_layers + 1
    d = res.direction
    assert d.kind == "single" and d.vector.shape == (40,)
    torch.testing.assert_close(d.vector, res.candidates.vector(d.position, d.layer))
    assert d.metadata["criterion"] == "bypass"
    proj = projections_by_layer(tiny, HARMFUL[:3], d.vector, position=d.position)
    assert proj.shape == (3, tiny.n_layers)


def test_generation_check_overrides_the_first_token_score(tiny, monkeypatch):
    import drtk.judges.keyword as keyword

    val = HARMFUL[6:10]
    plain = find_direction(tiny, HARMFUL[:6], HARMLESS[:6], val, HARMLESS[6:10],
                           config=SelectionConfig(top_k=3, batch_size=4, criterion="bypass", verify_top=0))
    assert plain.table.verified_refusal.isna().all()
    pool = plain.table[plain.table.passed] if plain.table.passed.any() else plain.table[plain.table.bypass.notna()]
    ranked = pool.sort_values("bypass").index
    assert plain.table.selected[ranked[0]]
    # The lowest-bypass candidate still refuses in every generated completion; the runner-up never does.
    calls = iter(range(10_000))
    monkeypatch.setattr(keyword, "is_refusal", lambda text: next(calls) < len(val))
    checked = find_direction(tiny, HARMFUL[:6], HARMLESS[:6], val, HARMLESS[6:10],
                             config=SelectionConfig(top_k=3, batch_size=4, criterion="bypass", verify_top=2))
    t = checked.table
    assert t.verified_refusal.notna().sum() == 2
    assert t.verified_refusal[ranked[0]] == 1.0 and t.verified_refusal[ranked[1]] == 0.0
    assert t.selected[ranked[1]] and checked.direction.metadata["verified_refusal"] == 0.0
    # An ablation that leaves the model silent has not made it answer: a blank completion counts as a refusal.
    import drtk.generation as generation

    monkeypatch.setattr(keyword, "is_refusal", lambda text: False)
    monkeypatch.setattr(generation, "generate", lambda model, prompts, **kw: [" "] * len(prompts))
    silent = find_direction(tiny, HARMFUL[:6], HARMLESS[:6], val, HARMLESS[6:10],
                            config=SelectionConfig(top_k=3, batch_size=4, criterion="bypass", verify_top=2))
    assert (silent.table.verified_refusal.dropna() == 1.0).all() and silent.table.selected[ranked[0]]


def test_selection_config_validates():
    with pytest.raises(ConfigError, match="max_layer_fraction"):
        SelectionConfig(max_layer_fraction=0.0)
    with pytest.raises(ConfigError, match="criterion"):
        SelectionConfig(criterion="best")


def test_library_calls_leave_global_torch_rng_alone(tiny):
    state = torch.get_rng_state()
    compute_candidates(tiny, HARMFUL[:3], HARMLESS[:3])
    from drtk.models import load_model

    load_model("drtk-tiny-chat")
    assert torch.equal(state, torch.get_rng_state())


def test_one_string_is_not_a_prompt_list(tiny):
    from drtk import find_direction, generate
    from drtk.errors import DataError

    with pytest.raises(DataError, match="got one string"):
        generate(tiny, "How do I bake bread?")  # would be one prompt per character
    with pytest.raises(DataError, match="got one string"):
        find_direction(tiny, "Build a bomb.", ["Bake bread."], ["Pick a lock."], ["Knit a hat."])


def test_a_direction_at_a_layer_the_model_lacks_is_refused(tiny, direction):
    import dataclasses

    from drtk.errors import DirectionMismatchError

    with pytest.raises(DirectionMismatchError, match="layer 99"):
        dataclasses.replace(direction, layer=99).check_model(tiny)


def test_a_direction_is_a_transfer_only_when_it_comes_from_another_model(tiny, tmp_path, monkeypatch, caplog):
    import dataclasses
    import logging

    from drtk.directions import Direction

    d = Direction(torch.ones(tiny.d_model), "single", tiny.model_id, tiny.n_layers, tiny.d_model, layer=1, position=-1)
    caplog.set_level(logging.INFO, logger="drtk")
    folder = tmp_path / "runs" / "m"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    relative = dataclasses.replace(d, model_id="runs/m")
    named = type("Named", (), {"model_id": str(folder), "d_model": tiny.d_model, "n_layers": tiny.n_layers})()
    relative.check_model(named)  # the same folder, named relative and absolute
    assert "transfer" not in caplog.text
    dataclasses.replace(d, model_id="runs/other").check_model(named)
    assert "unrelated models" in caplog.text and "(transfer)" not in caplog.text  # no record ties them
    caplog.clear()
    # trained from the direction's model (a record two generations deep): a transfer
    (folder / "drtk_train.json").write_text(json.dumps({"base": "runs/aligned", "base_record": {"base": "runs/other"}}))
    dataclasses.replace(d, model_id="runs/other").check_model(named)
    assert "(transfer)" in caplog.text and "unrelated" not in caplog.text
    from drtk.models.loading import related

    assert related("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")  # the built-in name of that model


def test_a_direction_and_a_training_record_name_their_model_from_any_working_folder(tiny, tmp_path, monkeypatch, caplog):
    import logging

    from drtk.directions import Direction
    from drtk.training.export import save_training_record

    (tmp_path / "runs" / "aligned").mkdir(parents=True)
    (tmp_path / "runs" / "defended").mkdir()
    monkeypatch.chdir(tmp_path)  # a demo run here names its models relative to this folder
    d = Direction(torch.ones(tiny.d_model), "single", "runs/aligned", tiny.n_layers, tiny.d_model, layer=1, position=-1)
    d.save("runs/direction/direction")
    save_training_record("runs/defended", base="runs/aligned", method="deeprefusal", prompts={})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # later, from another folder, the same models by absolute paths
    loaded = Direction.load(tmp_path / "runs" / "direction")
    assert loaded.model_id == "runs/aligned" and loaded.model_path == str(tmp_path / "runs" / "aligned")
    caplog.set_level(logging.INFO, logger="drtk")
    shaped = lambda path: type("Named", (), {"model_id": str(path), "d_model": tiny.d_model,  # noqa: E731
                                             "n_layers": tiny.n_layers})()
    loaded.check_model(shaped(tmp_path / "runs" / "aligned"))
    assert "unrelated" not in caplog.text and "transfer" not in caplog.text  # its own model
    loaded.check_model(shaped(tmp_path / "runs" / "defended"))
    assert "(transfer)" in caplog.text and "unrelated" not in caplog.text  # trained from it, by its record
    caplog.clear()
    Direction.load(tmp_path / "runs" / "direction").check_model(shaped(tiny.model_id))
    assert "unrelated models" in caplog.text  # still said where nothing ties them
    # a direction file written before model_path was recorded: its model is found from the file's parent folders
    sidecar = tmp_path / "runs" / "direction" / "direction.json"
    sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "model_path"}))
    assert Direction.load(sidecar).model_path is None  # no model folder there (no config.json)
    (tmp_path / "runs" / "aligned" / "config.json").write_text("{}")
    assert Direction.load(sidecar).model_path == str(tmp_path / "runs" / "aligned")
