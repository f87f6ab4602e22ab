"""Malformed input from outside: each case is refused in one line with exit status 2, and the
readers, fed random bytes or random changes to real files, give a valid object or a CnnlabError,
never another exception."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data.idx import gunzip, parse_idx
from cnnlab.errors import CnnlabError, DataError
from cnnlab.images import load_picture
from cnnlab.network import Network, load_tensors, save_tensors
from cnnlab.runs import CHECKPOINT, read_run

from .conftest import small_network

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A network file, and the tensors and metadata it holds."""
    folder = tmp_path_factory.mktemp("saved")
    network = small_network()
    meta = {"classes": [str(i) for i in range(10)], "input": [1, 28, 28], "dataset": "mnist"}
    network.save(folder / "model.safetensors", meta)
    tensors, meta = load_tensors(folder / "model.safetensors")
    digit = folder / "digit.png"
    pixels = torch.zeros(28, 28, dtype=torch.uint8)
    pixels[5:23, 12:16] = 255
    Image.fromarray(pixels.numpy()).save(digit)
    return folder, tensors, meta, digit


def with_spec(meta, **changes):
    return {**meta, "spec": {**meta["spec"], **changes}}


CASES = {
    "metadata null": lambda m: None,
    "metadata a number": lambda m: 3,
    "metadata a string": lambda m: "x",
    "no spec": lambda m: {k: v for k, v in m.items() if k != "spec"},
    "spec null": lambda m: {**m, "spec": None},
    "layer type a list": lambda m: with_spec(m, layers=[{"type": []}]),
    "layers an object": lambda m: with_spec(m, layers={"a": 1}),
    "input with infinity": lambda m: with_spec(m, input=[1, float("inf"), 28]),
    "input of floats": lambda m: with_spec(m, input=[1, 28.5, 28]),
    "input of booleans": lambda m: with_spec(m, input=[True, 28, 28]),
    "input beyond any picture": lambda m: with_spec(m, input=[1, 10**12, 28]),
    "fc of a million units in a small file": lambda m: with_spec(
        m, layers=[{"type": "fc", "units": 10**6}, {"type": "softmax", "units": 10}]
    ),
    "classes an int": lambda m: {**m, "classes": 7},
    "classes too short": lambda m: {**m, "classes": ["a"]},
    "input unlike the spec's": lambda m: {**m, "input": "abc"},
    "dataset a number": lambda m: {**m, "dataset": 5},
    "config a list": lambda m: {**m, "config": []},
    "dropout style a number": lambda m: with_spec(m, dropout_style=3),
    "normalisation of the wrong form": lambda m: with_spec(m, normalize={"mean": "x"}),
}


def one_line_refusal(capsys, *argv):
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("cnnlab: error:"), err
    return err


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_network_file_is_refused_in_one_line(case, saved, capsys, tmp_path):
    _, tensors, meta, digit = saved
    bad = tmp_path / "bad.safetensors"
    changed = CASES[case](json.loads(json.dumps(meta)))
    text = json.dumps(changed, allow_nan=True)
    save_file(tensors, str(bad), metadata={"cnnlab": text})
    one_line_refusal(capsys, "predict", bad, digit)
    one_line_refusal(capsys, "summary", bad)


def run_folder(tmp_path, tensors, meta):
    folder = tmp_path / "run"
    folder.mkdir()
    save_tensors(folder / CHECKPOINT, tensors, meta)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real run's checkpoint: tensors and metadata, as `cnnlab train` wrote them."""
    from cnnlab.data import Part, Splits
    from cnnlab.train import fit

    out = tmp_path_factory.mktemp("run")
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    part = Part(images, labels)
    data = Splits(part, None, part, "mnist", [str(i) for i in range(10)])
    config = TrainConfig(epochs=1, batch_size=16, momentum=0.9, schedule="constant")
    fit(small_network(), data, config, out=out, progress=False, log=lambda line: None)
    return load_tensors(out / CHECKPOINT)


RESUME_CASES = {
    "no settings": lambda m: {k: v for k, v in m.items() if k != "config"},
    "no optimizer state": lambda m: {k: v for k, v in m.items() if k != "optimizer"},
    "settings of wrong types": lambda m: {**m, "config": {**m["config"], "batch_size": "x"}},
    "settings a list": lambda m: {**m, "config": [1]},
    "one parameter group of two": lambda m: {
        **m,
        "optimizer": {**m["optimizer"], "param_groups": m["optimizer"]["param_groups"][:1]},
    },
    "results not a history": lambda m: {**m, "result": {"history": 5}},
    "an epoch without its loss": lambda m: {
        **m,
        "result": {**m["result"], "history": [{"epoch": 1}]},
    },
}


@pytest.mark.parametrize(
    "case",
    [
        # refused once the run's data are loaded: the MNIST of the checkpoint's settings
        pytest.param(case, marks=pytest.mark.mnist) if "group" in case else case
        for case in RESUME_CASES
    ],
)
def test_resuming_from_a_crafted_checkpoint_is_refused_in_one_line(
    case, checkpoint, capsys, tmp_path
):
    tensors, meta = checkpoint
    folder = run_folder(tmp_path, tensors, RESUME_CASES[case](json.loads(json.dumps(meta))))
    one_line_refusal(capsys, "train", "--out", folder, "--resume", "--quiet")


