"""Fixtures for every test; the helpers themselves live in the ``helpers`` package beside this file."""

from __future__ import annotations

import os

import pytest
from helpers import run_cli

if os.environ.get(
    "PYTEST_XDIST_WORKER"
):  # one worker per core: one thread each, in-process and in the CLI runs
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def cli(tmp_path):
    def _run(*args: str, **kw):
        return run_cli(list(args), tmp_path, **kw)

    return _run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration and bench smoke tests run whole processes and trainings: they are the slow tier."""
    for item in items:
        if item.path.parent.name in ("integration", "bench"):
            item.add_marker(pytest.mark.slow)
