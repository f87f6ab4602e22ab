"""Layers: the chapter's worked examples of shapes and parameters, pooling, unshared weights."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.errors import SpecError
from cnnlab.layers import Conv, ConvPool, FullyConnected, LocallyConnected, Pool, Softmax
from cnnlab.network import Network


def build(layer, in_shape):
    layer.build(in_shape)
    return layer


def test_5x5_window_on_28x28_input_gives_24x24_hidden_units():
    assert build(Conv(1, 5), (1, 28, 28)).out_shape == (1, 24, 24)


def test_20_feature_maps_of_5x5_have_520_parameters():
    conv = build(Conv(20, 5), (1, 28, 28))
    assert conv.parameter_count() == 20 * (5 * 5 + 1) == 520
    assert conv.out_shape == (20, 24, 24)


def test_fully_connected_784_to_30_has_23550_parameters():
    assert build(FullyConnected(30), (1, 28, 28)).parameter_count() == 784 * 30 + 30 == 23_550


def test_six_5x5_filters_on_32x32x3_have_456_parameters_not_156():
    network = Network([Conv(6, 5), Softmax(10)], input_shape=(3, 32, 32))
    assert network.layers[0].parameter_count() == 456
    summary = network.summary()
    assert "6 × (5·5·3 + 1)" in summary
    assert "456" in summary and "not 6 × (5·5 + 1) = 156" in summary


def test_stride_and_padding_change_the_map_size():
    assert build(Conv(4, 5, stride=2), (1, 28, 28)).out_shape == (4, 12, 12)
    assert build(Conv(4, 5, padding=2), (1, 28, 28)).out_shape == (4, 28, 28)
    assert build(Conv(4, 3, stride=3), (1, 28, 28)).out_shape == (4, 9, 9)


def test_max_pooling_condenses_24x24_to_12x12():
    assert build(Pool(2), (20, 24, 24)).out_shape == (20, 12, 12)


def test_window_larger_than_map_is_refused():
    with pytest.raises(SpecError, match="7×7 window does not fit"):
        build(Conv(3, 7), (1, 5, 5))
    with pytest.raises(SpecError, match="does not fit"):
        Network([Conv(4, 5), Pool(2), Conv(4, 5), Pool(2), Conv(4, 5), Softmax(10)])


def test_conv_after_fully_connected_is_refused():
    with pytest.raises(SpecError, match="needs feature maps"):
        Network([FullyConnected(10), Conv(2, 3), Softmax(10)])


X = torch.tensor(
    [[1.0, 2.0, -3.0, 0.0], [4.0, -1.0, 2.0, 2.0], [0.0, 0.0, 5.0, -6.0], [0.0, 0.0, 1.0, 1.0]]
).reshape(1, 1, 4, 4)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("max", [[4.0, 2.0], [0.0, 5.0]]),
        ("avg", [[1.5, 0.25], [0.0, 0.25]]),
        ("l2", [[math.sqrt(22), math.sqrt(17)], [0.0, math.sqrt(63)]]),
    ],
)
def test_each_pooling_kind_on_a_hand_computed_example(kind, expected):
    pool = build(Pool(2, kind), (1, 4, 4))
    assert torch.allclose(pool(X)[0, 0], torch.tensor(expected))


def test_overlapping_max_pool_3_stride_1():
    pool = build(Pool(3, "max", stride=1), (1, 4, 4))
    assert pool(X)[0, 0].tolist() == [[5.0, 5.0], [5.0, 5.0]]


def test_l2_pooling_is_the_root_of_the_sum_of_squares():
    x = torch.randn(2, 3, 9, 9)
    pool = build(Pool(3, "l2", stride=2), (3, 9, 9))
    out = pool(x)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = x[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            assert torch.allclose(out[:, :, i, j], window.pow(2).sum((2, 3)).sqrt(), atol=1e-5)


def test_l2_pooling_gradient_is_zero_not_nan_on_an_all_zero_window():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 3.0
    x.requires_grad_(True)
    build(Pool(2, "l2"), (1, 4, 4))(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 0, 0, 0] == 1.0  # a/‖a‖ with a single non-zero entry
    assert x.grad[0, 0, 2:, 2:].abs().sum() == 0


def _tied_local(conv: Conv, in_shape) -> LocallyConnected:
    local = LocallyConnected(conv.maps, conv.size, conv.stride, conv.padding, conv.activation)
    build(local, in_shape)
    positions = local.weight.shape[0]
    with torch.no_grad():
        local.weight.copy_(conv.weight.reshape(conv.maps, -1).expand(positions, -1, -1))
        local.bias.copy_(conv.bias[:, None, None].expand_as(local.bias))
    return local


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1)])
def test_locally_connected_equals_conv_when_weights_are_tied(stride, padding):
    in_shape = (3, 11, 11)
    conv = build(Conv(4, 3, stride, padding), in_shape)
    local = _tied_local(conv, in_shape)
    x = torch.randn(5, *in_shape)
    assert torch.allclose(local(x), conv(x), atol=1e-5)


def test_locally_connected_differs_from_conv_when_weights_differ():
    in_shape = (1, 8, 8)
    conv = build(Conv(2, 3, activation="linear"), in_shape)
    local = _tied_local(conv, in_shape)
    with torch.no_grad():
        local.weight[5] += 0.5  # one position gets its own filter
    x = torch.randn(3, *in_shape)
    diff = (local(x) - conv(x)).abs().flatten(2)
    assert diff[:, :, 5].min() > 0
    assert torch.allclose(diff[:, :, :5], torch.zeros(()), atol=1e-5)


def test_locally_connected_has_a_filter_per_position():
    local = build(LocallyConnected(20, 5), (1, 28, 28))
    assert local.parameter_count() == 24 * 24 * 20 * (5 * 5 + 1)


def test_convpool_applies_bias_and_activation_after_pooling():
    layer = build(ConvPool(2, 3, pool=2, pool_kind="avg", activation="sigmoid"), (1, 6, 6))
    x = torch.randn(4, 1, 6, 6)
    z = torch.nn.functional.conv2d(x, layer.weight)
    expected = torch.sigmoid(torch.nn.functional.avg_pool2d(z, 2) + layer.bias[:, None, None])
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert layer.parameter_count() == 2 * (3 * 3 + 1)


def test_summary_reports_receptive_fields_and_flops():
    network = Network([ConvPool(20, 5), ConvPool(40, 5), FullyConnected(100), Softmax(10)])
    rows = network.summary_rows()
    assert [r.receptive_field for r in rows[1:3]] == ["6×6", "16×16"]
    assert rows[3].receptive_field == "whole input"
    conv_flops = 2 * 25 * 20 * 24 * 24
    assert rows[1].flops == conv_flops + 20 * 12 * 12 * 4
    assert sum(r.parameters for r in rows) == 520 + 20_040 + 64_100 + 1_010


# ---- LeNet-5 as published (LeCun et al. 1998) ----------------------------------------------
LENET5 = "conv6x5p2:lecun-subsample2-conv16x5+c3:lecun-subsample2-conv120x5:lecun-fc84:lecun"


def lenet5(kernels: str = "native") -> Network:
    from cnnlab.arch import parse_arch

    spec = {"input": [1, 28, 28], "layers": parse_arch(LENET5 + "-softmax10")}
    return Network.create(spec, seed=0, kernels=kernels)


def test_lenet5_has_the_papers_parameters_layer_by_layer():
    # the paper: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters
    counts = [row.parameters for row in lenet5().summary_rows()[1:-1]]
    assert counts == [156, 12, 1516, 32, 48120, 10164]
    shapes = [row.output_shape for row in lenet5().summary_rows()[1:6]]
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]


def test_c3_maps_see_only_the_input_maps_of_the_table():
    from cnnlab.layers import CONNECTION_TABLES

    network = lenet5()
    c3 = network.layers[2]
    x = torch.randn(2, 6, 14, 14)
    before = c3(x)
    with torch.no_grad():  # weights from input maps a map is not joined to change nothing
        for m, inputs in enumerate(CONNECTION_TABLES["c3"]):
            unjoined = [d for d in range(6) if d not in inputs]
            c3.weight[m, unjoined] += 5.0
    assert torch.equal(c3(x), before)
    c3(x).sum().backward()
    assert int((c3.weight.grad != 0).any(3).any(2).sum()) == 60  # 60 joined map pairs learn


def test_subsampling_is_a_scaled_sum_plus_bias_through_the_squashing_function():
    network = lenet5()
    s2 = network.layers[1]
    x = torch.randn(3, 6, 28, 28)
    sums = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))
    expected = 1.7159 * torch.tanh(
        (sums * s2.coefficient[:, None, None] + s2.bias[:, None, None]) * 2 / 3
    )
    torch.testing.assert_close(s2(x), expected)
    assert 1.7159 * math.tanh(2 / 3) == pytest.approx(1.0, abs=1e-4)  # f(±1) = ±1, as designed


def test_lenet5_runs_the_same_on_the_explicit_kernels():
    x = torch.rand(4, 1, 28, 28)
    native_net, explicit_net = lenet5("native"), lenet5("explicit")
    torch.testing.assert_close(explicit_net(x), native_net(x), rtol=1e-4, atol=1e-5)
    explicit_net(x).sum().backward()
    native_net(x).sum().backward()
    for a, b in zip(explicit_net.parameters(), native_net.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5)


def test_a_connection_table_for_other_maps_is_refused():
    from cnnlab.arch import parse_arch

    with pytest.raises(SpecError, match="c3 connection table joins 16 maps to 6"):
        Network.from_spec({"input": [1, 28, 28], "layers": parse_arch("conv8x5+c3-softmax10")})
    with pytest.raises(SpecError, match="only conv takes a connection table"):
        parse_arch("local16x5+c3")
