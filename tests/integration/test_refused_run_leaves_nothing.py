"""A run refused before it trains leaves no folder behind, not even the empty ones made for it, and a
file where its log folder belongs is named."""

from __future__ import annotations

from helpers import run_cli


def _refused(tmp_path, *args: str) -> str:
    proc = run_cli([*args, "mode=check_data"], tmp_path, extra=False)
    assert proc.returncode == 2, proc.stderr
    return proc.stderr.strip()


def test_a_refused_first_run_leaves_no_empty_log_folders(tmp_path):
    logs = tmp_path / "logs"
    err = _refused(tmp_path, f"paths.log_dir={logs}")
    assert err.startswith("error: mode='check_data' is not valid")
    assert not logs.exists()  # logs/runs/ used to stay, empty


def test_a_refused_run_keeps_the_folders_other_runs_are_in(tmp_path):
    logs = tmp_path / "logs"
    other = logs / "runs" / "an-earlier-run"
    other.mkdir(parents=True)
    _refused(tmp_path, f"paths.log_dir={logs}")
    assert [p.name for p in (logs / "runs").iterdir()] == ["an-earlier-run"]


def test_a_file_where_the_log_folder_belongs_is_named(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    proc = run_cli([f"paths.log_dir={blocker}", "trainer.max_epochs=1"], tmp_path, extra=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.run.dir={blocker}/runs/")
    assert line.endswith(
        f": {blocker} is a file; choose another directory (or another paths.log_dir)"
    )
    assert blocker.read_text() == "mine"
