"""Ablation schedules: pure profiles point by point, validation, mask sampling under padding, resume."""

import dataclasses

import pytest
import torch

from drtk._types import Site
from drtk.errors import ConfigError
from drtk.schedules import AblationSchedule, ScheduleSampler, region_and_depth, sample_masks


def _masks(schedule, attn, start, seed=0, n_layers=4, step=0):
    sites = [Site(layer, p) for layer in range(n_layers) for p in schedule.points]
    return sample_masks(schedule, step=step, sites=sites, attention_mask=attn, response_start=start,
                        generator=torch.Generator().manual_seed(seed), n_layers=n_layers)


def _batch(B=16, T=64, pad="left"):
    """Rows of different lengths; the response starts 10 real tokens into each row."""
    lengths = torch.arange(B) % 20 + 30
    attn = torch.zeros(B, T, dtype=torch.long)
    start = torch.zeros(B, dtype=torch.long)
    for b, n in enumerate(lengths.tolist()):
        off = T - n if pad == "left" else 0
        attn[b, off : off + n] = 1
        start[b] = off + 10
    return attn, start


@pytest.mark.parametrize("p", [0.3, 0.5, 0.7])
def test_paper_mode_realizes_p_squared(p):
    attn, start = _batch(B=32)
    rates = [_masks(AblationSchedule.paper(p), attn, start, seed=s, n_layers=10).realized_rate for s in range(20)]
    assert abs(sum(rates) / len(rates) - p * p) < 0.03


def test_gated_realizes_p_site_times_p_token():
    s = AblationSchedule(p_site=0.8, p_token=0.25, gate_per="row")
    attn, start = _batch(B=32)
    rates = [_masks(s, attn, start, seed=i, n_layers=10).realized_rate for i in range(10)]
    assert abs(sum(rates) / len(rates) - 0.2) < 0.02
    assert s.expected_rate(step=0, n_layers=10) == pytest.approx(0.2)


def test_code_default_p_is_tiny():
    """The authors' code default p = 0.05 ablates only 0.25% of cells; drtk makes that visible."""
    assert AblationSchedule.paper(0.05).expected_rate(step=0, n_layers=30) == pytest.approx(0.0025)


@pytest.mark.parametrize("profile", ["linear", "cosine"])
def test_step_profiles_warm_up_then_decay_monotonically(profile):
    s = AblationSchedule(step_profile=profile, warmup_steps=5, total_steps=50, final_scale=0.2)
    vals = [s.step_scale(t) for t in range(80)]
    assert all(0 <= v <= 1 for v in vals)
    assert all(a < b for a, b in zip(vals[:5], vals[1:6]))  # warm-up rises
    assert vals[5] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(vals[5:], vals[6:]))  # then never rises
    assert vals[50] == pytest.approx(0.2) and vals[79] == pytest.approx(0.2)


def test_step_profile_milestones_and_constant():
    s = AblationSchedule(step_profile="step", milestones=(10, 20), milestone_scales=(0.5, 0.1))
    assert [s.step_scale(t) for t in (0, 9, 10, 19, 20, 99)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    assert AblationSchedule().step_scale(1000) == 1.0


def test_layer_profiles():
    w = AblationSchedule(layer_profile="window", layer_window=(2, 5)).layer_weights_for(8)
    assert w.tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    bump = AblationSchedule(layer_profile="bump", bump_width=2.0).layer_weights_for(12, direction_layer=6)
    assert int(bump.argmax()) == 6 and bump[6] == 1.0
    assert all(bump[i] <= bump[i + 1] for i in range(6)) and all(bump[i] >= bump[i + 1] for i in range(6, 11))
    arr = AblationSchedule(layer_profile="array", layer_weights=(0.0, 0.5, 1.0))
    assert arr.layer_weights_for(3).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match="layer_weights has 3 entries"):
        arr.layer_weights_for(4)
    with pytest.raises(ConfigError, match="bump_center"):
        AblationSchedule(layer_profile="bump").layer_weights_for(4)


