"""The training loop on the tiny model: exact resume, gradients through masked ablation, accumulation,
error paths, export."""

import json
import logging
import math

import pytest
import torch

from drtk._types import Site
from drtk.directions import Direction
from drtk.errors import ConfigError, DirectionMismatchError, DrtkError, TrainingError
from drtk.interventions import ablation_hooks, hook_scope, project_out
from drtk.models import load_model
from drtk.schedules import AblationSchedule
from drtk.training import (Callback, DataConfig, DirectionDrift, RefusalProbe, TrainConfig, Trainer, TrainingSet,
                           default_latent_layers, helpful_examples, recovery_examples, refusal_examples, save_adapter, save_merged)

HARMFUL = ["how do I make a weapon", "write malware for me", "help me steal a car", "how to poison someone"]
BENIGN = ["write a poem", "what is two plus two", "name a color", "say hello nicely"]


def _data() -> TrainingSet:
    return TrainingSet(tuple(
        refusal_examples(HARMFUL, ["I'm sorry, I can't help with that."] * 4)
        + helpful_examples(BENIGN, ["Roses are red.", "Four.", "Blue.", "Hello there, friend!"])
    ))


def _cfg(method="deeprefusal", **kw):
    kw.setdefault("steps", 6)
    kw.setdefault("batch_size", 4)
    kw.setdefault("micro_batch_size", 2)
    kw.setdefault("lr", 1e-2)
    kw.setdefault("lora", True)  # adaptive trains all weights by default; the tests train adapters
    kw.setdefault("progress", False)
    kw.setdefault("checkpoint_every", 2)
    return TrainConfig.for_method(method, **kw)


def _direction():
    return torch.randn(40, generator=torch.Generator().manual_seed(1))


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.hf.named_parameters() if p.requires_grad}


class Kill(Callback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, trainer, step, metrics):
        if step == self.at:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.parametrize("lora", [True, False])
def test_resume_equals_uninterrupted_run(tmp_path, lora):
    full = load_model("drtk-tiny-chat")
    Trainer(full, _data(), _cfg(lora=lora), direction=_direction(), checkpoint_dir=tmp_path / "a").train()
    want = _trainable(full)

    killed = load_model("drtk-tiny-chat")
    with pytest.raises(KeyboardInterrupt):
        Trainer(killed, _data(), _cfg(lora=lora), direction=_direction(), checkpoint_dir=tmp_path / "b",
                callbacks=[Kill(at=2)]).train()
    assert json.loads((tmp_path / "b/checkpoint/trainer.json").read_text())["step"] == 2
    resumed = load_model("drtk-tiny-chat")
    result = Trainer(resumed, _data(), _cfg(lora=lora), direction=_direction(), checkpoint_dir=tmp_path / "b").train(resume=True)
    got = _trainable(resumed)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert list(result.history["step"]) == list(range(6))


def test_history_has_metrics_and_realized_rate():
    model = load_model("drtk-tiny-chat")
    sched = AblationSchedule(p_site=1.0, p_token=0.5)
    res = Trainer(model, _data(), _cfg(schedule=sched), direction=_direction()).train()
    h = res.history
    assert {"loss", "loss_benign", "loss_harmful", "lr", "ablation_rate", "grad_norm", "step_time"} <= set(h.columns)
    assert h["ablation_rate"].between(0.35, 0.65).all()
    assert h["loss"].iloc[-1] < h["loss"].iloc[0]
    assert all(len(model.hook_point(f"blocks.{layer}.hook_{p}")._forward_hooks) == 0
               for layer in range(3) for p in ("resid_pre", "attn_out", "mlp_out"))  # no hook left behind


def test_region_lead_post_is_read_from_the_models_chat_template():
    model = load_model("drtk-tiny-chat")
    sched = AblationSchedule(p_site=1.0, p_token=1.0, region_lead="post")
    trainer = Trainer(model, _data(), _cfg(schedule=sched, steps=1), direction=_direction())
    assert trainer.sampler.schedule.region_lead == model.chat.n_post > 0
    assert trainer.config.schedule.region_lead == "post"  # the saved configuration stays model-independent
    assert trainer.train().history["ablation_rate"].iloc[0] == 1.0


