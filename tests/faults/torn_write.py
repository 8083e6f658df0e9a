"""Make a process hang half-way through writing a results table, so a test can SIGKILL it there.

``python -m tests.faults.torn_write MARKER N ARGS...`` runs ``qmoe ARGS`` in this process with
:func:`install` applied: the N-th write of a ``results.parquet`` puts half of the new table
into the temporary file, creates MARKER and sleeps. The test waits for MARKER and kills.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pandas as pd


def install(marker: Path, n: int) -> None:
    """Patch ``DataFrame.to_parquet`` so that the ``n``-th results write stops half-way."""
    real = pd.DataFrame.to_parquet
    calls = {"results": 0}

    def to_parquet(self, path=None, *args, **kwargs):
        name = os.path.basename(str(path))
        if name.startswith(".results.parquet.") and name.endswith(".tmp"):
            calls["results"] += 1
            if calls["results"] == n:
                buf = io.BytesIO()
                real(self, buf, *args, **kwargs)
                data = buf.getvalue()
                with open(path, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                marker.write_text(str(os.getpid()))
                time.sleep(600)  # killed here
        return real(self, path, *args, **kwargs)

    pd.DataFrame.to_parquet = to_parquet


def main(argv: list[str]) -> int:
    marker, n, *args = argv
    install(Path(marker), int(n))
    from qmoe.cli.main import main as qmoe

    return qmoe(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
