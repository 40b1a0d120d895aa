"""check_data judges balance against sampling noise and prints numbers a person can read."""

from __future__ import annotations

import pytest
from helpers import run_cli

from runner.check_data import imbalanced


def test_imbalance_is_judged_against_what_the_split_size_gives_by_chance():
    # the bundled digits' 144-example validation split: 8..19 per class is sampling noise
    assert not imbalanced([14, 19, 13, 15, 16, 12, 8, 14, 17, 16])
    # the same proportions on 100x the examples are not
    assert imbalanced([1400, 1900, 1300, 1500, 1600, 1200, 800, 1400, 1700, 1600])
    assert not imbalanced([100, 100, 100])


@pytest.mark.slow
def test_check_data_on_the_digits_warns_of_nothing_and_prints_no_negative_zero(tmp_path):
    proc = run_cli(["hydra.run.dir=" + str(tmp_path / "cd")], tmp_path, module="runner.check_data")
    assert proc.returncode == 0, proc.stderr
    assert "imbalanced" not in proc.stdout + proc.stderr
    assert "-0.0" not in proc.stdout
    assert (tmp_path / "cd" / "samples.png").exists()
    # TensorBoard shows the check under its folder's name (its event files in the folder itself)
    assert f"tensorboard  tensorboard --logdir {tmp_path}   # this run: " in proc.stdout
    assert len(list((tmp_path / "cd").glob("events.out.tfevents.*"))) == 1