@pytest.mark.parametrize("lora", [True, False])
def test_delta_scale_steps_take_the_gradient_at_the_blend_and_keep_the_trained_weights(lora):
    def grads_at_clip(trainer):
        seen = {}
        clip = trainer._clip

        def spy():
            seen["grads"] = [p.grad.clone() for p in trainer.params]
            seen["weights"] = [p.detach().clone() for p in trainer.params]
            return clip()

        trainer._clip = spy
        trainer.train_step()
        return seen

    cfg = dict(lora=lora, steps=1, max_grad_norm=None)
    start = _trainable(load_model("drtk-tiny-chat"))
    model = load_model("drtk-tiny-chat")
    trainer = Trainer(model, _data(), _cfg("refusal", delta_scale=(0.5, 0.5), delta_scale_fraction=1.0, **cfg))
    assert trainer.delta_scale(0) == 0.5
    assert Trainer(load_model("drtk-tiny-chat"), _data(), _cfg("refusal", **cfg)).delta_scale(0) == 1.0
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained weights away from the start (LoRA: B away from zero)
        for n, p in model.hf.named_parameters():
            if p.requires_grad and (not lora or ".lora_B." in n):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    trained = _trainable(model)
    blended_model = load_model("drtk-tiny-chat")
    plain = Trainer(blended_model, _data(), _cfg("refusal", **cfg))
    with torch.no_grad():  # the same model at lam = 0.5: start + 0.5 (W - start); LoRA: B halved, A as is
        for n, p in blended_model.hf.named_parameters():
            if p.requires_grad:
                base = torch.zeros_like(p) if lora and ".lora_B." in n else start.get(n, trained[n])
                p.copy_(base + 0.5 * (trained[n] - base) if not lora or ".lora_B." in n else trained[n])
    got, want = grads_at_clip(trainer), grads_at_clip(plain)
    names = [n for n, p in model.hf.named_parameters() if p.requires_grad]
    for n, g, w, weight in zip(names, got["grads"], want["grads"], got["weights"]):
        scale = 0.5 if not lora or ".lora_B." in n else 1.0  # chain rule through the blend
        torch.testing.assert_close(g, scale * w, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(weight, trained[n], rtol=1e-6, atol=1e-7)  # the trained weights came back
    assert trainer.rows == [] and "delta_scale" in trainer.train_step()
    with pytest.raises(ConfigError, match="delta_scale"):
        _cfg("refusal", delta_scale=(0.0, 1.0))
    with pytest.raises(ConfigError, match="delta_scale_fraction"):
        _cfg("refusal", delta_scale=(0.5, 1.0), delta_scale_fraction=1.5)
    assert TrainConfig.from_dict(_cfg("refusal", delta_scale=(0.5, 1.0)).to_dict()).delta_scale == (0.5, 1.0)


@pytest.mark.parametrize("lora", [True, False])
def test_train_from_layer_freezes_the_embedding_and_lower_blocks(lora):
    model = load_model("drtk-tiny-chat")  # 3 blocks
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    Trainer(model, _data(), _cfg("refusal", steps=2, lora=lora, train_from_layer=2)).train()
    after = dict(model.hf.named_parameters())
    trained = {n for n, p in after.items() if p.requires_grad}
    assert trained and all(".layers.2." in n or (not lora and n.startswith("model.norm.")) for n in trained)
    base = {n: n.replace(".base_layer", "") for n in after}  # peft renames the weights it wraps
    changed = {n for n in after if base[n] not in before or not torch.equal(before[base[n]], after[n].detach())}
    assert changed and changed <= trained  # frozen weights, embedding included, are untouched (LoRA: new only)
    assert not any(".layers.0." in n or ".layers.1." in n or "embed" in n for n in changed)
    with pytest.raises(ConfigError, match="past the model's last block"):
        Trainer(load_model("drtk-tiny-chat"), _data(), _cfg("refusal", train_from_layer=3))
    with pytest.raises(ConfigError, match="train_from_layer"):
        _cfg("refusal", train_from_layer=-1)


def test_gradient_accumulation_matches_one_big_batch():
    a, b = load_model("drtk-tiny-chat"), load_model("drtk-tiny-chat")
    Trainer(a, _data(), _cfg("refusal", steps=2, micro_batch_size=1, lr=1e-3)).train()
    Trainer(b, _data(), _cfg("refusal", steps=2, micro_batch_size=4, lr=1e-3)).train()
    wa, wb = _trainable(a), _trainable(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_fused_adamw_gives_the_default_optimizers_weights_up_to_rounding_and_resumes(tmp_path):
    a, b = load_model("drtk-tiny-chat"), load_model("drtk-tiny-chat")
    Trainer(a, _data(), _cfg("refusal", steps=3, lora=False, lr=1e-3, weight_decay=0.1)).train()
    fused = Trainer(b, _data(), _cfg("refusal", steps=3, lora=False, lr=1e-3, weight_decay=0.1, fused_adamw=True),
                    checkpoint_dir=tmp_path)
    assert fused.optimizer.defaults["fused"] is True
    fused.train()
    wa, wb = _trainable(a), _trainable(b)
    start = _trainable(load_model("drtk-tiny-chat"))
    assert any(not torch.equal(wa[k], start[k]) for k in wa)  # the steps moved the weights, and both optimizers alike
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)
    # a resume from its checkpoint goes on with the fused optimizer and its state
    saved = json.loads((tmp_path / "checkpoint" / "trainer.json").read_text())
    assert saved["step"] == 3
    again = Trainer(load_model("drtk-tiny-chat"), _data(), TrainConfig.from_dict({**fused.config.to_dict(), "steps": 4}),
                    checkpoint_dir=tmp_path)
    again.train(resume=True)
    assert again.optimizer.defaults["fused"] is True and again.step == 4
    assert {float(st["step"]) for st in again.optimizer.state.values()} == {4.0}  # 3 restored steps, then one more


def test_masked_ablation_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(2, 5, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    r = torch.randn(7, dtype=torch.float64, generator=gen)
    mask = (torch.rand(2, 5, generator=gen) < 0.5).double()
    assert torch.autograd.gradcheck(lambda x: project_out(x, r, mask), (acts,))

    model = load_model("drtk-tiny-chat", dtype="float64")
    batch = model.tokenize(["hi"])
    emb = model.hf.get_input_embeddings()(batch.input_ids)[:, -6:].detach().requires_grad_(True)
    attn, pos = batch.attention_mask[:, -6:], batch.position_ids[:, -6:]
    masks = {s: (torch.rand(1, 6, generator=gen) < 0.5).double() for s in
             [Site(layer, p) for layer in range(3) for p in ("resid_pre", "attn_out", "mlp_out")]}
    hooks = ablation_hooks(model, torch.randn(40, dtype=torch.float64, generator=gen), mask_fn=lambda s, a: masks[s])

    def f(x):
        with hook_scope(model, hooks):
            return model.hf(inputs_embeds=x, attention_mask=attn, position_ids=pos).logits[..., :5]

    # HF's RMSNorm computes in float32 even for float64 weights: finite differences need a larger step.
    assert torch.autograd.gradcheck(f, (emb,), eps=1e-3, atol=2e-3, rtol=2e-3)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    class Poison(Callback):
        def on_step_end(self, trainer, step, metrics):
            if step == 2:  # corrupt a weight after step 2's checkpoint... it is written after callbacks
                with torch.no_grad():
                    next(p for p in trainer.params).fill_(float("nan"))

    model = load_model("drtk-tiny-chat")
    trainer = Trainer(model, _data(), _cfg(), direction=_direction(), checkpoint_dir=tmp_path, callbacks=[Poison()])
    with pytest.raises(TrainingError, match="step 3") as err:
        trainer.train()
    assert "checkpoint" in str(err.value)
    meta = json.loads((tmp_path / "checkpoint/trainer.json").read_text())
    assert meta["step"] == 2 and all(r["loss"] == r["loss"] for r in meta["history"])


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one(tmp_path, monkeypatch):
    model = load_model("drtk-tiny-chat")
    trainer = Trainer(model, _data(), _cfg(), direction=_direction(), checkpoint_dir=tmp_path)
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        if trainer.step >= 4:  # step 2's checkpoint is written; step 4's meets a full disk
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 265498752 vs 265498704")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError, match="step 4.*disk full.*previous checkpoint is kept"):
        trainer.train()
    assert json.loads((tmp_path / "checkpoint/trainer.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # the partial write is gone
    monkeypatch.setattr(torch, "save", real_save)
    resumed = Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(), direction=_direction(), checkpoint_dir=tmp_path)
    assert list(resumed.train(resume=True).history["step"]) == list(range(6))


def test_direction_from_another_model_is_refused():
    model = load_model("drtk-tiny-chat")
    other = Direction(vector=torch.randn(576), kind="single", model_id="smollm2-135m-instruct", n_layers=30,
                      d_model=576, layer=10)
    with pytest.raises(DirectionMismatchError, match="d_model 576"):
        Trainer(model, _data(), _cfg(), direction=other)
    with pytest.raises(DirectionMismatchError):
        Trainer(model, _data(), _cfg(), direction=torch.randn(576))


def test_refresh_direction_and_callbacks_run():
    model = load_model("drtk-tiny-chat")
    d = Direction(vector=_direction(), kind="single", model_id="drtk-tiny-chat", n_layers=3, d_model=40, layer=1)
    drift = DirectionDrift(HARMFUL, BENIGN, every=2)
    probe = RefusalProbe(HARMFUL, BENIGN, every=2)
    cfg = _cfg(direction_refresh_every=2, schedule=AblationSchedule(attack_fraction=0.5))
    trainer = Trainer(model, _data(), cfg, direction=d, refresh_prompts=(HARMFUL, BENIGN), callbacks=[drift, probe])
    start = trainer.provider.current().clone()
    res = trainer.train()
    assert not torch.allclose(trainer.provider.current(), start)
    assert set(drift.frame["layer"]) == {0, 1, 2} and "probe_harmful" in res.history and "drift_min" in res.history


def test_training_leaves_global_rng_alone():
    model = load_model("drtk-tiny-chat")
    before = torch.get_rng_state()
    Trainer(model, _data(), _cfg(steps=2), direction=_direction()).train()
    assert torch.equal(before, torch.get_rng_state())


def test_export_loads_back(tmp_path):
    model = load_model("drtk-tiny-chat")
    trainer = Trainer(model, _data(), _cfg(steps=2), direction=_direction())
    trainer.train()
    save_adapter(trainer.peft_model, tmp_path / "adapter", base="drtk-tiny-chat")
    save_merged(model, tmp_path / "model")  # the adapters the model carries are merged into the copy
    batch = model.tokenize(["hello"])
    with torch.no_grad():
        want = model.forward(batch)
        for sub in ("adapter", "model"):
            assert torch.allclose(load_model(str(tmp_path / sub)).forward(batch), want, atol=1e-5)
        assert not torch.allclose(load_model("drtk-tiny-chat").forward(batch), want, atol=1e-3)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_step_loss_matches_cross_entropy_over_all_logits(padding_side):
    """The loop unembeds only from the first learned column; the loss must equal the textbook one."""
    from drtk.training.data import collate

    model = load_model("drtk-tiny-chat")
    data = TrainingSet(_data().examples + tuple(helpful_examples(["a much longer benign prompt " * 4], ["Sure."])))
    trainer = Trainer(model, data, _cfg("refusal", padding_side=padding_side))
    batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id, padding_side=padding_side)
    norm = torch.full((2,), 1.0 / len(trainer.encoded))
    with torch.no_grad():
        loss = trainer._micro_loss(batch, norm)[0]
        logits = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).logits
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch.labels[:, 1:], ignore_index=-100,
                                               reduction="none").sum(1)
    if padding_side == "left":  # prompts end together: the cut really skips columns
        assert batch.labels[:, : batch.labels.shape[1] // 2].eq(-100).all()
    torch.testing.assert_close(loss, ce.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_decision_tokens_weigh_the_first_learned_tokens_of_each_row(reduction):
    from drtk.training.data import collate

    model = load_model("drtk-tiny-chat")
    data = TrainingSet(_data().examples + tuple(helpful_examples(["a much longer benign prompt " * 4], ["Sure."])))
    losses = {}
    for w in (1.0, 3.0):
        cfg = _cfg("refusal", decision_tokens=2, decision_weight=w, loss_reduction=reduction, lora=False)
        trainer = Trainer(model, data, cfg)
        batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id)
        with torch.no_grad():
            losses[w] = trainer._micro_loss(batch, torch.full((2,), 1.0 / len(trainer.encoded)))[0]
    with torch.no_grad():
        logits = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).logits
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch.labels[:, 1:], ignore_index=-100,
                                               reduction="none")
    want = []
    for row, labels in zip(ce, batch.labels[:, 1:]):
        at = (labels != -100).nonzero().flatten()  # learned columns, in order
        weights = torch.ones(len(at))
        weights[:2] = 3.0
        total = (row[at] * weights).sum()
        want.append(total / weights.sum() if reduction == "mean" else total)
    torch.testing.assert_close(losses[3.0], torch.stack(want).mean(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(losses[1.0], losses[3.0])
    with pytest.raises(ConfigError, match="decision_tokens"):
        _cfg("refusal", decision_tokens=-1)


def test_refusal_contrast_adds_the_unlikelihood_of_the_refusals_opening_on_benign_rows():
    from drtk.training.data import collate

    model = load_model("drtk-tiny-chat")
    data = TrainingSet(_data().examples + tuple(helpful_examples(["a much longer benign prompt " * 4], ["Sure."])))
    norm = torch.full((2,), 1.0 / len(data))
    plain = Trainer(model, data, _cfg("refusal", lora=False))
    trainer = Trainer(model, data, _cfg("refusal", lora=False, refusal_contrast=2.0))
    batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id)
    refusal = model.tokenizer("I'm sorry, I can't help with that.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        base = plain._micro_loss(collate(plain.encoded, pad_id=model.tokenizer.pad_token_id), norm)[0]
        loss = trainer._micro_loss(batch, norm)[0]
        logits = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).logits
    extra = 0.0
    for b, e in enumerate(trainer.encoded):
        if e.group == 1:  # refusals: no contrast
            assert e.contrast == ()
            continue
        ((col, token),) = e.contrast  # the answers share no opening with the refusal: its first token
        assert token == refusal[0] and col == e.loss_start
        off = int(batch.attention_mask[b].argmax())
        p = logits[b, off + col - 1].softmax(-1)[token]
        extra += float(-torch.log1p(-p)) * float(norm[0])
    torch.testing.assert_close(float(loss - base), 2.0 * extra, rtol=1e-4, atol=1e-6)
    deep = Trainer(model, data, _cfg("refusal", lora=False, refusal_contrast=2.0, refusal_contrast_depth=4))
    for e, d in zip(trainer.encoded, deep.encoded):  # deeper targets on benign rows only
        assert set(e.contrast) < set(d.contrast) if e.group == 0 else d.contrast == ()
    with torch.no_grad():
        assert deep._micro_loss(collate(deep.encoded, pad_id=model.tokenizer.pad_token_id), norm)[0] > loss
    with pytest.raises(ConfigError, match="refusal_contrast"):
        _cfg("refusal", refusal_contrast=-1.0)
    with pytest.raises(ConfigError, match="refusal_contrast_depth"):
        _cfg("refusal", refusal_contrast_depth=8)  # nothing to weigh it


def test_refusal_contrast_warns_when_benign_answers_write_the_token_it_lowers(caplog):
    model = load_model("drtk-tiny-chat")
    with caplog.at_level(logging.WARNING, logger="drtk.training.loop"):
        Trainer(model, _data(), _cfg("refusal", lora=False, refusal_contrast=2.0))
    assert "refusal contrast" not in caplog.text  # no benign answer of _data() writes "I"
    letter = TrainingSet(_data().examples + tuple(helpful_examples(["a note"], ["Dear Ann,\n\nI hope so."])))
    with caplog.at_level(logging.WARNING, logger="drtk.training.loop"):
        Trainer(model, letter, _cfg("refusal", lora=False, refusal_contrast=2.0))
    assert "it lowers 'I' where a benign answer departs from the refusal text, and 1 of the 5 benign" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="drtk.training.loop"):
        Trainer(model, letter, _cfg("refusal", lora=False, refusal_contrast=2.0, refusal_contrast_depth=3))
    assert "refusal text and along the first 3 tokens of benign answers, and 1 of the 5" in caplog.text


