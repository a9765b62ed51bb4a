"""The ``drtk`` command line: thin; each subcommand lives in :mod:`drtk.commands`."""

import argparse
import importlib
import logging
import sys
from typing import Sequence

from drtk.errors import ConfigError, DrtkError

#: Subcommand modules; each exposes ``register(subparsers)`` which sets ``func`` on its parser.
COMMANDS = ("directions", "train", "eval", "demo", "sweep", "compare")
#: What an interrupted command keeps, printed after Ctrl-C instead of a traceback.
RESUME_HINTS = {
    "train": "Run the same command with --resume to go on from the last checkpoint (--out/checkpoint, written every "
             "checkpoint_every steps and at the end).",
    "eval": "Finished attacks are kept in --out/attacks-partial.jsonl: run the same command with --resume to go on from "
            "them.",
    "demo": "Finished stages are kept: run the same command again to resume.",
    "sweep": "Finished runs are kept: run the same command again to resume.",
}


def version_line() -> str:
    """drtk's version and those of the packages its numbers depend on, read from the installed metadata (nothing
    is imported): the line to put in a bug report."""
    from importlib import metadata

    from drtk import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformer-lens", "transformers"))
    return f"drtk {__version__} ({deps}; Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    # raw text: --version prints its line unwrapped
    parser = argparse.ArgumentParser(prog="drtk", description="DeepRefusal toolkit",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"drtk.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"drtk.commands.{name}":
                continue  # not built in this version
            raise
        module.register(sub)
    for command in sub.choices.values():  # -v after the subcommand too; SUPPRESS keeps `drtk -v eval` working
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return parser


def main(argv: "Sequence[str] | None" = None, *, nested: bool = False) -> int:
    """Run one command; returns its exit code. ``nested``: run as a step of another command (a demo stage), so
    Ctrl-C propagates to it unprinted and only the outer command says how to go on."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("drtk").setLevel(logging.DEBUG if args.verbose else logging.INFO)  # others: warnings only
    out = getattr(args, "out", None)
    try:
        if out is not None and out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder (it is created when missing)")
        return int(args.func(args) or 0)
    except DrtkError as err:
        print(f"drtk {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if nested:
            raise
        print(f"drtk {args.command}: interrupted. {RESUME_HINTS.get(args.command, '')}".rstrip(), file=sys.stderr)
        return 130


def entry() -> int:
    """The ``drtk`` console script: :func:`main` in a process whose allocator keeps the memory it frees
    (:func:`drtk.memory.keep_freed_memory`; faster CPU training, the same results)."""
    from drtk.memory import keep_freed_memory

    keep_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