def test_a_model_file_copied_over_the_checkpoint_is_refused(saved, capsys, tmp_path):
    _, tensors, meta, _ = saved
    run = run_folder(tmp_path, tensors, meta)
    err = one_line_refusal(capsys, "train", "--out", run, "--resume", "--quiet")
    assert "not a run's checkpoint" in err


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_a_network_or_a_refusal(data, tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(data)
    with pytest.raises(CnnlabError):
        Network.load(path)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(["spec", "classes", "input", "dataset", "config", "layers", "units",
                            "maps", "size", "stride", "padding", "activation", "normalize"]),
       value=JSON)  # fmt: skip
def test_any_value_anywhere_in_a_network_file_gives_a_network_or_a_refusal(
    key, value, saved, tmp_path
):
    _, tensors, meta, _ = saved
    changed = json.loads(json.dumps(meta))
    if key in changed:
        changed[key] = value
    elif key == "layers":
        changed["spec"]["layers"] = value
    else:
        changed["spec"]["layers"][0][key] = value
    path = tmp_path / "mutated.safetensors"
    save_tensors(path, tensors, changed)
    try:
        network, _ = Network.load(path)
    except CnnlabError:
        return
    assert network(torch.zeros(1, *network.input_shape)).shape == (1, network.classes)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(["config", "result", "optimizer", "spec"]), value=JSON)
def test_any_value_in_a_run_checkpoint_gives_settings_or_a_refusal(
    key, value, checkpoint, tmp_path
):
    tensors, meta = checkpoint
    changed = {**json.loads(json.dumps(meta)), key: value}
    folder = tmp_path / f"run-{abs(hash(json.dumps(value, default=str)))}"
    folder.mkdir(exist_ok=True)
    save_tensors(folder / CHECKPOINT, tensors, changed)
    try:
        spec, config = read_run(folder)
    except CnnlabError:
        return
    assert isinstance(spec, dict) and isinstance(config, TrainConfig)


@settings(max_examples=200, deadline=None)
@given(layers=st.lists(JSON, max_size=4), shape=JSON)
def test_any_spec_builds_a_network_or_is_refused(layers, shape):
    try:
        network = Network.shapes_only({"input": shape, "layers": layers})
    except CnnlabError:
        return
    assert network.summary()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), dims=st.lists(st.integers(0, 2**32 - 1), max_size=4))
def test_any_idx_header_gives_an_array_or_a_refusal(data, dims):
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    for raw in (data, header + data, gzip.compress(header + data)[: len(data) + 10]):
        try:
            array = parse_idx(gunzip(raw, "random"))
        except DataError:
            continue
        assert array.size * array.itemsize <= len(raw) * 1000 + 64


def png(size=(20, 16), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, "PNG")
    return buffer.getvalue()


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_a_mutated_picture_is_read_or_refused(flips, cut, tmp_path_factory):
    raw = bytearray(png())
    for where, value in flips:
        raw[where % len(raw)] = value
    path = tmp_path_factory.mktemp("pic") / "mutated.png"
    path.write_bytes(bytes(raw[: max(cut, 8)]))
    for shape in ((3, 8, 8), (1, 28, 28)):
        try:
            pixels = load_picture(path, shape)
        except CnnlabError:
            continue
        assert pixels.shape == shape and pixels.dtype == np.uint8


def _gzip_files(folder, content: bytes) -> None:
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (folder / f"{stem}.gz").write_bytes(content)


COMMAND_CASES = {
    "more units than any count": lambda tmp: ["summary", "--arch", "fc" + "9" * 40],
    "weights beyond PyTorch's counting": lambda tmp: [
        "summary",
        "--arch",
        "fc2147483647-fc2147483647-softmax10",
        "--input",
        "4096x65536x65536",
    ],
    "an ensemble of no members": lambda tmp: ["ensemble", "train", "--members", "0"],
    "a mask nested 50,000 deep": lambda tmp: [
        "filter",
        "x.png",
        "--kernel",
        "[" * 50_000 + "]" * 50_000,
        "--out",
        tmp / "f.png",
    ],
    "a corrupt gzip file": lambda tmp: (
        _gzip_files(tmp, b"\x1f\x8b\x08\x00garbage" * 10),
        ["data", "fetch", "mnist", "--from", tmp],
    )[1],
    "a gzip bomb": lambda tmp: (
        _gzip_files(tmp, gzip.compress(bytes(200 * 2**20), 1)),
        ["data", "fetch", "mnist", "--from", tmp],
    )[1],
    "a metrics log without losses": lambda tmp: (
        (tmp / "metrics.jsonl").write_text('{"epoch": 1}\n'),
        ["show", "curves", tmp],
    )[1],
    "a damaged results.json": lambda tmp: (
        (tmp / "results.json").write_text('{"rows": [1, 2'),
        ["reproduce", "--quick", "--rows", "conv1", "--out", tmp],
    )[1],
}


@pytest.mark.parametrize("case", COMMAND_CASES)
def test_a_malformed_command_or_file_is_refused_in_one_line(case, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    one_line_refusal(capsys, *COMMAND_CASES[case](tmp_path))
    assert not (tmp_path / "cache" / "mnist.npz").exists()
