import pytest
import torch

from drtk._types import Site
from drtk.errors import DirectionMismatchError, DrtkError
from drtk.generation import GenerationConfig, generate
from drtk.interventions import ablation, ablation_hooks, actadd, hook_scope, orthogonalize
from tests.conftest import PROMPTS


def _direction(d, seed=3):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _n_hooks(model):
    """Forward hooks anywhere in the model: on hook points or (edits of block sites) on the HF modules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())


def test_ablation_changes_logits_and_is_removed(tiny):
    batch = tiny.tokenize(PROMPTS)
    base = tiny.last_logits(batch)
    n0 = _n_hooks(tiny)
    with ablation(tiny, _direction(tiny.d_model)):
        assert _n_hooks(tiny) == n0 + 2 * 3 * tiny.n_layers  # each site: on the HF module and on its bridge component
        abl = tiny.last_logits(batch)
    assert _n_hooks(tiny) == n0
    assert not torch.allclose(base, abl)
    torch.testing.assert_close(tiny.last_logits(batch), base)


def test_hooks_removed_after_exception(tiny):
    n0 = _n_hooks(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with ablation(tiny, _direction(tiny.d_model)):
            raise RuntimeError("boom")
    assert _n_hooks(tiny) == n0


def test_unknown_site_registers_nothing(tiny):
    n0 = _n_hooks(tiny)
    with pytest.raises(DrtkError, match="layers 0..2"):
        with hook_scope(tiny, [("blocks.0.hook_resid_pre", lambda x, hook: x), ("blocks.9.hook_resid_pre", lambda x, hook: x)]):
            pass
    assert _n_hooks(tiny) == n0
    with pytest.raises(DrtkError, match="does not exist"):
        ablation_hooks(tiny, _direction(tiny.d_model), sites=[Site(5, "resid_pre")])


def test_direction_from_another_model_is_rejected(tiny):
    with pytest.raises(DirectionMismatchError, match="d_model 576 but the model has 40"):
        with ablation(tiny, torch.randn(576)):
            pass
    with pytest.raises(DirectionMismatchError, match="3 layers"):
        with ablation(tiny, torch.randn(7, 40)):
            pass


def test_residual_is_orthogonal_to_direction_under_ablation(tiny):
    r = _direction(tiny.d_model)
    seen = []
    batch = tiny.tokenize(PROMPTS)
    with ablation(tiny, r):
        with hook_scope(tiny, [(f"blocks.{layer}.hook_resid_post", lambda x, hook: seen.append(x) or x) for layer in range(3)]):
            tiny.last_logits(batch)
    for x in seen:
        assert (x @ (r / r.norm())).abs().max() < 1e-4


def test_activation_ablation_equals_weight_orthogonalization(tiny):
    r = _direction(tiny.d_model)
    batch = tiny.tokenize(PROMPTS)
    with ablation(tiny, r):
        hooked = tiny.forward(batch)
    edited = orthogonalize(tiny, r)
    torch.testing.assert_close(edited.forward(batch), hooked, atol=1e-4, rtol=1e-4)
    # the original is untouched
    assert not torch.allclose(tiny.forward(batch), hooked)


def test_inplace_orthogonalization_undoes(tiny):
    batch = tiny.tokenize(PROMPTS)
    before = tiny.forward(batch)
    undo = orthogonalize(tiny, _direction(tiny.d_model), inplace=True)
    assert not torch.allclose(tiny.forward(batch), before)
    undo()
    torch.testing.assert_close(tiny.forward(batch), before)
    assert tiny.hf.get_output_embeddings().weight is tiny.hf.get_input_embeddings().weight


def test_per_layer_and_subspace_ablation_shapes(tiny):
    batch = tiny.tokenize(PROMPTS[:2])
    per_layer = torch.randn(3, 40, generator=torch.Generator().manual_seed(4))
    subspace = torch.randn(3, 2, 40, generator=torch.Generator().manual_seed(5))
    with ablation(tiny, per_layer):
        a = tiny.last_logits(batch)
    with ablation(tiny, subspace):
        b = tiny.last_logits(batch)
    with ablation(tiny, subspace[:, :1]):
        c = tiny.last_logits(batch)
    assert not torch.allclose(a, b)
    with ablation(tiny, subspace[:, 0]):
        torch.testing.assert_close(tiny.last_logits(batch), c, atol=1e-4, rtol=1e-4)


def test_actadd_adds_at_its_layer(tiny):
    v = _direction(tiny.d_model)
    seen = {}
    with actadd(tiny, v, layers=[1], coeff=2.0):
        with hook_scope(tiny, [("blocks.1.hook_resid_pre", lambda x, hook: seen.update(after=x) or x)]):
            tiny.last_logits(tiny.tokenize(PROMPTS[:1]))
    with hook_scope(tiny, [("blocks.1.hook_resid_pre", lambda x, hook: seen.update(before=x) or x)]):
        tiny.last_logits(tiny.tokenize(PROMPTS[:1]))
    torch.testing.assert_close(seen["after"] - seen["before"], 2.0 * v.expand_as(seen["before"]), atol=1e-5, rtol=1e-5)


def test_ablation_is_differentiable(tiny):
    batch = tiny.tokenize(PROMPTS[:2])
    r = _direction(tiny.d_model)
    with ablation(tiny, r):
        loss = tiny.forward(batch).logsumexp(-1).mean()
        loss.backward()
    grads = [p.grad for p in tiny.hf.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    tiny.hf.zero_grad(set_to_none=True)


def test_generation_under_ablation_matches_orthogonalized_model(tiny):
    r = _direction(tiny.d_model)
    cfg = GenerationConfig(max_new_tokens=6)
    with ablation(tiny, r):
        hooked = generate(tiny, PROMPTS, config=cfg)
    assert hooked == generate(orthogonalize(tiny, r), PROMPTS, config=cfg)


@pytest.mark.embedded
def test_embedded_ablation_equals_orthogonalization(embedded):
    r = torch.randn(embedded.d_model, generator=torch.Generator().manual_seed(0))
    batch = embedded.tokenize(PROMPTS)
    with ablation(embedded, r):
        hooked = embedded.last_logits(batch)
    edited = orthogonalize(embedded, r)
    torch.testing.assert_close(edited.last_logits(batch), hooked, atol=2e-3, rtol=1e-3)
    del edited
