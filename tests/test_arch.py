"""The short form of a network: parsing, printing and the errors it gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.arch import format_arch, parse_arch
from cnnlab.errors import SpecError
from cnnlab.network import Network


def test_the_chapter_network_in_short_form():
    layers = parse_arch("convpool20x5:sigmoid-convpool40x5:sigmoid-fc100:sigmoid-softmax10")
    assert layers[0] == {"type": "convpool", "maps": 20, "size": 5, "stride": 1, "padding": 0,
                         "activation": "sigmoid"}  # fmt: skip
    assert layers[-1] == {"type": "softmax", "units": 10}


def test_options_are_read():
    layers = parse_arch("conv6x5s2p2:tanh-l2pool3s2-local4x3-convpool8x3+avgpool2-bn-fc30d0.5")
    assert layers[0] | {} == {"type": "conv", "maps": 6, "size": 5, "stride": 2, "padding": 2,
                              "activation": "tanh"}  # fmt: skip
    assert layers[1] == {"type": "pool", "kind": "l2", "size": 3, "stride": 2}
    assert layers[3]["pool_kind"] == "avg" and layers[3]["pool"] == 2
    assert layers[4] == {"type": "batchnorm"}
    assert layers[5]["dropout"] == 0.5


token = st.one_of(
    st.builds(lambda k, m, s, a: f"{k}{m}x{s}{a}", st.sampled_from(["conv", "local", "convpool"]),
              st.integers(1, 64), st.integers(1, 7), st.sampled_from(["", ":sigmoid", ":tanh"])),
    st.builds(lambda k, s: f"{k}pool{s}", st.sampled_from(["", "l2", "avg"]), st.integers(1, 4)),
    st.builds(lambda u, d: f"fc{u}{d}", st.integers(1, 500), st.sampled_from(["", "d0.5"])),
    st.just("bn"),
)  # fmt: skip


@given(st.lists(token, min_size=1, max_size=6), st.integers(2, 20))
def test_format_is_the_inverse_of_parse(tokens, classes):
    text = "-".join([*tokens, f"softmax{classes}"])
    assert format_arch(parse_arch(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conv20-softmax10", "cannot read layer 'conv20'"),
        ("conv20x5--softmax10", "empty layer"),
        ("", "empty layer"),
        ("pool2:relu", "takes no activation"),
        ("conv4x3+pool2", "only convpool"),
        ("conv4x3:swish-softmax10", "unknown activation"),
        ("conv0x3-softmax10", "maps must be"),
        ("fc10d1.5", "dropout must be"),
    ],
)
def test_malformed_specs_are_refused_with_the_reason(text, message):
    with pytest.raises(SpecError, match=message):
        Network.from_spec({"input": [1, 28, 28], "layers": parse_arch(text)})


def test_bad_spec_dicts_are_refused():
    with pytest.raises(SpecError, match="unknown layer type"):
        Network.from_spec({"input": [1, 28, 28], "layers": [{"type": "dense", "units": 3}]})
    with pytest.raises(SpecError, match="bad parameters"):
        Network.from_spec({"input": [1, 28, 28], "layers": [{"type": "fc", "neurons": 3}]})
    with pytest.raises(SpecError, match="needs 'input'"):
        Network.from_spec({"layers": []})
