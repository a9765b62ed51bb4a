import subprocess
import sys

import pytest

import drtk.cli

CHILD = """
import resource, sys, torch
from drtk.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 2**20)  # 64 MiB, every page written
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(), faults()  # the heap settles: a block of that size fits in what two freed ones leave
print(min(faults() for _ in range(6)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_faulting_in_new_pages():
    """Allocated again and again, a 64 MiB tensor (16,384 pages) comes back as fresh pages every time by default,
    and as memory already in the process once freed memory is kept (each in its own process: the setting is
    process-wide)."""
    faults = {v: int(subprocess.run([sys.executable, "-c", CHILD, v], capture_output=True, text=True, check=True)
                     .stdout.split()[-1]) for v in ("return", "keep")}
    assert faults["return"] > 10_000 and faults["keep"] < 1_000, faults


def test_the_console_script_keeps_freed_memory_then_runs_the_command(monkeypatch):
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(drtk.cli.__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["drtk"] == "drtk.cli:entry"
    calls = []
    monkeypatch.setattr("drtk.memory.keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(drtk.cli, "main", lambda: calls.append("main") or 0)
    assert drtk.cli.entry() == 0 and calls == ["keep", "main"]
