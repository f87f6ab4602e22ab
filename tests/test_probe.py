"""probe.py: stages and their values, receptive fields, filters, mistakes, confusion, history."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab import probe
from cnnlab.arch import parse_arch
from cnnlab.data import Part
from cnnlab.errors import CnnlabError
from cnnlab.layers import ConvPool
from cnnlab.network import Network
from cnnlab.predict import labels
from cnnlab.presets import PRESETS
from cnnlab.runs import MODEL

ARCHS = [
    PRESETS["fast"].arch,
    PRESETS["conv2"].arch,
    PRESETS["lenet5"].arch,
    "conv6x5s2p2-l2pool3s2-local4x3-avgpool2-fc20-softmax10",
    "fc30-softmax10",
]


def network(arch: str, seed: int = 0) -> Network:
    return Network.create({"input": [1, 28, 28], "layers": parse_arch(arch)}, seed=seed)


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_have_the_shapes_the_summary_promises(arch):
    net = network(arch)
    stages = probe.stages(net)
    summary = net.summary_rows()[1:]
    last_of_each_layer = {s.layer: s for s in stages}.values()  # a layer's output
    assert [s.shape for s in last_of_each_layer] == [row.output_shape for row in summary]
    outputs = probe.stage_outputs(net, torch.rand(3, 1, 28, 28))
    assert [tuple(o.shape) for o in outputs] == [(3, *s.shape) for s in stages]


def test_a_convpool_layer_shows_its_convolution_beside_the_pooled_maps():
    net = network("convpool6x5:sigmoid-convpool4x3:tanh-softmax10")
    stages = probe.stages(net)
    assert [(s.kind, s.shape) for s in stages] == [
        ("conv", (6, 24, 24)), ("pool", (6, 12, 12)), ("conv", (4, 10, 10)), ("pool", (4, 5, 5)),
        ("softmax", (10,)),
    ]  # fmt: skip
    outputs = probe.stage_outputs(net, torch.rand(2, 1, 28, 28))
    # with max pooling and a monotonic σ, the pooled maps are the max-pool of the conv maps
    torch.testing.assert_close(F.max_pool2d(outputs[0], 2), outputs[1])
    torch.testing.assert_close(F.max_pool2d(outputs[2], 2), outputs[3])
    torch.testing.assert_close(outputs[-1].sum(1), torch.ones(2))  # probabilities


@pytest.mark.parametrize(
    "arch",
    ["conv3x5s2p2:linear-avgpool3s2-conv2x3p1:linear-softmax10", "convpool4x5-convpool3x5-fc10"],
)
def test_receptive_field_is_where_the_unit_depends_on_the_input(arch):
    torch.manual_seed(0)
    net = network(arch).double()
    for index, stage in enumerate(probe.stages(net)):
        if not stage.is_map:
            continue
        _, rows, cols = stage.shape
        for row, col in [(0, 0), (rows // 2, cols // 2), (rows - 1, cols - 1)]:
            x = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
            net.eval()
            out = _stage_value(net, x, index)
            out[0, :, row, col].sum().backward()
            support = torch.nonzero(x.grad[0, 0])
            top, left, bottom, right = probe.receptive_field(net, index, row, col)
            assert support[:, 0].min() >= top and support[:, 0].max() <= bottom
            assert support[:, 1].min() >= left and support[:, 1].max() <= right
            if "linear" in arch:  # every weight is non-zero: the unit sees exactly the box
                assert (support[:, 0].min(), support[:, 1].min()) == (top, left)
                assert (support[:, 0].max(), support[:, 1].max()) == (bottom, right)


def _stage_value(net, x, index):
    """The values of one stage with gradients (stage_outputs runs in inference mode)."""
    values = []
    for layer in net.layers:
        if isinstance(layer, ConvPool):
            values.append(
                layer.ops.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
            )
        x = layer(x)
        values.append(x)
    return values[index]


def test_receptive_field_size_matches_the_summary_away_from_the_border():
    net = network(PRESETS["conv2"].arch)
    top, left, bottom, right = probe.receptive_field(net, 3, 2, 2)  # second pooled layer
    assert (bottom - top + 1, right - left + 1) == (16, 16)
    assert net.summary_rows()[2].receptive_field == "16×16"


def test_receptive_field_refuses_units_that_do_not_exist_and_fc_sees_everything():
    net = network("conv4x5-pool2-fc10-softmax10")
    with pytest.raises(CnnlabError, match="outside"):
        probe.receptive_field(net, 0, 24, 0)
    with pytest.raises(CnnlabError, match="does not exist"):
        probe.receptive_field(net, 9, 0, 0)
    assert probe.receptive_field(net, 2, 0, 0) == (0, 0, 27, 27)


def test_filters_come_from_every_shared_weight_layer_and_only_those():
    net = network("convpool6x5-local4x3-conv5x3-softmax10")
    banks = probe.filters(net)
    assert [(b.layer, tuple(b.weights.shape)) for b in banks] == [
        (0, (6, 1, 5, 5)),
        (2, (5, 4, 3, 3)),
    ]
    with pytest.raises(CnnlabError, match="no convolutional layer"):
        probe.filters(network("fc30-softmax10"))


def test_mistakes_and_confusion_matrix_agree_with_the_predictions(trained_run, mnist):
    net, _ = Network.load(trained_run / MODEL)
    test = Part(mnist.test.images[:2500], mnist.test.labels[:2500])
    predicted = probe.predictions(net, test)
    assert torch.equal(predicted, labels(net, test.images))
    matrix = probe.confusion_matrix(test.labels, predicted, 10)
    assert matrix.sum() == len(test)
    assert matrix.sum(1).tolist() == torch.bincount(test.labels, minlength=10).tolist()
    found = probe.mistakes(test, predicted, limit=30)
    wrong = len(test) - int(matrix.trace())
    assert len(found.labels) == min(30, wrong) and found.total == len(test)
    assert (found.labels != found.predicted).all()
    assert torch.equal(found.images, test.images[found.indices])


def test_training_history_reads_the_metrics_log(trained_run, tmp_path):
    rows = probe.training_history(trained_run)
    assert [row["epoch"] for row in rows] == [1, 2]
    with pytest.raises(CnnlabError, match="no such file"):
        probe.training_history(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("not json\n")
    with pytest.raises(CnnlabError, match="not a metrics log"):
        probe.training_history(tmp_path)