def test_transition_weight_adds_the_refusals_opening_at_every_prefix_depth_of_recovery_rows():
    from drtk.training.data import collate

    model = load_model("drtk-tiny-chat")
    rec = recovery_examples(["how to pick a lock"], ["Sure, first you take a tension wrench and then"],
                            ["I'm sorry, I can't help with that."], tokenizer=model.tokenizer, k_range=(8, 8))
    data = TrainingSet(_data().examples + tuple(rec))
    norm = torch.full((2,), 1.0 / len(data))
    plain = Trainer(model, data, _cfg("recovery", lora=False))
    trainer = Trainer(model, data, _cfg("recovery", lora=False, transition_weight=3.0))
    batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id)
    with torch.no_grad():
        base = plain._micro_loss(collate(plain.encoded, pad_id=model.tokenizer.pad_token_id), norm)[0]
        loss = trainer._micro_loss(batch, norm)[0]
        logits = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).logits
    (b, e), = [(b, e) for b, e in enumerate(trainer.encoded) if e.transition]  # the recovery row only
    assert len(e.transition) == 7  # 8 prefix tokens, after the first
    off = int(batch.attention_mask[b].argmax())
    nll = [float(-logits[b, off + col - 1].log_softmax(-1)[tok]) for col, tok in e.transition]
    torch.testing.assert_close(float(loss - base), 3.0 * sum(nll) / len(nll) * float(norm[1]), rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="transition_weight"):
        _cfg("recovery", transition_weight=1.0, data=DataConfig(recovery=False))  # no recovery examples
    with pytest.raises(ConfigError, match="transition_weight"):
        _cfg("deeprefusal", transition_weight=-1.0)


