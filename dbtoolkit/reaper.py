"""What a killed run leaves behind: its server is stopped and its files removed.

Every server ``server.running_server`` starts lives in a working directory that
``watching`` marks with a record (the owning process's pid and start time, the
``pg_ctl`` to stop it with, the directories to remove) and hands to a watcher: this
module run as a small process of its own (``python -m dbtoolkit.reaper``, or this file
by path), in a session of its own so that a kill of pytest's process group does not
reach it. The watcher holds the read end of a pipe whose write end only the owner
holds, and a pidfd of the owner: it sleeps until the owner writes that it is done, or
dies (end of the pipe, or the pidfd turns readable). On a death it ``reap``s: ``pg_ctl
stop -m immediate``, then the directories go. What even the watcher could not clean up
(a reboot, a kill before the watcher started) is ``sweep``-ed by the next run that
starts a server: a record whose owner is no longer alive is reaped, any other is left
alone. ``SigtermAsInterrupt`` makes SIGTERM end pytest as Ctrl-C does, so a run that
is merely terminated tears down as usual.

It imports nothing outside the standard library, so that the watcher starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

# The prefix of the directories ``sweep`` looks in, and the record in them.
HOME_PREFIX = "dbtoolkit-"
RECORD = "owner.json"
# DBTOOLKIT_REAPER=off: no watcher, and SIGTERM ends pytest at once (the default action),
# as without dbtoolkit. For dbtoolkit's own tests, which show that a kill then leaks.
SWITCH = "DBTOOLKIT_REAPER"
# What the owner writes to the pipe once it has removed everything itself.
_DONE = b"d"


def enabled() -> bool:
    """Whether the clean-up after a killed run is on (unless ``DBTOOLKIT_REAPER=off``)."""
    return os.environ.get(SWITCH, "").lower() != "off"


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot), None if it is not alive.

    With the pid it names one process: a pid reused after its owner died has another.
    A zombie, dead but not yet waited for by its parent, is not alive.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces; then come the state (field 3)
    # and, as field 22, the start time.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in "ZXx" else fields[19]


@contextlib.contextmanager
def watching(home: Path, data: Path, pg_ctl: str, remove: Iterable[Path]) -> Iterator[None]:
    """Record this process as the owner of the server on ``data``; start its watcher.

    The record goes in ``home``, a directory of this process's user that no other user
    may write to: the watcher and ``sweep`` act on it (as root, too). ``pg_ctl`` stops
    the server, as the user it runs as. On exit, ``remove`` (the directories holding
    ``home`` and ``data``) is removed, as the watcher would, and the watcher told that
    nothing is left to do.
    """
    record = write_record(home, remove, data=data, pg_ctl=pg_ctl)
    watcher = _start_watcher(home) if enabled() else None
    try:
        yield
    finally:
        reap(record)  # the server is stopped by now, unless its start or stop failed
        if watcher is not None:
            process, done = watcher
            with contextlib.suppress(OSError):  # a watcher already gone has nothing to do
                os.write(done, _DONE)
            os.close(done)
            process.wait()


def write_record(
    home: Path, remove: Iterable[Path], data: Path | None = None, pg_ctl: str | None = None
) -> dict[str, Any]:
    """Record this process as the owner of ``remove`` (and of the server on ``data``).

    Once this process is dead, ``sweep`` stops that server and removes them.
    """
    pid = os.getpid()
    record = {
        "pid": pid,
        "start": start_time(pid),
        "pg_ctl": pg_ctl,
        "data": str(data) if data else None,
        "remove": [str(path) for path in remove],
    }
    partial = home / (RECORD + ".partial")
    partial.write_text(json.dumps(record))
    partial.rename(home / RECORD)  # whole or not at all
    return record


def _start_watcher(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the watcher of the record in ``home``; return it and its pipe's write end."""
    read, write = os.pipe()  # neither end is inherited by other children
    try:
        process = subprocess.Popen(
            [sys.executable, "-IS", __file__, str(home), str(read)],
            pass_fds=(read,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
    finally:
        os.close(read)
    return process, write


def _watch(home: Path, pipe: int) -> None:
    """Wait for the owner (this process's parent) to be done or dead; reap if dead."""
    owner = os.getppid()
    waited_on = [pipe]
    with contextlib.suppress(AttributeError, OSError):  # pidfds: Linux 5.3, Python 3.9
        pidfd = os.pidfd_open(owner)
        if os.getppid() == owner:  # else the pid may already name another process
            waited_on.append(pidfd)
    select.select(waited_on, [], [])
    os.set_blocking(pipe, False)
    try:
        if os.read(pipe, 1) == _DONE:
            return
    except BlockingIOError:
        pass  # dead, while a process it forked still holds the pipe
    record = _record(home)
    if record is not None:
        reap(record)


def _record(home: Path) -> dict[str, Any] | None:
    """The record in ``home``, if there is one that this process's user wrote."""
    path = home / RECORD
    try:
        if not all(
            entry.st_uid == os.geteuid() and not entry.st_mode & 0o022
            for entry in (os.lstat(home), os.lstat(path))
        ):
            return None
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record


def reap(record: dict[str, Any]) -> None:
    """Stop the recorded server at once, if it still runs, and remove its directories."""
    data = record["data"]
    if data and _postmaster(Path(data)) is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [record["pg_ctl"], "stop", "-D", data, "-m", "immediate"],
                capture_output=True,
                timeout=60,
                check=False,
            )
    for path in record["remove"]:
        shutil.rmtree(path, ignore_errors=True)


def _postmaster(data: Path) -> int | None:
    """The pid of the server running on ``data``, if one does.

    The pid in postmaster.pid is checked to be a process whose working directory is
    ``data``: after a reboot it may name any other process, even another server.
    """
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError, IndexError):
        return None
    return pid if cwd.removesuffix(" (deleted)") == str(data) else None


def sweep(roots: Iterable[str]) -> list[Path]:
    """Reap the servers recorded under ``roots`` whose owner is dead; return the records' homes.

    A record whose owner still runs (in this checkout or any other) is left alone, and
    so is a directory without a record this user wrote.
    """
    reaped = []
    for root in roots:
        with contextlib.suppress(OSError):
            for path in Path(root).glob(f"{HOME_PREFIX}*/{RECORD}"):
                record = _record(path.parent)
                if record is not None and start_time(record["pid"]) != record["start"]:
                    reap(record)
                    reaped.append(path.parent)
    return reaped


class Terminated(KeyboardInterrupt):
    """pytest received SIGTERM: it stops as on Ctrl-C, so teardown runs."""


# The exit status of a run that SIGTERM ended, as a shell reports a process it killed.
TERMINATED = 128 + signal.SIGTERM


class SigtermAsInterrupt:
    """While installed, SIGTERM raises ``Terminated`` in the main thread, as Ctrl-C would."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def install(self) -> None:
        """Handle SIGTERM, unless not in the main thread or with ``DBTOOLKIT_REAPER=off``.

        A handler the project installed itself (a conftest's) is left in charge.
        """
        if (
            threading.current_thread() is threading.main_thread()
            and enabled()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            self._previous = signal.signal(signal.SIGTERM, self._interrupt)

    def restore(self) -> None:
        """Give SIGTERM back the handler it had before ``install``."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        raise Terminated("pytest received SIGTERM")


if __name__ == "__main__":
    # Neither Ctrl-C in the terminal nor the terminal's closing is meant for the watcher.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _watch(Path(sys.argv[1]), int(sys.argv[2]))