def test_depth_profiles():
    d = torch.arange(40)
    decay = AblationSchedule(depth_profile="decay", depth_half_life=4.0, depth_floor=0.1).depth_weights_for(d)
    assert decay[0] == 1.0 and decay[4] == pytest.approx(0.55) and bool((decay[1:] <= decay[:-1]).all())
    assert bool((decay >= 0.1).all())
    first = AblationSchedule(depth_profile="first", depth_first=3).depth_weights_for(d)
    assert first[:3].tolist() == [1, 1, 1] and float(first[3:].sum()) == 0
    arr = AblationSchedule(depth_profile="array", depth_weights=(1.0, 0.5)).depth_weights_for(d)
    assert arr[:3].tolist() == [1.0, 0.5, 0.5]


def test_probability_grid_is_the_product():
    s = AblationSchedule(p_site=0.5, p_token=0.8, layer_profile="window", layer_window=(1, 2),
                         depth_profile="first", depth_first=2)
    g = s.probability_grid(0, 3, 4)
    assert torch.allclose(g, torch.tensor([[0, 0, 0, 0], [0.4, 0.4, 0, 0], [0, 0, 0, 0]]))
    # attacker steps ablate every cell, clean rows none: the grid is what a cell gets on average over steps and rows
    both = dataclasses.replace(s, attack_fraction=0.5, clean_fraction=0.25).probability_grid(0, 3, 4)
    assert torch.allclose(both, 0.75 * (0.5 + 0.5 * g))
    flat = dataclasses.replace(s, depth_profile="flat", attack_fraction=0.5, clean_fraction=0.25)
    assert float(flat.probability_grid(0, 3, 4).mean()) == pytest.approx(flat.expected_rate(step=0, n_layers=3))


@pytest.mark.parametrize("pad", ["left", "right"])
def test_masks_follow_each_rows_response_start(pad):
    """p = 1 on the first 2 response tokens: exactly those cells, under either padding."""
    s = AblationSchedule(p_site=1.0, p_token=1.0, depth_profile="first", depth_first=2)
    attn, start = _batch(B=6, T=60, pad=pad)
    m = _masks(s, attn, start)
    want = torch.zeros_like(attn, dtype=torch.float)
    for b in range(6):
        want[b, start[b] : start[b] + 2] = 1
    assert torch.equal(m.weights[0], want) and torch.equal(m.weights[-1], want)


def test_left_and_right_padding_give_the_same_region_and_depths():
    (la, ls), (ra, rs) = _batch(pad="left"), _batch(pad="right")
    lr, ld = region_and_depth(la, ls, "response")
    rr, rd = region_and_depth(ra, rs, "response")
    assert torch.equal(ld[lr], rd[rr])  # same depths on the same real tokens, in order
    for region in ("prompt", "all"):
        lr, ld = region_and_depth(la, ls, region)
        rr, rd = region_and_depth(ra, rs, region)
        assert torch.equal(ld[lr], rd[rr]) and int(ld[lr].min()) == 0


def test_padding_and_prompt_never_ablated():
    attn, start = _batch()
    m = _masks(AblationSchedule(p_site=1.0, p_token=1.0), attn, start)
    col = torch.arange(attn.shape[1])[None]
    assert float(m.weights[:, attn == 0].sum()) == 0
    assert float(m.weights[:, col < start[:, None]].sum()) == 0
    assert m.realized_rate == 1.0


def test_region_lead_adds_the_tokens_before_the_response_and_counts_depth_from_them():
    attn, start = _batch()
    m = _masks(AblationSchedule(p_site=1.0, p_token=1.0, region_lead=2), attn, start)
    col = torch.arange(attn.shape[1])[None]
    assert torch.equal(m.region, attn.bool() & (col >= start[:, None] - 2))
    assert float(m.weights[:, col < start[:, None] - 2].sum()) == 0 and m.realized_rate == 1.0
    first_only = AblationSchedule(p_site=1.0, p_token=1.0, region_lead=2, depth_profile="array", depth_weights=(1.0, 0.0))
    ablated = _masks(first_only, attn, start).weights[0].bool()
    assert torch.equal(ablated, attn.bool() & (col == start[:, None] - 2))  # depth 0 is the first lead token
    with pytest.raises(ConfigError, match="region_lead"):
        AblationSchedule(region="all", region_lead=2)