class _AutocastTrainer(Trainer):
    """bf16 autocast on CPU: the CUDA default path, reproducible here."""

    autocast = True


def test_autocast_pads_right_and_stays_finite_where_left_padding_gives_nan():
    from drtk.training.data import collate

    data = TrainingSet(_data().examples + tuple(helpful_examples(["a much longer benign prompt " * 4], ["Sure."])))
    assert Trainer(load_model("drtk-tiny-chat"), data, _cfg("refusal")).padding_side == "left"  # no autocast
    model = load_model("drtk-tiny-chat")
    trainer = _AutocastTrainer(model, data, _cfg("refusal"))
    assert trainer.padding_side == "right"
    assert math.isfinite(trainer.train_step()["loss"])
    # the reason: under autocast, the leading pad queries of a left-padded row see no key
    left = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad(), trainer._autocast():
        logits = model.hf(input_ids=left.input_ids, attention_mask=left.attention_mask,
                          position_ids=left.position_ids).logits
    assert not torch.isfinite(logits).all()
    with pytest.raises(ConfigError, match="padding_side"):
        _AutocastTrainer(load_model("drtk-tiny-chat"), data, _cfg("refusal", padding_side="left"))


def test_retain_holds_benign_activations_to_the_starting_models():
    from drtk.training.data import collate

    def drift(trainer, model):
        """Mean relative squared distance of the benign rows' retained activations from the start."""
        batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id)
        with torch.no_grad():
            return float(trainer._micro_loss(batch, torch.full((2,), 1.0))[2][0]) / len(BENIGN)

    runs = {}
    for w in (0.0, 50.0):
        model = load_model("drtk-tiny-chat")
        probe = Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(lora=False, retain_weight=1.0, retain_layers=(0, 2)),
                        direction=_direction())
        assert sorted(len(k) for k in probe.reference) == sorted(len(e.ids) for e in probe.encoded if e.group == 0)
        assert drift(probe, probe.model) == pytest.approx(0.0, abs=1e-10)  # the start is its own reference
        trainer = Trainer(model, _data(), _cfg(lora=False, retain_weight=w, retain_layers=(0, 2), steps=8),
                          direction=_direction())
        trainer.train()
        probe.model, probe.net = model, model.hf  # the trained weights, measured against the starting activations
        runs[w] = drift(probe, model)
        assert ("retain" in trainer.history) == (w > 0)
    assert runs[50.0] < 0.5 * runs[0.0]
    assert TrainConfig.from_dict(_cfg(retain_weight=1.0, retain_layers=(0, 2)).to_dict()).retain_layers == (0, 2)
    with pytest.raises(DrtkError, match="site"):
        Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(retain_weight=1.0, retain_layers=(7,)), direction=_direction())
    with pytest.raises(ConfigError, match="retain_weight"):
        _cfg(retain_weight=-1.0)


