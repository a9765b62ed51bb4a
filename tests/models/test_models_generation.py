from contextlib import contextmanager

import pytest
import torch

from drtk._types import Site
from drtk.generation import GenerationConfig, generate
from tests.conftest import PROMPTS


def _greedy_without_cache(model, prompt, n):
    ids = model.tokenize([prompt]).input_ids
    out = []
    for _ in range(n):
        nxt = model.hf(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1)
        out.append(int(nxt))
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return out


def test_cached_generation_matches_uncached_greedy(tiny):
    # Guards the transformers/TransformerLens pairing: with a mismatched pair the attention bridge
    # drops the KV cache and every decoding step attends to itself alone.
    cfg = GenerationConfig(max_new_tokens=8)
    from drtk.generation import generate_ids

    batch = tiny.tokenize([PROMPTS[0]])
    cached = generate_ids(tiny, batch.input_ids, batch.attention_mask, cfg)[0].tolist()
    assert cached == _greedy_without_cache(tiny, PROMPTS[0], 8)


def test_batched_generation_equals_one_at_a_time(tiny):
    cfg = GenerationConfig(max_new_tokens=6, batch_size=4)
    batched = generate(tiny, PROMPTS, config=cfg)
    singles = [generate(tiny, [p], config=cfg)[0] for p in PROMPTS]
    assert batched == singles


def test_prefill_starts_the_assistant_turn(tiny):
    cfg = GenerationConfig(max_new_tokens=5)
    with_prefill = generate(tiny, PROMPTS[:1], prefills=["Sure, here"], config=cfg)[0]
    direct = generate(tiny, [], texts=[tiny.chat.format(PROMPTS[0], "Sure, here")], config=cfg)[0]
    assert with_prefill == direct
    assert not with_prefill.startswith("Sure, here")


def test_sampling_is_reproducible_and_leaves_global_rng_alone(tiny):
    cfg = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=1.5)
    state = torch.get_rng_state()
    a = generate(tiny, PROMPTS, config=cfg, generator=torch.Generator().manual_seed(7))
    b = generate(tiny, PROMPTS, config=cfg, generator=torch.Generator().manual_seed(7))
    c = generate(tiny, PROMPTS, config=cfg, generator=torch.Generator().manual_seed(8))
    assert a == b and a != c
    assert torch.equal(state, torch.get_rng_state())


def test_generation_config_validates():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)


def test_a_prompt_past_the_context_is_refused_with_its_length(tiny):
    from drtk.errors import ConfigError

    assert tiny.n_ctx == 512
    fits = "a" * 400  # the tiny model's tokenizer spells most text one byte per token
    assert len(generate(tiny, [fits], config=GenerationConfig(max_new_tokens=4))) == 1
    with pytest.raises(ConfigError, match="plus 200 new tokens passes 'drtk-tiny-chat''s context of 512 tokens"):
        generate(tiny, ["hi", fits], config=GenerationConfig(max_new_tokens=200))


