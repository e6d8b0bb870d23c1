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

import factory.random
import faker.generator


def test_state():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    state = {
        "path": sys.path[0],
        "cwd": os.getcwd(),
        "env": os.environ.get("FORKSERVER_TEST"),
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
    monkeypatch.setenv("FORKSERVER_TEST", "set")
    # Neither pytest-randomly nor dbtoolkit may seed the generators here.
    args = ("-p", "no:randomly", "-p", "no:dbtoolkit")
    forkserver.runpytest(pytester, *args, "test_state.py::test_state").assert_outcomes(passed=1)
    forkserver.runpytest(pytester, *args, "-n", "2").assert_outcomes(passed=2)
    states = {
        name: json.loads((pytester.path / f"state-{name}.json").read_text())
        for name in ("main", "gw0", "gw1")
    }

    assert states["main"]["path"] == os.getcwd() == str(pytester.path)
    assert {(s["cwd"], s["env"], s["forked"]) for s in states.values()} == {
        (str(pytester.path), "set", True)
    }
    # random's, Faker's and factory_boy's generators: each process draws its own.
    for drawn in zip(*(s["random"] for s in states.values()), strict=True):
        assert len(set(drawn)) == 3
