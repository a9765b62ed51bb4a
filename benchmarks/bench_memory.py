"""Full fine-tuning steps of DeepRefusal with freed memory kept in the process (``drtk.memory``, what the
``drtk`` command does) vs returned to the system (the C library's default), on 2 CPU cores; no target: the
time a step saves, and a check that the trained weights are bitwise the same.

The setting is process-wide, so each variant runs in its own child process, alternated (return, keep,
return, keep) so that load from other processes hits both alike. Each child trains the same steps from the
same start and reports its step times after the warm-up, the minor page faults per step, and a checksum
of the weights it ends with.

    python benchmarks/bench_memory.py                  # embedded SmolLM2-135M, 2 x 6 steps per variant
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(keep: bool, steps: int, batch_size: int) -> None:
    if keep:
        from drtk.memory import keep_freed_memory

        assert keep_freed_memory(), "mallopt unavailable: this benchmark needs glibc"
    from bench_training import deeprefusal_trainer

    from drtk.models import load_model
    from drtk.training.data import weights_checksum

    model = load_model("smollm2-135m-instruct")
    trainer = deeprefusal_trainer(model, batch_size, full=True)
    times, faults = [], []
    for i in range(steps + 2):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        trainer.train_step()
        if i >= 2:  # the first two steps allocate the optimizer state and grow the heap
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    print(json.dumps({"times": times, "faults": faults, "checksum": weights_checksum(model)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6, help="timed steps per child process")
    ap.add_argument("--rounds", type=int, default=2, help="child processes per variant, alternated")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", choices=["keep", "return"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child == "keep", args.steps, args.batch_size)
    runs: dict[str, list[dict]] = {"return": [], "keep": []}
    for _ in range(args.rounds):
        for variant in runs:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--steps", str(args.steps),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    print(f"embedded SmolLM2-135M, full fine-tuning, DeepRefusal p = 0.5, batch {args.batch_size}, CPU "
          f"({torch.get_num_threads()} threads), {args.rounds} x {args.steps} steps per variant")
    print(f"{'freed memory':<14}{'median s/step':>14}{'faults/step':>13}  checksum")
    med = {}
    for variant, rs in runs.items():
        ts = [t for r in rs for t in r["times"]]
        med[variant] = statistics.median(ts)
        faults = statistics.median(f for r in rs for f in r["faults"])
        print(f"{variant:<14}{med[variant]:>14.3f}{faults:>13.0f}  {' '.join(sorted({r['checksum'] for r in rs}))}")
    same = len({r["checksum"] for rs in runs.values() for r in rs}) == 1
    print(f"ratio keep / return = {med['keep'] / med['return']:.3f}; trained weights "
          f"{'bitwise the same' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
