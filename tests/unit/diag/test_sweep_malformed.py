"""``diag sweep`` and the end-of-multirun summary read every job they can and skip malformed ones with a
count and a reason each; ``--json`` prints JSON on stdout even when the input cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag.__main__ import main
from diag.sweep import render_text, summarize

GOOD_REPORT = {
    "status": "healthy",
    "completed": True,
    "issues": [{"code": "LR_TOO_LOW", "severity": "warning"}],
    "metrics": {
        "best_val_loss": 0.5,
        "final_val_loss": 0.6,
        "final_val_acc": 0.8,
        "test_acc": 0.79,
        "final_train_loss": 0.4,
        "test_loss": 0.61,
        "epochs": 2,
    },
}

# job name -> (file, its text): each is malformed in one way the issue found
MALFORMED = {
    "report_a_list": ("report.json", "[1, 2, 3]"),
    "metrics_a_list": ("report.json", json.dumps({**GOOD_REPORT, "metrics": []})),
    "issues_numbers": ("report.json", json.dumps({**GOOD_REPORT, "issues": [1, 2]})),
    "corrupt_json": ("report.json", '{"status": "healthy", "metr'),
    "config_a_list": (".hydra/config.yaml", "- 1\n- 2\n"),
    "overrides_a_number": (".hydra/overrides.yaml", "5\n"),
    "overrides_bad_yaml": (".hydra/overrides.yaml", "[unclosed\n"),
}


def _job(sweep: Path, name: str, files: dict[str, str]) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    files = {".hydra/overrides.yaml": "- optimizer.lr=0.001\n", **files}
    for rel, text in files.items():
        (job / rel).write_text(text)


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    _job(sweep, "0", {"report.json": json.dumps(GOOD_REPORT)})
    for name, (rel, text) in MALFORMED.items():
        other = {} if rel == "report.json" else {"report.json": json.dumps(GOOD_REPORT)}
        if rel == ".hydra/config.yaml":  # read for the LR when the overrides do not give one
            other[".hydra/overrides.yaml"] = "- seed=1\n"
        _job(sweep, name, {**other, rel: text})
    return sweep


def test_malformed_jobs_are_skipped_with_a_count_and_a_reason(sweep):
    summary = summarize(sweep, write=True)
    assert [r["name"] for r in summary["runs"]] == ["0"]
    assert summary["best"]["name"] == "0"
    skipped = {s["name"]: s["why"] for s in summary["skipped"]}
    assert set(skipped) == set(MALFORMED)
    assert skipped["report_a_list"] == "report.json is list"
    assert skipped["metrics_a_list"] == "report.json metrics is list"
    assert skipped["issues_numbers"] == "a report.json issue is int"
    assert skipped["config_a_list"] == "config.yaml is list"
    assert skipped["overrides_a_number"] == "overrides.yaml is int"
    assert "not valid JSON" in skipped["corrupt_json"]
    text = render_text(summary)
    assert f"skipped {len(MALFORMED)} malformed job(s):" in text
    md = (sweep / "sweep.md").read_text()
    assert f"skipped {len(MALFORMED)} malformed job(s)" in md and "- report_a_list:" in md


def test_the_cli_summarises_the_readable_jobs_and_exits_0(sweep, capsys):
    assert main(["sweep", str(sweep), "--json", "--no-write"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["runs"]) == 1 and len(out["skipped"]) == len(MALFORMED)


@pytest.mark.parametrize("what", ["missing", "a file", "empty"])
def test_json_on_an_unreadable_input_is_still_json_on_stdout(tmp_path, capsys, what):
    target = tmp_path / "target"
    if what == "a file":
        target.write_text("not a sweep")
    elif what == "empty":
        target.mkdir()
    assert main(["sweep", str(target), "--json"]) == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["sweep_dir"] == str(target) and out["error"]
    assert captured.err.startswith("diag sweep: ") and len(captured.err.strip().splitlines()) == 1
