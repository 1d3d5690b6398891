"""Fault injection for the runner (issue 17): damaged checkpoints, Ctrl-C, a second run on
the same folder, a read-only folder, a full disk, truncated manifests, no terminal.

The oracle is an uninterrupted run of the same sweep: whatever the fault, a run that goes
on gives the same rows, and one that cannot says so at once, naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ablate_tiny import ARGS, tiny_task

from wdchain.ablate import _cli, sweep
from wdchain.ablate._lock import LOCK, FolderInUseError, FolderLock
from wdchain.ablate._resume import STATE, CheckpointWriteError

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3  # three chunks of one epoch: checkpoints after epochs 1 and 2


class Stop(Exception):
    pass


def _stop_after(chunks: int, then=None):
    seen = []

    def on_chunk(arm, seed, epochs):
        seen.append(epochs)
        if then is not None and len(seen) == 1:
            then()
        if len(seen) == chunks:
            raise Stop

    return on_chunk


def _run(out, log=None, **kwargs):
    # report=False: these runs are about the rows and checkpoints, not the figures
    args = {**ARGS, "log": log or ARGS["log"], "out": out, "report": False}
    return sweep(tiny_task(epochs=kwargs.pop("epochs", EPOCHS)), **{**args, **kwargs})


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run's rows."""
    return sweep(tiny_task(epochs=EPOCHS), **ARGS)


def _checkpoints(out: Path) -> dict[int, Path]:
    directory = out / STATE / "checkpoint-adamw-seed0"
    return {int(p.name): p for p in directory.iterdir() if p.name.isdigit()}


