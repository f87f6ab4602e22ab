"""Where the wall clock of `cnnlab train` goes: the whole command, and what is not training.

    python benchmarks/wall_clock.py              # 5 runs of the default `cnnlab train`
    python benchmarks/wall_clock.py --runs 3 -- --preset fast-long

Each run is a fresh process, as a user's is: ``cnnlab train --out TMP --seed K``
(K = 0, 1, …), timed from start to exit. Its metrics log gives the seconds spent in
training steps and in evaluation; the rest of the wall clock is what the command
spends outside training. The import of cnnlab (and of torch alone, which cnnlab
cannot do without) is timed separately in fresh interpreters that leave as the
command does, without unloading their modules; what the usual exit, unloading
torch, would add is timed beside it. Medians are printed
with every run's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import at_least_one

NO_TEARDOWN = "import os; os._exit(0)"  # as the `cnnlab` command leaves
IMPORT_TORCH = f"import torch; {NO_TEARDOWN}"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=at_least_one, default=5, metavar="N")
    parser.add_argument("train_args", nargs="*", help="after --: options for cnnlab train")
    args = parser.parse_args()
    python = sys.executable
    startup = statistics.median(timed([python, "-c", "pass"]) for _ in range(args.runs))
    torch_import, teardown, cnnlab_import = (
        statistics.median(timed([python, "-c", code]) for _ in range(args.runs))
        for code in (IMPORT_TORCH, "import torch", f"import cnnlab.cli; {NO_TEARDOWN}")
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.runs):
            out = Path(folder) / f"run{seed}"
            command = [python, "-m", "cnnlab", "train", "--out", str(out), "--seed", str(seed)]
            wall = timed([*command, "--quiet", *args.train_args])
            epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            train = sum(e["train_seconds"] for e in epochs)
            evaluation = sum(e["eval_seconds"] for e in epochs)
            rows.append((wall, train, evaluation, wall - train, epochs[-1]["test_accuracy"]))
            print(f"seed {seed}: wall {wall:.2f} s = training {train:.2f} s + outside training"
                  f" {wall - train:.2f} s (of which evaluation {evaluation:.2f} s);"
                  f" test {100 * epochs[-1]['test_accuracy']:.2f}%")  # fmt: skip
    median = [statistics.median(column) for column in zip(*rows)]
    print(f"median of {args.runs}: wall {median[0]:.2f} s, training {median[1]:.2f} s, outside"
          f" training {median[3]:.2f} s, of which evaluation {median[2]:.2f} s")  # fmt: skip
    print(f"fresh interpreters: python alone {startup:.2f} s, `import torch` {torch_import:.2f} s"
          f" (and {teardown - torch_import:.2f} s more to exit as usual, unloading it),"
          f" `import cnnlab.cli` {cnnlab_import:.2f} s (medians of {args.runs})")  # fmt: skip


if __name__ == "__main__":
    main()