def test_unhooked_passes_run_the_plain_modules_and_match_the_bridged_model(tiny):
    """Without hooks, forward passes and decoding run the Hugging Face modules with the bridge's components
    taken out: the same logits and tokens as through the bridge (a no-op hook keeps it in), cached decoding
    included, and the bridged tree back afterwards, also after an error."""
    from drtk.generation import generate_ids

    tree = [(n, type(m)) for n, m in tiny.hf.named_modules()]
    assert not tiny.hooked(), [n for n, m in tiny.hf.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    with tiny.plain() as hf:
        inside = [type(m).__name__ for m in hf.modules()]
    assert not any("Bridge" in t or t == "HookPoint" for t in inside) and len(inside) < len(tree) / 2
    with pytest.raises(RuntimeError, match="boom"), tiny.plain():
        raise RuntimeError("boom")
    assert [(n, type(m)) for n, m in tiny.hf.named_modules()] == tree

    calls = []
    noop = lambda x, hook: calls.append(1)  # noqa: E731  (returns None: the activation is unchanged)
    batch = tiny.tokenize(PROMPTS)
    cfg = GenerationConfig(max_new_tokens=8)
    plain_logits, plain_ids = tiny.forward(batch), generate_ids(tiny, batch.input_ids, batch.attention_mask, cfg)
    assert not calls
    with tiny.bridge.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", noop)]):
        assert tiny.hooked()
        with tiny.plain() as hf:
            assert any(type(m).__name__ == "HookPoint" for m in hf.modules())
        bridged_logits = tiny.forward(batch)
        bridged_ids = generate_ids(tiny, batch.input_ids, batch.attention_mask, cfg)
    assert len(calls) == 1 + 1 + 7  # the forward, then the prompt and 7 decoding steps through the bridge
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(plain_logits[mask], bridged_logits[mask], rtol=1e-5, atol=1e-5)
    assert torch.equal(plain_ids, bridged_ids)
    assert not tiny.hooked()


def test_block_site_edits_run_on_the_plain_modules_and_match_the_hook_points(tiny):
    """Hooks on a block's input and output and its attention and MLP outputs go on the Hugging Face modules:
    inside them a pass runs without the bridge's components, with the logits, decoded tokens and gradients
    of the same edit on the bridge's hook points (per-cell masks included), and so does a pass that another
    hook point keeps on the bridge (whose rotary attention does not call the module it wraps)."""
    from drtk.attacks.base import count_forwards
    from drtk.generation import generate_ids
    from drtk.interventions import ablation_hooks, hook_scope

    direction = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(5)) * 3
    batch = tiny.tokenize(PROMPTS)
    cfg = GenerationConfig(max_new_tokens=8)

    def mask_fn(site, acts):  # a fixed random half of the cells, different per site
        g = torch.Generator().manual_seed(hash(site.hook_name) % 1000)
        return (torch.rand(acts.shape[:2], generator=g) > 0.5).float()

    def run(scope):
        hooks = ablation_hooks(tiny, direction, mask_fn=mask_fn)
        hooks.append(("blocks.2.hook_resid_post", lambda x, hook: x * 1.5))
        with scope(hooks):
            with tiny.plain() as hf:
                wrappers = sum(1 for m in hf.modules() if m._modules.get("_original_component") is not None)
            ids = generate_ids(tiny, batch.input_ids, batch.attention_mask, cfg)
            tiny.hf.zero_grad()
            logits = tiny.forward(batch)
            logits[batch.attention_mask.bool()].logsumexp(-1).sum().backward()
        grad = tiny.hf.get_input_embeddings().weight.grad.clone()
        tiny.hf.zero_grad()
        return wrappers, ids, logits.detach(), grad

    @contextmanager
    def mixed(hooks):  # a hook point elsewhere keeps the whole pass on the bridge: the edits must hold there too
        with hook_scope(tiny, hooks), hook_scope(tiny, [("hook_embed", lambda x, hook: None)]):
            yield

    native = run(lambda hooks: hook_scope(tiny, hooks))
    bridged = run(lambda hooks: tiny.bridge.hooks(fwd_hooks=hooks))
    both = run(mixed)
    assert native[0] == 0 and bridged[0] > 0 and both[0] > 0
    mask = batch.attention_mask.bool()
    for other in (bridged, both):
        assert torch.equal(native[1], other[1])
        torch.testing.assert_close(native[2][mask], other[2][mask], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(native[3], other[3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(native[2][mask], tiny.forward(batch).detach()[mask])  # the edit did something
    assert not tiny.hooked()

    with count_forwards(tiny) as calls, tiny.plain() as hf:  # counting passes keeps them plain
        assert not any(type(m).__name__ == "HookPoint" for m in hf.modules())
        tiny.forward(batch)
    assert calls[0] == 1
    with hook_scope(tiny, [("hook_embed", lambda x, hook: x), ("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        with tiny.plain() as hf:
            assert any(type(m).__name__ == "HookPoint" for m in hf.modules())
    assert not tiny.hooked()


def test_a_reader_registered_after_an_edit_at_the_same_site_sees_the_edited_activation(tiny):
    """Block-input edits act inside the block: readers through `hook_scope` and `run_to` come after them
    (the edit below removes the direction there, so what they read has no component along it)."""
    from drtk.interventions import ablation, hook_scope, unit

    direction = unit(torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(6)))
    batch = tiny.tokenize(PROMPTS)
    mask = batch.attention_mask.bool()
    seen = {}

    def grab(name):
        return lambda x, hook: seen.__setitem__(name, x.detach())

    sites = [Site(1, "resid_pre"), Site(1, "attn_out")]
    with ablation(tiny, direction, sites=sites):
        with hook_scope(tiny, [("blocks.1.hook_resid_pre", grab("scoped"))]):
            tiny.forward(batch)
        tiny.run_to(batch, "blocks.1.hook_attn_out",
                    [("blocks.1.hook_resid_pre", grab("pre")), ("blocks.1.hook_attn_out", grab("attn"))])
    assert set(seen) == {"scoped", "pre", "attn"}
    for x in seen.values():
        assert (x[mask] @ direction).abs().max() < 1e-4
    with hook_scope(tiny, [("blocks.1.hook_resid_pre", grab("unedited"))]):
        tiny.forward(batch)
    assert (seen["unedited"][mask] @ direction).abs().max() > 1e-2  # without the edit it is there
