"""Fixtures for every test; the helpers themselves live in the ``helpers`` package beside this file."""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_cli

# Python's default in the test processes, whatever PYTHONDONTWRITEBYTECODE says (this project's machines
# set it): pytest keeps each test module's assertion-rewritten bytecode in __pycache__ (every worker of
# every session rewrote and compiled all of them again, ~3 s of each worker's collection), and the
# project's modules imported here are read from theirs. Subprocesses keep the environment's setting.
sys.dont_write_bytecode = False

if os.environ.get(
    "PYTEST_XDIST_WORKER"
):  # one worker per core: one thread each, in-process and in the CLI runs
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_configure(config: pytest.Config) -> None:
    """The project's modules compiled to ``__pycache__`` once, before any worker starts (only those out
    of date: nothing after the first run of a clone). The tests start many new interpreters (torchrun's
    ranks, submitit's tasks, fresh runs, the benches' start-up timings), and where PYTHONDONTWRITEBYTECODE
    is set (this project's machines set it) each of them compiled every module it imports of ``runner``
    and ``diag`` again (~0.25 s a start); the bytecode is what a wheel install ships, as pip compiles it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for package in ("runner", "diag", "hydra_plugins"):
        compileall.compile_dir(ROOT / package, quiet=1)


@pytest.fixture
def cli(tmp_path):
    def _run(*args: str, **kw):
        return run_cli(list(args), tmp_path, **kw)

    return _run


SLOW_DIRS = ("integration", "bench")  # whole processes and trainings: the slow tier


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration and bench smoke tests run whole processes and trainings: they are the slow tier.

    The slow tier runs first. xdist gives each worker a contiguous share of this order and an idle worker
    takes the end of a busy one's queue: with the long tests ahead, the session ends on short ones and no
    worker waits alone for a 20 s test started last."""
    for item in items:
        if item.path.parent.name in SLOW_DIRS:
            item.add_marker(pytest.mark.slow)
    # a stable sort: within each tier the files keep their order
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m "not slow"`` does not even import the slow tier's folders: every one of their tests would be
    deselected, and importing them (Lightning alone, 2 s) is paid again by every xdist worker."""
    if config.getoption("markexpr") != "not slow":
        return None
    in_tests = collection_path.parent == Path(__file__).parent
    return True if in_tests and collection_path.name in SLOW_DIRS else None
