"""A tiny random chat model for tests: Llama architecture (others on request), ChatML template, every
dimension distinct.

Widths are chosen so that no two axes share a size (layers 3, KV heads 2, heads 4, head size 10,
d_model 40, d_mlp 56, vocabulary 263): a transposed axis fails loudly instead of broadcasting.
"""

import torch

TINY_MODEL_NAME = "drtk-tiny-chat"

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<unk>", "<extra>", "<extra2>"]


def tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + 7 specials = 263) with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    # ByteLevel.alphabet() comes back in a different order on every call: sort it, or the vocabulary
    # (and so every token id) changes from one load to the next.
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(_SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.name_or_path = TINY_MODEL_NAME
    # TransformerLens re-creates tokenizers from `init_kwargs` unless they already add BOS; an in-memory
    # tokenizer has nothing to re-create from, so mark it as such (drtk itself never auto-adds BOS).
    tok.init_kwargs.update(name_or_path=TINY_MODEL_NAME, add_bos_token=True)
    return tok


# Hugging Face config and model classes, and what each needs besides the shared tiny widths: the
# architectures drtk is checked on (pre-norm ones, and Gemma 2 / OLMo 2, which normalise each block's
# outputs before the residual stream).
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"query_pre_attn_scalar": 10, "sliding_window": 16}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
}


def tiny_hf_model(seed: int = 0, *, tie_word_embeddings: bool = True, architecture: str = "llama"):
    """A randomly initialised causal LM with the tiny widths (``LlamaForCausalLM`` unless ``architecture``
    names another of :data:`ARCHITECTURES`), built from a local generator."""
    import transformers

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    config_cls, model_cls, extra = ARCHITECTURES[architecture]
    tok = tiny_tokenizer()
    config = getattr(transformers, config_cls)(
        vocab_size=len(tok),
        hidden_size=40,
        intermediate_size=56,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        rms_norm_eps=1e-5,
        **({} if architecture == "phi3" else {"head_dim": 10}),  # Phi-3 derives it (40 / 4)
        **extra,
    )
    with torch.random.fork_rng(devices=[]):  # the constructor's default init draws from the global RNG
        model = getattr(transformers, model_cls)(config)
    # Re-initialise from a private generator: the global RNG stream stays untouched and the model is
    # the same for the same seed. Norm gains are jittered so folding them is visible in tests.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=gen))
    return model, tok