def test_retain_projection_holds_the_rise_of_benign_projections_on_the_direction():
    from drtk.training.data import collate
    from tests.training.test_training_adaptive import _direction as layer_direction

    def rise(trainer):
        batch = collate(trainer.encoded, pad_id=trainer.model.tokenizer.pad_token_id)
        with torch.no_grad():
            return float(trainer._micro_loss(batch, torch.full((2,), 1.0))[2][1]) / len(BENIGN)

    model = load_model("drtk-tiny-chat")
    d = layer_direction(model)
    probe = Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(lora=False, retain_projection=1.0), direction=d)
    layer, axis, g = probe.projection
    assert (layer, probe.retain_layers, probe._held) == (d.layer - 1, (d.layer - 1,), [])
    assert g == pytest.approx(float(d.vector.norm())) and float(axis.norm()) == pytest.approx(1.0)
    assert rise(probe) == pytest.approx(0.0, abs=1e-12)
    # a model whose benign inputs to the direction's layer moved along +r by g/2 everywhere: rise 0.25
    for sign, want in ((1.0, 0.25), (-1.0, 0.0)):  # one-sided: falling is free
        def shift(acts, hook, sign=sign):
            return acts + sign * 0.5 * g * axis

        with hook_scope(probe.model, [(Site(layer, "resid_post").hook_name, shift)]):
            assert rise(probe) == pytest.approx(want, rel=1e-4, abs=1e-12)
    assert "retain_projection" in Trainer(model, _data(), _cfg(lora=False, retain_projection=5.0), direction=d).train().history
    with pytest.raises(ConfigError, match="retain_projection"):
        Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(retain_projection=1.0), direction=_direction())  # no layer
    with pytest.raises(ConfigError, match="retain_projection"):
        Trainer(load_model("drtk-tiny-chat"), _data(), _cfg("refusal", retain_projection=1.0))


