"""Data-parallel training (torchrun, gloo, 2 processes on this CPU) is the same training as one
process: the same weights after the same steps, resumable with any number of processes, and
only the first process writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.cli import main

from .test_folder import make_folder

# batch norm after a conv and an fc layer: its statistics must be the whole mini-batch's
ARCH = "conv6x3p1-bn-pool2-fc16-bn-softmax3"
# no random augmentation or dropout: with them, processes draw their own random numbers; a
# moving average of the weights, which every process keeps alike and the checkpoint holds
RUN = ["--arch", ARCH, "--batch-size", "24", "--lr", "0.05", "--momentum", "0.9", "--ema", "0.3",
       "--precision", "fp32", "--split", "standard", "--validation", "0", "--quiet"]  # fmt: skip
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    make_folder(root, per_class=40, size=(12, 12))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "dist-cache"))


def torchrun(tmp_path: Path, *argv, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N audited_cnnlab.py ARGV``, one thread each."""
    audit = tmp_path / "audit"
    audit.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIT_DIR": str(audit)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", str(HERE / "audited_cnnlab.py"),
               *map(str, argv)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The run's weights and their average, as its checkpoint holds them."""
    tensors = load_file(run / "checkpoint.safetensors").items()
    named = {k: v for k, v in tensors if k.startswith(("model.", "average."))}
    assert any(k.startswith("average.") for k in named)
    return named


def assert_close(a: dict, b: dict, tolerance: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=tolerance, atol=tolerance, msg=name)


@pytest.fixture(scope="module")
def one_process(pictures, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(["train", "--data", str(pictures), *RUN, "--epochs", "2",
                 "--schedule", "constant", "--out", str(out)]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def two_processes(pictures, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    out = folder / "run"
    done = torchrun(folder, "train", "--data", pictures, *RUN, "--epochs", "2",
                    "--schedule", "constant", "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder, out, done


def test_two_processes_reach_the_weights_of_one_with_the_same_global_batch(
    one_process, two_processes
):
    _, out, _ = two_processes
    # 2 epochs of 10 steps: gradients averaged and batch norm over the whole mini-batch
    assert_close(weights(out), weights(one_process), 1e-4)
    one = (one_process / "metrics.jsonl").read_text().splitlines()
    two = (out / "metrics.jsonl").read_text().splitlines()
    assert len(one) == len(two) == 2


def test_only_the_first_process_prints_and_writes(two_processes):
    folder, out, done = two_processes
    assert done.stdout.count("test accuracy:") == 1 and done.stdout.count("epoch   1/2") == 1
    assert "in 2 processes" in done.stderr
    first = (folder / "audit" / "rank0.txt").read_text().splitlines()
    second = (folder / "audit" / "rank1.txt").read_text().splitlines()
    assert str(out / "checkpoint.safetensors") in first
    assert [p for p in second if p.startswith(str(out))] == []


def test_a_distributed_run_resumes_as_if_it_had_not_stopped(pictures, two_processes, tmp_path):
    _, uninterrupted, _ = two_processes
    out = tmp_path / "run"
    first = torchrun(tmp_path, "train", "--data", pictures, *RUN, "--epochs", "1",
                     "--schedule", "constant", "--out", out)  # fmt: skip
    assert first.returncode == 0, first.stderr
    halfway = tmp_path / "halfway"
    halfway.mkdir()
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.jsonl"):
        (halfway / name).write_bytes((out / name).read_bytes())
    # the same number of processes: the same run, bit for bit
    second = torchrun(tmp_path, "train", "--out", out, "--resume", "--epochs", "2", "--quiet")
    assert second.returncode == 0, second.stderr
    resumed = weights(out)
    for name, value in weights(uninterrupted).items():
        assert torch.equal(resumed[name], value), name
    # another number of processes (here one) continues the same run, up to rounding
    assert main(["train", "--out", str(halfway), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert_close(weights(halfway), weights(uninterrupted), 1e-4)


def test_a_mini_batch_that_does_not_divide_is_refused_before_launching(pictures, capsys, tmp_path):
    status = main(["train", "--data", str(pictures), *RUN, "--batch-size", "25",
                   "--processes", "2", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "multiple of 2" in err and not (tmp_path / "run").exists()


def _workers(launcher: int) -> dict[int, int]:
    """rank → pid of the processes the launcher started."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().split()[3]) == launcher:
                env = (entry / "environ").read_bytes().split(b"\0")
                rank = [e for e in env if e.startswith(b"RANK=")]
                if rank:
                    found[int(rank[0][5:])] = int(entry.name)
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_killed_process_stops_the_run_cleanly_and_it_resumes(pictures, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cnnlab", "train", "--data", str(pictures), *RUN,
               "--epochs", "400", "--schedule", "constant", "--out", str(out),
               "--processes", "2"]  # fmt: skip
    launcher = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(_workers(launcher.pid)[1], signal.SIGKILL)  # mid-epoch, the second process
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "Traceback" not in err and "internal error" not in err
    assert "--resume" in err
    finished = len((out / "metrics.jsonl").read_text().splitlines())
    status = main(["train", "--out", str(out), "--resume", "--epochs", str(finished + 1),
                   "--quiet"])  # fmt: skip
    assert status == 0 and not list(out.glob(".*.tmp"))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == finished + 1
