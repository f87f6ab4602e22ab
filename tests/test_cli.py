"""The command line: what it prints, and one clear line with exit status 2 for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.images import load_digit
from cnnlab.runs import MODEL

from .photos import shaded_photo


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_summary_prints_the_chapter_numbers(capsys):
    status, out, _ = run(capsys, "summary", "--arch", "conv20x5-softmax10")
    assert status == 0
    assert "20×24×24" in out and "520" in out
    status, out, _ = run(capsys, "summary", "--arch", "fc30-softmax10")
    assert "23,550" in out
    status, out, _ = run(capsys, "summary", "--arch", "conv6x5-softmax10", "--input", "3x32x32")
    assert "456" in out and "not 6 × (5·5 + 1) = 156" in out


def test_presets_lists_the_chapter_rows(capsys):
    status, out, _ = run(capsys, "presets")
    assert status == 0
    for name, published in [("fc100", "97.80%"), ("conv1", "98.78%"), ("conv2", "99.06%"),
                            ("conv2-relu", "99.23%")]:  # fmt: skip
        assert name in out and published in out
    assert "lenet5" in out and "fast" in out


def save_digit(path, image: np.ndarray, dark_on_light: bool) -> None:
    pixels = 255 - image if dark_on_light else image
    big = Image.fromarray(pixels.astype(np.uint8)).resize((112, 112))
    big.save(path)


def test_predict_recognises_mnist_test_digits_saved_as_pictures(capsys, tmp_path, mnist,
                                                                trained_run):  # fmt: skip
    paths = []
    for index in range(6):
        path = tmp_path / f"digit{index}.png"
        save_digit(path, mnist.test.images[index, 0].numpy(), dark_on_light=index % 2 == 0)
        paths.append(path)
    status, out, _ = run(capsys, "predict", trained_run, *paths)
    assert status == 0
    predicted = [line.split(": ")[1].split()[0] for line in out.splitlines()]
    truth = [str(label) for label in mnist.test.labels[:6].tolist()]
    assert sum(p == t for p, t in zip(predicted, truth)) >= 5


def test_predict_reads_digits_photographed_on_unevenly_lit_paper(capsys, tmp_path, mnist,
                                                                 trained_run):  # fmt: skip
    """The paper's shading (235 in one corner, 90 in the other) is not ink: without removing
    it, the whole page passes the ink threshold and the network sees a grey rectangle."""
    photos, scans = [], []
    for index in range(12):
        digit = mnist.test.images[index, 0].numpy()
        photos.append(tmp_path / f"photo{index}.jpg")
        Image.fromarray(shaded_photo(digit, seed=index)).save(photos[-1], quality=90)
        scans.append(tmp_path / f"scan{index}.png")
        save_digit(scans[-1], digit, dark_on_light=True)
        seen, clean = load_digit(photos[-1])[0].numpy(), load_digit(scans[-1])[0].numpy()
        assert np.corrcoef(seen.ravel(), clean.ravel())[0, 1] > 0.6
    status, out, _ = run(capsys, "predict", trained_run, *photos, *scans)
    assert status == 0
    predicted = [line.split(": ")[1].split()[0] for line in out.splitlines()]
    truth = [str(label) for label in mnist.test.labels[:12].tolist()]
    from_photos = sum(p == t for p, t in zip(predicted[:12], truth))
    from_scans = sum(p == t for p, t in zip(predicted[12:], truth))
    assert from_photos >= min(10, from_scans - 1)


def test_evaluate_reports_the_accuracy_of_a_saved_model(capsys, trained_run):
    status, out, _ = run(capsys, "evaluate", trained_run / MODEL)
    assert status == 0
    accuracy = float(out.splitlines()[-1].split()[2].rstrip("%"))
    assert accuracy > 85


def test_train_prints_test_accuracy_last(capsys, tmp_path, mnist):
    status, out, _ = run(capsys, "train", "--arch", "conv4x5-pool2-fc16-softmax10",
                         "--train-subset", 500, "--epochs", 1, "--batch-size", 50,
                         "--out", tmp_path / "r", "--quiet")  # fmt: skip
    assert status == 0
    assert out.splitlines()[-1].startswith("test accuracy: ")
    assert (tmp_path / "r" / MODEL).exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--momentum", "0"], "Nesterov's momentum needs --momentum > 0"),
        (["train", "--arch", "conv20-softmax10"], "cannot read layer 'conv20'"),
        (["summary", "--arch", "conv4x7-softmax10", "--input", "1x5x5"], "7×7 window"),
        (["summary", "--arch", "conv4x5-fc10-conv2x3-softmax10"], "needs feature maps"),
        (["evaluate", "/no/such/model.safetensors"], "no such file"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "--split", "standard", "--validation", "70000"], "validation size"),
        (["train", "--epochs", "abc"], "invalid int value"),
        (["data", "fetch", "mnist", "--from", "/no/such/dir"], "no such folder"),
        (["frobnicate"], "invalid choice"),
        (["train", "--arch", ""], "empty layer"),
        (["train", "--seed", "99999999999999999999"], "seed must be a whole number"),
        (["train", "--lr", "1e308"], "learning rate must be"),
        (["train", "--data", "/no/such/dir"], "no such folder"),
        (["train", "--data", "/tmp", "--dataset", "mnist"], "give one"),
        (["train", "--image-size", "0x5"], "not HEIGHTxWIDTH"),
        (["train", "--test-fraction", "1.5"], "test fraction must be between 0 and 1"),
        (["train", "--augment", "crop,mirror"], "unknown augmentation 'mirror'"),
        (["train", "--tta", "sideways"], "invalid choice"),
        (["train", "--ema", "1"], "ema must be in [0, 1)"),
        (["data", "fetch", "cifar10", "--from", "/no/such/file.tar.gz"], "no such file or folder"),
        (["data", "info", "/no/such/folder"], "no such folder"),
        (["predict", "/no/such/model.safetensors", "x.png", "--top", "0"], "--top must be"),
    ],
)
def test_bad_input_gets_one_line_and_exit_status_2(capsys, argv, message, mnist):
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_and_non_image_are_one_line_errors(capsys, tmp_path, trained_run):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    status, _, err = run(capsys, "evaluate", bad)
    assert status == 2 and "not a readable cnnlab checkpoint" in err
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    status, _, err = run(capsys, "predict", trained_run, text)
    assert status == 2 and "not a readable image" in err and len(err.splitlines()) == 1
    see_through = tmp_path / "ink-on-transparent.png"
    ink = np.zeros((112, 112, 4), np.uint8)
    ink[20:90, 50:62, 3] = 255  # an opaque black "1" on a transparent sheet
    Image.fromarray(ink, "RGBA").save(see_through)
    status, out, _ = run(capsys, "predict", trained_run, see_through)
    assert status == 0 and out.startswith(f"{see_through}: 1 ")
    blank = tmp_path / "blank.png"
    Image.new("L", (28, 28), 255).save(blank)
    status, _, err = run(capsys, "predict", trained_run, blank)
    assert status == 2 and "no digit found" in err


def test_a_finished_run_is_not_overwritten_without_resume(capsys, trained_run):
    status, _, err = run(capsys, "train", "--out", trained_run)
    assert status == 2 and "--resume" in err
    status, _, err = run(capsys, "train", "--out", trained_run, "--resume", "--lr", "0.5")
    assert status == 2 and "only --epochs and --device may change (drop --lr)" in err


def test_more_bad_input_is_answered_in_one_line(capsys, tmp_path, trained_run):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    status, _, err = run(capsys, "train", "--arch", "fc10-softmax10", "--train-subset", 100,
                         "--epochs", 1, "--out", not_a_folder / "run", "--quiet")  # fmt: skip
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(not_a_folder) in err
    status, _, err = run(capsys, "train", "--arch", "fc10-bn-softmax10", "--batch-size", 1,
                         "--train-subset", 100, "--out", tmp_path / "bn")  # fmt: skip
    assert status == 2 and "mini-batches of 2 or more" in err
    status, _, err = run(capsys, "train", "--out", trained_run, "--resume", "--epochs", 5)
    assert status == 2 and "onecycle schedule was laid out for 2 epochs" in err


def test_resuming_a_finished_run_reports_its_result(capsys, trained_run):
    status, out, _ = run(capsys, "train", "--out", trained_run, "--resume", "--quiet")
    assert status == 0 and out.splitlines()[-1].startswith("test accuracy: ")


def test_the_installed_command_prints_no_traceback():
    result = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", "missing.safetensors"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "cnnlab: error: missing.safetensors: no such file"


def test_reproduce_quick_smoke_run_prints_the_table(capsys, tmp_path, mnist):
    status, out, _ = run(capsys, "reproduce", "--rows", "conv1", "--quick", "--runs", 1,
                         "--out", tmp_path)  # fmt: skip
    assert status == 0
    assert "| conv1 |" in out and "98.78%" in out
    assert (tmp_path / "results.json").exists()


def test_expansion_and_augmentation_are_available_from_the_command_line(capsys, tmp_path, mnist):
    status, out, _ = run(capsys, "train", "--arch", "fc10-softmax10", "--train-subset", 100,
                         "--expand", "--augment", "shift", "--epochs", 1, "--batch-size", 10,
                         "--out", tmp_path / "r", "--quiet")  # fmt: skip
    assert status == 0 and out.splitlines()[-1].startswith("test accuracy: ")
    status, _, err = run(capsys, "train", "--augment", "wobble")
    assert status == 2 and "unknown augmentation 'wobble'" in err


def test_ensemble_commands_answer_bad_input_in_one_line(capsys, tmp_path):
    status, _, err = run(capsys, "ensemble", "evaluate", tmp_path)
    assert status == 2 and "no member-*/model.safetensors" in err
    status, _, err = run(capsys, "reproduce", "--rows", "conv9", "--quick", "--out", tmp_path)
    assert status == 2 and "unknown rows conv9" in err


def test_ensemble_train_reports_members_their_mean_and_both_votes_and_resumes(
    capfd, tmp_path, mnist
):
    command = ["ensemble", "train", "--arch", "conv4x5-pool2-fc16-softmax10", "--members", 2,
               "--epochs", 1, "--train-subset", 500, "--batch-size", 20, "--lr", 0.05,
               "--processes", 1, "--out", tmp_path]  # fmt: skip
    status, out, _ = run(capfd, *command)
    assert status == 0
    assert "seed 0" in out and "seed 1" in out and "s of training" in out
    assert "member-1  epoch   1/1" in out and "member-2  epoch   1/1" in out  # from the workers
    members = [float(line.split()[-1].rstrip("%")) for line in out.splitlines()
               if line.startswith("member ")]  # fmt: skip
    assert len(members) == 2
    mean = next(line for line in out.splitlines() if line.startswith("members' mean"))
    assert float(mean.split()[2].rstrip("%")) == pytest.approx(sum(members) / 2, abs=0.006)
    assert "averaged probabilities" in out and "majority vote" in out
    # finished members are not trained again: the same command reports the same figures
    status, again, _ = run(capfd, *command)
    assert status == 0 and again.splitlines()[-4:] == out.splitlines()[-4:]
    # a different network, or a one-cycle run stretched to more epochs, is refused in one line
    status, _, err = run(capfd, *command[:3], "conv8x5-pool2-fc16-softmax10", *command[4:])
    assert status == 2 and "holds a run with a different network" in err
    assert len(err.strip().splitlines()) == 1  # nothing announced before the refusal
    # the vote's mistakes as a picture; a format matplotlib cannot write is refused
    status, out, _ = run(capfd, "ensemble", "evaluate", tmp_path, "--mistakes", tmp_path / "m.png")
    assert status == 0 and Image.open(tmp_path / "m.png").size[0] > 100
    status, _, err = run(capfd, "ensemble", "evaluate", tmp_path, "--mistakes", tmp_path / "m.x")
    assert status == 2 and "cannot write .x" in err


@pytest.mark.parametrize("level", [0, 25, 230, 255])
def test_predict_says_a_picture_of_one_grey_level_holds_no_digit(capsys, tmp_path, trained_run,
                                                                level):  # fmt: skip
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((60, 40), level, np.uint8)).save(path)
    status, out, err = run(capsys, "predict", trained_run, path)
    assert status == 2 and out == ""
    assert (
        err.strip().endswith("no digit found (the image is blank)") and len(err.splitlines()) == 1
    )


def test_the_command_exits_with_all_it_printed_and_its_status(capsys, tmp_path):
    """`cnnlab` leaves without the interpreter's teardown; nothing printed may be lost."""
    _, in_process, _ = run(capsys, "presets")
    with (tmp_path / "out.txt").open("w") as out:  # a file is block-buffered: flushed at exit
        listing = subprocess.run([sys.executable, "-m", "cnnlab", "presets"], stdout=out)
    assert listing.returncode == 0
    assert (tmp_path / "out.txt").read_text() == in_process
    refused = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--epochs", "0"], capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert refused.stderr == "cnnlab: error: epochs must be >= 1\n"


def test_the_command_loads_pillow_only_for_commands_that_read_pictures():
    """Every command pays for what ``cnnlab.cli`` imports; MNIST training reads no picture files."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, cnnlab.cli; print('PIL' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