def _damage(step: Path, damage) -> None:
    """Damages the checkpoint's array data: every data file of orbax's OCDBT store."""
    files = [p for p in step.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        damage(path)


def _flip_bytes(path: Path, count: int = 3) -> None:
    data = bytearray(path.read_bytes())
    for k in range(count):
        data[len(data) // 2 + k] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


# -- 7. damaged checkpoints ------------------------------------------------------------------


# orbax leaves a coroutine of the failed read to the garbage collector ("Event loop is closed")
ORBAX_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ORBAX_LEAK
@pytest.mark.parametrize("damage", [_flip_bytes, _truncate], ids=["flipped-bytes", "truncated"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before_it(tmp_path, reference, damage):
    with pytest.raises(Stop):
        _run(tmp_path, on_chunk=_stop_after(2))
    steps = _checkpoints(tmp_path)
    assert sorted(steps) == [1, 2]  # the last two are kept
    _damage(steps[2], damage)
    lines: list[str] = []
    rows = _run(tmp_path, log=lines.append)
    assert any("epoch 2" in line and ("fails its checksum" in line or "unreadable" in line)
               and "trying the one before it" in line for line in lines), lines
    assert any("after epoch 1 of 3" in line for line in lines), lines
    assert rows == reference


@ORBAX_LEAK
def test_every_checkpoint_damaged_trains_that_seed_from_the_start(tmp_path, reference):
    with pytest.raises(Stop):
        _run(tmp_path, on_chunk=_stop_after(2))
    for step in _checkpoints(tmp_path).values():
        _damage(step, _flip_bytes)
    lines: list[str] = []
    assert _run(tmp_path, log=lines.append) == reference
    assert any("no sound checkpoint of adamw seed 0: it trains from the start" in line
               for line in lines), lines


def test_fresh_keeps_finished_rows_of_the_same_configuration_unless_all(tmp_path, monkeypatch):
    first = _run(tmp_path, seeds=(0, 1))
    (tmp_path / "trajectories.csv").write_text("old")
    (tmp_path / "heatmap_adamw.png").write_bytes(b"old")
    with monkeypatch.context() as patch:
        patch.setattr("wdchain.ablate._sweep.GridProgram", None)  # training would crash
        assert _run(tmp_path, seeds=(0, 1), fresh=True) == first
    # 10. what the previous run wrote beside the results is gone
    assert not (tmp_path / "trajectories.csv").exists()
    assert not (tmp_path / "heatmap_adamw.png").exists()
    assert _run(tmp_path, seeds=(0, 1), fresh="all") == first  # retrained: same rows
    # a finished seed of another grid is not kept
    rows = _run(tmp_path, seeds=(0, 1), fresh=True, weight_decays=[1e-1])
    assert {row["weight_decay"] for row in rows} == {1e-1}


# -- 8. Ctrl-C -------------------------------------------------------------------------------


def test_ctrl_c_stops_at_a_chunk_boundary_and_the_run_resumes(tmp_path, reference):
    def interrupt():
        os.kill(os.getpid(), signal.SIGINT)

    lines: list[str] = []
    # What was there before: Python's default, or SIG_IGN when the tests were started in the
    # background of a non-interactive shell.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        _run(tmp_path, log=lines.append, on_chunk=_stop_after(10**6, then=interrupt),
             epochs=EPOCHS)
    assert type(stopped.value).__name__ == "Interrupted"
    assert any("stopping after the current chunk" in line for line in lines)
    assert signal.getsignal(signal.SIGINT) is before  # restored
    assert _checkpoints(tmp_path)
    lines.clear()
    assert _run(tmp_path, log=lines.append) == reference
    assert any(line.startswith("resumed adamw seed 0") for line in lines), lines


COMMAND = [sys.executable, "-m", "wdchain.ablate", "--task", "digits", "--arms", "adamw",
           "--lrs", "1e-2", "--wds", "1e-3", "--epochs", "40", "--seeds", "0", "1", "2",
           "--no-trajectories"]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(condition, process, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate(timeout=10)[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_exits_130_with_how_to_resume(tmp_path):
    run = _start(tmp_path)
    try:
        _wait_for(lambda: any((tmp_path / STATE).glob("checkpoint-*/*[0-9]")), run)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, stderr[-2000:]
    assert "run the same command to resume: python -m wdchain.ablate" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "summary.md").exists()
    resumed = subprocess.run([*COMMAND, "--out", str(tmp_path)], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed adamw seed" in resumed.stderr


# -- 9. one run per folder; a checkpoint that cannot be written ------------------------------


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path):
    holder = FolderLock(tmp_path, lambda line: None)
    try:
        with pytest.raises(FolderInUseError, match=rf"is in use by another run \(pid "
                                                   rf"{os.getpid()} on "):
            _run(tmp_path)
    finally:
        holder.release()
    assert _run(tmp_path)  # released: the folder is free again


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)
    pid = int(dead.stdout)
    import socket

    (tmp_path / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                             "started": time.time(), "command": "old run"}))
    lines: list[str] = []
    _run(tmp_path, log=lines.append, epochs=1)
    assert any(f"taking over {LOCK}" in line and f"pid {pid}" in line for line in lines), lines
    assert (tmp_path / LOCK).read_text() == ""  # released at the end


@pytest.mark.slow
def test_a_second_process_on_the_same_folder_is_refused(tmp_path):
    first = _start(tmp_path)
    try:
        _wait_for(lambda: (tmp_path / STATE).exists(), first)
        first.send_signal(signal.SIGSTOP)  # paused, it holds the folder (it could finish first)
        second = subprocess.run([*COMMAND, "--out", str(tmp_path)], capture_output=True,
                                text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert second.returncode == 2
    assert f"is in use by another run (pid {first.pid} on" in second.stderr


def _read_only(path: Path):
    def make():
        for directory in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
            directory.chmod(0o555)

    return make


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_checkpoint_that_cannot_be_written_stops_the_run_at_once(tmp_path):
    start = time.monotonic()
    try:
        with pytest.raises(CheckpointWriteError, match=r"cannot write the checkpoint of adamw "
                                                       r"seed 0 after epoch 2 .*run the same "
                                                       r"command to resume"):
            _run(tmp_path, on_chunk=_stop_after(10**6, then=_read_only(tmp_path / STATE)))
    finally:
        for directory in [tmp_path, *tmp_path.rglob("*")]:
            if directory.is_dir():
                directory.chmod(0o755)
    assert time.monotonic() - start < 120  # before: 300 s in orbax's wait


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root: skipped otherwise)."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=30, check=False)


def test_a_read_only_file_system_stops_the_run_at_once(tmp_path):
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    state = tmp_path / STATE
    mounted = []

    def read_only():  # the checkpoints' folder becomes a read-only bind mount of itself
        for command in (["mount", "--bind", str(state), str(state)],
                        ["mount", "-o", "remount,bind,ro", str(state)]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            if done.returncode:
                pytest.skip(f"cannot bind-mount read-only: {done.stderr.strip()}")
            mounted.append(True)

    start = time.monotonic()
    try:
        with pytest.raises(CheckpointWriteError, match=r"after epoch 2 .*Read-only file system"):
            _run(tmp_path, on_chunk=_stop_after(10**6, then=read_only))
    finally:
        if mounted:
            subprocess.run(["umount", str(state)], timeout=30, check=False)
    assert time.monotonic() - start < 120  # before: 300 s in orbax's wait


def test_a_full_disk_stops_the_run_at_once_and_it_resumes_once_there_is_room(tmpfs, reference):
    filler = tmpfs / "filler"

    def fill():
        try:
            with filler.open("wb") as file:
                while True:
                    file.write(b"\0" * 4096)
                    file.flush()
        except OSError:
            pass

    with pytest.raises(CheckpointWriteError, match=r"after epoch 2 .*run the same command"):
        _run(tmpfs / "out", on_chunk=_stop_after(10**6, then=fill))
    filler.unlink()
    assert _run(tmpfs / "out") == reference


# -- 10. damaged manifests and rows ------------------------------------------------------------


def test_a_truncated_run_json_is_refused_naming_the_file_and_the_fix(tmp_path):
    _run(tmp_path, epochs=1)
    manifest = tmp_path / "run.json"
    manifest.write_text(manifest.read_text()[:40])
    with pytest.raises(ValueError, match=r"cannot read .*run.json .*damaged or truncated: use "
                                         r"fresh=True \(--fresh\)"):
        _run(tmp_path, epochs=1)


def test_a_truncated_rows_file_is_retrained_with_a_message(tmp_path):
    first = _run(tmp_path, epochs=1)
    rows = tmp_path / STATE / "rows-adamw-seed0.json"
    rows.write_text(rows.read_text()[:30])
    (tmp_path / "results.csv").unlink()
    lines: list[str] = []
    assert _run(tmp_path, log=lines.append, epochs=1) == first
    assert any("rows-adamw-seed0.json is damaged" in line and "trains again" in line
               for line in lines), lines


# -- 13. no terminal -------------------------------------------------------------------------


@pytest.mark.slow
def test_without_a_terminal_each_finished_chunk_prints_a_line(tmp_path, capsys):
    _cli.main(["--task", "digits", "--arms", "adamw", "--lrs", "1e-2", "--wds", "1e-3",
               "--epochs", "2", "--seeds", "0", "--no-trajectories", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    err = captured.err
    assert "and 1 heatmap to" in captured.out  # 14. not "1 heatmaps"
    lines = [line for line in err.splitlines() if line.startswith("adamw seed 0: epoch")]
    assert len(lines) == 2, err
    assert "epoch 1/2 · 0:00:" in lines[0] and "elapsed · ~" in lines[0] and "left" in lines[0]
    assert lines[1].startswith("adamw seed 0: epoch 2/2") and "(2/2 epochs)" in lines[1]
