"""One process of a multi-process sweep, for tests/test_distributed.py.

``python tests/distributed_worker.py PORT PROCESSES ID OUT EPOCHS`` joins the run, sweeps
the tiny task into OUT, writes this process's rows to OUT/rows-ID.json, then prints
``rows written``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from wdchain.ablate import _distributed

DONE = "rows written"
"""Printed once this process's rows are on disk: its work is over."""


def main(port: str, processes: str, process_id: str, out: str, epochs: str) -> None:
    _distributed.initialize(f"127.0.0.1:{port}", int(processes), int(process_id), timeout_s=60)
    sys.path.insert(0, str(Path(__file__).parent))
    from ablate_tiny import ARGS, tiny_task

    from wdchain.ablate import sweep

    args = {**ARGS, "lrs": [1e-2, 3e-2], "weight_decays": [0.0, 1e-3, 1e-2],
            "log": lambda line: print(line, flush=True)}
    rows = sweep(tiny_task(epochs=int(epochs)), **args, out=out)
    (Path(out) / f"rows-{process_id}.json").write_text(json.dumps(rows))
    print(DONE, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
