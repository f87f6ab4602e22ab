"""The explorer's answer time: from the pen lifting to the final probabilities on the page.

    python benchmarks/explorer.py                      # trains `fast` first (a few seconds)
    python benchmarks/explorer.py runs/fast-…/model.safetensors --digits 20

Serves the checkpoint with ``cnnlab serve``'s server, opens the page in headless
Chromium (Playwright) at 1280×800, and draws MNIST test digits on the pad as a
person would: one mouse stroke per run of ink in each row, each stroke sent while
drawing. After the last stroke of each digit it reads the page's own measure of
the time from pen-up to the answer drawn (``document.body.dataset.answerMs``,
set by the page with ``performance.now()``), and prints every time, the median
and the largest, beside the 200 ms budget.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright
from timing import at_least_one

from cnnlab.data import load_splits
from cnnlab.web import ServedFolder
from cnnlab.web.server import start

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BUDGET_MS = 200


def trained_checkpoint(folder: Path) -> Path:
    out = folder / "fast"
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "--out", str(out), "--quiet"],
                   check=True)  # fmt: skip
    return out / "model.safetensors"


def draw(page, pixels: np.ndarray) -> None:
    """The digit, 10× larger, one stroke per run of ink in each row (as the browser tests do)."""
    box = page.locator("#draw").bounding_box()
    for row in range(28):
        ink = np.flatnonzero(pixels[row] > 0.5)
        for run in np.split(ink, np.flatnonzero(np.diff(ink) > 1) + 1) if len(ink) else []:
            y = box["y"] + row * 10 + 5
            page.mouse.move(box["x"] + run[0] * 10 + 5, y)
            page.mouse.down()
            page.mouse.move(box["x"] + run[-1] * 10 + 5, y, steps=4)
            page.mouse.up()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="default: train `fast` first")
    parser.add_argument("--digits", type=at_least_one, default=10, metavar="N")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or trained_checkpoint(Path(folder))
        server = start(ServedFolder.open(checkpoint), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        test = load_splits("mnist", "nielsen").test
        times = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.wait_for_function("document.querySelector('#prediction').textContent !== ''")
            for index in range(args.digits):
                page.click("#clear")
                draw(page, test.images[index, 0].numpy() / 255)
                for _ in range(2):  # no analysis running, nor one waiting to start
                    page.wait_for_selector("#answer-panel[aria-busy=false]")
                    page.wait_for_timeout(150)
                ms = float(page.evaluate("document.body.dataset.answerMs"))
                times.append(ms)
                print(f"test digit {index} ({int(test.labels[index])}): said"
                      f" {page.inner_text('#prediction')}, {ms:.0f} ms after pen-up")  # fmt: skip
            browser.close()
        server.shutdown()
    median, largest = statistics.median(times), max(times)
    print(f"pen-up to answer over {len(times)} digits: median {median:.0f} ms, largest"
          f" {largest:.0f} ms (budget {BUDGET_MS} ms); checkpoint {checkpoint}")  # fmt: skip


if __name__ == "__main__":
    main()
