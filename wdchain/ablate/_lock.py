"""One run per output folder: a lock held by the running process.

The lock is ``fcntl.flock`` on ``<out>/.wdchain-ablate.lock``: the kernel releases it
when its process ends, however it ends, so a killed run never leaves the folder locked.
The file names its holder (pid, host, start time, command), which a second run quotes
when it is refused, and which says when a run takes over from one that died.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCK = ".wdchain-ablate.lock"


class FolderInUseError(ValueError):
    """Another running process holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {started}: "
            f"{holder.get('command', '?')}")


class FolderLock:
    """Holds ``out`` for this process until :meth:`release` (or the process ends)."""

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.path = Path(out) / LOCK
        self._file: Any = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        file = open(self.path, "a+")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read(file)
            file.close()
            raise FolderInUseError(
                f"sweep: out={str(out)!r} is in use by another run ({_holder_text(holder)}); "
                "wait for it to finish, stop it, or use another out folder"
            ) from None
        previous = self._read(file)
        pid = previous.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and (
                previous.get("host") != socket.gethostname() or not _alive(pid)):
            log(f"taking over {self.path.name} from a run that ended without releasing it "
                f"({_holder_text(previous)})")
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "started": time.time(), "command": " ".join(sys.argv)}))
        file.flush()
        self._file = file

    @staticmethod
    def _read(file: Any) -> dict[str, Any]:
        file.seek(0)
        try:
            holder = json.loads(file.read() or "{}")
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        """Empties the lock file and releases it."""
        if self._file is None:
            return
        import fcntl

        self._file.seek(0)
        self._file.truncate()
        self._file.flush()
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None
