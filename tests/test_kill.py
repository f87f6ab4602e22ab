"""A run killed with SIGKILL at random moments, and resumed each time, ends with the very model
of a run that was never interrupted: every bit of every weight."""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from .test_folder import make_folder

RUN = ["--arch", "conv8x3p1-bn-pool2-fc16-softmax3", "--epochs", "24", "--batch-size", "4",
       "--lr", "0.05", "--momentum", "0.9", "--augment", "crop,flip", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("pictures"), per_class=40, size=(12, 12))


def train(out, pictures, cache, resume=False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_CACHE": str(cache)}
    command = [sys.executable, "-m", "cnnlab", "train", "--out", str(out), "--quiet"]
    command += ["--resume"] if resume else ["--data", str(pictures), *RUN]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finished_epochs(out) -> int:
    metrics = out / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def seconds_per_epoch(out) -> float:
    """The median training time of one of the run's epochs: the span a kill is drawn from, so
    that on any machine the kills land inside the run and never after its end."""
    rows = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    return statistics.median(row["train_seconds"] for row in rows)


def test_kill_9_at_random_moments_changes_no_bit_of_the_result(pictures, tmp_path):
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    assert train(reference, pictures, cache).wait(timeout=300) == 0
    epoch = seconds_per_epoch(reference)
    out = tmp_path / "killed"
    chance = random.Random(0)
    for _ in range(3):
        resume = (out / "checkpoint.safetensors").exists()
        before = finished_epochs(out)
        process = train(out, pictures, cache, resume)
        deadline = time.monotonic() + 120
        while finished_epochs(out) == before and process.poll() is None:  # wait for a save
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(chance.uniform(0, 1.5 * epoch))  # then anywhere: mid-epoch, mid-save
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait()
    if (out / "checkpoint.safetensors").exists() and finished_epochs(out) < 24:
        last = train(out, pictures, cache, resume=True)
        assert last.wait(timeout=300) == 0, last.stderr.read().decode()
    assert not list(out.glob(".*.tmp"))
    for name in ("checkpoint.safetensors", "model.safetensors"):
        expected, found = load_file(reference / name), load_file(out / name)
        assert expected.keys() == found.keys()
        for key, value in expected.items():
            assert torch.equal(value, found[key]), f"{name}: {key}"
