"""The moving average of the weights: its update, and a run that evaluates and saves it."""

from __future__ import annotations

import pytest
import torch

from cnnlab.averaging import WeightAverage
from cnnlab.config import TrainConfig
from cnnlab.data import Splits
from cnnlab.network import Network
from cnnlab.predict import accuracy
from cnnlab.runs import CHECKPOINT, MODEL
from cnnlab.train import StepHook, fit

from .conftest import small_network, small_splits

BATCH_NORM_ARCH = "conv4x5-bn-pool2-fc16-softmax10"


def test_each_step_moves_every_weight_and_statistic_a_fraction_of_the_way():
    start, trained = (
        small_network(seed=1, arch=BATCH_NORM_ARCH),
        small_network(seed=2, arch=BATCH_NORM_ARCH),
    )
    for module in trained.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.num_batches_tracked += 7
    average = WeightAverage(start, decay=0.75)
    average.update(trained, step=1000)  # long past the warm-up: the decay is 0.75
    before, after = start.state_dict(), trained.state_dict()
    for name, value in average.network.state_dict().items():
        if value.is_floating_point():
            expected = 0.75 * before[name] + 0.25 * after[name]
            assert torch.allclose(value, expected), name
        else:  # a counter is copied, not averaged
            assert torch.equal(value, after[name]), name
    assert any(not v.is_floating_point() for v in average.network.state_dict().values())


def test_a_run_with_ema_evaluates_and_saves_the_average_of_its_steps(tmp_path, mnist):
    data = small_splits(mnist, 1000, held_out=500)
    data = Splits(data.train, None, data.test, data.name, data.classes)  # the last epoch is kept
    config = TrainConfig(epochs=2, batch_size=20, lr=0.05, momentum=0.9, ema=0.9)
    trained = small_network(arch=BATCH_NORM_ARCH)
    by_hand = {k: v.clone() for k, v in trained.state_dict().items()}

    def average_by_hand(step: int, seconds: float) -> None:
        decay = min(0.9, step / (9 + step))  # warming up: (1 + t)/(10 + t) after t = step - 1
        for name, value in trained.state_dict().items():
            if value.is_floating_point():
                by_hand[name].mul_(decay).add_(value, alpha=1 - decay)
            else:
                by_hand[name].copy_(value)

    every = StepHook(1, average_by_hand)
    result = fit(
        trained, data, config, tmp_path, progress=False, log=lambda line: None, every=every
    )
    saved, meta = Network.load(tmp_path / MODEL)
    assert meta["epoch"] == result.best_epoch == 2
    for name, value in saved.state_dict().items():
        assert torch.allclose(value, by_hand[name], atol=1e-6), name
        assert not torch.equal(value, trained.state_dict()[name]) or not value.is_floating_point()
    assert accuracy(saved, data.test) == pytest.approx(result.test_accuracy)
    assert result.test_accuracy > 0.8
    from_checkpoint, _ = Network.load(tmp_path / CHECKPOINT)  # evaluated as the run did
    for name, value in from_checkpoint.state_dict().items():
        assert torch.equal(value, saved.state_dict()[name]), name


def test_the_first_steps_forget_the_start_at_once():
    start, trained = small_network(seed=1), small_network(seed=2)
    average = WeightAverage(start, decay=0.9999)
    average.update(trained, step=0)  # the decay is (1 + 0)/(10 + 0) = 0.1
    for name, value in average.network.state_dict().items():
        expected = 0.1 * start.state_dict()[name] + 0.9 * trained.state_dict()[name]
        assert torch.allclose(value, expected), name
