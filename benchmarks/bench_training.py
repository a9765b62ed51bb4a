"""A DeepRefusal training step vs a plain step on the same batches (target ratio <= 1.05), and the fused
AdamW step (``TrainConfig.fused_adamw``) vs PyTorch's default one on the same trainable weights (no target:
the time a step saves).

Same model, same optimizer, same batches; the only difference is the ablation hooks (masks sampled per
forward pass, projection at every resid_pre / attn_out / mlp_out site, through backward). Steps are
interleaved (plain, ablated, plain, ...) so load from other processes hits both alike; medians reported.
The two optimizers also alternate, each stepping the trainer's weights with the same fixed gradients.

    python benchmarks/bench_training.py                      # embedded SmolLM2-135M, CPU
    python benchmarks/bench_training.py --model random-1b    # random Llama of realistic width (GPU)
"""

import argparse
import statistics
import time

import torch

from drtk.data import load_prompts, load_texts
from drtk.models import load_model
from drtk.schedules import AblationSchedule
from drtk.training import TrainConfig, Trainer, TrainingSet, helpful_examples, refusal_examples


def _random_model(device: str):
    """A random Llama of realistic width (d_model 2048, 16 layers) wrapped like any drtk model."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformer_lens.model_bridge import TransformerBridge

    from drtk.models import ChatModel
    from drtk.models.chat import chat_format_from_tokenizer
    from drtk.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, pad_token_id=tok.pad_token_id)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hf = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    bridge = TransformerBridge.boot_transformers("random-1b", hf_model=hf, tokenizer=tok, dtype=dtype, device=device)
    return ChatModel(bridge=bridge, tokenizer=tok, chat=chat_format_from_tokenizer(tok), model_id="random-1b")


def deeprefusal_trainer(model, batch_size: int, *, full: bool) -> Trainer:
    """A DeepRefusal trainer (the paper's schedule, p = 0.5) on 16 refusals and 16 helpful answers of shipped
    prompts, with a random direction: what the training benchmarks time."""
    harmful, harmless = load_prompts("harmful").prompts[:16], load_prompts("harmless").prompts[:16]
    refusals = load_texts("refusals")
    answer = "Here is a clear, step-by-step answer with a short explanation of each part and an example. " * 2
    data = TrainingSet(tuple(refusal_examples(harmful, [refusals[i % len(refusals)] for i in range(16)])
                             + helpful_examples(harmless, [answer] * 16)))
    cfg = TrainConfig.for_method("deeprefusal", steps=10_000, batch_size=batch_size, lora=not full,
                                 schedule=AblationSchedule.paper(0.5), progress=False, checkpoint_every=None)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    return Trainer(model, data, cfg, direction=direction)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _random_model(device) if args.model == "random-1b" else load_model(args.model)
    trainer = deeprefusal_trainer(model, args.batch_size, full=args.full)
    cfg = trainer.config
    sampler = trainer.sampler
    times: dict[str, list[float]] = {"plain": [], "deeprefusal": []}
    for i in range(2 * args.steps + 2):
        variant = "plain" if i % 2 == 0 else "deeprefusal"
        trainer.sampler = sampler if variant == "deeprefusal" else None
        trainer.step = (i // 2) % 2  # the same two batches for both variants
        seconds = _timed(trainer.train_step, device)
        if i >= 2:  # the first pair warms up
            times[variant].append(seconds)
    plain, dr = statistics.median(times["plain"]), statistics.median(times["deeprefusal"])
    card = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model {model.model_id}, {'LoRA' if cfg.lora else 'full'}, batch {args.batch_size}, device {card}")
    print(f"{'variant':<14}{'median s/step':>14}{'all':>40}")
    for name, ts in times.items():
        print(f"{name:<14}{statistics.median(ts):>14.3f}{' '.join(f'{t:.2f}' for t in ts):>40}")
    print(f"ratio deeprefusal / plain = {dr / plain:.3f} (target <= 1.05)")

    default, fused = _optimizer_steps(trainer.params, args.steps, device)
    n = sum(p.numel() for p in trainer.params)
    print(f"AdamW step over {n / 1e6:.1f}M trainable weights: default {default:.3f} s, fused {fused:.3f} s "
          f"-> ratio {fused / default:.2f}; {(default - fused) / plain:.0%} of a plain training step saved")


def _timed(fn, device) -> float:
    """Seconds ``fn()`` takes, queued GPU work included."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _optimizer_steps(params, steps, device):
    """Median seconds of a default and of a fused AdamW step, alternated, on the same weights and gradients."""
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator(device=params[0].device).manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * 1e-3
    opts = {"default": torch.optim.AdamW(params, lr=1e-5), "fused": torch.optim.AdamW(params, lr=1e-5, fused=True)}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for i in range(steps + 1):
        for name, opt in opts.items():
            seconds = _timed(opt.step, device)
            if i:  # the first step of each allocates its state
                times[name].append(seconds)
    with torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)
            p.grad = None
    return statistics.median(times["default"]), statistics.median(times["fused"])


if __name__ == "__main__":
    main()
