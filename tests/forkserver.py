"""Inner pytest runs as forks of a process that has already imported what they all import.

A new Python process pays about a second before its first test: pytest, its plugins
(Faker's among them), SQLAlchemy, Alembic, psycopg2 and factory_boy. ``runpytest`` runs
pytest as ``pytester.runpytest_subprocess`` does, in a process of its own (what one run
binds, registers or leaves running ends with it), but forked from this module's server,
which imported all of that once. The fork then goes on as ``python -m pytest`` would.

Runs that look at what was imported, or that hide installed packages from the inner
run, need a process started from nothing: ``pytester.runpytest_subprocess``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import io
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import time

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
    "factory.alchemy",
    "fastapi.testclient",
    "flask_migrate",
    "flask_sqlalchemy",
    "httpx",
    "polyfactory",
    "psycopg2",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "pydantic_settings",
    "sqlalchemy.orm",
    "sqlmodel",
]


def runpytest(pytester: pytest.Pytester, *args: str, timeout: float = 180) -> pytest.RunResult:
    """``pytester.runpytest_subprocess(*args, timeout=timeout)``, forked from the server."""
    __tracebackhide__ = True
    basetemp = tempfile.mkdtemp(prefix="runpytest-", dir=pytester.path)
    args = (f"--basetemp={basetemp}", *args)
    env = dict(os.environ)  # as pytester.popen has it: the directory on PYTHONPATH
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    out, err = pytester.path / "stdout", pytester.path / "stderr"
    request = {"cwd": os.getcwd(), "args": args, "env": env, "out": str(out), "err": str(err)}
    print("running: pytest", *args, "forked, in", os.getcwd())
    start = time.monotonic()
    ret = _server().run(request, timeout)
    duration = time.monotonic() - start
    if ret is None:
        raise pytester.TimeoutExpired(f"{timeout} second timeout expired running: {args}")
    outlines, errlines = out.read_text().splitlines(), err.read_text().splitlines()
    print(*outlines, sep="\n")
    print(*errlines, sep="\n", file=sys.stderr)
    return pytest.RunResult(ret, outlines, errlines, duration)


class Server:
    """The client's end of the server process: one request at a time."""

    def __init__(self) -> None:
        # Nothing of the outer run's pytest or dbtoolkit settings, and bytecode written.
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PYTEST_", "DBTOOLKIT_"))
            and name not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
        }
        self.process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.process.stdin
        assert self.process.stdout
        self.requests, self.answers = self.process.stdin, self.process.stdout

    def run(self, request: dict[str, object], timeout: float) -> int | None:
        """The exit code of the forked run, or None when it was killed after ``timeout``."""
        self.requests.write(json.dumps(request).encode() + b"\n")
        self.requests.flush()
        pid = self._answer()
        ready, _, _ = select.select([self.answers], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        code = self._answer()
        return code if ready else None

    def _answer(self) -> int:
        line = self.answers.readline()
        if not line:
            raise RuntimeError(f"the fork server ended: python {__file__} </dev/null says why")
        return int(line)

    def close(self) -> None:
        """End the server: it ends when its stdin does."""
        self.requests.close()
        self.process.wait()
        self.answers.close()


@functools.cache
def _server() -> Server:
    """The server of this process, started at its first inner run; it ends with this one."""
    server = Server()
    atexit.register(server.close)
    return server


def serve() -> dict[str, object]:
    """Fork a child for each request on stdin; return, in the child, its request."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while line := stdin.readline():
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        stdout.write(b"%d\n" % pid)
        stdout.flush()
        _, status = os.waitpid(pid, 0)
        stdout.write(b"%d\n" % os.waitstatus_to_exitcode(status))
        stdout.flush()
    sys.exit(0)


def preload() -> None:
    """Import pytest's plugins as a run does (through its assertion rewriter), and PRELOAD.

    ``pytest -VV`` loads every installed plugin and configures none; from an empty
    directory it finds no ini and no conftest.
    """
    with (
        tempfile.TemporaryDirectory() as empty,
        contextlib.chdir(empty),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        pytest.main(["-VV", "-p", "no:cacheprovider"])
    for name in PRELOAD:
        __import__(name)
    # What was imported stays: the collections of each run (pytest asks for several at
    # its end) need not go through it.
    gc.freeze()


if __name__ == "__main__":
    preload()
    base_path = sys.path[1:]  # without this file's directory
    request = serve()
    # The child: from here on, ``python -m pytest`` in the request's directory.
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    # A new process seeds its random generators from os.urandom. After a fork, random's
    # own is seeded again; those that Faker and factory_boy made at import are not.
    sys.modules["faker.generator"].random.seed()
    sys.modules["factory.random"].randgen.seed()
    pythonpath = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    sys.path[:] = [os.getcwd(), *pythonpath, *base_path]
    # xdist gives its workers the sys.path it was imported with.
    sys.modules["xdist.plugin"]._sys_path[:] = sys.path
    with (
        open(os.devnull) as nothing,
        open(request["out"], "w") as out,
        open(request["err"], "w") as err,
    ):
        os.dup2(nothing.fileno(), 0)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    sys.argv = ["pytest", *request["args"]]
    runpy.run_module("pytest", run_name="__main__", alter_sys=True)
