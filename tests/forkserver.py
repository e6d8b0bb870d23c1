"""Inner pytest runs as forks of a process that has already imported what they all import.

A new Python process pays about a second before its first test: pytest, its plugins
(Faker's among them), SQLAlchemy, Alembic, psycopg2 and factory_boy. ``runpytest`` runs
pytest as ``pytester.runpytest_subprocess`` does, in a process of its own (what one run
binds, registers or leaves running ends with it), but forked from this module's server,
which imported all of that once. The fork then goes on as ``python -m pytest`` would.
The xdist workers of a forked run are forked too: its execnet starts them through
``python forkserver.py connect``, which hands its stdin and stdout to a fork.

``Run`` stands in for ``subprocess.Popen`` where a test needs a run to kill, or several
at once. Runs that look at what was imported, or that hide installed packages from the
inner run, need processes started from nothing: ``pytester.runpytest_subprocess``.

The server listens on a Unix socket. For each connection it forks a supervisor, which
takes the request (a JSON line: directory, environment, Python's arguments) and the
three descriptors for stdin, stdout and stderr, forks the run, answers with its pid and
then its exit status, and kills it when the connection closes first.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

# What an inner run imports once a test uses the database, besides pytest's plugins, and
# the frameworks of the example applications (tests/examples/*_app).
PRELOAD = [
    "alembic.autogenerate",
    "alembic.command",
    "alembic.runtime.migration",
    "dbtoolkit.isolation",
    "dbtoolkit.leaks",
    "dbtoolkit.migrations",
    "dbtoolkit.provision",
    "dbtoolkit.sandbox",
    "execnet.gateway_io",
    "factory.alchemy",
    "fastapi.testclient",
    "flask_migrate",
    "flask_sqlalchemy",
    "httpx",
    "polyfactory",
    "psycopg2",
    "pydantic_settings",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "sqlalchemy.orm",
    "sqlmodel",
]


def runpytest(pytester: pytest.Pytester, *args: str, timeout: float = 180) -> pytest.RunResult:
    """``pytester.runpytest_subprocess(*args, timeout=timeout)``, forked from the server."""
    import pytest

    __tracebackhide__ = True
    basetemp = tempfile.mkdtemp(prefix="runpytest-", dir=pytester.path)
    args = (f"--basetemp={basetemp}", *args)
    env = dict(os.environ)  # as pytester.popen has it: the directory on PYTHONPATH
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    out, err = pytester.path / "stdout", pytester.path / "stderr"
    print("running: pytest", *args, "forked, in", os.getcwd())
    start = time.monotonic()
    with streams(out, err) as fds:
        run = Run(["-m", "pytest", *args], env, fds)
    ret = run.wait(timeout)
    duration = time.monotonic() - start
    if ret is None:
        run.close()
        raise pytester.TimeoutExpired(f"{timeout} second timeout expired running: {args}")
    outlines, errlines = out.read_text().splitlines(), err.read_text().splitlines()
    print(*outlines, sep="\n")
    print(*errlines, sep="\n", file=sys.stderr)
    return pytest.RunResult(ret, outlines, errlines, duration)


@contextlib.contextmanager
def streams(stdout: Path | None = None, stderr: Path | None = None) -> Iterator[list[int]]:
    """A run's stdin, stdout and stderr: /dev/null, unless written to these files.

    The same file for both is opened once, as ``stderr=subprocess.STDOUT`` would have it.
    """
    with contextlib.ExitStack() as files:
        nothing = files.enter_context(open(os.devnull, "r+"))

        def opened(path: Path | None) -> Any:
            return files.enter_context(path.open("w")) if path else nothing

        out = opened(stdout)
        err = out if stderr == stdout else opened(stderr)
        yield [nothing.fileno(), out.fileno(), err.fileno()]


class Run:
    """``python *argv`` forked by the server, with ``env``, in ``cwd`` (this directory).

    ``fds`` become its stdin, stdout and stderr (see ``streams``); with ``session`` it
    starts a session of its own, as ``subprocess.Popen(..., start_new_session=True)`` does.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        fds: list[int],
        *,
        cwd: str | None = None,
        session: bool = False,
        path: str = "",
    ) -> None:
        self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connection.connect(path or _server())
        request = {"argv": argv, "env": env, "cwd": cwd or os.getcwd(), "session": session}
        socket.send_fds(self.connection, [json.dumps(request).encode() + b"\n"], fds)
        self.answers = self.connection.makefile("rb")
        self.pid = _number(self.answers.readline())
        self.code: int | None = None

    def wait(self, timeout: float | None = None) -> int | None:
        """The run's exit status; None if it is still going after ``timeout``."""
        if self.code is None and select.select([self.answers], [], [], timeout)[0]:
            self.code = _number(self.answers.readline())
            self.close()
        return self.code

    def poll(self) -> int | None:
        return self.wait(0)

    def close(self) -> None:
        """Let the run go: the supervisor kills it if it is still going."""
        self.answers.close()
        self.connection.close()


def _number(line: bytes) -> int:
    if not line:
        raise RuntimeError(f"the fork server ended: python {__file__} serve X </dev/null says why")
    return int(line)