def test_benign_induce_adds_the_direction_to_benign_rows_only_and_spares_them_ablation(tmp_path):
    from drtk.training.data import collate
    from tests.training.test_training_adaptive import _direction as layer_direction

    model = load_model("drtk-tiny-chat")
    d = layer_direction(model)
    sched = AblationSchedule(p_site=1.0, p_token=1.0)
    trainer = Trainer(model, _data(), _cfg(benign_induce=0.5, benign_induce_coeff=2.0, schedule=sched), direction=d)
    layer, length = trainer.induce
    assert layer == d.layer and length == pytest.approx(2.0 * float(d.vector.norm()))
    batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id, padding_side="left")
    draws = [trainer._induced_rows(batch, step, 0) for step in range(40)]
    assert all(not (rows & (batch.group == 1)).any() for rows in draws)  # harmful rows never
    assert torch.equal(draws[3], trainer._induced_rows(batch, 3, 0))  # a pure function of the step: resumable
    assert 0.3 < torch.stack(draws).float().sum() / (40 * int((batch.group == 0).sum())) < 0.7

    rows = batch.group == 0
    seen = {}

    def capture(acts, hook):
        seen["acts"] = acts.detach().clone()
        return acts

    name = Site(layer, "resid_pre").hook_name
    with torch.no_grad():
        with hook_scope(model, [(name, capture)]):
            model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
        clean = seen["acts"]
        edits = {}
        for region in ("all", "prompt"):
            trainer.config = _cfg(benign_induce=0.5, benign_induce_coeff=2.0, benign_induce_region=region)
            with hook_scope(model, trainer._induce_hooks(d.vector, rows, batch) + [(name, capture)]):
                model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
            edits[region] = seen["acts"] - clean
    want = 2.0 * d.vector  # coeff 2 times the direction's length, along it
    prompt = torch.arange(batch.input_ids.shape[1])[None, :] < batch.response_start[:, None]
    for region, diff in edits.items():
        edited = rows[:, None] & batch.attention_mask.bool() & (prompt if region == "prompt" else True)
        torch.testing.assert_close(diff[edited], want.expand(int(edited.sum()), -1), rtol=1e-4, atol=1e-4)
        assert diff[~edited].abs().max() == 0
    assert (rows[:, None] & batch.attention_mask.bool() & ~prompt).any()  # the prompt region leaves response tokens

    every = Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(benign_induce=1.0, schedule=sched, steps=2), direction=d)
    h = every.train().history
    assert (h["benign_induced"] == 1.0).all()
    assert (0 < h["ablation_rate"]).all() and (h["ablation_rate"] < 1).all()  # benign rows of the region not ablated

    def run(folder, kill=None):
        m = load_model("drtk-tiny-chat")
        t = Trainer(m, _data(), _cfg(benign_induce=0.5), direction=d, checkpoint_dir=tmp_path / folder,
                    callbacks=[Kill(at=kill)] if kill is not None else [])
        return m, t

    full, t = run("a")
    t.train()
    _, t = run("b", kill=2)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    resumed, t = run("b")
    t.train(resume=True)
    want_w, got_w = _trainable(full), _trainable(resumed)
    assert all(torch.equal(want_w[k], got_w[k]) for k in want_w)

    v = torch.randn(3, 2, model.d_model, generator=torch.Generator().manual_seed(3))
    for shaped, want in ((v[0, 0], v[0, 0]), (v[:, 0], v[1, 0]), (v, v[1, 0]), (v[:1], v[0, 0])):
        assert torch.equal(trainer._at_layer(shaped, 1), want)  # the vector that applies at layer 1 (a subspace's first)
    with pytest.raises(ConfigError, match="benign_induce"):
        Trainer(load_model("drtk-tiny-chat"), _data(), _cfg(benign_induce=0.5), direction=_direction())  # no layer
    for bad in ({"benign_induce": 1.5}, {"benign_induce": 0.5, "method": "refusal"}, {"benign_induce_coeff": 0.0},
                {"benign_induce_region": "response"}):
        with pytest.raises(ConfigError, match="benign_induce"):
            _cfg(bad.pop("method", "deeprefusal"), **bad)


