"""The ``adaptive`` method: refreshed single and per-layer directions, full-ablation steps, exact resume."""

import pytest
import torch

from drtk.directions import Direction
from drtk.errors import ConfigError
from drtk.models import load_model
from drtk.training import RefreshedDirection, TrainConfig, Trainer
from tests.training.test_training_loop import HARMFUL, BENIGN, Kill, _cfg, _data, _trainable


def _direction(model):
    return Direction(torch.randn(40, generator=torch.Generator().manual_seed(2)), "single", model.model_id,
                     model.n_layers, model.d_model, layer=1, position=-1)


def _adaptive(**kw):
    return _cfg("adaptive", direction_refresh_every=2, **kw)


def test_adaptive_defaults():
    cfg = TrainConfig.for_method("adaptive")
    assert cfg.schedule.attack_fraction == 0.5 and cfg.direction_refresh_every is not None
    assert cfg.direction_per_layer_fraction > 0 and cfg.data.recovery and cfg.data.recovery_tokens == (5, 40)
    assert (cfg.benign_induce, cfg.benign_induce_coeff, cfg.benign_induce_region) == (0.5, 0.5, "prompt")
    assert (cfg.lora, cfg.steps, cfg.lr, cfg.benign_weight, cfg.harmful_weight) == (False, 120, 3e-5, 0.5, 0.5)
    assert TrainConfig.for_method("adaptive", lora=True).lr is None  # adapters: LoRA's default rate
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.for_method("adaptive", benign_induce=0.0).benign_induce == 0  # off by an override
    assert (cfg.latent_adversary, cfg.latent_adversary_fraction, cfg.latent_adversary_rows) == (0.03, 0.25, "harmful")
    assert TrainConfig.for_method("adaptive", latent_adversary=0.0).latent_adversary == 0
    assert TrainConfig.for_method("deeprefusal").latent_adversary == 0  # the adaptive recipe's, not every method's


def test_per_layer_fraction_needs_refresh():
    with pytest.raises(ConfigError, match="direction_per_layer_fraction"):
        TrainConfig.for_method("deeprefusal", direction_per_layer_fraction=0.5)


def test_refresh_positions_and_layers_need_a_refresh_and_valid_indices():
    with pytest.raises(ConfigError, match="direction_refresh_positions"):
        TrainConfig.for_method("deeprefusal", direction_refresh_positions=(-2,))
    with pytest.raises(ConfigError, match="direction_refresh_layers"):
        TrainConfig.for_method("deeprefusal", direction_refresh_layers=(1,))
    with pytest.raises(ConfigError, match="negative offsets"):
        TrainConfig.for_method("adaptive", direction_refresh_positions=(2,))
    with pytest.raises(ConfigError, match="layer indices"):
        TrainConfig.for_method("adaptive", direction_refresh_layers=(-1,))
    with pytest.raises(ConfigError, match="direction_select_every needs direction_refresh_every"):
        TrainConfig.for_method("deeprefusal", direction_select_every=4)
    with pytest.raises(ConfigError, match="direction_select_every must be >= 1"):
        TrainConfig.for_method("adaptive", direction_select_every=0)
    model = load_model("drtk-tiny-chat")
    with pytest.raises(ConfigError, match="outside the model's 3 layers"):
        Trainer(model, _data(), _adaptive(direction_refresh_layers=(3,)), direction=_direction(model),
                refresh_prompts=(HARMFUL, BENIGN))


def test_refresh_sources_pair_the_refreshed_direction_with_a_drawn_other():
    from drtk.directions import collect_post_instruction
    from drtk.interventions import unit

    model = load_model("drtk-tiny-chat")
    start = _direction(model)  # layer 1, position -1
    provider = RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=1, ema=0.5, layer=1,
                                  per_layer_fraction=0.5, positions=(-2, -1, -2), layers=(2, 1))
    assert provider.positions == (-1, -2)  # its own first, repeats dropped
    assert provider.sources == [(0, 2), (1, 1), (1, 2)]  # every (position, layer) but its own
    assert all(torch.equal(provider.current(), provider.vector) for _ in range(5))  # nothing refreshed yet
    provider.after_step(model, 0)
    diff = collect_post_instruction(model, HARMFUL, n_post=2) - collect_post_instruction(model, BENIGN, n_post=2)
    assert torch.allclose(provider.vector, unit(0.5 * unit(start.vector) + 0.5 * unit(diff[1, 1])), atol=1e-5)
    want = unit(torch.stack([diff[1, 2], diff[0, 1], diff[0, 2]]))  # each source's own first reading
    assert torch.allclose(provider.extra, want, atol=1e-5)
    assert torch.allclose(provider.extra_per_layer[0, 1:], unit(diff[0, 1:]), atol=1e-5)
    assert torch.equal(provider.extra_per_layer[0, 0], provider.vector)  # no difference at the embedding: kept
    drawn = [provider.current() for _ in range(80)]
    singles = [d for d in drawn if d.shape == (1, 2, 40)]
    assert all(torch.equal(d[0, 0], provider.vector) for d in singles)  # the refreshed direction every step
    assert {int(torch.argmax(torch.stack([(d[0, 1] == e).all() for e in provider.extra]).int())) for d in singles} == {0, 1, 2}
    layered = [d for d in drawn if d.shape == (3, 2, 40)]
    assert layered and all(torch.equal(d[:, 0], provider.per_layer) and torch.equal(d[:, 1], provider.extra_per_layer[0])
                           for d in layered)
    again = RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=1, layer=1, positions=(-2,),
                               layers=(2,))
    again.load_state_dict(provider.state_dict())
    assert torch.equal(again.extra, provider.extra) and torch.equal(again.extra_per_layer, provider.extra_per_layer)
    with pytest.raises(ConfigError, match="negative offsets"):
        RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=1, layer=1, positions=(0,))


