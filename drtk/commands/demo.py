"""``drtk demo``: the DeepRefusal story end to end on one model (resumable)."""

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("demo", help="reproduce DeepRefusal end to end (surface alignment, attacks, rebuilding, report)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="a chat model (default: the embedded SmolLM2)")
    p.add_argument("--size", choices=("quick", "full"), default="full",
                   help="amount of work, same stages: full (the measured demo) or quick (a preview)")
    p.add_argument("--device", default=None)
    p.add_argument("--defences", default="deeprefusal,adaptive", help="comma-separated training methods to compare")
    p.add_argument("--out", type=Path, required=True, help="output folder (an interrupted run resumes here)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drtk.pipeline.demo import run_demo

    result = run_demo(args.out, model=args.model, size=args.size, device=args.device,
                      defences=tuple(d for d in args.defences.split(",") if d))
    print(f"report: {result['report']}\nmetrics: {result['metrics']}")
    return 0
