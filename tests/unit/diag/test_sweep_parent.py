"""``diag sweep`` on a folder holding several sweeps (``outputs/multirun``) names them instead of merging
their jobs into one table; a folder holding one sweep reads that sweep."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_sweep_malformed import GOOD_REPORT, _job

from diag.__main__ import main
from diag.sweep import summarize


def _sweep(root: Path, name: str, lrs: list[float], mtime: float) -> Path:
    sweep = root / name
    for i, lr in enumerate(lrs):
        report = {**GOOD_REPORT, "metrics": {**GOOD_REPORT["metrics"], "best_val_loss": lr * 100}}
        _job(
            sweep,
            str(i),
            {".hydra/overrides.yaml": f"- optimizer.lr={lr}\n", "report.json": json.dumps(report)},
        )
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    os.utime(sweep / "multirun.yaml", (mtime, mtime))
    return sweep


def test_a_folder_of_two_sweeps_is_refused_naming_the_newest(tmp_path, capsys):
    parent = tmp_path / "multirun"
    _sweep(parent, "2026-12-01_10-00-00", [1e-3, 1e-2], mtime=1_000)
    newer = _sweep(parent, "2026-12-02_10-00-00", [3e-3], mtime=2_000)
    assert main(["sweep", str(parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(
        f"diag sweep: {parent} holds 2 sweeps (folders with Hydra's multirun.yaml)"
    )
    assert f"e.g. the newest, {newer} " in err
    assert not (parent / "sweep.md").exists()  # nothing written for the merge it used to make


def test_a_folder_of_one_sweep_reads_that_sweep_and_writes_into_it(tmp_path):
    parent = tmp_path / "multirun"
    sweep = _sweep(parent, "2026-12-01_10-00-00", [1e-3, 1e-2], mtime=1_000)
    summary = summarize(parent)
    assert summary["sweep_dir"] == str(sweep) and len(summary["runs"]) == 2
    assert (sweep / "sweep.md").is_file() and not (parent / "sweep.md").exists()


def test_a_folder_of_runs_without_multirun_yaml_is_still_one_sweep(tmp_path):
    folder = tmp_path / "runs"
    _job(folder, "0", {"report.json": json.dumps(GOOD_REPORT)})
    _job(folder, "1", {"report.json": json.dumps(GOOD_REPORT)})
    assert len(summarize(folder, write=False)["runs"]) == 2
