"""A forked inner run starts as ``python -m pytest`` would (tests/forkserver.py)."""

from __future__ import annotations

import os

import forkserver
import pytest

STATE = """
import os
import random
import sys

import factory.random
import faker.generator


def test_state():
    print("\\n@@ path", sys.path[0])
    print("@@ cwd", os.getcwd())
    print("@@ env", os.environ.get("FORKSERVER_TEST"))
    print("@@ random", random.random(), faker.generator.random.random(),
          factory.random.randgen.random())
"""


def state(result: pytest.RunResult) -> dict[str, str]:
    result.assert_outcomes(passed=1)
    lines = [line[3:].split(" ", 1) for line in result.outlines if line.startswith("@@ ")]
    return dict(lines)


def test_a_forked_run_has_its_directory_environment_and_random_state_of_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_state=STATE)
    # Neither pytest-randomly nor dbtoolkit may seed the generators here.
    args = ("-p", "no:randomly", "-p", "no:dbtoolkit", "-s")
    monkeypatch.setenv("FORKSERVER_TEST", "first")
    first = state(forkserver.runpytest(pytester, *args))
    monkeypatch.setenv("FORKSERVER_TEST", "second")
    second = state(forkserver.runpytest(pytester, *args))

    assert first["path"] == first["cwd"] == os.getcwd() == str(pytester.path)
    assert (first["env"], second["env"]) == ("first", "second")
    drawn = zip(first["random"].split(), second["random"].split(), strict=True)
    assert [a != b for a, b in drawn] == [True, True, True]  # random, Faker's, factory_boy's
