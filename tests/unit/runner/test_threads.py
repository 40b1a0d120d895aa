"""``trainer.threads``: the run's intra-op CPU threads, set before anything is built."""

from __future__ import annotations

import torch
from helpers import compose_cfg

from runner.train import build


def test_the_thread_count_is_set_before_the_fit_and_null_keeps_torchs(tmp_path):
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    try:
        (tmp_path / "a").mkdir()
        build(compose_cfg([f"trainer.threads={other}", "data.subset=64"], tmp_path), tmp_path / "a")
        assert torch.get_num_threads() == other
        (tmp_path / "b").mkdir()
        build(compose_cfg(["data.subset=64"], tmp_path), tmp_path / "b")
        assert torch.get_num_threads() == other  # null: whatever torch (or OMP_NUM_THREADS) set
    finally:
        torch.set_num_threads(before)
