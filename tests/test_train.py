"""Training: L2 as the chapter means it, schedules, resume, and learning for real."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlab.config import TrainConfig
from cnnlab.data import load_splits
from cnnlab.network import load_tensors
from cnnlab.predict import accuracy
from cnnlab.runs import CHECKPOINT, METRICS, MODEL
from cnnlab.train import fit, learning_rate, make_optimizer

from .conftest import SMALL_ARCH, small_network, small_splits


def quiet(line: str) -> None:
    pass


def test_l2_decays_weights_by_eta_lambda_m_over_n_and_leaves_biases_alone():
    network = small_network()
    config = TrainConfig(lr=0.5, l2=0.1, batch_size=10)
    steps_per_epoch = 100  # n = 1,000 images of m = 10
    optimizer = make_optimizer(network, config, steps_per_epoch)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    for p in network.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in network.named_parameters():
        if name.endswith("weight"):
            expected = before[name] * (1 - 0.5 * 0.1 * 10 / 1000)
            assert torch.allclose(p, expected), name
        else:
            assert torch.equal(p, before[name]), name


def test_schedules():
    constant = TrainConfig(lr=0.2)
    assert learning_rate(constant, 50, 100) == 0.2
    onecycle = TrainConfig(lr=0.2, schedule="onecycle", warmup=0.25)
    assert learning_rate(onecycle, 0, 100) == 0
    assert learning_rate(onecycle, 25, 100) == pytest.approx(0.2)
    assert learning_rate(onecycle, 99, 100) == pytest.approx(0.2 * 1 / 75)
    cosine = TrainConfig(lr=0.2, schedule="cosine")
    assert learning_rate(cosine, 50, 100) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def tiny(mnist):
    return small_splits(mnist, 500, held_out=1000)


@pytest.mark.parametrize(
    ("faithful", "ema", "arch"),
    [
        (False, 0.0, SMALL_ARCH),
        (True, 0.0, SMALL_ARCH),
        (False, 0.75, "conv4x5-bn-pool2-fc16-softmax10"),
    ],
)
def test_resume_equals_uninterrupted_training(tmp_path, tiny, faithful, ema, arch):
    config = TrainConfig(epochs=3, batch_size=25, lr=0.05, momentum=0.9, l2=0.1,
                         faithful=faithful, ema=ema)  # fmt: skip
    straight = small_network(seed=7, arch=arch)
    full = fit(straight, tiny, config, out=tmp_path / "a", progress=False, log=quiet)

    interrupted = small_network(seed=7, arch=arch)
    first = TrainConfig(**{**config.__dict__, "epochs": 1})
    fit(interrupted, tiny, first, out=tmp_path / "b", progress=False, log=quiet)
    killed_mid_save = tmp_path / "b" / f".{CHECKPOINT}.x1y2z3.tmp"  # what a kill -9 leaves
    killed_mid_save.write_bytes(b"half a checkpoint")
    resumed = small_network(seed=99, arch=arch)  # weights come from the checkpoint
    result = fit(resumed, tiny, config, out=tmp_path / "b", resume=True, progress=False, log=quiet)

    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    for name in (MODEL, CHECKPOINT):  # the weights' average, when the run keeps one, too
        assert load_tensors(tmp_path / "a" / name)[0].keys() == (
            load_tensors(tmp_path / "b" / name)[0].keys()
        )
        for key, value in load_tensors(tmp_path / "a" / name)[0].items():
            assert torch.equal(value, load_tensors(tmp_path / "b" / name)[0][key]), key
    assert [r["test_accuracy"] for r in result.history] == [
        r["test_accuracy"] for r in full.history
    ]
    lines = (tmp_path / "b" / METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert not killed_mid_save.exists()  # a run cleans its folder's leftovers when it starts


def test_a_run_folder_holds_checkpoint_model_and_metrics(trained_run):
    assert {p.name for p in trained_run.iterdir()} >= {CHECKPOINT, MODEL, METRICS}
    assert not [p for p in trained_run.iterdir() if p.name.endswith(".tmp")]
    rows = [json.loads(line) for line in (trained_run / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "validation_accuracy", "test_accuracy"} <= rows[0].keys()


def test_the_reported_accuracy_is_at_the_best_validation_epoch(tiny):
    config = TrainConfig(epochs=4, batch_size=25, lr=0.3)
    result = fit(small_network(), tiny, config, progress=False, log=quiet)
    best = max(result.history, key=lambda r: r["validation_accuracy"])
    assert result.best_epoch == best["epoch"]
    assert result.test_accuracy == best["test_accuracy"]


@pytest.mark.mnist
def test_end_to_end_a_small_convnet_learns_mnist():
    data = load_splits("mnist", "nielsen", train_subset=4000)  # the full 10,000 test images
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9, schedule="onecycle")
    network = small_network()
    result = fit(network, data, config, progress=False, log=quiet)
    assert result.test_accuracy > 0.93
    measured = accuracy(network, data.test, config.precision)
    assert measured == pytest.approx(result.history[-1]["test_accuracy"])


def test_bf16_and_fp32_agree(tiny):
    network = small_network()
    fp32 = accuracy(network, tiny.test, "fp32")
    bf16 = accuracy(network, tiny.test, "bf16")
    assert abs(fp32 - bf16) < 0.01


def test_a_diverging_run_stops_with_advice(tiny):
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="lower --lr"):
        linear = small_network(arch="fc32:linear-softmax10")  # no ReLU to die: it blows up
        fit(linear, tiny, TrainConfig(epochs=1, lr=100.0), progress=False, log=quiet)
