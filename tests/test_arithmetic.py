"""arithmetic.py: a unit's story, re-added by hand, equals the value the network computed."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab import probe
from cnnlab.arch import parse_arch
from cnnlab.arithmetic import unit_story
from cnnlab.errors import CnnlabError
from cnnlab.network import Network
from cnnlab.presets import PRESETS

ARCHS = [
    PRESETS["fast"].arch,  # strided conv, batch norm, a ConvPool, fc
    PRESETS["conv2"].arch,  # the chapter's sigmoid ConvPools
    PRESETS["lenet5"].arch,  # subsampling, the C3 connection table, the scaled tanh
    "conv6x5s2p2-l2pool3s2-local4x3-avgpool2-fc20-softmax10",
    "convpool4x5+l2pool2:tanh-convpool3x3+avgpool2:sigmoid-softmax10",
    "fc30d0.5-softmax10",
]


def network(arch: str, input_shape=(1, 28, 28), normalize=None) -> Network:
    spec = {"input": list(input_shape), "layers": parse_arch(arch)}
    if normalize:
        spec["normalize"] = normalize
    net = Network.create(spec, seed=0)
    for module in net.modules():  # batch norm with statistics of its own, not 0 and 1
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    return net


def units(stage: probe.Stage, count: int = 5) -> list[tuple[int, int, int]]:
    """A few units of a stage, corners included (where windows hang over the padding)."""
    generator = torch.Generator().manual_seed(len(stage.name))
    if not stage.is_map:
        return [(int(torch.randint(stage.shape[0], (1,), generator=generator)), 0, 0)]
    maps, rows, cols = stage.shape
    chosen = [(0, 0, 0), (maps - 1, rows - 1, cols - 1)]
    for _ in range(count - 2):
        picks = [int(torch.randint(n, (1,), generator=generator)) for n in (maps, rows, cols)]
        chosen.append(tuple(picks))
    return chosen


def recomputed(story: dict) -> float:
    """The unit's value, re-added by hand from the story's parts."""
    kind = story["kind"]
    if "products" in story:  # a window of weights
        products = torch.tensor(story["products"], dtype=torch.float64)
        weights = torch.tensor(story["weights"], dtype=torch.float64)
        inputs = torch.tensor(story["inputs"], dtype=torch.float64)
        torch.testing.assert_close(products, weights * inputs, atol=2e-6, rtol=0)
        assert sum(story["channel_sums"]) == pytest.approx(story["sum"], abs=1e-4)
        assert story["z"] == pytest.approx(story["sum"] + story["bias"], abs=1e-6)
    elif "pool" in story:
        window = torch.tensor(story["inputs"], dtype=torch.float64)
        expected = {"max": window.max(), "l2": window.square().sum().sqrt(),
                    "avg": window.mean()}[story["pool"]]  # fmt: skip
        assert story["pooled"] == pytest.approx(float(expected), abs=1e-5)
        if story["pool"] == "max":
            row, col = story["winner"]
            assert window[row, col] == window.max()
    elif kind == "subsample":
        assert story["sum"] == pytest.approx(sum(map(sum, story["inputs"])), abs=1e-4)
        assert story["z"] == pytest.approx(story["coefficient"] * story["sum"] + story["bias"])
    elif kind == "batchnorm":
        normalised = (story["input"] - story["mean"]) / math.sqrt(story["variance"] + story["eps"])
        return story["scale"] * normalised + story["shift"]
    elif "top" in story:  # fully connected: the largest terms plus the rest
        shown = sum(term["product"] for term in story["top"])
        assert story["z"] == pytest.approx(shown + story["rest"] + story["bias"], abs=1e-4)
        for term in story["top"]:
            expected = term["weight"] * term["input"] * story["input_scale"]
            assert term["product"] == pytest.approx(expected, abs=1e-6)
    if kind == "softmax":
        exps = [math.exp(z - max(story["logits"])) for z in story["logits"]]
        return exps[story["unit"]["map"]] / sum(exps)
    if "activation" in story:
        z = torch.tensor(story["z"])
        return float(probe.ACTIVATIONS[story["activation"]](z))
    return story["pooled"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kind_of_unit_adds_up_to_the_networks_own_value(arch):
    net = network(arch)
    x = torch.rand(1, 28, 28)
    for index, stage in enumerate(probe.stages(net)):
        for map_, row, col in units(stage):
            story = unit_story(net, x, index, map_, row, col)
            assert story["a"] == pytest.approx(story["value"], abs=1e-4, rel=1e-4), story["name"]
            assert recomputed(story) == pytest.approx(story["value"], abs=1e-4, rel=1e-4)


def test_a_conv_unit_shows_its_receptive_field_and_the_weights_its_map_shares():
    net = network("convpool20x5-convpool40x5-fc100-softmax10")
    x = torch.rand(1, 28, 28)
    story = unit_story(net, x, 0, 7, 10, 3)
    assert story["window"] | {"inside": None} == {
        "top": 10, "left": 3, "size": 5, "stride": 1, "padding": 0, "inside": None,
    }  # fmt: skip
    torch.testing.assert_close(torch.tensor(story["inputs"]), x[:, 10:15, 3:8], atol=1e-6, rtol=0)
    shared = net.layers[0].weight[7].detach()
    torch.testing.assert_close(torch.tensor(story["weights"]), shared, atol=1e-6, rtol=0)
    assert story["shared"] and story["bias"] == pytest.approx(float(net.layers[0].bias[7].detach()))
    assert unit_story(net, x, 0, 7, 0, 0)["weights"] == story["weights"]  # one filter per map
    deep = unit_story(net, x, 2, 39, 7, 7)  # conv 40×5×5 over 20 maps: a 20×5×5 filter
    assert torch.tensor(deep["weights"]).shape == (20, 5, 5)
    assert len(deep["channel_sums"]) == 20


def test_a_padded_window_marks_the_cells_outside_the_picture():
    net = network("conv3x5p2-softmax10")
    story = unit_story(net, torch.rand(1, 28, 28), 0, 0, 0, 0)
    assert (story["window"]["top"], story["window"]["left"]) == (-2, -2)
    inside = torch.tensor(story["window"]["inside"])
    assert inside.sum() == 9 and inside[2:, 2:].all()
    assert torch.tensor(story["inputs"])[0][~inside].eq(0).all()  # padding adds zeros


def test_a_max_pooled_unit_names_the_winner_of_its_window():
    net = network("conv4x5-pool2-softmax10")
    x = torch.rand(1, 28, 28)
    story = unit_story(net, x, 1, 2, 5, 6)
    conv = probe.stage_outputs(net, x[None])[0][0, 2]
    window = conv[10:12, 12:14]
    assert story["window"]["top"] == 10 and story["window"]["left"] == 12
    row, col = story["winner"]
    assert story["pooled"] == pytest.approx(float(window.max())) == story["value"]
    assert window[row, col] == window.max()


def test_the_output_story_is_the_softmax_of_every_classs_weighted_input():
    net = network("conv4x5-pool2-softmax10")
    x = torch.rand(1, 28, 28)
    story = unit_story(net, x, 2, 3)
    probabilities = probe.stage_outputs(net, x[None])[-1][0]
    torch.testing.assert_close(
        torch.tensor(story["probabilities"], dtype=torch.float64),
        probabilities.double(),
        atol=1e-6,
        rtol=0,
    )
    assert story["exp_sum"] == pytest.approx(sum(story["exponentials"]))
    assert story["z"] == pytest.approx(story["logits"][3], abs=1e-5)
    assert story["count"] == 4 * 12 * 12
    assert all(len(term["at"]) == 3 for term in story["top"])  # (map, row, col) below


def test_a_standardising_colour_network_starts_from_the_standardised_input():
    normalize = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    net = network("conv4x3-bn-pool2-softmax10", (3, 16, 16), normalize)
    x = torch.rand(3, 16, 16)
    story = unit_story(net, x, 0, 1, 4, 4)
    assert story["standardised"]
    expected = (x[:, 4:7, 4:7] - net.mean) / net.std
    torch.testing.assert_close(torch.tensor(story["inputs"]), expected, atol=1e-5, rtol=0)
    assert story["a"] == pytest.approx(story["value"], abs=1e-5)
    probabilities = probe.stage_outputs(net, x[None])[-1][0]
    torch.testing.assert_close(probabilities, net(x[None]).softmax(1)[0])


@pytest.mark.parametrize(
    ("stage", "unit", "message"),
    [(9, (0, 0, 0), "stage 9 does not exist"), (0, (4, 0, 0), "outside conv"),
     (0, (0, 24, 0), "outside conv"), (2, (10, 0, 0), "unit 10 is outside")],
)  # fmt: skip
def test_a_unit_outside_the_network_is_refused(stage, unit, message):
    net = network("conv4x5-pool2-softmax10")
    with pytest.raises(CnnlabError, match=message):
        unit_story(net, torch.rand(1, 28, 28), stage, *unit)
