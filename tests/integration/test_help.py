"""``python -m runner --help`` is a page a person reads: what it is, the modes, examples, where to read more."""

from __future__ import annotations

from helpers import run_cli


def test_help_is_short_and_shows_modes_examples_and_where_to_read_more(tmp_path):
    proc = run_cli(["--help"], tmp_path, extra=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert 15 <= len(lines) <= 40, len(lines)
    examples = [line for line in lines if line.strip().startswith("python -m runner")]
    assert len(examples) == 10
    for mode in ("mode=lr_find", "-m ", "autotrainer=default", "train (default)"):
        assert mode in proc.stdout, mode
    assert "README.md" in proc.stdout and "docs/" in proc.stdout
    assert "--cfg job" in proc.stdout and "--info" in proc.stdout
    # Hydra's stock dump (every option of every group) is not what --help prints
    assert "== Configuration groups ==" not in proc.stdout


def test_hydras_full_config_stays_behind_cfg_job(tmp_path):
    proc = run_cli(["--cfg", "job"], tmp_path, extra=False)
    assert proc.returncode == 0, proc.stderr
    assert "optimizer:" in proc.stdout and "trainer:" in proc.stdout