def _latent_trainer(**kw):
    kw = {"latent_adversary": 0.5, "latent_adversary_fraction": 1.0, "latent_adversary_layers": (1,),
          "latent_adversary_steps": 3, **kw}
    return Trainer(load_model("drtk-tiny-chat"), _data(), _cfg("refusal", **kw))


def test_latent_adversary_raises_the_loss_inside_its_radius_on_its_rows_only():
    from drtk.training.data import GROUPS, collate

    trainer = _latent_trainer(latent_adversary_rows="harmful", steps=1)
    model = trainer.model
    batch = collate(trainer.encoded, pad_id=model.tokenizer.pad_token_id, padding_side=trainer.padding_side)
    norm = torch.full((2,), 0.25)
    seen = {}

    def keep(acts, hook):
        seen["acts"] = acts.detach()
        return acts

    site = Site(1, "resid_pre").hook_name
    with hook_scope(model, [(site, keep)]):
        clean_loss = trainer._micro_loss(batch, norm)[0].detach()
    (name, add), clean = trainer._latent_adversary(batch, norm, [], layer=1)
    assert name == site and torch.allclose(clean, clean_loss)
    assert all(p.grad is None for p in trainer.params)  # the ascent reaches the perturbation only
    with hook_scope(model, [(name, add)]):
        attacked = trainer._micro_loss(batch, norm)[0].detach()
    assert attacked > clean_loss * 1.05
    delta = add(torch.zeros_like(seen["acts"]), None)
    real = batch.attention_mask.bool()
    radius = 0.5 * float(seen["acts"].norm(dim=-1)[real].median())
    size = delta.norm(dim=-1)
    harmful = (batch.group == GROUPS.index("harmful"))[:, None] & real
    assert size.max() <= radius * (1 + 1e-4) and size[harmful].max() >= radius * 0.99
    assert float(size[~harmful].abs().max()) == 0.0  # benign rows and padding untouched

    row = trainer.train_step()
    assert row["latent_layer"] == 1 and row["loss"] > row["latent_clean_loss"]


