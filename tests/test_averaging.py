"""The moving average of the weights: its update, and a run that evaluates and saves it."""

from __future__ import annotations

import pytest
import torch

from cnnlab.averaging import WeightAverage
from cnnlab.config import TrainConfig
from cnnlab.data import Splits
from cnnlab.network import Network
from cnnlab.predict import accuracy
from cnnlab.runs import MODEL
from cnnlab.train import fit

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
    average.update(trained)
    before, after = start.state_dict(), trained.state_dict()
    for name, value in average.network.state_dict().items():
        if value.is_floating_point():
            expected = 0.75 * before[name] + 0.25 * after[name]
            assert torch.allclose(value, expected), name
        else:  # a counter is copied, not averaged
            assert torch.equal(value, after[name]), name
    assert any(not v.is_floating_point() for v in average.network.state_dict().values())


def test_a_run_with_ema_evaluates_and_saves_the_average_not_the_trained_weights(tmp_path, mnist):
    data = small_splits(mnist, 1000, held_out=500)
    data = Splits(data.train, None, data.test, data.name, data.classes)  # the last epoch is kept
    config = TrainConfig(epochs=2, batch_size=20, lr=0.05, momentum=0.9, ema=0.95)
    trained = small_network()
    result = fit(trained, data, config, out=tmp_path, progress=False, log=lambda line: None)
    saved, meta = Network.load(tmp_path / MODEL)
    assert meta["epoch"] == result.best_epoch == 2
    assert accuracy(saved, data.test) == pytest.approx(result.test_accuracy)
    assert accuracy(trained, data.test) != pytest.approx(result.test_accuracy)
