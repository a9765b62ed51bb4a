"""Hub architectures other than Llama, as tiny random models saved to a folder and loaded like a hub
checkpoint: hooks, ablation, weight orthogonalization, LoRA training and export on each."""

import pytest
import torch

from drtk.errors import ConfigError
from drtk.interventions import ablation, hook_scope, orthogonalize
from drtk.models import load_model
from drtk.models.tiny import tiny_hf_model
from drtk.training import Trainer, TrainingSet, helpful_examples, refusal_examples, save_adapter, save_merged
from drtk.training.config import TrainConfig
from tests.conftest import PROMPTS

PRE_NORM = ["qwen2", "mistral", "phi3"]
POST_NORM = ["gemma2", "olmo2"]  # each block's outputs are normalised before the residual stream


@pytest.fixture(scope="module", params=PRE_NORM + POST_NORM)
def arch(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model, tok = tiny_hf_model(architecture=request.param)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return request.param, folder


def _r(model):
    return torch.randn(model.d_model, generator=torch.Generator().manual_seed(3))


def test_ablation_keeps_the_direction_out_of_the_residual_stream(arch):
    name, folder = arch
    model = load_model(str(folder))
    r, batch, seen = _r(model), model.tokenize(PROMPTS), []
    plain = model.forward(batch)
    with ablation(model, r):
        with hook_scope(model, [(f"blocks.{layer}.hook_resid_post", lambda x, hook: seen.append(x) or x)
                                for layer in range(model.n_layers)]):
            ablated = model.forward(batch)
    assert len(seen) == model.n_layers
    assert max((x @ (r / r.norm())).abs().max() for x in seen) < 1e-5
    assert not torch.allclose(plain, ablated, atol=1e-3)


def test_orthogonalization_is_exact_or_refused(arch):
    name, folder = arch
    model = load_model(str(folder))
    r, batch = _r(model), model.tokenize(PROMPTS)
    with ablation(model, r):
        hooked = model.forward(batch)
    if name in PRE_NORM:
        torch.testing.assert_close(orthogonalize(model, r).forward(batch), hooked, atol=1e-4, rtol=1e-4)
        return
    with pytest.raises(ConfigError, match="not exact on this architecture"):
        orthogonalize(model, r)
    approx = orthogonalize(model, r, approximate=True).forward(batch)
    assert not torch.allclose(approx, hooked, atol=1e-4)  # what the refusal protects a user from


def _data():
    return TrainingSet(tuple(refusal_examples(["Build a bomb.", "Pick a lock."], ["I can't help with that."] * 2)
                             + helpful_examples(["Write a haiku.", "Add 2 and 2."], ["Leaves fall.", "Four."])))


def test_full_fine_tuning_checkpoints_and_resumes(arch, tmp_path):
    """Every weight trained once: Phi-3's bridge also holds views of its fused projections, which a
    checkpoint cannot write beside them."""
    name, folder = arch
    cfg = TrainConfig.for_method("deeprefusal", steps=2, batch_size=4, lr=1e-3, lora=False, progress=False,
                                 checkpoint_every=1)
    straight = Trainer(load_model(str(folder)), _data(), cfg, direction=torch.ones(40), checkpoint_dir=tmp_path / "a")
    straight.train()
    once = Trainer(load_model(str(folder)), _data(), cfg.__class__.from_dict(cfg.to_dict() | {"steps": 1}),
                   direction=torch.ones(40), checkpoint_dir=tmp_path / "b")
    once.train()
    resumed = Trainer(load_model(str(folder)), _data(), cfg, direction=torch.ones(40), checkpoint_dir=tmp_path / "b")
    resumed.train(resume=True)
    batch = straight.model.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(resumed.model.forward(batch), straight.model.forward(batch), atol=1e-5, rtol=1e-5)


def test_lora_training_exports_what_was_trained(arch, tmp_path):
    name, folder = arch
    model = load_model(str(folder))
    data = _data()
    cfg = TrainConfig.for_method("deeprefusal", steps=2, batch_size=4, lr=1e-2, lora=True, progress=False,
                                 checkpoint_every=None)
    trainer = Trainer(model, data, cfg, direction=_r(model))
    trainer.train()
    save_merged(model, tmp_path / "model")
    save_adapter(trainer.peft_model, tmp_path / "adapter", base=str(folder))
    batch = model.tokenize(PROMPTS)
    with torch.no_grad():
        trained = model.forward(batch)
        for sub in ("model", "adapter"):
            torch.testing.assert_close(load_model(str(tmp_path / sub)).forward(batch), trained, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(load_model(str(folder)).forward(batch), trained, atol=1e-3)