@functools.cache
def _server() -> str:
    """The socket of this process's server, started at its first run; it ends with this one."""
    path = os.path.join(tempfile.mkdtemp(prefix="forkserver-"), "socket")
    # Nothing of the outer run's pytest or dbtoolkit settings, and bytecode written.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "DBTOOLKIT_"))
        and name not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    }
    command = [sys.executable, __file__, "serve", path]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert server.stdin
    assert server.stdout
    _number(server.stdout.readline())  # listening
    server.stdout.close()

    @atexit.register
    def stop() -> None:  # the server ends when its stdin does, even if this process is killed
        server.stdin.close()
        server.wait()

    return path


def serve(path: str) -> tuple[dict[str, Any], list[int]]:
    """Serve forks on ``path`` until stdin ends; return, in a run, its request and files."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    sys.stdout.buffer.write(b"0\n")
    sys.stdout.buffer.flush()
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [], 1)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:  # supervisors that are done
                pass
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            shutil.rmtree(os.path.dirname(path))
            sys.exit(0)
        if listener in ready:
            connection, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                return supervise(connection)
            connection.close()


def supervise(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Fork the connection's run and answer for it; return its request in the run."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    while not data.endswith(b"\n"):
        data += connection.recv(1 << 20)
    pid = os.fork()
    if pid == 0:
        connection.close()
        return json.loads(data), fds
    for fd in fds:
        os.close(fd)
    connection.sendall(b"%d\n" % pid)
    ended = os.pidfd_open(pid)
    if connection not in select.select([ended, connection], [], [])[0]:
        connection.sendall(b"%d\n" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    else:  # the client gave up, or is gone
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os._exit(0)


def preload() -> None:
    """Import pytest's plugins as a run does (through its assertion rewriter), and PRELOAD.

    ``pytest -VV`` loads every installed plugin and configures none; from an empty
    directory it finds no ini and no conftest.
    """
    import gc
    import io

    import pytest

    with (
        tempfile.TemporaryDirectory() as empty,
        contextlib.chdir(empty),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        pytest.main(["-VV", "-p", "no:cacheprovider"])
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # not in every venv CI runs the suite in
            __import__(name)
    # What was imported stays: the collections of each run (pytest asks for several at
    # its end) need not go through it.
    gc.freeze()


def become(request: dict[str, Any], fds: list[int], path: str, base_path: list[str]) -> None:
    """Make this fork the process that ``python`` would start for ``request``."""
    if request["session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # What was read from the environment before: Python's bytecode switch, and the
    # temporary directory (TMPDIR) that tempfile keeps once asked.
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    tempfile.tempdir = None
    # A new process seeds its random generators from os.urandom. After a fork, random's
    # own is seeded again; those that Faker and factory_boy made at import are not.
    for module, generator in (("faker.generator", "random"), ("factory.random", "randgen")):
        if module in sys.modules:
            getattr(sys.modules[module], generator).seed()
    pythonpath = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [os.getcwd(), *pythonpath, *base_path]
    if "xdist.plugin" not in sys.modules:  # where xdist is installed, its plugin is loaded
        return
    # xdist gives its workers the sys.path it was imported with.
    sys.modules["xdist.plugin"]._sys_path[:] = sys.path
    # execnet starts xdist's workers as "python -u -c CODE": through this file instead.
    gateway_io = sys.modules["execnet.gateway_io"]
    popen_args = gateway_io.popen_args

    def forked_popen_args(spec: Any) -> list[str]:
        args: list[str] = popen_args(spec)
        if not spec.python:
            args[:1] = [sys.executable, "-I", "-S", __file__, "connect", path]
        return args

    gateway_io.popen_args = forked_popen_args


def end(code: object) -> None:
    """Exit as Python would with ``code``, but without tearing the interpreter down.

    Its teardown walks every object the server imported and writes to each, which
    copies their memory into this fork: about 0.08 s of CPU a run, to no end.
    """
    import atexit
    import threading

    threading._shutdown()  # as Python's exit: wait for the threads, then atexit
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__" and sys.argv[1] == "connect":
    # python -S forkserver.py connect SOCKET ARGS: python ARGS, forked, on these stdin,
    # stdout and stderr; in its place as far as its parent can tell.
    sys.exit(Run(sys.argv[3:], dict(os.environ), [0, 1, 2], path=sys.argv[2]).wait())
if __name__ == "__main__":
    socket_path = sys.argv[2]
    preload()
    base_path = sys.path[1:]  # without this file's directory
    request, fds = serve(socket_path)
    become(request, fds, socket_path, base_path)
    # The run: from here on, what python does with these arguments.
    argv = request["argv"]
    while argv[0] == "-u":  # unbuffered output: execnet's worker writes none through sys
        argv = argv[1:]
    try:
        if argv[0] == "-m":
            import runpy

            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:  # -c CODE
            import types

            main = sys.modules["__main__"] = types.ModuleType("__main__")
            sys.path[0] = ""
            sys.argv = ["-c", *argv[2:]]
            exec(argv[1], main.__dict__)
    except SystemExit as exiting:
        end(exiting.code)
    end(0)
