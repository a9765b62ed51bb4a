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

    template = read_text(args.chat_template, "--chat-template") if args.chat_template else None
    return load_model(args.model, device=args.device, dtype=args.dtype, chat_template=template,
                      trust_remote_code=args.trust_remote_code)


def read_text(path: Path, option: str) -> str:
    """A file given on the command line, or a one-line error naming the option."""
    from drtk.errors import ConfigError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{option} {path}: cannot read it ({err})") from err


def read_json(path: Path, option: str) -> Any:
    """A JSON file given on the command line (never executed), or a one-line error naming the option."""
    from drtk.errors import ConfigError

    try:
        return json.loads(read_text(path, option))
    except ValueError as err:
        raise ConfigError(f"{option} {path} is not valid JSON ({err})") from err


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