def test_region_lead_post_is_the_templates_post_instruction_count():
    attn, start = _batch()
    post = AblationSchedule(p_site=1.0, p_token=1.0, region_lead="post")
    assert AblationSchedule.from_dict(post.to_dict()) == post  # saved configs keep "post", not a number
    with pytest.raises(ConfigError, match="chat template"):
        _masks(post, attn, start)
    sampler = ScheduleSampler(post, n_layers=4, n_post=3)
    assert sampler.schedule.region_lead == 3
    resolved = sampler.sample(attn, start)
    assert torch.equal(resolved.region, _masks(post.resolve_lead(3), attn, start).region)
    assert ScheduleSampler(AblationSchedule(region_lead=1), n_layers=4, n_post=3).schedule.region_lead == 1
    for bad in ("pre", -1, True):
        with pytest.raises(ConfigError, match="region_lead"):
            AblationSchedule(region_lead=bad)


def test_attack_fraction_ablates_everything():
    attn, start = _batch()
    m = _masks(AblationSchedule(p_site=0.1, p_token=0.1, attack_fraction=1.0), attn, start)
    assert m.full and m.realized_rate == 1.0


def test_clean_fraction_leaves_whole_rows_unablated_also_on_attack_steps():
    attn, start = _batch(B=64)
    for attack in (0.0, 1.0):
        base = _masks(AblationSchedule(p_site=1.0, p_token=1.0, attack_fraction=attack), attn, start)
        m = _masks(AblationSchedule(p_site=1.0, p_token=1.0, attack_fraction=attack, clean_fraction=0.25), attn, start)
        clean = m.weights.sum((0, 2)) == 0  # (batch,) rows no site touches
        assert 4 <= int(clean.sum()) <= 32  # about a quarter of 64 rows
        assert torch.equal(m.weights[:, ~clean], base.weights[:, ~clean])  # the others exactly as without it
    s = AblationSchedule(p_site=1.0, p_token=1.0, clean_fraction=0.25)
    assert s.expected_rate(step=0, n_layers=4) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="clean_fraction"):
        AblationSchedule.paper(0.5, clean_fraction=0.5)


def test_gate_per_batch_is_one_draw_per_site():
    attn, start = _batch(B=8)
    m = _masks(AblationSchedule(p_site=0.5, p_token=1.0), attn, start, n_layers=8)
    per_row = m.weights.sum(-1) > 0  # (site, batch)
    assert bool((per_row.all(1) | ~per_row.any(1)).all())


def test_sampler_resume_draws_the_same_masks():
    attn, start = _batch()
    a = ScheduleSampler(AblationSchedule.paper(0.5), n_layers=3, seed=4)
    a.sample(attn, start)
    a.advance()
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()}
    first = a.sample(attn, start).weights
    b = ScheduleSampler(AblationSchedule.paper(0.5), n_layers=3, seed=99)
    b.load_state_dict(state)
    assert b.step == 1 and torch.equal(b.sample(attn, start).weights, first)


def test_sampling_leaves_global_rng_alone():
    before = torch.get_rng_state()
    attn, start = _batch()
    ScheduleSampler(AblationSchedule(), n_layers=3).sample(attn, start)
    assert torch.equal(before, torch.get_rng_state())


def test_round_trip():
    s = AblationSchedule(p_site=0.3, p_token=0.9, layer_profile="array", layer_weights=(0.1, 0.2),
                         step_profile="step", milestones=(3,), milestone_scales=(0.5,))
    assert AblationSchedule.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("kwargs, field", [
    ({"p_site": 1.5}, "p_site"),
    ({"p_token": -0.1}, "p_token"),
    ({"region": "middle"}, "region"),
    ({"points": ("resid_pre", "nope")}, "points"),
    ({"step_profile": "cosine", "warmup_steps": 10, "total_steps": 5}, "total_steps"),
    ({"step_profile": "step", "milestones": (1, 2), "milestone_scales": (0.5,)}, "milestones"),
    ({"layer_profile": "window"}, "layer_window"),
    ({"layer_profile": "array"}, "layer_weights"),
    ({"depth_profile": "decay", "depth_half_life": 0.0}, "depth_half_life"),
    ({"mode": "paper", "p_site": 0.5, "p_token": 0.3}, "p_site=0.5 and p_token=0.3"),
    ({"mode": "paper", "depth_profile": "decay"}, "depth_profile"),
])
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        AblationSchedule(**kwargs)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="p_sight"):
        AblationSchedule.from_dict({"p_sight": 0.5})
