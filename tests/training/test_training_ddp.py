"""Data parallelism: two CPU processes under `accelerate launch` train exactly what one process trains
on the combined batch (gloo, tiny model)."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(out: Path, n: int) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(WORKER), str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out))


def test_two_processes_equal_one(tmp_path):
    two = _run(tmp_path / "two.safetensors", 2)
    one = _run(tmp_path / "one.safetensors", 1)
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-6), k


def test_the_run_trained(tmp_path):
    """Guard against a vacuous pass: the saved weights moved away from the initial ones."""
    from drtk.models import load_model

    init = {n: p.detach() for n, p in load_model("drtk-tiny-chat").hf.named_parameters()}
    one = _run(tmp_path / "one.safetensors", 1)
    assert any(not torch.equal(init[k], one[k]) for k in one)
