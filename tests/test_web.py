"""The explorer's JSON API, through Flask's test client and one real server.

Predictions must be those of `cnnlab predict`; stages must have the summary's
shapes; bad input of every kind gets a JSON error, and the server goes on serving.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("flask", reason='the explorer needs Flask: pip install "cnnlab[web]"')

from cnnlab import probe
from cnnlab.arch import parse_arch
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.images import FORMATS, fit_picture
from cnnlab.network import Network
from cnnlab.predict import labels, probabilities
from cnnlab.runs import MODEL
from cnnlab.web import ServedFolder, create_app
from cnnlab.web.server import start

from .conftest import small_network

LIMIT = 200_000  # bytes: a small upload limit keeps the oversized request small too


@pytest.fixture(scope="module")
def client(trained_run):
    app = create_app(ServedFolder(trained_run), max_upload=LIMIT)
    return app.test_client()


def png_bytes(pixels: np.ndarray, size: int = 112) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).resize((size, size)).save(buffer, "PNG")
    return buffer.getvalue()


def upload(client, data: bytes, checkpoint: str = MODEL, name: str = "digit.png"):
    return client.post(
        f"/api/analyze?checkpoint={checkpoint}",
        data={"image": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )


def assert_still_serving(client):
    response = client.get("/api/checkpoints")
    assert response.status_code == 200 and response.json["checkpoints"]


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and b"cnnlab explorer" in page.data
    for name in ("explorer.js", "explorer.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_checkpoints_list_the_model_but_not_the_resume_checkpoint(client):
    listing = client.get("/api/checkpoints").json
    assert [c["name"] for c in listing["checkpoints"]] == [MODEL]
    assert listing["default"] == MODEL


def test_prediction_matches_cnnlab_predict_on_mnist_test_images(
    client, capsys, tmp_path, mnist, trained_run
):
    paths = []
    for index in range(8):
        path = tmp_path / f"digit{index}.png"
        pixels = mnist.test.images[index, 0].numpy()
        path.write_bytes(png_bytes(255 - pixels if index % 2 else pixels))
        paths.append(path)
    assert main(["predict", str(trained_run), *map(str, paths), "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths)
    for path, line in zip(paths, lines):
        response = upload(client, path.read_bytes())
        assert response.status_code == 200, response.json
        label = line.split(": ")[1].split()[0]
        assert response.json["label"] == label
        # predict works in bf16 where the CPU has it, the explorer in float32 (so that a unit's
        # arithmetic adds up): the same answer, its share within a rounding of bf16
        share = float(line.split(f"({label} ")[1].rstrip("%)"))
        assert share == pytest.approx(100 * max(response.json["probabilities"]), abs=0.6)


def test_pixels_are_classified_exactly_as_the_library_does(client, trained_run, mnist):
    network, _ = Network.load(trained_run / MODEL)
    images = mnist.test.images[:20]
    expected = labels(network, images).tolist()
    for image, label in zip(images, expected):
        pixels = (image[0].float() / 255).tolist()
        answer = client.post("/api/analyze", json={"pixels": pixels}).json
        assert answer["predicted"] == label
        np.testing.assert_allclose(answer["input"], pixels, atol=1e-4)


def test_stages_have_the_shapes_the_summary_promises(client, trained_run):
    network, _ = Network.load(trained_run / MODEL)
    described = client.get("/api/network").json
    answer = client.post("/api/analyze", json={"pixels": np.zeros((28, 28)).tolist()}).json
    summary_shapes = [list(row.output_shape) for row in network.summary_rows()[1:]]
    assert [s["shape"] for s in described["stages"]] == summary_shapes
    for stage in answer["stages"]:
        assert list(np.shape(stage["values"])) == stage["shape"]
        assert stage["min"] == pytest.approx(np.min(stage["values"]), abs=1e-4)
    assert [s["shape"] for s in answer["stages"]] == summary_shapes
    assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert np.shape(described["filters"]["weights"]) == (8, 1, 5, 5)
    assert described["classes"] == [str(d) for d in range(10)]
    assert described["digits"] is True and described["input"] == [1, 28, 28]


def test_receptive_field_comes_from_the_library(client, trained_run):
    network, _ = Network.load(trained_run / MODEL)
    answer = client.get("/api/receptive-field?stage=1&row=5&col=7").json
    assert tuple(answer.values()) == probe.receptive_field(network, 1, 5, 7) == (10, 14, 15, 19)
    for query in ("stage=1&row=99&col=0", "stage=x&row=0&col=0", "row=0", "stage=50"):
        response = client.get(f"/api/receptive-field?{query}")
        assert response.status_code == 400 and "error" in response.json


def test_samples_are_test_digits_with_their_labels(client, mnist):
    answer = client.get("/api/samples?count=5&seed=3").json
    assert len(answer["pixels"]) == 5 and answer["dataset"] == "mnist"
    for index, label, pixels in zip(answer["indices"], answer["labels"], answer["pixels"]):
        assert label == str(int(mnist.test.labels[index]))
        expected = mnist.test.images[index, 0].float() / 255
        torch.testing.assert_close(torch.tensor(pixels), expected, atol=1e-5, rtol=0)
    assert client.get("/api/samples?count=5&seed=3").json == answer
    assert client.get("/api/samples?count=0").status_code == 400
    assert client.get("/api/samples?count=1000").status_code == 400


def test_runs_and_their_metrics(client, trained_run):
    runs = client.get("/api/runs").json["runs"]
    assert [r["name"] for r in runs] == ["."]
    metrics = client.get("/api/metrics?run=.").json
    assert metrics["epochs"] == 2
    assert metrics["history"] == probe.training_history(trained_run)
    assert client.get("/api/metrics?run=elsewhere").status_code == 404


def test_an_upload_over_the_limit_is_refused_with_413(client):
    response = upload(client, b"\x89PNG" + bytes(LIMIT))
    assert response.status_code == 413
    assert "larger than the limit" in response.json["error"]
    assert_still_serving(client)


@pytest.mark.parametrize(
    "body",
    [b"hello, this is text", b"\x89PNG\r\n\x1a\n" + bytes(100), b"", b"GIF89a" + bytes(30)],
    ids=["text", "broken-png", "empty", "broken-gif"],
)
def test_what_is_not_an_image_is_refused_with_400(client, body):
    response = upload(client, body)
    assert response.status_code == 400
    assert "not a readable image" in response.json["error"]
    assert_still_serving(client)


def test_a_blank_drawing_and_bad_requests_get_400(client):
    blank = upload(client, png_bytes(np.full((28, 28), 255)))
    assert blank.status_code == 400 and "blank" in blank.json["error"]
    for body in ({"pixels": [[0.5] * 27] * 28}, {"pixels": "seven"}, {"pixels": [[None] * 28] * 28},
                 [1, 2], {"nothing": 1}):  # fmt: skip
        response = client.post("/api/analyze", json=body)
        assert response.status_code == 400 and "pixels" in response.json["error"]
    response = client.post("/api/analyze", data="x=1", content_type="text/plain")
    assert response.status_code == 400
    assert client.post("/api/analyze", data="{", content_type="application/json").status_code == 400
    assert client.get("/api/analyze").status_code == 405
    assert client.get("/api/nothing").status_code == 404
    assert_still_serving(client)


@pytest.mark.parametrize(
    "name",
    [
        "../model.safetensors",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "..%2F..%2Fmodel.safetensors",
        "a/../../model.safetensors",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "outside.safetensors",
        "linked/model.safetensors",
    ],
)
def test_a_checkpoint_outside_the_served_folder_is_refused(tmp_path, trained_run, name):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(trained_run / MODEL, served / MODEL)
    (served / "outside.safetensors").symlink_to(trained_run / MODEL)  # a link that escapes
    (served / "linked").symlink_to(trained_run, target_is_directory=True)
    (tmp_path / "model.safetensors").write_bytes((trained_run / MODEL).read_bytes())
    client = create_app(ServedFolder(served)).test_client()
    assert [c["name"] for c in client.get("/api/checkpoints").json["checkpoints"]] == [MODEL]
    for path in ("/api/network", "/api/samples"):
        response = client.get(f"{path}?checkpoint={name}")
        assert response.status_code == 404
        assert "served folder" in response.json["error"]
    response = client.post(f"/api/analyze?checkpoint={name}", json={"pixels": [[0] * 28] * 28})
    assert response.status_code == 404
    assert client.get(f"/api/network?checkpoint={MODEL}").status_code == 200


def test_a_checkpoint_is_reloaded_when_its_file_changes(tmp_path, trained_run):
    shutil.copytree(trained_run, tmp_path / "run")
    folder = ServedFolder(tmp_path)
    name = f"run/{MODEL}"
    _, first, _ = folder.network(name)
    assert folder.network(name)[1] is first
    network, meta = Network.load(tmp_path / name)
    network.save(tmp_path / name, {k: v for k, v in meta.items() if k != "spec"})
    assert folder.network(name)[1] is not first


def test_serving_needs_a_checkpoint_or_a_run(tmp_path, capsys):
    with pytest.raises(CnnlabError, match="cnnlab train"):
        ServedFolder.open(tmp_path)
    with pytest.raises(CnnlabError, match="no such checkpoint or folder"):
        ServedFolder.open(tmp_path / "missing")
    (tmp_path / "digit.png").write_bytes(b"")
    with pytest.raises(CnnlabError, match="not a checkpoint"):
        ServedFolder.open(tmp_path / "digit.png")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cnnlab train" in err


def test_serve_says_how_to_install_flask_when_it_is_missing(monkeypatch, capsys, tmp_path):
    for module in [m for m in sys.modules if m == "cnnlab.web" or m.startswith("cnnlab.web.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "flask", None)
    assert main(["serve", str(tmp_path)]) == 2
    assert 'pip install "cnnlab[web]"' in capsys.readouterr().err


def test_a_real_server_refuses_bad_requests_and_keeps_serving(trained_run):
    server = start(ServedFolder(trained_run), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with pytest.raises(CnnlabError, match="in use"):
            start(ServedFolder(trained_run), "127.0.0.1", server.port)
        for body, expected in [(bytes(3 * 1024 * 1024), 413), (b"plain text", 400)]:
            request = urllib.request.Request(
                f"{base}/api/analyze", data=body, headers={"Content-Type": "image/png"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == expected
            assert "error" in json.loads(refused.value.read())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/network?checkpoint=../{MODEL}", timeout=10)
        assert refused.value.code == 404
        with urllib.request.urlopen(f"{base}/api/network", timeout=10) as response:
            assert json.loads(response.read())["checkpoint"] == MODEL
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- networks of colour (and grey) pictures, not digits ------------------------------------------

COLOURS = ["red", "green", "blue"]


def picture_network(shape=(3, 16, 16), classes=3, seed=0) -> Network:
    arch = f"conv4x3-pool2-softmax{classes}"
    return Network.create({"input": list(shape), "layers": parse_arch(arch)}, seed=seed)


def picture_client(tmp_path, network: Network, meta: dict, name: str = "pictures.safetensors"):
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    network.save(served / name, meta)
    client = create_app(ServedFolder(served), max_upload=LIMIT).test_client()
    return client, Network.load(served / name)[0]


@pytest.fixture
def colour(tmp_path):
    """A client serving an untrained 3×16×16 colour network, and that network as saved."""
    config = {"data": str(tmp_path / "gone"), "image_size": [16, 16], "split": "standard"}
    meta = {"dataset": "somewhere", "classes": COLOURS, "config": config}
    return picture_client(tmp_path, picture_network(), meta)


def colour_png(height: int, width: int, seed: int = 0) -> bytes:
    """A noisy colour picture with a red left half and a blue right half."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 90, (height, width, 3))
    pixels[:, : width // 2, 0] += 160
    pixels[:, width // 2 :, 2] += 160
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def prepared(data: bytes, shape: tuple[int, int, int]) -> torch.Tensor:
    """The input ``cnnlab predict`` gives a network that does not read digits."""
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        pixels = fit_picture(image, shape[1:], colour=shape[0] == 3)
    return torch.from_numpy(pixels).float() / 255


def test_a_colour_network_is_described_as_not_reading_digits(colour):
    client, _ = colour
    described = client.get("/api/network").json
    assert described["digits"] is False
    assert described["input"] == [3, 16, 16] and described["classes"] == COLOURS
    assert np.shape(described["filters"]["weights"]) == (4, 3, 3, 3)


def test_an_uploaded_colour_picture_is_prepared_as_picture_folders_are(colour):
    client, network = colour
    for height, width in [(40, 24), (9, 50), (16, 16)]:
        data = colour_png(height, width, seed=height)
        answer = upload(client, data, checkpoint="pictures.safetensors", name="photo.png").json
        expected = prepared(data, (3, 16, 16))
        assert np.shape(answer["input"]) == (16, 16, 3)
        np.testing.assert_allclose(answer["input"], expected.permute(1, 2, 0), atol=1e-4)
        wanted = probabilities(network, expected[None], precision="fp32")[0]
        assert len(answer["probabilities"]) == 3
        np.testing.assert_allclose(answer["probabilities"], wanted, atol=1e-5)
        assert answer["label"] == COLOURS[int(wanted.argmax())]
        assert [s["shape"] for s in answer["stages"]] == [[4, 14, 14], [4, 7, 7], [3]]


def test_colour_pixels_are_classified_as_the_library_does_and_bad_shapes_refused(colour):
    client, network = colour
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    pixels = x.permute(1, 2, 0).tolist()
    answer = client.post("/api/analyze", json={"pixels": pixels}).json
    np.testing.assert_allclose(answer["input"], pixels, atol=1e-4)
    np.testing.assert_allclose(
        answer["probabilities"], probabilities(network, x[None], precision="fp32")[0], atol=1e-5
    )
    for wrong in ([[0.5] * 16] * 16, [[[0.5] * 4] * 16] * 16, [[[0.5] * 3] * 15] * 16,
                  [[0.0] * 28] * 28, [[[0.5, 0.5, None]] * 16] * 16, "red"):  # fmt: skip
        response = client.post("/api/analyze", json={"pixels": wrong})
        assert response.status_code == 400
        assert "pixels" in response.json["error"] and "16×16×3" in response.json["error"]
    assert (
        "16×16×3" in client.post("/api/analyze", data="x", content_type="text/plain").json["error"]
    )
    for body in (b"hello", b"GIF89a" + bytes(30), b"\x89PNG\r\n\x1a\n" + bytes(100)):
        response = upload(client, body, checkpoint="pictures.safetensors")
        assert response.status_code == 400
        assert "not a readable image" in response.json["error"]
    assert_still_serving(client)


def test_a_grey_picture_network_takes_grey_pictures_as_they_are(tmp_path):
    meta = {"dataset": "somewhere", "classes": ["a", "b"], "config": {}}
    client, network = picture_client(tmp_path, picture_network((1, 12, 20), 2), meta)
    assert client.get("/api/network").json["digits"] is False
    data = colour_png(30, 30)
    answer = upload(client, data, checkpoint="pictures.safetensors").json
    expected = prepared(data, (1, 12, 20))
    assert np.shape(answer["input"]) == (12, 20)
    np.testing.assert_allclose(answer["input"], expected[0], atol=1e-4)
    np.testing.assert_allclose(
        answer["probabilities"],
        probabilities(network, expected[None], precision="fp32")[0],
        atol=1e-5,
    )
    pixels = expected[0].tolist()
    assert client.post("/api/analyze", json={"pixels": pixels}).json["input"] == answer["input"]
    response = client.post("/api/analyze", json={"pixels": [[0.5] * 12] * 20})
    assert response.status_code == 400 and "12×20" in response.json["error"]


def test_samples_of_a_picture_folder_are_colour_test_pictures(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "pictures"
    rng = np.random.default_rng(0)
    for name, channel in [("green", 1), ("red", 0)]:
        (folder / name).mkdir(parents=True)
        for index in range(10):
            pixels = rng.integers(0, 60, (16, 16, 3))
            pixels[..., channel] += 190
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{index}.png")
    config = {"data": str(folder), "image_size": [16, 16], "test_fraction": 0.2,
              "dataset": "mnist", "split": "standard"}  # fmt: skip
    meta = {"dataset": str(folder), "classes": ["green", "red"], "config": config}
    client, _ = picture_client(tmp_path, picture_network(classes=2), meta)
    answer = client.get("/api/samples?count=4&seed=1").json
    assert answer["dataset"] == str(folder) and sorted(answer["indices"]) == [0, 1, 2, 3]
    assert sorted(answer["labels"]) == ["green", "green", "red", "red"]
    for label, pixels in zip(answer["labels"], answer["pixels"]):
        pixels = np.array(pixels)
        assert pixels.shape == (16, 16, 3) and pixels.min() >= 0 and pixels.max() <= 1
        means = pixels.mean(axis=(0, 1))
        assert means.argmax() == {"red": 0, "green": 1}[label]
        sample = client.post("/api/analyze", json={"pixels": pixels.tolist()})
        assert sample.status_code == 200 and len(sample.json["probabilities"]) == 2
    assert client.get("/api/samples?count=4&seed=1").json == answer
    shutil.rmtree(folder)
    response = client.get("/api/samples?count=4")
    assert response.status_code == 404 and "no longer exists" in response.json["error"]


def test_samples_are_refused_when_the_data_is_not_here(colour, tmp_path, monkeypatch):
    client, _ = colour
    response = client.get("/api/samples")  # trained on a folder that is gone
    assert response.status_code == 404 and "no longer exists" in response.json["error"]
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "empty-cache"))
    meta = {"dataset": "cifar10", "classes": COLOURS, "config": {"dataset": "cifar10"}}
    picture_network(shape=(3, 32, 32)).save(tmp_path / "served" / "cifar.safetensors", meta)
    response = client.get("/api/samples?checkpoint=cifar.safetensors")
    assert response.status_code == 404
    assert "cnnlab data fetch cifar10" in response.json["error"]


def test_only_requests_for_the_loopback_names_are_answered(trained_run):
    app = create_app(ServedFolder.open(trained_run))
    client = app.test_client()
    assert client.get("/api/checkpoints", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/checkpoints", headers={"Host": "[::1]:8000"}).status_code == 200
    answer = client.get("/api/checkpoints", headers={"Host": "rebound.example:8000"})
    assert answer.status_code == 400 and "answers requests for" in answer.get_json()["error"]
    anyone = create_app(ServedFolder.open(trained_run), hosts=None).test_client()
    assert anyone.get("/api/checkpoints", headers={"Host": "lab.example"}).status_code == 200


def test_pictures_beyond_the_concurrency_limit_are_told_to_retry(trained_run, monkeypatch):
    import threading

    import cnnlab.web.app as explorer

    monkeypatch.setattr(explorer, "BUSY_WAIT", 0.05)
    entered, release, statuses = threading.Event(), threading.Event(), []
    real = explorer.analysis

    def slow(*args):  # a long analysis holding the only slot
        entered.set()
        release.wait(5)
        return real(*args)

    monkeypatch.setattr(explorer, "analysis", slow)
    client = create_app(ServedFolder.open(trained_run), max_busy=1).test_client()
    body = {"pixels": [[0.0] * 28] * 28}
    first = threading.Thread(
        target=lambda: statuses.append(client.post("/api/analyze", json=body).status_code)
    )
    first.start()
    assert entered.wait(5)
    second = client.post("/api/analyze", json=body)
    release.set()
    first.join()
    assert second.status_code == 503 and "busy" in second.get_json()["error"]
    assert statuses == [200]


@pytest.mark.parametrize("depth", [200, 50_000])
def test_deeply_nested_json_is_a_400_not_a_crash(client, depth):
    body = '{"pixels": ' + "[" * depth + "0" + "]" * depth + "}"
    answer = client.post("/api/analyze", data=body, content_type="application/json")
    assert answer.status_code == 400 and "error" in answer.get_json()


def test_a_checkpoint_swapped_for_a_symlink_while_serving_is_never_read(tmp_path, trained_run):
    """The listing and the open are separate moments; whatever happens between them, nothing
    outside the served folder is read."""
    served = tmp_path / "served"
    served.mkdir()
    inside = (trained_run / MODEL).read_bytes()
    (served / "x.safetensors").write_bytes(inside)
    outside = tmp_path / "outside.safetensors"
    small_network(arch="fc7-softmax10").save(outside)  # recognisable: a 7-unit layer
    client = create_app(ServedFolder(served)).test_client()
    stop = threading.Event()

    def swap() -> None:
        for turn in range(100_000):
            if stop.is_set():
                return
            staged = served / f".staged-{turn}"
            if turn % 2:
                staged.write_bytes(inside)
            else:
                staged.symlink_to(outside)
            os.replace(staged, served / "x.safetensors")

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        statuses = []
        for _ in range(300):
            response = client.get("/api/network?checkpoint=x.safetensors")
            statuses.append(response.status_code)
            assert "fc7-" not in json.dumps(response.json)
    finally:
        stop.set()
        swapper.join()
    assert set(statuses) <= {200, 404} and 200 in statuses


def test_a_post_from_another_web_site_is_refused(client):
    pixels = {"pixels": [[0] * 28] * 28}
    other = client.post("/api/analyze", json=pixels, headers={"Origin": "http://evil.example"})
    assert other.status_code == 403 and "other web sites" in other.json["error"]
    same = client.post("/api/analyze", json=pixels, headers={"Origin": "http://localhost"})
    assert same.status_code == 200 and "Access-Control-Allow-Origin" not in same.headers


def test_a_client_that_sends_half_a_request_is_let_go(trained_run, monkeypatch):
    import socket

    from cnnlab.web import server

    monkeypatch.setattr(server._Handler, "timeout", 0.5)
    running = server.start(ServedFolder(trained_run), port=0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as slow:
            slow.sendall(b"GET /api/checkpoints HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
            assert slow.recv(1024) == b""  # the server closed it after its timeout
    finally:
        running.shutdown()


def test_raw_grey_levels_are_read_as_the_same_picture_uploaded(client, mnist):
    """The drawing pad sends its pixels as bytes: the same answer as that picture as a PNG."""
    grey = np.full((120, 90), 255, np.uint8)
    grey[20:100, 40:52] = 0  # a dark 1 on white paper
    raw = client.post("/api/analyze?width=90&height=120", data=grey.tobytes(),
                      content_type="application/octet-stream").json  # fmt: skip
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "PNG")
    png = upload(client, buffer.getvalue()).json
    assert raw["input"] == png["input"] and raw["probabilities"] == png["probabilities"]
    for query, data, message in [("width=90&height=121", grey.tobytes(), "do not make 90×121"),
                                 ("width=90", grey.tobytes(), "'height' must be a whole"),
                                 ("width=0&height=0", b"", "do not make 0×0"),
                                 ("width=2&height=2", bytes([255] * 4), "blank"),
                                 ("width=3&height=3", bytes([100] * 9), "blank")]:  # fmt: skip
        answer = client.post(f"/api/analyze?{query}", data=data,
                             content_type="application/octet-stream")  # fmt: skip
        assert answer.status_code == 400 and message in answer.json["error"], answer.json


def test_a_units_story_adds_up_to_its_value_for_every_stage(client, trained_run):
    network, _ = Network.load(trained_run / MODEL)
    pixels = np.random.default_rng(0).random((28, 28)).round(6).tolist()
    described = client.get("/api/network").json
    for index, stage in enumerate(described["stages"]):
        where = (
            {"map": stage["shape"][0] - 1, "row": 1, "col": 2}
            if len(stage["shape"]) == 3
            else {"map": 3}
        )
        query = "&".join(f"{k}={v}" for k, v in {"stage": index, **where}.items())
        story = client.post(f"/api/unit?{query}", json={"pixels": pixels}).json
        assert story["kind"] == stage["kind"] and story["name"] == stage["name"]
        assert story["a"] == pytest.approx(story["value"], abs=1e-5)
    first = client.post("/api/unit?stage=0&map=2&row=3&col=4", json={"pixels": pixels}).json
    weights = network.layers[0].weight[2].detach()
    np.testing.assert_allclose(first["weights"], weights.numpy(), atol=1e-6)
    np.testing.assert_allclose(first["inputs"][0], np.array(pixels)[3:8, 4:9], atol=1e-6)


@pytest.mark.parametrize(
    ("query", "body", "message"),
    [("stage=9&map=0", {"pixels": np.zeros((28, 28)).tolist()}, "stage 9 does not exist"),
     ("stage=0&map=8", {"pixels": np.zeros((28, 28)).tolist()}, "outside conv"),
     ("stage=0&map=0&row=x", {"pixels": np.zeros((28, 28)).tolist()}, "'row' must be a whole"),
     ("stage=0&map=99999999999999", {"pixels": np.zeros((28, 28)).tolist()}, "out of range"),
     ("stage=0", {"pixels": [[0.5]]}, "send {\"pixels\": 28 rows"),
     ("stage=0", None, "send an image file")],
)  # fmt: skip
def test_a_bad_unit_request_is_a_400_saying_why(client, query, body, message):
    answer = (
        client.post(f"/api/unit?{query}", json=body) if body else client.post(f"/api/unit?{query}")
    )
    assert answer.status_code == 400 and message in answer.json["error"], answer.json
    assert_still_serving(client)


def test_the_geometry_is_the_layers_own(client):
    answer = client.get("/api/geometry?side=28&depth=1&maps=20&size=5&stride=1&padding=0"
                        "&pool=2&hidden=30").json  # fmt: skip
    assert (answer["conv"]["shape"], answer["conv"]["parameters"]) == ([20, 24, 24], 520)
    assert answer["pool"]["shape"] == [20, 12, 12]
    assert answer["fc"]["parameters"] == 23_550 and answer["fc"]["formula"] == "784·30 + 30"
    assert answer["local"]["parameters"] == 24 * 24 * 20 * 26
    odd = client.get("/api/geometry?side=32&depth=3&maps=16&size=3&stride=2&padding=1"
                     "&pool=1&hidden=10").json  # fmt: skip
    rows = Network.shapes_only({"input": [3, 32, 32], "layers": parse_arch("conv16x3s2p1")})
    assert odd["conv"]["shape"] == list(rows.summary_rows()[1].output_shape) == [16, 16, 16]
    assert odd["pool"] is None and odd["conv"]["parameters"] == 16 * (3 * 3 * 3 + 1)
    for query, message in [("side=28&depth=1&maps=20&size=40&stride=1&padding=0&pool=2&hidden=30",
                            "does not fit"),
                           ("side=999&depth=1&maps=20&size=5&stride=1&padding=0&pool=2&hidden=30",
                            "side must be from 1 to 64"),
                           ("side=28", "'depth' must be a whole number")]:  # fmt: skip
        bad = client.get(f"/api/geometry?{query}")
        assert bad.status_code == 400 and message in bad.json["error"], bad.json


def test_samples_say_what_the_network_makes_of_them_and_can_be_its_mistakes(
    client, mnist, trained_run
):
    network, _ = Network.load(trained_run / MODEL)
    answer = client.get("/api/samples?count=20&seed=3").json
    predicted = labels(network, mnist.test.images[answer["indices"]], precision="fp32").tolist()
    assert answer["predicted"] == [str(p) for p in predicted]
    wrong = client.get("/api/samples?count=15&seed=1&mistakes=1").json
    truth = mnist.test.labels[wrong["indices"]].tolist()
    assert len(wrong["indices"]) == 15 and all(
        p != str(t) for p, t in zip(wrong["predicted"], truth)
    )
    assert wrong["labels"] == [str(t) for t in truth]
