"""``drtk sweep``: the paper's ablation-probability and recovery-data ablations at small scale.

Trains DeepRefusal from one aligned model and its direction by the demo's recipe at each ablation probability p,
with and without recovery examples, attacks each run (prefill, the transferred direction, a fresh direction) and measures its
over-refusal; writes ``sweep.csv`` and the attack success vs over-refusal figure into ``--out``. Every run is
a cached stage: an interrupted sweep resumes when run again.

Example:
    drtk sweep --aligned runs/demo/aligned/model --direction runs/demo/direction \\
        --answers runs/demo/baseline/completions.jsonl --size full --out runs/sweep
    drtk sweep ... --seeds 0,1 --out runs/sweep   # a second seed beside the first: only its runs are trained
"""

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("sweep", help="DeepRefusal over ablation probabilities, with and without recovery examples",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aligned", required=True, help="the aligned model to start from (e.g. DEMO/aligned/model)")
    p.add_argument("--direction", required=True, help="its refusal direction (e.g. DEMO/direction)")
    p.add_argument("--p", default="0,0.3,0.5,0.7,1.0", help="comma-separated ablation probabilities (default: 0,0.3,0.5,0.7,1.0)")
    p.add_argument("--recovery", choices=("both", "with", "without"), default="both",
                   help="train with recovery examples, without, or both (default)")
    p.add_argument("--size", choices=("quick", "full"), default="quick",
                   help="quick (default: 10 training steps, 8 prompts per set) or full")
    p.add_argument("--steps", type=int, default=None, help="training steps per configuration (default: the size's)")
    p.add_argument("--limit", type=int, default=None, help="evaluation prompts per set (default: the size's)")
    p.add_argument("--answers", type=Path, default=None,
                   help="harmful answers to prefill every configuration with, e.g. DEMO/baseline/completions.jsonl (the "
                        "shipped model's, as the demo does; default: each model's own answers under ablation)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds, each configuration trained at each "
                   "(default: 0, the demo's; sweep.md pools a configuration's seeds)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", type=Path, required=True, help="output folder (an interrupted sweep resumes here)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drtk.errors import ConfigError
    from drtk.pipeline.sweep import run_sweep, tradeoff_figure
    from drtk.viz import save_figure

    rec = {"both": (True, False), "with": (True,), "without": (False,)}[args.recovery]
    try:
        probabilities = [float(x) for x in args.p.split(",")]
    except ValueError:
        raise ConfigError(f"--p takes comma-separated probabilities, e.g. 0,0.5,1; got {args.p!r}") from None
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, e.g. 0,1; got {args.seeds!r}") from None
    table = run_sweep(args.out, aligned=args.aligned, direction=args.direction,
                      probabilities=probabilities, recovery=rec, size=args.size, device=args.device,
                      steps=args.steps, limit=args.limit, answers=args.answers, seeds=seeds)
    save_figure(tradeoff_figure(table), args.out / "figures", "tradeoff")
    print(table.to_string(index=False))
    return 0
