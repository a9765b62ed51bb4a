"""Arguments and helpers shared by subcommands."""

import argparse
import json
from pathlib import Path
from typing import Any

from drtk.models import DEFAULT_MODEL


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name, hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 ... (default: fp32 on CPU, bf16 on CUDA; train: fp32)")
    p.add_argument("--chat-template", default=None, type=Path, help="a Jinja chat template file, for models without one")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a hub repository's own code to run")


def load_model_from_args(args: argparse.Namespace) -> Any:
    from drtk.models import load_model

    template = args.chat_template.read_text() if args.chat_template else None
    return load_model(args.model, device=args.device, dtype=args.dtype, chat_template=template,
                      trust_remote_code=args.trust_remote_code)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
