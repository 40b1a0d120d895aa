"""``python -m runner.check_data``: a folder holding a training run is refused with a fix that applies to a
data check (whatever the overrides, the run left byte for byte), and a check_data multirun has no
training-sweep summary calling its successful checks failed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short training run's folder."""
    tmp = tmp_path_factory.mktemp("trained")
    run = tmp / "run"
    proc = run_cli(["trainer.max_epochs=1", "data.subset=300", "diag=off"], tmp, run_dir=run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_check_data_into_a_training_run_is_refused_and_leaves_it_untouched(
    tmp_path: Path, trained: Path
):
    before = _files(trained)
    for extra in ([], ["+trainer.resume=auto"]):
        proc = run_cli(
            [f"hydra.run.dir={trained}", f"paths.log_dir={tmp_path}", *extra],
            tmp_path,
            module="runner.check_data",
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"error: hydra.run.dir={trained} holds a training run")
        assert "choose another hydra.run.dir" in lines[0]
        assert "trainer.resume" not in lines[0]  # no key of check_data's config
        assert _files(trained) == before

    # the fix it names works (whatever the refused command's overrides: the same fix)
    other = tmp_path / "check"
    fixed = run_cli(
        [f"hydra.run.dir={other}", f"paths.log_dir={tmp_path}"],
        tmp_path,
        module="runner.check_data",
    )
    assert fixed.returncode == 0, fixed.stderr
    assert (other / "data_report.json").is_file()


def test_check_data_into_a_training_sweep_is_refused(tmp_path: Path, trained: Path):
    sweep = tmp_path / "sw"
    shutil.copytree(trained, sweep / "0")  # a training sweep's job 0
    before = _files(sweep / "0")
    proc = run_cli(
        ["-m", "data=digits,synthetic", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}"],
        tmp_path,
        module="runner.check_data",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"error: hydra.sweep.dir={sweep}: job 0 holds a training run (checkpoints/last.pt, "
        "report.json, events.jsonl, .hydra/config.yaml of a training run), which check_data would "
        "overwrite: choose another hydra.sweep.dir (nothing was changed)"
    )
    assert _files(sweep / "0") == before
    assert sorted(p.name for p in sweep.iterdir()) == ["0"]


def test_a_check_data_multirun_has_no_training_sweep_summary(tmp_path: Path):
    sweep = tmp_path / "sw"
    proc = run_cli(
        ["-m", "data=digits,synthetic", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}"],
        tmp_path,
        module="runner.check_data",
    )
    assert proc.returncode == 0, proc.stderr
    assert "no job of the sweep succeeded" not in proc.stderr
    assert "failed" not in proc.stdout and "best run" not in proc.stdout
    assert not (sweep / "sweep.md").exists() and not (sweep / "sweep.png").exists()
    for job in ("0", "1"):
        report = json.loads((sweep / job / "data_report.json").read_text())
        assert report["sizes"]["train"] > 0