def test_selection_ablates_what_the_attacker_would_select_beside_the_refreshed_direction():
    from drtk.directions import SelectionConfig, compute_candidates, find_refusal_tokens, select_direction
    from drtk.interventions import unit

    model = load_model("drtk-tiny-chat")
    start = _direction(model)
    provider = RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=3, layer=1, select_every=2)
    provider.after_step(model, 0)
    assert provider.selected is None and torch.equal(provider.current(), provider.vector)  # nothing selected yet
    provider.after_step(model, 1)
    tokens = find_refusal_tokens(model, HARMFUL[1::2], BENIGN[1::2])
    want = select_direction(model, compute_candidates(model, HARMFUL[::2], BENIGN[::2]), HARMFUL[1::2], BENIGN[1::2],
                            refusal_tokens=tokens, config=SelectionConfig(top_k=8, verify_top=0)).direction
    assert provider.selected_site == (want.layer, want.position)
    assert torch.allclose(provider.selected, unit(want.vector), atol=1e-6)
    assert torch.equal(provider.vector, unit(start.vector))  # the refresh keeps its own period (3)
    for _ in range(5):
        pair = provider.current()
        assert pair.shape == (1, 2, 40) and torch.equal(pair[0, 0], provider.vector)
        assert torch.equal(pair[0, 1], provider.selected)
    again = RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=3, layer=1, select_every=2)
    again.load_state_dict(provider.state_dict())
    assert again.selected_site == provider.selected_site and torch.equal(again.selected, provider.selected)
    assert again.refusal_tokens == tokens
    again.selected_site = (1, -1)  # the refreshed direction's own site: nothing to pair with
    assert torch.equal(again.current(), again.vector)
    with pytest.raises(ConfigError, match="at least 2 probe prompts"):
        RefreshedDirection(start.vector, harmful=HARMFUL[:1], harmless=BENIGN, every=3, layer=1, select_every=2)


def test_adaptive_run_mixes_refreshed_directions():
    model = load_model("drtk-tiny-chat")
    trainer = Trainer(model, _data(), _adaptive(direction_per_layer_fraction=1.0), direction=_direction(model),
                      refresh_prompts=(HARMFUL, BENIGN))
    start = trainer.provider.current().clone()
    trainer.train()
    provider = trainer.provider
    assert isinstance(provider, RefreshedDirection)
    assert provider.per_layer is not None and provider.per_layer.shape == (3, 40)
    assert provider.current().shape == (3, 40)  # fraction 1.0: always the per-layer directions
    assert not torch.allclose(provider.vector, start / start.norm())  # the single direction moved
    # attacker-in-the-loop steps push the realized ablation rate above the probabilistic one
    assert trainer.history["ablation_rate"].mean() > 0.3


@pytest.mark.parametrize("sources", [{}, {"direction_refresh_positions": (-2,), "direction_refresh_layers": (2,)},
                                     {"direction_select_every": 2}])
def test_adaptive_resume_equals_uninterrupted(tmp_path, sources):
    cfg = _adaptive(**sources)
    full = load_model("drtk-tiny-chat")
    Trainer(full, _data(), cfg, direction=_direction(full), refresh_prompts=(HARMFUL, BENIGN),
            checkpoint_dir=tmp_path / "a").train()
    want = _trainable(full)
    killed = load_model("drtk-tiny-chat")
    with pytest.raises(KeyboardInterrupt):
        Trainer(killed, _data(), cfg, direction=_direction(killed), refresh_prompts=(HARMFUL, BENIGN),
                checkpoint_dir=tmp_path / "b", callbacks=[Kill(3)]).train()
    resumed = load_model("drtk-tiny-chat")
    history = Trainer(resumed, _data(), cfg, direction=_direction(resumed), refresh_prompts=(HARMFUL, BENIGN),
                      checkpoint_dir=tmp_path / "b").train(resume=True).history
    if "direction_select_every" in sources:  # the selected site is in the history from the first selection on
        assert history["selected_layer"].isna().tolist() == [True] + [False] * (len(history) - 1)
    got = _trainable(resumed)
    for name in want:
        assert torch.equal(want[name], got[name]), name
