"""The finished attacks of an evaluation, kept as each finishes, so that an interrupted one goes on from them.

:func:`~drtk.evaluation.evaluate` with ``log=AttackLog(path)`` appends one JSON line per finished attack: its
outcome (completions, verdicts, KL, coherence scores) and the state of the context's random generator after
it. Each line is keyed by a chain of checksums: the first link covers what every attack depends on (the
model's and the reference's weights, the direction, the prompts after decontamination, the fit sets, the
generation settings, the judge, the generator's starting state, drtk's version); each later link adds one
attack's settings. So an attack is read back only when it and every attack before it would run exactly as
they did, and the generator is put back where the uninterrupted run would have it: a resumed evaluation
gives the same results as one that was never stopped. A line cut short by the interruption is ignored.
"""

import base64
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from drtk.errors import DataError

#: The attack log ``drtk eval`` keeps in its ``--out`` folder while it runs (deleted once results are written).
PARTIAL_LOG = "attacks-partial.jsonl"


def has_finished_attacks(folder: "str | Path") -> bool:
    """Whether ``folder`` holds the attack log of an interrupted ``drtk eval``."""
    return (Path(folder) / PARTIAL_LOG).is_file()


def link(previous: str, item: Any) -> str:
    """The next key of a chain: a checksum of the previous key and ``item`` (anything JSON can write)."""
    blob = json.dumps([previous, item], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class AttackLog:
    """Finished attack outcomes in a JSON-lines file, keyed by :func:`link` chains.

    Example:
        >>> log = AttackLog("runs/eval/attacks-partial.jsonl")                     # doctest: +SKIP
        >>> ev = evaluate(model, attacks, harmful, context=ctx, log=log)           # doctest: +SKIP
    """

    def __init__(self, path: "str | Path") -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self.reused = 0
        if self.path.exists():
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as err:
                raise DataError(f"{self.path} is not a drtk attack log ({err}); delete it to start over") from None
            for line in lines:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line being written when the run was stopped
                if isinstance(row, dict) and "key" in row and "outcome" in row:
                    self.entries[row["key"]] = row

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> "tuple[Any, bytes | None] | None":
        """The outcome saved under ``key`` and the generator state after it, or None."""
        from drtk.evaluation.harness import AttackOutcome

        row = self.entries.get(key)
        if row is None:
            return None
        self.reused += 1
        state = row.get("generator")
        return AttackOutcome.from_dict(row["outcome"]), None if state is None else base64.b64decode(state)

    def add(self, key: str, outcome: Any, generator: "torch.Generator | None") -> None:
        """Append one finished attack (written through to disk before the next attack starts)."""
        state = None if generator is None else base64.b64encode(generator.get_state().numpy().tobytes()).decode()
        row = {"key": key, "attack": outcome.result.attack, "outcome": outcome.to_dict(), "generator": state}
        self.entries[key] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        """Delete the file (the evaluation's results are written)."""
        self.path.unlink(missing_ok=True)


def set_generator_state(generator: "torch.Generator | None", state: "bytes | None") -> None:
    if generator is not None and state is not None:
        generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


def generator_state(generator: "torch.Generator | None") -> "str | None":
    """The generator's state as text (part of a chain's first link)."""
    if generator is None:
        return None
    return hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest()[:24]


def config_dict(obj: Any) -> Any:
    """A dataclass as a dict (for keys); anything else unchanged."""
    try:
        return asdict(obj)
    except TypeError:
        return obj
