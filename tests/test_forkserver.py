"""A forked inner run starts as ``python -m pytest`` would (tests/forkserver.py).

So do its xdist workers, forked in place of ``python -c``.
"""

from __future__ import annotations

import json
import os

import forkserver
import pytest

STATE = """
import json
import os
import random
import sys
import tempfile

import factory.random
import faker.generator


def test_state():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    state = {
        "path": sys.path[0],
        "cwd": os.getcwd(),
        "env": os.environ.get("FORKSERVER_TEST"),
        "tmp": tempfile.gettempdir(),
        "forked": "sqlalchemy.orm" in sys.modules,  # imported by the server, not here
        "random": [random.random(), faker.generator.random.random(),
                   factory.random.randgen.random()],
    }
    with open(f"state-{worker}.json", "w") as file:
        json.dump(state, file)


def test_again():
    test_state()
"""


def test_a_forked_run_and_its_workers_have_directory_environment_and_randomness_of_their_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_state=STATE)
    # Neither pytest-randomly nor dbtoolkit may seed the generators here.
    args = ("-p", "no:randomly", "-p", "no:dbtoolkit")
    runs = {"main": ("test_state.py::test_state",), "xdist": ("-n", "2")}
    for name, run_args in runs.items():  # each with its own environment
        monkeypatch.setenv("FORKSERVER_TEST", name)
        monkeypatch.setenv("TMPDIR", str(pytester.mkdir(f"tmp-{name}")))
        result = forkserver.runpytest(pytester, *args, *run_args)
        result.assert_outcomes(passed=len(run_args))
    states = {
        name: json.loads((pytester.path / f"state-{name}.json").read_text())
        for name in ("main", "gw0", "gw1")
    }

    assert states["main"]["path"] == os.getcwd() == str(pytester.path)
    run_of = {"main": "main", "gw0": "xdist", "gw1": "xdist"}
    for name, state in states.items():
        run = run_of[name]
        assert (state["cwd"], state["env"], state["forked"]) == (str(pytester.path), run, True)
        assert state["tmp"] == str(pytester.path / f"tmp-{run}")
    # random's, Faker's and factory_boy's generators: each process draws its own.
    for drawn in zip(*(s["random"] for s in states.values()), strict=True):
        assert len(set(drawn)) == 3


ENDING = """
import atexit
import threading
import time
from pathlib import Path


def test_fails_and_leaves_a_thread_running():
    def finish():
        time.sleep(0.2)
        Path("thread.txt").write_text("finished")

    threading.Thread(target=finish).start()
    atexit.register(lambda: Path("atexit.txt").write_text(Path("thread.txt").read_text()))
    atexit.register(print, "printed at exit")
    assert False
"""


def test_a_forked_run_ends_as_python_would(pytester: pytest.Pytester) -> None:
    """With its exit status and all its output, threads joined, then atexit's functions run."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_ending=ENDING)

    result = forkserver.runpytest(pytester, "-p", "no:randomly", "-p", "no:dbtoolkit")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    assert result.outlines[-1] == "printed at exit"
    assert (pytester.path / "atexit.txt").read_text() == "finished"
