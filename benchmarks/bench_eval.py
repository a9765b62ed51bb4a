"""Benchmark: drtk evaluation generation vs plain Hugging Face ``generate``, and GCG candidate scoring.

Both generators run greedy on the same model, the same prompts and the same batch size, side by side in one
process; the ratio is drtk tokens/s over HF tokens/s (target >= 0.8). HF ``generate`` runs on the plain
modules (the bridge's components taken out, :meth:`ChatModel.plain`), as drtk does when no hook is
registered; drtk with a no-op hook registered (every step through the bridge) is timed beside them, and so
is direction ablation at every site, put on the Hugging Face modules (drtk's ``hook_scope``) and on the
bridge's hook points (every step through the bridge). GCG scoring is reported in
candidates/second for one prompt, and for a universal suffix over a group of prompts as the time of drtk's
scoring (every prompt's start computed once, building those caches included) over scoring whole rows.

    python benchmarks/bench_eval.py --model smollm2-135m-instruct --n 32 --tokens 64 --group 24 --group-candidates 16
"""

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--group", type=int, default=24, help="prompts sharing one universal GCG suffix")
    ap.add_argument("--group-candidates", type=int, default=16)
    args = ap.parse_args()

    from drtk.attacks.gcg import GCG
    from drtk.attacks._suffix import build_task, init_suffix, target_loss
    from drtk.data import standard_splits
    from drtk.generation import GenerationConfig, generate
    from drtk.interventions import ablation_hooks, hook_scope
    from drtk.models import load_model

    model = load_model(args.model)
    prompts = list(standard_splits("harmful")["test"].prompts[: args.n])
    cfg = GenerationConfig(max_new_tokens=args.tokens, batch_size=args.n)
    batch = model.tokenize(prompts)
    tok = model.tokenizer

    def run_drtk() -> int:
        return sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in generate(model, prompts, config=cfg))

    def run_bridged() -> int:
        with model.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: None)]):
            return run_drtk()

    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def run_ablated() -> int:
        with hook_scope(model, ablation_hooks(model, direction)):
            return run_drtk()

    def run_ablated_bridge() -> int:
        with model.bridge.hooks(fwd_hooks=ablation_hooks(model, direction)):
            return run_drtk()

    def run_hf() -> int:
        with torch.no_grad(), model.plain() as hf:
            out = hf.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                    max_new_tokens=args.tokens, pad_token_id=tok.pad_token_id)
        return sum(len(tok(c, add_special_tokens=False)["input_ids"])
                   for c in tok.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True))

    run_drtk(), run_hf()  # warm-up
    res = {}
    runs = (("drtk", run_drtk), ("hf", run_hf), ("bridged", run_bridged), ("ablated", run_ablated),
            ("ablated-bridge", run_ablated_bridge))
    for name, fn in runs * args.repeats:
        t = time.perf_counter()
        n_tok = fn()
        res.setdefault(name, []).append(n_tok / (time.perf_counter() - t))
    drtk_tps, hf_tps, bridged_tps = max(res["drtk"]), max(res["hf"]), max(res["bridged"])
    print(f"model {model.model_id}, {args.n} prompts x {args.tokens} new tokens, batch {args.n}, {model.device}")
    print(f"drtk generate: {drtk_tps:.1f} tok/s | HF generate: {hf_tps:.1f} tok/s | ratio {drtk_tps / hf_tps:.2f} (target >= 0.8)")
    print(f"drtk generate through the bridge (a no-op hook registered): {bridged_tps:.1f} tok/s | "
          f"plain over bridged {drtk_tps / bridged_tps:.2f}")
    ablated, ablated_bridge = max(res["ablated"]), max(res["ablated-bridge"])
    print(f"drtk generate under direction ablation ({len(ablation_hooks(model, direction))} sites): edits on the HF "
          f"modules {ablated:.1f} tok/s | on the hook points {ablated_bridge:.1f} tok/s | ratio "
          f"{ablated / ablated_bridge:.2f}")

    gcg = GCG(candidates=args.candidates, batch_size=args.candidates)
    task = build_task(model, prompts[:1], gcg.target)
    suffix = init_suffix(model, gcg.suffix_tokens, gcg.init)
    cands = [list(suffix) for _ in range(args.candidates)]
    gcg._scores(model, task, [0], cands[:4], {})
    t = time.perf_counter()
    gcg._scores(model, task, [0], cands, {})
    dt = time.perf_counter() - t
    print(f"GCG scoring: {args.candidates} candidates in {dt:.2f}s = {args.candidates / dt:.1f} candidates/s "
          f"(suffix {gcg.suffix_tokens} tokens, batch {gcg.batch_size})")

    # A universal suffix: every candidate is scored on every prompt of the group.
    group_prompts = list(standard_splits("harmful")["test"].prompts[: args.group])
    task = build_task(model, group_prompts, gcg.target)
    group, cands = list(range(len(group_prompts))), [list(suffix) for _ in range(args.group_candidates)]
    rows = [task.before[g] + tuple(c) + task.after for c in cands for g in group]

    def whole_rows() -> None:
        with torch.no_grad():
            for i in range(0, len(rows), gcg.batch_size):
                target_loss(model, rows[i : i + gcg.batch_size], task.target)

    times = {}
    for name, fn in (("cached", lambda: gcg._scores(model, task, group, cands, {})), ("whole", whole_rows)) * args.repeats:
        t = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - t)
    cached, whole = min(times["cached"]), min(times["whole"])
    print(f"GCG universal scoring, {len(group)} prompts x {len(cands)} candidates: cached starts {cached:.2f}s | "
          f"whole rows {whole:.2f}s | ratio {cached / whole:.2f}")


if __name__ == "__main__":
    main()
