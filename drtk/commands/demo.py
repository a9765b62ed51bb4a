"""``drtk demo``: the DeepRefusal story end to end on one model (resumable).

Stages, each cached in ``--out``: the model as shipped, surface alignment (refusal training), the aligned
model's refusal direction, the attack battery on it, DeepRefusal and drtk's adaptive defence from it, the
same battery on each defence (plus the transferred direction and weight interpolation), and the report:
``report.md``, ``metrics.json`` and ``figures/``. An interrupted demo resumes where it stopped.

Example:
    drtk demo --out runs/demo                  # the embedded SmolLM2-135M-Instruct, --size full
    drtk demo --out runs/quick --size quick    # the same stages with fewer prompts and steps
"""

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("demo", help="reproduce DeepRefusal end to end (surface alignment, attacks, rebuilding, report)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="a chat model (default: the embedded SmolLM2)")
    p.add_argument("--size", choices=("quick", "full"), default="full",
                   help="amount of work, same stages: full (the measured demo) or quick (a preview)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--defences", default="deeprefusal,adaptive",
                   help="comma-separated defences to train and attack (default: deeprefusal,adaptive)")
    p.add_argument("--out", type=Path, required=True, help="output folder (an interrupted run resumes here)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drtk.pipeline.demo import run_demo

    result = run_demo(args.out, model=args.model, size=args.size, device=args.device,
                      defences=tuple(d for d in args.defences.split(",") if d))
    print(f"report: {result['report']}\nmetrics: {result['metrics']}")
    return 0