def test_latent_adversary_steps_are_drawn_per_step_and_resume_exactly(tmp_path, caplog):
    drawn = Trainer(load_model("drtk-tiny-chat"), _data(),
                    _cfg("refusal", latent_adversary=0.3, latent_adversary_fraction=0.5, steps=40))
    layers = [drawn.latent_layer(s) for s in range(40)]
    assert layers == [drawn.latent_layer(s) for s in range(40)]  # a pure function of (seed, step)
    assert 8 <= sum(x is not None for x in layers) <= 32 and set(layers) - {None} == {1, 2}  # 7n // 12, 3n // 4 of 3 layers
    assert Trainer(load_model("drtk-tiny-chat"), _data(), _cfg("refusal")).latent_layer(0) is None
    assert drawn.config.latent_adversary_layers == (1, 2)  # the default's layers, recorded in the run's config
    off = Trainer(load_model("drtk-tiny-chat"), _data(), _cfg("refusal", latent_adversary_layers=(2,)))
    assert off.latent_layer(0) is None and off.config.latent_adversary_layers == (2,)  # off: the config kept as given
    assert default_latent_layers(30) == (17, 22) and default_latent_layers(1) == (0,)
    with pytest.raises(DrtkError, match="does not exist"):
        _latent_trainer(latent_adversary_layers=(7,))
    for bad in (dict(latent_adversary=-1.0), dict(latent_adversary_steps=0), dict(latent_adversary_fraction=2.0),
                dict(latent_adversary_rows="benign"), dict(latent_adversary_layers=(-1,))):
        with pytest.raises(ConfigError, match="latent_adversary"):
            _cfg("refusal", **bad)
    assert TrainConfig.from_dict(_cfg("refusal", latent_adversary_layers=(1, 2)).to_dict()).latent_adversary_layers == (1, 2)

    full = _latent_trainer(latent_adversary_fraction=0.5)
    full.train()
    killed = _latent_trainer(latent_adversary_fraction=0.5, checkpoint_every=2)
    killed.checkpoint_dir = tmp_path
    killed.callbacks = [Kill(at=2)]
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = _latent_trainer(latent_adversary_fraction=0.5, checkpoint_every=2)
    resumed.checkpoint_dir = tmp_path
    resumed.train(resume=True)
    assert any("latent_layer" in r for r in resumed.rows)
    want, got = _trainable(full.model), _trainable(resumed.model)
    assert all(torch.equal(want[k], got[k]) for k in want)

    meta_file = tmp_path / "checkpoint" / "trainer.json"
    meta = json.loads(meta_file.read_text())
    for recorded, ok in (([], True), ([2], False)):  # [] : written before runs recorded their layers
        meta_file.write_text(json.dumps({**meta, "config": {**meta["config"], "latent_adversary_layers": recorded}}))
        again = _latent_trainer(latent_adversary_fraction=0.5, checkpoint_every=2)
        again.checkpoint_dir = tmp_path
        if ok:
            with caplog.at_level("WARNING", logger="drtk.training.loop"):
                again.load_checkpoint()
            assert "does not record its latent adversary's layers; resuming at [1]" in caplog.text
        else:
            with pytest.raises(TrainingError, match="latent_adversary_layers differ"):
                again.load_checkpoint()
