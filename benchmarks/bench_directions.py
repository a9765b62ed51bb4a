"""Foundation speed targets, measured side by side in one run (the ratios are the result).

1. Activation collection for direction finding vs a plain Hugging Face forward pass of the same batches
   with ``output_hidden_states=True`` (target: <= 1.15x), and peak memory vs number of prompts (target:
   flat; measured in fresh subprocesses).
2. Batched greedy generation under full directional ablation vs plain Hugging Face ``generate`` on the
   same model weights and batch (target: >= 0.8x the tokens/s).

    python benchmarks/bench_directions.py [--model smollm2-135m-instruct] [--n 64] [--batch 32]
"""

import argparse
import subprocess
import sys
import time

import torch


def _plain_hf(model):
    """An unhooked Hugging Face model with the same weights (the bridge wraps its own copy in place)."""
    from transformers import AutoModelForCausalLM

    from drtk.models import hf_state_dict

    plain = AutoModelForCausalLM.from_config(model.hf.config, attn_implementation="eager", dtype=model.dtype)
    plain.load_state_dict(hf_state_dict(model), strict=False)
    plain.tie_weights()
    return plain.to(model.device).eval()


def _time(fn, repeats=3):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_collection(model, plain, prompts, batch):
    from drtk.directions import collect_post_instruction

    batches = [model.tokenize(prompts[i : i + batch]) for i in range(0, len(prompts), batch)]

    @torch.no_grad()
    def hf_pass():
        for b in batches:
            plain(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                  output_hidden_states=True, use_cache=False)

    t_hf = _time(hf_pass)
    t_drtk = _time(lambda: collect_post_instruction(model, prompts, batch_size=batch))
    return t_drtk, t_hf


def bench_generation(model, plain, prompts, batch, new_tokens):
    from drtk.generation import GenerationConfig, generate_ids
    from drtk.interventions import ablation

    b = model.tokenize(prompts[:batch])
    pad = model.tokenizer.pad_token_id
    cfg = GenerationConfig(max_new_tokens=new_tokens, batch_size=batch)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def count(ids):
        return int((ids != pad).sum())

    @torch.no_grad()
    def hf_gen():
        out = plain.generate(input_ids=b.input_ids, attention_mask=b.attention_mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
        return out.shape[0] * new_tokens

    def drtk_gen():
        with ablation(model, direction):
            return count(generate_ids(model, b.input_ids, b.attention_mask, cfg))

    n_hf = hf_gen()
    n_drtk = drtk_gen()
    t_hf, t_drtk = _time(hf_gen, 2), _time(drtk_gen, 2)
    return n_drtk / t_drtk, n_hf / t_hf


def _peak_rss_child(model_name, n, batch):
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM), so the peak of the collection alone is
    # measured, not the peak of loading the model.
    code = (
        "import drtk, re\n"
        "from drtk.directions import collect_post_instruction\n"
        "kib = lambda key: int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        f"m = drtk.load_model({model_name!r}); p = list(drtk.load_prompts('harmless').prompts)\n"
        f"p = (p * 10)[:{n}]\n"
        "collect_post_instruction(m, p[:2], batch_size=2)\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kib('VmRSS')\n"
        f"collect_post_instruction(m, p, batch_size={batch})\n"
        "print(kib('VmHWM') - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()

    import drtk

    model = drtk.load_model(args.model)
    plain = _plain_hf(model)
    prompts = list(drtk.load_prompts("harmful").prompts[: args.n])
    print(f"model {model.model_id} on {model.device} ({torch.get_num_threads()} threads), {args.n} prompts, batch {args.batch}")

    t_drtk, t_hf = bench_collection(model, plain, prompts, args.batch)
    print(f"activation collection: drtk {t_drtk:.2f} s vs HF forward(output_hidden_states) {t_hf:.2f} s "
          f"-> ratio {t_drtk / t_hf:.2f} (target <= 1.15)")
    small = _peak_rss_child(args.model, args.n, args.batch)
    large = _peak_rss_child(args.model, args.n * 4, args.batch)
    print(f"peak memory growth while collecting: {args.n} prompts {small:.0f} MiB, {args.n * 4} prompts {large:.0f} MiB "
          f"-> ratio {large / max(small, 1e-9):.2f} (target ~1: independent of the number of prompts)")

    tps_drtk, tps_hf = bench_generation(model, plain, prompts, args.batch, args.new_tokens)
    print(f"generation under ablation: drtk {tps_drtk:.0f} tok/s vs plain HF generate {tps_hf:.0f} tok/s "
          f"-> ratio {tps_drtk / tps_hf:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
