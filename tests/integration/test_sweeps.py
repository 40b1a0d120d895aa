"""LR sweeps for real: basic multirun, Optuna, the joblib launcher, hparams in each run, the sweep summary."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from helpers import event_file, run_cli
from tbparse import SummaryReader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1"
}  # tiny models: extra threads only contend on a shared 2-core box
TINY = ["trainer.max_epochs=1", "diag=off", "data.subset=256"]


def only_sweep_dir(tmp_path: Path) -> Path:
    dirs = list((tmp_path / "multirun").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def check_runs(sweep: Path, n: int, optimizer: str = "Adam") -> list[Path]:
    """Every job wrote its own complete run directory with hparams in its own event file."""
    runs = [sweep / str(i) for i in range(n)]
    for run in runs:
        assert (run / ".hydra" / "overrides.yaml").exists()
        report = json.loads((run / "report.json").read_text())
        assert report["metrics"]["epochs"] == 1
        event_files = list(run.rglob("events.out.tfevents.*"))
        # no stray sub-run: the run's event file in the run directory itself
        assert [f.parent for f in event_files] == [run]
        reader = SummaryReader(event_file(run))
        hp = dict(zip(reader.hparams["tag"], reader.hparams["value"]))
        lr = next(
            o.split("=", 1)[1]
            for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
            if o.startswith("optimizer.lr=")
        )
        assert float(hp["optimizer.lr"]) == pytest.approx(float(lr))
        assert hp["model"] == "MLP" and hp["optimizer"] == optimizer
        scalars = reader.scalars
        best = scalars[scalars.tag == "x_run/best_val_loss"]["value"]
        if report["metrics"]["best_val_loss"] is not None:
            assert float(best.iloc[0]) == pytest.approx(
                report["metrics"]["best_val_loss"], rel=1e-5
            )
    return runs


def check_summary(sweep: Path, runs: list[Path]) -> str:
    md = (sweep / "sweep.md").read_text()
    for run in runs:
        assert f"| {run.name} |" in md
    assert "best run:" in md
    image = matplotlib.image.imread(sweep / "sweep.png")
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05
    return md


@pytest.mark.slow
def test_basic_lr_sweep_runs_summarises_and_marks_divergence(tmp_path):
    proc = run_cli(
        # -m after an override, as people type it when they turn a run into a sweep
        ["optimizer.lr=1e-3,1e-1,1e3", "-m", "optimizer=sgd", *TINY],
        tmp_path,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    runs = check_runs(sweep, 3, optimizer="SGD")
    md = check_summary(sweep, runs)
    # the callback printed the table at the end of the multirun and named the best run
    assert "best run: 1 (optimizer.lr=0.1)" in proc.stdout
    assert "diverged: 2" in proc.stdout and "Diverged: 2" in md
    # the CLI reads the same directory back
    cli = run_cli(["sweep", str(sweep), "--json", "--no-write"], tmp_path, module="diag")
    assert cli.returncode == 0, cli.stderr
    summary = json.loads(cli.stdout)
    assert [r["name"] for r in summary["runs"]] == ["0", "1", "2"]
    assert [r["lr"] for r in summary["runs"]] == [1e-3, 1e-1, 1e3]
    assert summary["runs"][2]["diverged"] and not summary["runs"][1]["diverged"]
    assert summary["best"]["name"] == "1"
    assert summary["common_overrides"][:1] == ["optimizer=sgd"]


@pytest.mark.slow
def test_optuna_sweep_two_trials(tmp_path):
    # an optional plugin (the sweep extra)
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli(
        ["-m", "hparams_search=lr_optuna", "hydra.sweeper.n_trials=2", *TINY],
        tmp_path,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    runs = check_runs(sweep, 2)
    assert not (sweep / "2").exists()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_loss = min(
        json.loads((r / "report.json").read_text())["metrics"]["best_val_loss"] or 1e3 for r in runs
    )
    assert results["best_value"] == pytest.approx(best_loss, rel=1e-6)
    lrs = [
        float(yaml.safe_load((r / ".hydra" / "overrides.yaml").read_text())[0].split("=")[1])
        for r in runs
    ]
    assert all(1e-5 <= lr <= 1.0 for lr in lrs) and len(set(lrs)) == 2
    md = check_summary(sweep, runs)
    assert "Optuna: best params" in md


@pytest.mark.slow
def test_joblib_launcher_two_parallel_jobs(tmp_path):
    # an optional plugin (the sweep extra)
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_cli(
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-3,1e-2", *TINY],
        tmp_path,
        env=SINGLE_THREAD,
        # a new interpreter: loky shuts its workers down in an interpreter-exit hook, which a process
        # forked by multiprocessing never runs (it waits for them instead)
        fresh=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    sweep = only_sweep_dir(tmp_path)
    runs = check_runs(sweep, 2)
    check_summary(sweep, runs)
    losses = [json.loads((r / "report.json").read_text())["metrics"]["best_val_loss"] for r in runs]
    assert losses[0] != losses[1]


def test_diag_sweep_on_a_missing_directory_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(["sweep", str(tmp_path / "nope")], tmp_path, module="diag")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().startswith("diag sweep:") and len(proc.stderr.strip().splitlines()) == 1
    )
    (tmp_path / "empty").mkdir()
    proc = run_cli(["sweep", str(tmp_path / "empty")], tmp_path, module="diag")
    assert proc.returncode == 2 and "no run directories" in proc.stderr


def test_stop_on_ends_a_sick_trial_early_and_the_summary_says_what_it_saved(tmp_path):
    proc = run_cli(
        ["-m", "optimizer=sgd", "optimizer.lr=0.1,20", "stop_on=critical", "trainer.max_epochs=4"],
        tmp_path,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    healthy, sick = (json.loads((sweep / job / "report.json").read_text()) for job in ("0", "1"))
    assert not healthy["stopped"] and healthy["metrics"]["epochs"] == 4
    assert sick["stopped"] and sick["stop_reason"].startswith("stop_on=critical: ")
    assert sick["metrics"]["steps"] < healthy["metrics"]["steps"]
    report_md = (sweep / "1" / "report.md").read_text()
    assert f"**Stopped early:** {sick['stop_reason']}" in report_md
    (event,) = [
        e
        for e in map(json.loads, (sweep / "1" / "events.jsonl").read_text().splitlines())
        if e["kind"] == "stopped"
    ]
    assert event["saved_steps"] == event["max_steps"] - event["step"] > 0
    md = (sweep / "sweep.md").read_text()
    assert f"Stopped early by stop_on: 1 ({event['code']} at step {event['step']})" in md
    assert "best run: 0" in md
    # the end of a stopped trial: no test pass, no confusion matrix, no input grid, no summary.png
    assert sick["metrics"]["test_acc"] is None and sick["metrics"]["test_loss"] is None
    assert healthy["metrics"]["test_acc"] > 0.5
    assert "test accuracy n/a (stopped early: not tested)" in proc.stdout + proc.stderr
    assert not (sweep / "1" / "confusion_matrix.png").exists()
    assert not (sweep / "1" / "summary.png").exists()
    assert "no summary.png for the stopped trial" in sick["stop_reason"]
    assert (sweep / "0" / "confusion_matrix.png").is_file()
    images, scalars = {}, {}
    for job in ("0", "1"):
        events = EventAccumulator(str(sweep / job), size_guidance={"images": 0})
        events.Reload()
        images[job] = {t: events.Images(t)[-1] for t in events.Tags()["images"]}
        scalars[job] = set(events.Tags()["scalars"])
    assert images["1"] == {}
    # its curves are in TensorBoard all the same
    assert {"train/loss", "val/loss", "val/acc", "train/lr"} <= scalars["1"]
    assert {"x_run/summary", "x_run/confusion_matrix", "x_run/inputs"} <= set(images["0"])
    # the PNGs the trials wrote, byte for byte (not decoded and encoded again)
    for job, name in (("0", "summary"), ("0", "confusion_matrix")):
        png = (sweep / job / f"{name}.png").read_bytes()
        assert images[job][f"x_run/{name}"].encoded_image_string == png


@pytest.mark.slow
def test_a_trial_far_behind_the_sweeps_best_finished_trial_stops_and_the_best_does_not(tmp_path):
    # a grid listed LR-ascending runs middle-out with stop_on: 0.2 (job 1) first, then 0.0015 (job 0),
    # which learns (no per-trial rule stops it) but ends near 0.82 against 0.2's 0.99 when trained out
    proc = run_cli(
        ["-m", "model=mlp", "optimizer=sgd", "optimizer.lr=0.0015,0.2", "stop_on=critical"],
        tmp_path,
        env=SINGLE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    weak, best = (json.loads((sweep / job / "report.json").read_text()) for job in ("0", "1"))
    events = {
        job: [json.loads(line) for line in (sweep / job / "events.jsonl").read_text().splitlines()]
        for job in ("0", "1")
    }
    assert events["1"][0]["time"] < events["0"][0]["time"]  # the middle of the grid first
    assert (
        not best["stopped"]
        and best["metrics"]["epochs"] == 20
        and best["metrics"]["test_acc"] > 0.9
    )
    assert weak["stopped"] and "BEHIND_SWEEP" in weak["stop_reason"] and "#1" in weak["stop_reason"]
    (stopped,) = [e for e in events["0"] if e["kind"] == "stopped"]
    assert stopped["code"] == "BEHIND_SWEEP" and stopped["compared_with"]["trial"] == "1"
    assert stopped["step"] <= 100 and stopped["saved_steps"] == 400 - stopped["step"]
    assert stopped["compared_with"]["projected_val_acc"] < stopped["compared_with"]["bar"]
    assert weak["metrics"]["test_acc"] is None  # a stopped trial is not tested
    md = (sweep / "sweep.md").read_text()
    assert f"BEHIND_SWEEP at step {stopped['step']}, behind run 1" in md
    assert "best run: 1" in md
    # its logs read healthy up to the stop: the analyzer says it was stopped, not "keep going"
    analyzed = run_cli(["analyze", str(sweep / "0")], tmp_path, module="diag", extra=False)
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    assert "(stopped early: stop_on=critical: BEHIND_SWEEP" in analyzed.stdout
    assert "keep going" not in analyzed.stdout
