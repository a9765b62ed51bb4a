"""Cached pipeline stages: an interrupted run resumes where it stopped, a finished stage is not redone.

A stage is a function of its own folder that returns a JSON-able summary. When it returns, the summary
and the stage's key (a hash of its configuration and of the keys of the stages it depends on) are
written atomically to ``OUT/stages/NAME.json``. A later run with the same key loads the summary instead
of running the stage; a changed configuration re-runs the stage and everything after it.

A stage's folder records the key it was started with (``.stage-key``): an interrupted stage restarted with
the same key finds its partial work (a training checkpoint) and resumes; one whose key has changed since
starts from an emptied folder, so nothing made under the old configuration is mixed into the new one.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from drtk.errors import DrtkError, StageError

logger = logging.getLogger(__name__)

STARTED = ".stage-key"  # in a stage's folder: the key the stage was started with


def resume_flag(folder: Path) -> list[str]:
    """``["--resume"]`` when a stage's folder holds the partial work of an interrupted ``drtk train`` (its
    checkpoint) or ``drtk eval`` (its log of finished attacks), so the command goes on from there; else ``[]``."""
    from drtk.evaluation.progress import has_finished_attacks
    from drtk.training.loop import has_checkpoint

    return ["--resume"] if has_checkpoint(folder) or has_finished_attacks(folder) else []


def _key(config: Any, upstream: "list[str]") -> str:
    blob = json.dumps({"config": config, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class StageRunner:
    """Runs named stages under ``out_dir`` with caching.

    Example:
        >>> runner = StageRunner(Path("runs/demo"))                          # doctest: +SKIP
        >>> aligned = runner.run("refusal", train_fn, config={"steps": 80})  # doctest: +SKIP
    """

    out_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        return self.out_dir / name

    def run(self, name: str, fn: Callable[[Path], dict], *, config: Any, after: "list[str] | None" = None) -> dict:
        upstream = [self.keys[a] for a in (after or [])]
        key = _key(config, upstream)
        marker = self.out_dir / "stages" / f"{name}.json"
        if marker.exists():
            saved = json.loads(marker.read_text())
            if saved.get("key") == key:
                logger.info("stage %s: done earlier (%s), skipping", name, marker)
                self.keys[name] = key
                self.timings[name] = saved.get("seconds", 0.0)
                return saved["result"]
            logger.info("stage %s: configuration changed, running again", name)
        logger.info("stage %s: running", name)
        t0 = time.time()
        folder = self.stage_dir(name)
        started = folder / STARTED
        if folder.exists() and (not started.exists() or started.read_text().strip() != key):
            logger.info("stage %s: clearing %s (made under another configuration)", name, folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        started.write_text(key)
        try:
            result = fn(folder)
        except DrtkError as err:  # drtk's own errors (bad input, a failed command); a bug keeps its traceback
            raise StageError(f"stage {name} failed: {err}. The stages finished before it are kept in {self.out_dir}: "
                             "run the same command again to resume") from err
        seconds = time.time() - t0
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "config": config, "seconds": seconds, "result": result}, indent=2,
                                  default=str))
        os.replace(tmp, marker)
        self.keys[name] = key
        self.timings[name] = seconds
        logger.info("stage %s: finished in %.0f s", name, seconds)
        return result
