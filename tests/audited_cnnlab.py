"""`cnnlab` as a torchrun worker that records what it creates or replaces (test_distributed.py).

Every file this process opens for writing and every rename it makes is listed,
at exit, in ``$AUDIT_DIR/rank$RANK.txt``: the test checks that only the first
process writes a run's files.
"""

import atexit
import os
import sys
from pathlib import Path

WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
written: set[str] = set()


def _record(event: str, args: tuple) -> None:
    if event == "open" and (
        (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
        or (isinstance(args[2], int) and args[2] & WRITING)
    ):
        _add(args[0])
    elif event == "os.rename":
        _add(args[1])
    elif event in ("os.mkdir", "os.remove"):
        _add(args[0])


def _add(path: object) -> None:
    if isinstance(path, (str, bytes, os.PathLike)):
        written.add(os.path.abspath(os.fsdecode(path)))


def _report() -> None:
    report = Path(os.environ["AUDIT_DIR"], f"rank{os.environ.get('RANK', '0')}.txt")
    report.write_text("".join(f"{path}\n" for path in sorted(written)))


sys.addaudithook(_record)
atexit.register(_report)

from cnnlab.cli import main  # noqa: E402

sys.exit(main())
