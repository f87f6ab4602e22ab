"""What makes training fast must not change what it computes: layouts, bf16, hooks, TTA."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cnnlab.augment import shift, shifted_views
from cnnlab.data import load_splits
from cnnlab.precision import autocast, fast_bf16
from cnnlab.predict import accuracy, labels
from cnnlab.presets import get_preset
from cnnlab.train import (
    StepHook,
    TrainConfig,
    fit,
    new_network,
)

from .conftest import small_network, small_splits

BN_ARCH = "conv8x5s2-bn-convpool16x3-bn-fc32-softmax10"
BASE = TrainConfig(epochs=1, batch_size=50, lr=0.1, momentum=0.9, schedule="onecycle")


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny(mnist):
    return small_splits(mnist, 1000, held_out=500)


def weights(network) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in network.parameters()])


def test_channels_last_computes_the_same_network(tiny):
    plain, laid_out = small_network(arch=BN_ARCH), small_network(arch=BN_ARCH).use_channels_last()
    conv = laid_out.layers[2].weight  # 8 input maps: the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, y = tiny.train.images[:64].float() / 255, tiny.train.labels[:64]
    for network in (plain, laid_out):
        torch.nn.functional.cross_entropy(network(x), y).backward()
    for a, b in zip(plain.parameters(), laid_out.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    results = []
    for channels_last in (False, True):
        config = dataclasses.replace(BASE, channels_last=channels_last, epochs=2)
        results.append(fit(small_network(arch=BN_ARCH), tiny, config, progress=False, log=quiet))
    # rounding differs in the last bits, and SGD amplifies that; the learning does not change
    assert abs(results[0].test_accuracy - results[1].test_accuracy) < 0.03


def test_channels_last_maps_reach_the_fc_layer_without_a_copy(tiny):
    """The fc layer reads channels-last maps in their own order, so the gradient that flows
    back into them keeps their layout (batch norm's backward is slow on a mixed pair)."""
    network = small_network(arch=BN_ARCH).use_channels_last()
    fc, seen = network.layers[-2], []
    fc.register_forward_pre_hook(lambda _layer, inputs: seen.append(inputs[0]))
    x = tiny.train.images[:16].float() / 255
    plain_logits = small_network(arch=BN_ARCH)(x)
    torch.testing.assert_close(network(x), plain_logits, atol=1e-5, rtol=1e-5)
    maps, flowing_back = seen[-1], []
    assert maps.is_contiguous(memory_format=torch.channels_last) and not maps.is_contiguous()
    maps.register_hook(flowing_back.append)  # a leaf's .grad would be re-laid out to match it
    fc(maps).sum().backward()
    assert flowing_back[0].is_contiguous(memory_format=torch.channels_last)


def test_bf16_training_follows_fp32(tiny):
    """bf16 autocast keeps fp32 weights; after an epoch the two runs agree closely."""
    runs = {}
    for precision in ("fp32", "bf16"):
        network = small_network(arch=BN_ARCH)
        config = dataclasses.replace(BASE, precision=precision, epochs=2)
        result = fit(network, tiny, config, progress=False, log=quiet)
        assert all(p.dtype == torch.float32 for p in network.parameters())
        runs[precision] = (network, result)
    (n32, r32), (_, r16) = runs["fp32"], runs["bf16"]
    assert abs(r32.test_accuracy - r16.test_accuracy) < 0.03
    assert abs(r32.history[-1]["train_loss"] - r16.history[-1]["train_loss"]) < 0.05
    x = tiny.test.images[:200].float() / 255
    with torch.no_grad():
        p32 = n32.eval()(x).softmax(1)
        with autocast(torch.device("cpu"), "bf16"):
            p16 = n32(x).float().softmax(1)
    assert (p32 - p16).abs().max() < 0.05  # same weights: bf16 forward close to fp32


def test_auto_precision_is_bf16_only_where_native():
    device = torch.device("cpu")
    with autocast(device, "auto"):
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == (torch.bfloat16 if fast_bf16(device) else torch.float32)


def test_step_hook_runs_off_the_clock_and_changes_nothing(tiny):
    plain = small_network(arch=BN_ARCH)
    fit(plain, tiny, BASE, progress=False, log=quiet)
    hooked = small_network(arch=BN_ARCH)
    calls = []

    def look(step: int, seconds: float) -> None:
        calls.append((step, seconds, accuracy(hooked, tiny.test), hooked.training))

    result = fit(hooked, tiny, BASE, progress=False, log=quiet, every=StepHook(5, look))
    assert [c[0] for c in calls] == list(range(5, 21, 5))  # 1,000 images, batches of 50
    seconds = [c[1] for c in calls]
    assert seconds == sorted(seconds) and seconds[-1] <= result.history[0]["train_seconds"]
    assert calls[-1][2] == pytest.approx(result.history[0]["test_accuracy"])
    assert not any(c[3] for c in calls)  # the hook saw eval mode; training went on in train mode
    assert torch.equal(weights(plain), weights(hooked))


def test_shifted_views_are_the_image_and_its_four_one_pixel_shifts():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    views = shifted_views(x)
    assert len(views) == 5 and torch.equal(views[0], x)
    assert torch.equal(views[2][..., 1:, :], x[..., :-1, :])  # down: row r moves to r + 1
    assert torch.equal(views[2][..., 0, :], torch.zeros(2, 1, 5))
    assert torch.equal(views[4], shift(x, 0, 1))


def test_tta_predicts_the_class_of_highest_mean_probability(tiny):
    network = small_network().eval()
    x = tiny.test.images[:100].float() / 255
    with torch.no_grad():
        mean = sum(network(v).softmax(1) for v in shifted_views(x)) / 5
    assert torch.equal(labels(network, x, tta=True), mean.argmax(1))
    assert not torch.equal(mean.argmax(1), network(x).argmax(1))  # untrained: views disagree


@pytest.mark.mnist
@pytest.mark.parametrize(("name", "epochs"), [("fast", 3), ("best", 1)])
def test_the_fast_and_best_presets_learn_from_a_subset(name, epochs):
    preset = get_preset(name)
    config = TrainConfig.from_dict({**preset.settings, "epochs": epochs, "train_subset": 8000})
    data = load_splits(config.dataset, config.split, config.validation, config.train_subset)
    network = new_network(preset.spec(), config)
    result = fit(network, data, config, progress=False, log=quiet)
    assert config.channels_last and config.tta
    assert result.test_accuracy > 0.95  # the full 10,000 test images
    plain = accuracy(network, data.test, "auto", tta=False)
    assert abs(plain - result.test_accuracy) < 0.01
