"""Page faults per training step and per evaluation chunk of `fast`, with glibc's defaults and
with ``cnnlab.allocator.keep_freed_memory``.

    python benchmarks/page_faults.py            # runs both cases, each in a fresh process

A count, not a timing, so it can be measured while the machine is busy. Each case trains
`fast` for 100 steps (25,600 images) to warm up, counts the minor page faults
(``getrusage``) of 100 more steps, then of one evaluation of the 10,000 test images with
test-time shifts (10 chunks of 1,000 images, 5 views each). Without the allocator
setting, glibc hands every freed multi-megabyte buffer back to the system, and the next
step faults its pages in again.
"""

from __future__ import annotations

import resource
import subprocess
import sys

STEPS = 100
CHUNKS = 10


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def count(keep: bool) -> None:
    """Print the faults of one case; runs in a process of its own."""
    import cnnlab.train as train
    from cnnlab.allocator import keep_freed_memory
    from cnnlab.data import load_splits
    from cnnlab.predict import probabilities
    from cnnlab.presets import get_preset

    if keep:
        keep_freed_memory()
    else:
        train.keep_freed_memory = lambda: False  # fit() would apply it itself
    data = load_splits("mnist", split_name="standard", validation=0)
    settings = {**get_preset("fast").settings, "train_subset": STEPS * 256, "tta": "none"}
    config = train.TrainConfig.from_dict(settings).check()
    network = train.new_network(get_preset("fast").spec(), config)
    quiet = {"progress": False, "log": lambda _: None}
    train.fit(network, data, config, **quiet)
    before = minor_faults()
    train.fit(network, data, config, **quiet)
    per_step = (minor_faults() - before) / STEPS
    probabilities(network, data.test.images, config.precision, "shifts")
    before = minor_faults()
    probabilities(network, data.test.images, config.precision, "shifts")
    per_chunk = (minor_faults() - before) / CHUNKS
    label = "keep_freed_memory()" if keep else "glibc's defaults  "
    print(f"{label}  {per_step:8.1f} faults per training step", end="")
    print(f"  {per_chunk:8.1f} per evaluation chunk")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        count(sys.argv[2] == "keep")
        return
    print(" ".join(__doc__.split("\n\n")[0].split()))
    for case in ("default", "keep"):
        subprocess.run([sys.executable, __file__, "--case", case], check=True)


if __name__ == "__main__":
    main()
