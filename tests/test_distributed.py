"""One grid across processes: 2 processes × 4 simulated CPU devices (jax.distributed, Gloo).

Every process is started with a bounded wait: a hung collective fails the test (the
processes are killed), it never blocks the suite. Ports are free ones, chosen per run.

One failure is not ours and is let through, loudly: now and then process 0, which hosts
JAX's coordination service, aborts (SIGABRT) while that service shuts down at exit, in
gRPC's server destructor (``Check failed: queue.Pop() == nullptr`` under
``xla::DistributedRuntimeService::Shutdown``). It happened once, in CI (a run of this
module ends 8 processes), after the process had written everything; earlier CI and local
runs did not show it, nor did 60 bare 2-process runs. A process that aborts there *after*
printing that its work is done passes with a warning, and the test then checks its output
files as usual; an abort anywhere else, or before the work is done, fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from ablate_tiny import ARGS, tiny_task
from distributed_worker import DONE as WORKER_DONE

from wdchain.ablate import sweep

HERE = Path(__file__).parent
ROOT = HERE.parent
WORKER = HERE / "distributed_worker.py"
EPOCHS = 30  # chunks of 3 epochs: checkpoints after epochs 3, 6, …
GRID = {"lrs": [1e-2, 3e-2], "weight_decays": [0.0, 1e-3, 1e-2]}
METRICS = ("train_loss", "validation_loss", "validation_error", "test_loss", "test_error")
WAIT_S = 420
TEARDOWN_ABORT = "xla::DistributedRuntimeService::Shutdown()"
"""The frame of the upstream abort at exit (see the module's docstring)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    return env


def start(commands: list[list[str]]) -> list[subprocess.Popen]:
    return [subprocess.Popen(command, env=environment(), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for command in commands]


def finish(processes: list[subprocess.Popen], done: str, wait_s: float = WAIT_S) -> list[str]:
    """Every process's output; all killed and the test failed if one outlives ``wait_s``.
    Each must exit with 0, or abort in JAX's service teardown after printing ``done``
    (process 0 only prints it on the command line)."""
    deadline = time.monotonic() + wait_s
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"a process of the multi-process run hung for {wait_s} s (a collective "
                    "waiting for a process that is not there?)")
    for process, output in zip(processes, outputs):
        if aborted_after_work(process.returncode, output, done):
            warnings.warn("process 0 aborted in JAX's coordination-service teardown after "
                          "its work was done (upstream gRPC race, see tests/test_distributed.py)",
                          stacklevel=2)
            continue
        assert process.returncode == 0, output[-3000:]
    return outputs


def aborted_after_work(returncode: int | None, output: str, done: str) -> bool:
    """Whether a process aborted in the upstream service teardown, after ``done``."""
    if returncode != -signal.SIGABRT or TEARDOWN_ABORT not in output or done not in output:
        return False
    return output.index(done) < output.index(TEARDOWN_ABORT)


def workers(out: Path, processes: int = 2) -> list[list[str]]:
    port = free_port()
    return [[sys.executable, str(WORKER), str(port), str(processes), str(i), str(out),
             str(EPOCHS)] for i in range(processes)]


def metrics(rows):
    return np.array([[row[m] for m in METRICS] for row in rows])


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    outputs = finish(start(workers(out)), WORKER_DONE)
    return out, outputs


@pytest.mark.slow
def test_two_processes_return_every_row_and_equal_one_process(two_process_run):
    out, outputs = two_process_run
    first, second = (json.loads((out / f"rows-{i}.json").read_text()) for i in range(2))
    assert first == second  # every process returns all rows
    one = sweep(tiny_task(epochs=EPOCHS), **{**ARGS, **GRID}, devices=jax.devices()[:1])
    assert [(r["lr"], r["weight_decay"]) for r in first] == [
        (r["lr"], r["weight_decay"]) for r in one]
    np.testing.assert_allclose(metrics(first), metrics(one), rtol=1e-5, atol=1e-6)
    # Only the primary process printed, and wrote the outputs.
    assert "layout" in outputs[0] and "layout" not in outputs[1]
    recorded = json.loads((out / "run.json").read_text())["layout"]
    assert (recorded["processes"], recorded["devices"]) == (2, 8)


@pytest.mark.slow
def test_killed_on_every_process_and_restarted_writes_the_same_csv(two_process_run, tmp_path):
    expected = (two_process_run[0] / "results.csv").read_text()
    processes = start(workers(tmp_path))
    state = tmp_path / ".wdchain-ablate"
    deadline = time.monotonic() + WAIT_S
    while not any(p.name.isdigit() for d in state.glob("checkpoint-*") for p in d.iterdir()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            for process in processes:
                process.kill()
            pytest.fail("no checkpoint was written before the run ended or the wait ran out")
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.communicate(timeout=30)
    assert not (tmp_path / "results.csv").exists()
    outputs = finish(start(workers(tmp_path)), WORKER_DONE)
    assert "resumed adamw seed 0 from its checkpoint after epoch" in outputs[0], outputs[0][-4000:]
    assert (tmp_path / "results.csv").read_text() == expected


@pytest.mark.slow
def test_the_command_line_joins_a_multi_process_run(two_process_run, tmp_path):
    port = free_port()
    commands = [[sys.executable, "-m", "wdchain.ablate", "--task", "ablate_tiny:tiny_task",
                 "--epochs", str(EPOCHS), "--arms", "adamw", "--lrs", "0.01,0.03",
                 "--wds", "0,0.001,0.01", "--seeds", "0", "--no-trajectories",
                 "--out", str(tmp_path), "--coordinator", f"127.0.0.1:{port}",
                 "--num-processes", "2", "--process-id", str(i)] for i in range(2)]
    outputs = finish(start(commands), "wrote results.csv")
    assert (tmp_path / "results.csv").read_text() == (
        two_process_run[0] / "results.csv").read_text()
    assert "wrote results.csv" in outputs[0] and "wrote" not in outputs[1]


def test_a_restart_with_another_number_of_processes_is_refused(tmp_path):
    """The checkpoints are laid out for the devices of the first start: a different
    number of processes is refused, naming both numbers."""
    task = tiny_task(epochs=1)
    sweep(task, **ARGS, out=tmp_path)
    manifest = tmp_path / "run.json"
    run = json.loads(manifest.read_text())
    run["layout"].update(processes=2, devices=8)  # as a 2-process run records it
    manifest.write_text(json.dumps(run))
    (tmp_path / "results.csv").unlink()
    for rows in (tmp_path / ".wdchain-ablate").glob("rows-*"):
        rows.unlink()
    with pytest.raises(ValueError, match=r"started with 2 process\(es\) over 8 device\(s\); "
                                         r"this one has 1 over \d+"):
        sweep(task, **ARGS, out=tmp_path)


def test_the_multi_process_flags_go_together(capsys):
    from wdchain.ablate import main

    for argv, message in (
            (["--coordinator", "127.0.0.1:1"], "needs --coordinator HOST:PORT, --num-processes"),
            (["--distributed", "--process-id", "0"], "--distributed takes its settings"),
            (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
             "--process-id must be below --num-processes (2), got 2")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_only_an_abort_in_the_service_teardown_after_the_work_is_let_through():
    trace = f"F1203 server.cc:584] Check failed: queue.Pop() == nullptr\n  @ {TEARDOWN_ABORT}\n"
    abort = -signal.SIGABRT
    assert aborted_after_work(abort, f"layout vmap\n{WORKER_DONE}\n{trace}", WORKER_DONE)
    assert not aborted_after_work(abort, f"layout vmap\n{trace}", WORKER_DONE)  # work unfinished
    assert not aborted_after_work(abort, f"{trace}{WORKER_DONE}\n", WORKER_DONE)  # done after it
    assert not aborted_after_work(abort, f"{WORKER_DONE}\nF0101 other.cc] Check failed",
                                  WORKER_DONE)  # another abort
    assert not aborted_after_work(-signal.SIGKILL, f"{WORKER_DONE}\n{trace}", WORKER_DONE)
    assert not aborted_after_work(1, f"{WORKER_DONE}\n{trace}", WORKER_DONE)
