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
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.for_method("adaptive", benign_induce=0.0).benign_induce == 0  # off by an override


def test_per_layer_fraction_needs_refresh():
    with pytest.raises(ConfigError, match="direction_per_layer_fraction"):
        TrainConfig.for_method("deeprefusal", direction_per_layer_fraction=0.5)


def test_refresh_positions_need_a_refresh_and_negative_offsets():
    with pytest.raises(ConfigError, match="direction_refresh_positions"):
        TrainConfig.for_method("deeprefusal", direction_refresh_positions=(-2,))
    with pytest.raises(ConfigError, match="negative offsets"):
        TrainConfig.for_method("adaptive", direction_refresh_positions=(2,))


def test_refresh_positions_draw_each_positions_own_direction():
    from drtk.directions import collect_post_instruction
    from drtk.interventions import unit

    model = load_model("drtk-tiny-chat")
    start = _direction(model)
    provider = RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=1, ema=0.5, layer=1,
                                  per_layer_fraction=0.5, positions=(-2, -1, -2))
    assert provider.positions == (-2,)  # the direction's own position and repeats dropped
    assert all(torch.equal(provider.current(), provider.vector) for _ in range(5))  # nothing refreshed yet
    provider.after_step(model, 0)
    diff = collect_post_instruction(model, HARMFUL, n_post=2) - collect_post_instruction(model, BENIGN, n_post=2)
    assert torch.allclose(provider.extra, unit(diff[0, 1])[None], atol=1e-5)  # position -2's own reading
    assert torch.allclose(provider.vector, unit(0.5 * unit(start.vector) + 0.5 * unit(diff[1, 1])), atol=1e-5)
    assert torch.allclose(provider.extra_per_layer[0, 1:], unit(diff[0, 1:]), atol=1e-5)
    assert torch.equal(provider.extra_per_layer[0, 0], provider.extra[0])  # no difference at the embedding: kept
    drawn = [provider.current() for _ in range(60)]
    for want in (provider.vector, provider.extra[0], provider.per_layer, provider.extra_per_layer[0]):
        assert any(d.shape == want.shape and torch.equal(d, want) for d in drawn)
    again = RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=1, layer=1, positions=(-2,))
    again.load_state_dict(provider.state_dict())
    assert torch.equal(again.extra, provider.extra) and torch.equal(again.extra_per_layer, provider.extra_per_layer)
    with pytest.raises(ConfigError, match="negative offsets"):
        RefreshedDirection(start.vector, harmful=HARMFUL, harmless=BENIGN, every=1, layer=1, positions=(0,))


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


@pytest.mark.parametrize("positions", [(), (-2,)])
def test_adaptive_resume_equals_uninterrupted(tmp_path, positions):
    cfg = _adaptive(direction_refresh_positions=positions)
    full = load_model("drtk-tiny-chat")
    Trainer(full, _data(), cfg, direction=_direction(full), refresh_prompts=(HARMFUL, BENIGN),
            checkpoint_dir=tmp_path / "a").train()
    want = _trainable(full)
    killed = load_model("drtk-tiny-chat")
    with pytest.raises(KeyboardInterrupt):
        Trainer(killed, _data(), cfg, direction=_direction(killed), refresh_prompts=(HARMFUL, BENIGN),
                checkpoint_dir=tmp_path / "b", callbacks=[Kill(3)]).train()
    resumed = load_model("drtk-tiny-chat")
    Trainer(resumed, _data(), cfg, direction=_direction(resumed), refresh_prompts=(HARMFUL, BENIGN),
            checkpoint_dir=tmp_path / "b").train(resume=True)
    got = _trainable(resumed)
    for name in want:
        assert torch.equal(want[name], got[name]), name
