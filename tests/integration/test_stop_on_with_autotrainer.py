"""stop_on=critical with the AutoTrainer: a run stuck at chance because its LR is far too low waits for
the AutoTrainer's LR repair; a run stuck at chance by its labels is still stopped.

The LR case used to be stopped at step 40 as STUCK_AT_CHANCE ("check that labels match inputs"), while
the same command without stop_on raised the LR at step 80 and ended near 0.96.
"""

from __future__ import annotations

import json

from helpers import run_cli

COMMON = ["autotrainer=default", "stop_on=critical", "trainer.max_epochs=4"]


def test_a_far_too_low_lr_is_repaired_not_stopped(tmp_path):
    run = tmp_path / "run"
    res = run_cli([*COMMON, "optimizer=sgd", "optimizer.lr=1e-5"], tmp_path, run_dir=run)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert not report["stopped"], report.get("stop_reason")
    actions = [a for a in report["autotrainer"]["actions"] if a["action"] != "give_up"]
    assert actions and actions[0]["code"] == "SLOW_CONVERGENCE"
    assert report["metrics"]["test_acc"] > 0.9


def test_labels_that_carry_no_signal_are_still_stopped(tmp_path):
    run = tmp_path / "run"
    res = run_cli([*COMMON, "data.label_noise=1.0"], tmp_path, run_dir=run)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert report["stopped"] and "STUCK_AT_CHANCE" in report["stop_reason"], report
