"""Network: one spec everywhere, save/load, network3's conventions."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlab.arch import parse_arch
from cnnlab.errors import CheckpointError, SpecError
from cnnlab.network import Network
from cnnlab.presets import PRESETS

from .conftest import small_network


def test_save_and_load_round_trip(tmp_path):
    network = small_network(seed=3)
    network.save(tmp_path / "net.safetensors", {"note": "hello"})
    loaded, meta = Network.load(tmp_path / "net.safetensors")
    assert loaded.spec() == network.spec()
    assert meta["note"] == "hello"
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)  # bit for bit
    x = torch.rand(4, 1, 28, 28)
    network.eval(), loaded.eval()
    # loaded channels-last, it may sum in another order: equal up to rounding
    assert torch.allclose(loaded(x), network(x), atol=1e-6)


def test_the_file_is_safetensors_with_the_spec_in_its_header(tmp_path):
    path = tmp_path / "net.safetensors"
    small_network().save(path)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["cnnlab"])["spec"]["layers"][0]["type"] == "conv"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a readable cnnlab checkpoint"), (b"\x00" * 100, "not a readable")],
)
def test_corrupt_checkpoints_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        Network.load(path)


def test_missing_checkpoint_and_foreign_safetensors_are_refused(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="no such file"):
        Network.load(tmp_path / "nope.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint"):
        Network.load(tmp_path / "other.safetensors")


def test_same_seed_same_network_and_different_seed_different():
    a, b, c = small_network(1), small_network(1), small_network(2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_faithful_init_follows_network3():
    spec = PRESETS["conv2"].spec()
    network = Network.create(spec, seed=0, faithful=True)
    softmax = network.layers[-1]
    assert softmax.weight.abs().sum() == 0 and softmax.bias.abs().sum() == 0
    conv = network.layers[1]  # 40 maps of 5×5 after 2×2 pooling: n_out = 40·25/4 = 250
    assert conv.weight.std().item() == pytest.approx((1 / 250) ** 0.5, rel=0.05)
    fc = network.layers[2]
    assert fc.bias.std().item() == pytest.approx(1.0, rel=0.2)
    assert network.spec()["dropout_style"] == "network3"


def test_network3_init_alone_keeps_inverted_dropout():
    network = Network.create(PRESETS["conv1"].spec(), seed=0, init="network3")
    assert network.layers[-1].weight.abs().sum() == 0
    assert "dropout_style" not in network.spec()


def test_network3_dropout_scales_at_test_time_and_inverted_dropout_while_training():
    layers = parse_arch("fc4d0.5:linear-softmax2")
    spec = {"input": [1, 2, 2], "layers": layers}
    x = torch.ones(1000, 1, 2, 2)
    for style, train_mean in (("inverted", 1.0), ("network3", 0.5)):
        network = Network.from_spec({**spec, "dropout_style": style})
        fc = network.layers[0]
        with torch.no_grad():
            fc.weight.fill_(1.0), fc.bias.zero_()
        network.train()
        assert fc(x).mean().item() / 4 == pytest.approx(train_mean, rel=0.05)
        network.eval()
        assert fc(x).mean().item() / 4 == pytest.approx(0.5 if style == "network3" else 1.0)


def test_a_spec_with_normalisation_standardises_each_channel_before_the_first_layer():
    layers = parse_arch("conv4x3-softmax2")
    stats = {"mean": [0.5, 0.25, 0.1], "std": [0.2, 0.1, 0.05]}
    plain = Network.create({"input": [3, 6, 6], "layers": layers}, seed=3)
    normalised = Network.create({"input": [3, 6, 6], "layers": layers, "normalize": stats}, seed=3)
    assert normalised.spec()["normalize"] == stats
    assert set(normalised.state_dict()) == set(plain.state_dict())  # kept in the spec, not weights
    x = torch.rand(2, 3, 6, 6)
    mean, std = torch.tensor(stats["mean"]).view(3, 1, 1), torch.tensor(stats["std"]).view(3, 1, 1)
    assert torch.allclose(normalised(x), plain((x - mean) / std), atol=1e-6)


@pytest.mark.parametrize(
    "normalize",
    [{"mean": [0.5], "std": [0.0]}, {"mean": [0.5, 0.5], "std": [1, 1]}, {"mean": 1}, [1, 2]],
)
def test_bad_normalisation_in_a_spec_is_a_spec_error(normalize):
    with pytest.raises(SpecError, match="normalize"):
        Network.from_spec({"input": [1, 6, 6], "layers": parse_arch("fc2"), "normalize": normalize})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: t.fill_(float("nan")), "NaN or infinite"),
        (lambda t: t.fill_(float("inf")), "NaN or infinite"),
        (lambda t: t.to(torch.int64), "is torch.int64, not torch.float32"),
        (lambda t: t.bool(), "is torch.bool, not torch.float32"),
    ],
)
def test_weights_of_the_wrong_type_or_not_finite_are_refused(tmp_path, damage, message):
    from cnnlab.network import load_tensors, save_tensors

    net = small_network()
    net.save(tmp_path / "good.safetensors")
    tensors, meta = load_tensors(tmp_path / "good.safetensors")
    name = next(iter(tensors))
    tensors[name] = damage(tensors[name].clone())
    save_tensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=message):
        Network.load(tmp_path / "bad.safetensors")


def test_weights_for_another_shape_say_which_tensor_differs(tmp_path):
    from cnnlab.network import load_tensors, save_tensors

    small_network().save(tmp_path / "good.safetensors")
    tensors, meta = load_tensors(tmp_path / "good.safetensors")
    meta["spec"]["layers"][0]["maps"] = 4  # the spec now says 4 maps, the weights hold 8
    save_tensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=r"do not match the spec \(layers.0.bias 8 \(spec: 4"):
        Network.load(tmp_path / "bad.safetensors")
