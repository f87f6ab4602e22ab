"""Explicit kernels: hand-derived gradients checked by finite differences and against PyTorch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from cnnlab.arch import parse_arch
from cnnlab.kernels import explicit, native
from cnnlab.network import Network
from cnnlab.presets import get_preset
from cnnlab.train import TrainConfig, fit

from .conftest import small_splits

POOLS = ("max", "l2", "avg")
# (batch, depth, height, width, maps, size, stride, padding)
CONV_GEOMETRIES = [
    (2, 1, 7, 7, 2, 3, 1, 0),
    (2, 3, 7, 6, 2, 3, 2, 2),
    (1, 3, 5, 5, 2, 5, 1, 2),
    (2, 2, 6, 5, 2, 2, 2, 0),
    (1, 2, 5, 7, 2, 1, 1, 0),
]
# (batch, depth, height, width, size, stride): overlapping, leftover rows, gaps
POOL_GEOMETRIES = [
    (2, 1, 6, 6, 2, 2),
    (2, 3, 7, 7, 3, 2),
    (1, 3, 5, 6, 2, 1),
    (2, 2, 7, 5, 3, 3),
    (1, 1, 5, 5, 2, 3),
]
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: a second thread only adds synchronisation (and noise when busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def out_side(side: int, size: int, stride: int, padding: int = 0) -> int:
    return (side + 2 * padding - size) // stride + 1


def randn(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, requires_grad=True)


def pool(ops, kind: str):
    return getattr(ops, f"{kind}_pool")


# ---- finite differences (float64) --------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_convolution_gradients_match_finite_differences(geometry, with_bias):
    torch.manual_seed(0)
    n, depth, h, w, maps, size, stride, padding = geometry
    x, weight = randn(n, depth, h, w), randn(maps, depth, size, size)
    bias = randn(maps) if with_bias else None
    assert gradcheck(lambda *t: explicit.conv2d(*t, stride, padding), (x, weight, bias))


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_locally_connected_gradients_match_finite_differences(geometry):
    torch.manual_seed(0)
    n, depth, h, w, maps, size, stride, padding = geometry
    out_h, out_w = out_side(h, size, stride, padding), out_side(w, size, stride, padding)
    x = randn(n, depth, h, w)
    weight = randn(out_h * out_w, maps, depth * size * size)
    bias = randn(maps, out_h, out_w)
    assert gradcheck(
        lambda *t: explicit.locally_connected(*t, size, stride, padding), (x, weight, bias)
    )


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
def test_pooling_gradients_match_finite_differences(kind, geometry):
    torch.manual_seed(0)
    n, depth, h, w, size, stride = geometry
    x = randn(n, depth, h, w)
    assert gradcheck(lambda t: pool(explicit, kind)(t, size, stride), (x,))


def test_fully_connected_gradients_match_finite_differences():
    torch.manual_seed(0)
    assert gradcheck(explicit.linear, (randn(4, 7), randn(3, 7), randn(3)))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_log_likelihood_gradients_match_finite_differences(label_smoothing):
    torch.manual_seed(0)
    targets = torch.tensor([0, 3, 3, 1, 4])
    assert gradcheck(
        lambda z: explicit.softmax_cross_entropy(z, targets, label_smoothing), (randn(5, 6),)
    )


# ---- explicit against native (float32) ---------------------------------------------------
def assert_same_as_native(run, *inputs: torch.Tensor | None) -> None:
    """run(ops, *inputs) with explicit and native ops: equal outputs and input gradients."""
    results = []
    for ops in (explicit, native):
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
        out = run(ops, *leaves)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out * upstream).sum().backward()
        results.append([out.detach()] + [t.grad for t in leaves if t is not None])
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-4)


@st.composite
def windows(draw, max_padding: int = 2) -> tuple[int, ...]:
    """(batch, depth, height, width, size, stride, padding) of a window that fits the map."""
    size, stride = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    padding = draw(st.integers(0, max_padding))
    smallest = max(1, size - 2 * padding)
    h, w = draw(st.integers(smallest, 13)), draw(st.integers(smallest, 13))
    return draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w, size, stride, padding


@FAST
@given(windows(), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_convolution_matches_native(geometry, maps, with_bias, seed):
    torch.manual_seed(seed)
    n, depth, h, w, size, stride, padding = geometry
    x, weight = torch.randn(n, depth, h, w), torch.randn(maps, depth, size, size)
    bias = torch.randn(maps) if with_bias else None
    assert_same_as_native(lambda ops, *t: ops.conv2d(*t, stride, padding), x, weight, bias)


@FAST
@given(windows(), st.integers(1, 4), st.integers(0, 2**16))
def test_locally_connected_matches_native(geometry, maps, seed):
    torch.manual_seed(seed)
    n, depth, h, w, size, stride, padding = geometry
    out_h, out_w = out_side(h, size, stride, padding), out_side(w, size, stride, padding)
    x = torch.randn(n, depth, h, w)
    weight = torch.randn(out_h * out_w, maps, depth * size * size)
    bias = torch.randn(maps, out_h, out_w)
    assert_same_as_native(
        lambda ops, *t: ops.locally_connected(*t, size, stride, padding), x, weight, bias
    )


@FAST
@given(windows(max_padding=0), st.sampled_from(POOLS), st.integers(0, 2**16))
def test_pooling_matches_native(geometry, kind, seed):
    torch.manual_seed(seed)
    n, depth, h, w, size, stride, _ = geometry
    x = torch.randn(n, depth, h, w)
    assert_same_as_native(lambda ops, t: pool(ops, kind)(t, size, stride), x)


@FAST
@given(st.integers(1, 12), st.integers(1, 30), st.integers(2, 12), st.sampled_from([0.0, 0.1, 0.3]))
def test_fully_connected_softmax_and_cost_match_native(batch, features, classes, smoothing):
    x, weight = torch.randn(batch, features), torch.randn(classes, features)
    bias = torch.randn(classes)
    targets = torch.randint(classes, (batch,))

    def cost(ops, *t):
        return ops.softmax_cross_entropy(ops.linear(*t), targets, smoothing)

    assert_same_as_native(cost, x, weight, bias)


@pytest.mark.parametrize(("size", "stride"), [(2, 2), (3, 2), (2, 1)])
def test_max_pooling_sends_a_tie_to_the_first_unit_of_the_window_as_native_does(size, stride):
    x = torch.randint(0, 3, (2, 3, 9, 9)).float()  # many ties
    assert_same_as_native(lambda ops, t: ops.max_pool(t, size, stride), x)


def test_max_pooling_of_a_flat_window_sends_its_gradient_to_the_top_left_unit():
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    explicit.max_pool(x, 2, 2).sum().backward()
    assert x.grad.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]


def test_l2_pooling_of_an_all_zero_window_is_zero_with_zero_gradient():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 2:, 2:] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    x.requires_grad_()
    out = explicit.l2_pool(x, 2, 2)
    assert out.tolist() == [[[[0.0, 0.0], [0.0, 5.0]]]]
    out.sum().backward()
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 2:, 2:] = torch.tensor([[0.6, 0.0], [0.0, 0.8]])  # a/‖a‖
    torch.testing.assert_close(x.grad, expected)


def test_explicit_kernels_call_no_native_convolution_pooling_or_loss_op():
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    with torch.profiler.profile() as profiler:
        z = explicit.conv2d(x, torch.randn(4, 3, 3, 3, requires_grad=True), None, 1, 1)
        z = explicit.locally_connected(z, torch.randn(64, 2, 36), torch.randn(2, 8, 8), 3, 1, 0)
        z = explicit.max_pool(z, 2, 1) + explicit.l2_pool(z, 2, 1) + explicit.avg_pool(z, 2, 1)
        logits = explicit.linear(z.flatten(1), torch.randn(5, 98), torch.randn(5))
        explicit.softmax_cross_entropy(logits, torch.tensor([1, 4]), 0.1).backward()
    called = {event.key for event in profiler.key_averages() if event.key.startswith("aten::")}
    forbidden = re.compile(r"conv|pool|nll|cross_entropy|softmax|linear|im2col")
    assert "aten::bmm" in called and "aten::col2im" in called
    assert not {op for op in called if forbidden.search(op)}


# ---- the same network on both kernels ----------------------------------------------------
def test_a_network_switches_kernels_without_touching_its_weights():
    network = Network.create(get_preset("conv2").spec(), seed=0, kernels="explicit")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    x = torch.rand(3, 1, 28, 28)
    assert type(network(x).grad_fn).__name__ == "_LinearBackward"
    network.use_kernels("native")
    assert type(network(x).grad_fn).__name__ != "_LinearBackward"
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())


MIXED = "conv6x3p1-l2pool2-conv8x3s2p2:tanh-pool3s2-local4x2:tanh-avgpool2s1-fc20d0.5-softmax10"


@pytest.mark.parametrize("arch", [get_preset("conv2").arch, MIXED])
def test_training_on_explicit_and_native_kernels_ends_with_the_same_weights(mnist, arch):
    """The same seed, data and loop (fit): 40 steps of SGD leave the same network."""
    spec = {"input": [1, 28, 28], "layers": parse_arch(arch)}
    data = small_splits(mnist, 400, held_out=200)
    config = TrainConfig(epochs=1, lr=0.1, momentum=0.5, label_smoothing=0.1, seed=3)
    trained = {}
    for kernels in ("explicit", "native"):
        network = Network.create(spec, seed=1, kernels=kernels)
        result = fit(network, data, config, progress=False, log=lambda line: None)
        trained[kernels] = network.state_dict(), result.history[0]["train_loss"]
    (explicit_weights, explicit_loss), (native_weights, native_loss) = trained.values()
    assert explicit_loss == pytest.approx(native_loss, rel=1e-4)
    for name, weight in explicit_weights.items():
        torch.testing.assert_close(weight, native_weights[name], rtol=1e-4, atol=1e-5, msg=name)


def test_explicit_kernels_train_under_bf16_autocast_like_native():
    spec = {"input": [1, 28, 28], "layers": parse_arch(MIXED.replace("d0.5", ""))}
    x, y = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    grads = {}
    for kernels in ("explicit", "native"):
        network = Network.create(spec, seed=0, kernels=kernels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = network(x)
        network.ops.softmax_cross_entropy(logits.float(), y).backward()
        grads[kernels] = torch.cat([p.grad.flatten() for p in network.parameters()])
    assert grads["explicit"].dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(grads["explicit"], grads["native"], dim=0)
    assert cosine > 0.99


# ---- the derivation points at the code ---------------------------------------------------
def test_backprop_doc_links_each_equation_to_the_line_that_implements_it():
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "backprop.md").read_text()
    source = (root / "src" / "cnnlab" / "kernels" / "explicit.py").read_text().splitlines()
    links = re.findall(r"\[(BP[1-4])\]\(\.\./src/cnnlab/kernels/explicit\.py#L(\d+)\)", doc)
    assert len(links) >= 13
    for equation, line in links:
        n = int(line)
        code, comment = source[n - 1].strip(), "\n".join(source[max(n - 4, 0) : n])
        assert code and not code.startswith("#"), f"explicit.py line {n} is not code: {code!r}"
        assert equation in comment, f"explicit.py line {n} does not implement {equation}"
    for line in re.findall(r"kernels/explicit\.py#L(\d+)", doc):
        assert source[int(line) - 1].strip(), f"explicit.py line {line} is blank"
