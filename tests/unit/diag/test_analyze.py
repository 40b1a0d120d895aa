"""``diag analyze``: run directories, per-epoch JSONL files, TensorBoard logs from the runner and from
Lightning-style writers, exit codes, and garbage input that must end in a report or a clean error."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.tensorboard import SummaryWriter

from diag import readers
from diag.analyze import main
from diag.readers import Thinned, read_path

REPORT_KEYS = {"status", "issues", "metrics", "autotrainer"}
ISSUE_KEYS = {"code", "severity", "first_step", "evidence", "recommendations"}


def write_jsonl(path: Path, records: list[dict], extra: list[bytes] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r).encode() for r in records] + list(extra)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def seed_records(n: int = 12, lr_drops: tuple[int, ...] = (4, 8), batches: int = 50) -> list[dict]:
    """The per-epoch JSONL schema without its optional ``step`` key: a steadily improving run whose LR drops 10x at the given epochs."""
    out, lr = [], 0.1
    for e in range(n):
        if e in lr_drops:
            lr /= 10
        out.append(
            {
                "epoch": e,
                "loss": 2.3 * math.exp(-0.25 * e) + 0.05,
                "accuracy": min(0.98, 0.2 + 0.07 * e),
                "learning_rate": lr,
                "mean_grad_norm": 1.0 - 0.03 * e,
                "min_grad_norm": 0.5,
                "max_grad_norm": 2.0,
                "weight_update_magnitude": 0.05 * 0.9**e,
                "num_batches": batches,
            }
        )
    return out


def analyze(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([*args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def analyze_json(capsys, *args: str) -> tuple[int, dict]:
    rc, out, _ = analyze(capsys, *args, "--json")
    return rc, json.loads(out)


def check_shape(report: dict) -> None:
    assert report.keys() >= REPORT_KEYS
    assert report["status"] in {"healthy", "warning", "critical"}
    assert report["autotrainer"] == {"actions": report["autotrainer"]["actions"]}
    for issue in report["issues"]:
        assert issue.keys() >= ISSUE_KEYS
        assert issue["recommendations"] and all(
            isinstance(r, str) for r in issue["recommendations"]
        )


# -- a real run directory ------------------------------------------------------
@pytest.mark.slow
def test_run_directory_of_a_real_run(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["trainer.max_epochs=2", "scheduler=none"], tmp_path, run_dir=run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (run / "train_diagnostics.jsonl").read_text().splitlines()]
    own = json.loads((run / "report.json").read_text())

    proc = run_cli(["analyze", str(run), "--json"], tmp_path, module="diag")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    check_shape(report)
    m = report["metrics"]
    assert m["final_train_loss"] == pytest.approx(lines[-1]["loss"])
    assert m["initial_lr"] == pytest.approx(lines[0]["learning_rate"])
    assert m["epochs"] == 2 and m["steps"] == lines[-1]["step"]
    assert m["test_acc"] == pytest.approx(
        own["metrics"]["test_acc"]
    )  # carried over from the run's report.json
    assert report["input"]["kind"] == "run_dir" and report["input"]["skipped"] == {}
    assert report["input"]["tags"]["loss"] == "train/loss"

    human = run_cli(["analyze", str(run)], tmp_path, module="diag")
    assert human.returncode == 0
    text = human.stdout
    order = [
        text.index(h)
        for h in (
            "LEARNING RATE",
            "LOSS",
            "ACCURACY",
            "GRADIENT NORMS",
            "WEIGHT UPDATES",
            "DIAGNOSIS",
            "RECOMMENDATIONS",
        )
    ]
    assert order == sorted(order)
    assert f"constant at {lines[0]['learning_rate']:.3g} over 2 epochs: never reduced" in text
    assert f"test : {own['metrics']['test_acc']:.4f}" in text
    assert "classes: 10" in text


@pytest.mark.slow
def test_analyzer_finds_what_the_live_diagnosis_found(tmp_path):
    """A learning rate far too high: the analyzer, reading only the files, reaches the live run's verdict."""
    run = tmp_path / "run"
    proc = run_cli(["trainer.max_epochs=6", "optimizer.lr=0.5"], tmp_path, run_dir=run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    own = json.loads((run / "report.json").read_text())
    assert own["status"] == "critical"  # the fault is real
    proc = run_cli(
        ["analyze", str(run), "--json", "--fail-on", "critical"], tmp_path, module="diag"
    )
    report = json.loads(proc.stdout)
    live_critical = {i["code"] for i in own["issues"] if i["severity"] == "critical"}
    assert live_critical <= {i["code"] for i in report["issues"]}
    assert report["status"] == "critical" and proc.returncode == 1


def test_run_directory_written_by_hand(tmp_path, capsys):
    """JSONL + runner-style TensorBoard tags + events.jsonl + config, with a corrupt event file beside them."""
    run = tmp_path / "run"
    write_jsonl(
        run / "train_diagnostics.jsonl",
        [{**r, "step": 50 * (r["epoch"] + 1)} for r in seed_records(6, lr_drops=())],
    )
    write_jsonl(
        run / "val_diagnostics.jsonl",
        [
            {"epoch": e, "step": 50 * (e + 1), "loss": 1.0 - 0.1 * e, "accuracy": 60 + 5 * e}
            for e in range(6)
        ],
    )
    write_jsonl(
        run / "events.jsonl",
        [
            *({"kind": "skipped_step", "step": s, "epoch": 0} for s in (7, 9, 12)),
            {
                "kind": "diagnosis",
                "step": 50,
                "issues": [{"code": "NONFINITE_GRADIENTS", "first_step": 7, "layer": "layers.0"}],
            },
        ],
    )
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "data:\n  num_classes: 7\ntrainer:\n  max_epochs: 12\n"
    )
    w = SummaryWriter(str(run / "tb"))
    for step in range(10, 301, 10):
        w.add_scalar("train/loss", 2.0 / step**0.5, step)
        w.add_scalar("train/grad_norm", 1.0, step)
        w.add_scalar("train/lr", 0.1, step)
        if step % 50 == 0:
            for name, v in (
                ("layers.10", 3.0),
                ("layers.2", 2.0),
                ("layers.0", 1.0),
            ):  # model order, not sorted
                w.add_scalar(f"grad_norm/{name}", v, step)
                w.add_scalar(f"dead_fraction/{name}", 0.1, step)
    w.close()
    (run / "tb" / "events.out.tfevents.2.corrupt").write_bytes(
        b"\x13\x00\x00\x00\x00\x00\x00\x00junkjunkjunk"
    )

    r = read_path(run)
    s = r.series
    assert s.num_classes == 7
    assert s.planned_steps == 12 * 50
    assert s.skipped_steps == [7, 9, 12]
    assert s.step == list(range(10, 301, 10)) and len(s.loss) == len(s.grad_norm) == len(s.lr) == 30
    assert list(s.layer_grad_norm) == ["layers.10", "layers.2", "layers.0"]
    assert s.layer_step == [50, 100, 150, 200, 250, 300] and s.layer_dead_fraction[
        "layers.0"
    ] == pytest.approx([0.1] * 6)
    assert s.epoch_step == [50, 100, 150, 200, 250, 300]
    assert s.epoch_val_acc == pytest.approx(
        [0.60, 0.65, 0.70, 0.75, 0.80, 0.85]
    )  # percent read as fraction
    assert any(
        "unreadable or truncated event files (events.out.tfevents.2.corrupt)" in n for n in r.notes
    )

    rc, out, err = analyze(capsys, str(run))
    assert rc == 0, err
    assert "skipped steps (non-finite gradients): 3, first at step 7" in out
    assert "first/last layer norm ratio: 3 (layers.10 vs layers.0)" in out
    assert "classes: 7" in out
    assert "first non-finite gradient in layer layers.0 at step 7" in out


# -- JSONL files ---------------------------------------------------------------
def test_jsonl_seed_schema_learning_rate_analysis(tmp_path, capsys):
    path = write_jsonl(tmp_path / "train_diagnostics.jsonl", seed_records())
    rc, out, err = analyze(capsys, str(path), "--num-classes", "10")
    assert rc == 0, err
    assert "reduced at epoch 5 (step 250): 0.1 -> 0.01 (x0.1)" in out
    assert "reduced at epoch 9 (step 450): 0.01 -> 0.001 (x0.1)" in out
    assert "first reduced at epoch 5 (step 250) (42% of the run)" in out
    assert "train: initial 2.35, final 0.197, best 0.197 at epoch 12 (step 600)" in out
    assert "DIAGNOSIS: HEALTHY" in out

    rc, report = analyze_json(capsys, str(path))
    check_shape(report)
    m = report["metrics"]
    assert (m["lr_reductions"], m["initial_lr"], m["final_lr"]) == (2, 0.1, pytest.approx(0.001))
    assert m["epochs"] == 12 and m["steps"] == 600  # steps from cumulative num_batches
    assert m["final_train_acc"] == pytest.approx(0.97)


def test_nonfinite_literals_are_evidence_of_explosion(tmp_path, capsys):
    recs = seed_records(10, lr_drops=())
    path = write_jsonl(
        tmp_path / "train.jsonl",
        recs[:6],
        extra=[
            b'{"epoch": 6, "loss": Infinity, "learning_rate": 0.1, "num_batches": 50}',
            b'{"epoch": 7, "loss": NaN, "learning_rate": 0.1, "num_batches": 50}',
            b'{"epoch": 8, "loss": null, "learning_rate": 0.1, "num_batches": 50}',
        ],
    )
    rc, report = analyze_json(capsys, str(path))
    assert rc == 0
    check_shape(report)
    explosion = [i for i in report["issues"] if i["code"] == "LOSS_EXPLOSION"]
    assert (
        explosion and explosion[0]["severity"] == "critical" and explosion[0]["first_step"] == 350
    )
    assert report["status"] == "critical"
    assert report["metrics"]["nonfinite_loss_values"] == 3
    assert report["metrics"]["final_train_loss"] is None  # NaN is not valid JSON: written as null

    rc, out, _ = analyze(capsys, str(path))
    assert "train: 3 non-finite value(s), first inf at epoch 7 (step 350)" in out
    assert "CRITICAL LOSS_EXPLOSION (first seen at step 350)" in out
    assert "  - Reduce the learning rate by 10-100x (optimizer.lr)" in out


@pytest.mark.parametrize(
    ("fail_on", "sick_rc", "healthy_rc"), [(None, 0, 0), ("critical", 1, 0), ("warning", 1, 0)]
)
def test_fail_on_sets_the_exit_code(tmp_path, capsys, fail_on, sick_rc, healthy_rc):
    healthy = write_jsonl(tmp_path / "healthy.jsonl", seed_records())
    sick = write_jsonl(
        tmp_path / "sick.jsonl",
        seed_records(8, lr_drops=()),
        extra=[b'{"epoch": 8, "loss": NaN, "num_batches": 50}'],
    )
    extra = ["--fail-on", fail_on] if fail_on else []
    assert analyze(capsys, str(sick), *extra)[0] == sick_rc
    assert analyze(capsys, str(healthy), *extra)[0] == healthy_rc


def test_fail_on_warning_but_not_critical_for_a_warning(tmp_path, capsys):
    """A warning-level finding (overfitting) fails --fail-on warning and passes --fail-on critical."""
    path = tmp_path / "run"
    write_jsonl(
        path / "train_diagnostics.jsonl",
        [
            {
                "epoch": e,
                "step": 20 * (e + 1),
                "loss": 1.0 * 0.7**e,
                "accuracy": 0.5 + 0.05 * e,
                "learning_rate": 1e-3,
            }
            for e in range(10)
        ],
    )
    write_jsonl(
        path / "val_diagnostics.jsonl",
        [
            {"epoch": e, "step": 20 * (e + 1), "loss": v, "accuracy": a}
            for e, (v, a) in enumerate(
                zip(
                    [1.0, 0.8, 0.6, 0.5, 0.55, 0.65, 0.75, 0.85, 0.95, 1.05],
                    # the rising loss costs validation accuracy (what makes overfitting a warning)
                    [0.7, 0.75, 0.8, 0.82, 0.81, 0.79, 0.77, 0.75, 0.73, 0.71],
                )
            )
        ],
    )
    rc, report = analyze_json(capsys, str(path), "--fail-on", "warning")
    assert [i["code"] for i in report["issues"]] == ["OVERFITTING"] and report[
        "status"
    ] == "warning"
    assert rc == 1
    assert analyze(capsys, str(path), "--fail-on", "critical")[0] == 0


def test_malformed_lines_are_skipped_and_counted(tmp_path, capsys):
    good = seed_records(6, lr_drops=())
    junk = [
        b'{"epoch": 9, "loss": 0.',
        b"\x00\xff\xfe binary \x89PNG",
        b"[1, 2, 3]",
        b"",
        b'{"no_known_field": 1}',
        b"x" * (readers.MAX_LINE_BYTES + 10),
    ]
    path = write_jsonl(tmp_path / "run" / "train_diagnostics.jsonl", good[:3], extra=junk)
    with path.open("ab") as fh:
        fh.write(b"\n".join(json.dumps(r).encode() for r in good[3:]) + b"\n")
    rc, out, err = analyze(capsys, str(path.parent))
    assert rc == 0, err
    assert (
        "skipped 4 malformed lines in train_diagnostics.jsonl" in out
    )  # truncated, binary, list, over-long
    assert "skipped 1 records without any known field in train_diagnostics.jsonl" in out
    rc, report = analyze_json(capsys, str(path.parent))
    assert report["metrics"]["epochs"] == 6
    assert report["input"]["skipped"] == {"train_diagnostics.jsonl": 5}
    assert report["metrics"]["final_train_loss"] == pytest.approx(good[-1]["loss"])


def test_missing_or_non_numeric_values_are_not_explosions(tmp_path, capsys):
    recs = seed_records(12, lr_drops=())
    del recs[5]["loss"]
    recs[7]["loss"] = "n/a"
    path = write_jsonl(tmp_path / "train_diagnostics.jsonl", recs)
    rc, out, err = analyze(capsys, str(path))
    assert rc == 0, err
    assert (
        "2 records in train_diagnostics.jsonl lack loss: filled from the neighbouring record" in out
    )
    assert "skipped 1 non-numeric values in train_diagnostics.jsonl" in out
    assert "LOSS_EXPLOSION" not in out and "non-finite" not in out
    r = read_path(path)
    assert (
        r.series.epoch_train_loss[5]
        == r.series.epoch_train_loss[4]
        == pytest.approx(recs[4]["loss"])
    )


def test_absurd_skipped_step_counts_stay_bounded(tmp_path):
    recs = [
        {**r, "step": 50 * (r["epoch"] + 1), "skipped_steps": 10**12 * (r["epoch"] + 1)}
        for r in seed_records(50)
    ]
    r = read_path(write_jsonl(tmp_path / "train.jsonl", recs))
    assert len(r.series.skipped_steps) == readers.MAX_KEPT and r.series.skipped_steps[0] == 50


def test_huge_file_is_streamed_and_thinned(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(readers, "MAX_KEPT", 200)
    n = 5000
    recs = [
        {
            "epoch": e,
            "step": e + 1,
            "loss": 3.0 / (1 + e) if e != 1234 else None,
            "learning_rate": 0.01,
        }
        for e in range(n)
    ]
    path = write_jsonl(tmp_path / "train.jsonl", recs)
    r = read_path(path)
    s = r.series
    assert len(s.epoch_step) <= 200 + 20 + 2
    assert s.epoch_step[:20] == list(range(1, 21))
    assert s.epoch_step[0] == 1 and s.epoch_step[-1] == n  # first and last kept
    assert 1235 in s.epoch_step and math.isnan(
        s.epoch_train_loss[s.epoch_step.index(1235)]
    )  # first NaN kept
    assert f"train.jsonl: kept {len(s.epoch_step)} of 5,000 records (evenly spaced)" in r.notes


def test_thinned_keeps_a_bounded_even_sample():
    t = Thinned(cap=100)
    for i in range(10_000):
        t.add(i, pin=(i == 4321))
    kept = t.items()
    assert len(kept) <= 100 + 10 + 2 and kept[-1] == 9999 and 4321 in kept
    assert kept[:10] == list(range(10))  # the start is kept verbatim
    rest = [k for k in kept[10:-1] if k != 4321]
    assert {b - a for a, b in zip(rest, rest[1:])} == {t.stride} and t.stride > 1


# -- TensorBoard ---------------------------------------------------------------
def write_lightning_logs(
    logdir: Path, val_losses: list[float], train_tag: str = "train_loss"
) -> None:
    """What a LightningModule with self.log(..., on_step=True, on_epoch=True) and LearningRateMonitor writes."""
    w = SummaryWriter(str(logdir))
    steps_per_epoch, step = 20, 0
    for epoch, vloss in enumerate(val_losses):
        lr = 1e-3 if epoch < 6 else 1e-4
        w.add_scalar("lr-Adam", lr, step)
        w.add_scalar("lr-Adam-momentum", 0.9, step)
        epoch_losses = []
        for _ in range(steps_per_epoch):
            loss = 1.0 * 0.75 ** (step / steps_per_epoch)
            epoch_losses.append(loss)
            if step % 5 == 4:
                w.add_scalar(f"{train_tag}_step", loss, step)
                w.add_scalar("epoch", epoch, step)
            step += 1
        w.add_scalar("val_loss", vloss, step - 1)
        # validation accuracy pays for a validation loss above its best (what makes overfitting a warning)
        w.add_scalar("val_acc", 0.8 - 0.1 * max(0.0, vloss - min(val_losses)), step - 1)
        w.add_scalar(f"{train_tag}_epoch", sum(epoch_losses) / len(epoch_losses), step - 1)
        w.add_scalar("train_acc_epoch", 0.5 + 0.04 * epoch, step - 1)
        w.add_scalar("epoch", epoch, step - 1)
    w.close()


OVERFIT_VAL = [1.0, 0.8, 0.6, 0.5, 0.55, 0.65, 0.75, 0.85, 0.95, 1.05]


def test_lightning_style_tensorboard_logs(tmp_path, capsys):
    logs = tmp_path / "lightning_logs" / "version_0"
    write_lightning_logs(logs, OVERFIT_VAL)
    rc, report = analyze_json(capsys, str(tmp_path / "lightning_logs"))
    assert rc == 0
    check_shape(report)
    assert report["input"]["tags"] == {
        "loss": "train_loss_step",
        "lr": "lr-Adam",
        "train_loss_epoch": "train_loss_epoch",
        "train_acc": "train_acc_epoch",
        "val_loss": "val_loss",
        "val_acc": "val_acc",
        "epoch": "epoch",
    }
    codes = [i["code"] for i in report["issues"]]
    assert codes == ["OVERFITTING"], report["issues"]
    m = report["metrics"]
    assert m["best_val_loss"] == pytest.approx(0.5) and m["final_val_loss"] == pytest.approx(1.05)
    assert m["epochs"] == 10 and m["lr_reductions"] == 1 and m["final_lr"] == pytest.approx(1e-4)

    rc, out, _ = analyze(capsys, str(logs))
    assert "reduced at epoch 7 (step 139): 0.001 -> 0.0001 (x0.1)" in out
    assert "val  : initial 1, final 1.05, best 0.5 at epoch 4 (step 79)" in out
    assert "WARNING  OVERFITTING" in out


def test_keras_style_train_and_validation_folders(tmp_path, capsys):
    """TF2/Keras writes tensor-based scalars into logs/train and logs/validation: one run, two folders."""
    for split, losses in (
        ("train", [2.0, 1.5, 1.0, 0.7, 0.5, 0.4]),
        ("validation", [2.1, 1.6, 1.2, 1.0, 0.9, 0.85]),
    ):
        w = SummaryWriter(str(tmp_path / "logs" / split))
        for e, loss in enumerate(losses):
            w.add_scalar("epoch_loss", loss, e, new_style=True)
            w.add_scalar("epoch_accuracy", 0.5 + 0.05 * e, e, new_style=True)
            if split == "train":
                w.add_scalar("epoch_learning_rate", 0.01 if e < 3 else 0.001, e, new_style=True)
        w.close()
    rc, report = analyze_json(capsys, str(tmp_path / "logs"))
    assert rc == 0
    assert report["input"]["tags"]["val_loss"] == "validation/epoch_loss"
    m = report["metrics"]
    assert (m["initial_train_loss"], m["best_val_loss"], m["lr_reductions"]) == (
        2.0,
        pytest.approx(0.85),
        1,
    )
    assert m["final_val_acc"] == pytest.approx(0.75)


def test_a_single_event_file(tmp_path, capsys):
    write_lightning_logs(tmp_path / "v0", OVERFIT_VAL)
    event_file = next((tmp_path / "v0").glob("events.out.tfevents.*"))
    rc, report = analyze_json(capsys, str(event_file))
    assert rc == 0 and report["input"]["read"] == [f"{event_file.name}: 8 scalar tags"]
    assert report["metrics"]["best_val_loss"] == pytest.approx(0.5)


def test_newest_of_several_runs_is_analyzed(tmp_path, capsys):
    write_lightning_logs(tmp_path / "logs" / "version_0", [1.0] * 5)
    write_lightning_logs(tmp_path / "logs" / "version_1", OVERFIT_VAL)
    r = read_path(tmp_path / "logs")
    assert len(r.series.epoch_step) == 10
    assert any(
        "2 runs of event files under logs; analyzed the newest, version_1" in n for n in r.notes
    )


def test_tag_map_for_other_names(tmp_path, capsys):
    w = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 41):
        w.add_scalar("metrics/objective", 5.0 / step, step)
        w.add_scalar("opt/step_size", 0.5 if step < 30 else 0.05, step)
        w.add_scalar("health/g/conv1", 1e-9, step)
        w.add_scalar("health/g/fc", 1.0, step)
    w.close()
    rc, out, err = analyze(capsys, str(tmp_path / "tb"))
    assert (
        rc == 2 and err.strip() == f"diag analyze: no training records found in {tmp_path / 'tb'}"
    )

    tags = "loss=metrics/objective,lr=opt/step_size,layer_grad_norm=health/g/"
    rc, report = analyze_json(capsys, str(tmp_path / "tb"), "--tags", tags)
    assert rc == 0
    assert report["metrics"]["initial_train_loss"] == pytest.approx(5.0)
    assert report["metrics"]["lr_reductions"] == 1
    vanishing = [i for i in report["issues"] if i["code"] == "VANISHING_GRADIENTS"]
    assert vanishing and vanishing[0]["layer"] == "conv1"

    rc, out, err = analyze(
        capsys, str(tmp_path / "tb"), "--tags", "loss=nope/missing,lr=opt/step_size"
    )
    # a tag asked for by name and missing: one line naming it, not a diagnosis without the loss
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--tags loss=nope/missing: no tag matches it in " in err and "metrics/objective" in err

    rc, _, err = analyze(capsys, str(tmp_path / "tb"), "--tags", "los=metrics/objective")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--tags key 'los' is unknown" in err


# -- errors and garbage --------------------------------------------------------
def test_missing_path_exits_2_with_one_line(tmp_path):
    # a new interpreter (~0.3 s: no torch to import for this answer), not the forked runs' server, whose
    # start-up (~5 s of imports) this fast-tier test would otherwise pay alone in its worker
    proc = run_cli(["analyze", str(tmp_path / "nope")], tmp_path, module="diag", fresh=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"diag analyze: no such file or directory: {tmp_path / 'nope'}"
    ]
    assert proc.stdout == ""


def test_analyzing_a_jsonl_log_does_not_import_torch(tmp_path):
    """Only a Lightning checkpoint's optimizer state needs torch to read; logs alone answer without its
    seconds-long import (the analyzer is what a user runs right after a run)."""
    path = write_jsonl(tmp_path / "train_diagnostics.jsonl", seed_records())
    code = (
        "import sys; from diag.__main__ import main; rc = main(['analyze', sys.argv[1]]); "
        "print('TORCH', 'torch' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "LEARNING RATE" in proc.stdout and proc.stdout.splitlines()[-1] == "TORCH False"


@pytest.mark.parametrize(
    "content", [b"", b"\n\n\n", b"\x00" * 4096, b'{"epoch": 0, "loss": 1.', b"null\n[]\n42\n"]
)
def test_nothing_usable_is_a_clean_error(tmp_path, capsys, content):
    path = tmp_path / "train_diagnostics.jsonl"
    path.write_bytes(content)
    rc, out, err = analyze(capsys, str(path))
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(
        f"diag analyze: no training records found in {path}"
    )


def test_a_folder_of_runs_asks_for_one(tmp_path, capsys):
    for name in ("0", "1"):
        write_jsonl(tmp_path / "sweep" / name / "train_diagnostics.jsonl", seed_records(3))
    rc, out, err = analyze(capsys, str(tmp_path / "sweep"))
    assert rc == 2 and out == ""
    assert err.strip() == (
        f"diag analyze: {tmp_path / 'sweep'} holds 2 run directories (0, 1): analyze one of "
        f"them, e.g. diag analyze {tmp_path / 'sweep' / '0'}"
    )


def test_corrupt_event_files_only(tmp_path, capsys):
    tb = tmp_path / "tb"
    tb.mkdir()
    (tb / "events.out.tfevents.1.host").write_bytes(bytes(range(256)) * 20)
    (tb / "events.out.tfevents.2.host").write_bytes(b"")
    rc, out, err = analyze(capsys, str(tb))
    assert (
        rc == 2 and "no training records found" in err and "skipped 1 unreadable lines/files" in err
    )


def _event_file_bytes(directory: Path) -> bytes:
    w = SummaryWriter(str(directory))
    for step in range(30):
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_scalar("val/loss", 1.0 / (step + 1), step)
    w.close()
    return next(directory.glob("events.out.tfevents.*")).read_bytes()


SCHEMA_KEYS = [
    "epoch",
    "step",
    "loss",
    "accuracy",
    "learning_rate",
    "mean_grad_norm",
    "min_grad_norm",
    "max_grad_norm",
    "weight_update_magnitude",
    "num_batches",
    "skipped_steps",
    "val_loss",
]
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
RECORD = st.dictionaries(st.sampled_from(SCHEMA_KEYS), JSONISH | st.floats(), max_size=8)
DEEP = b"[" * 5000  # nesting deep enough to trip the JSON parser's recursion limit (and PyYAML's)
SHALLOW_LINE = st.one_of(
    RECORD.map(lambda r: json.dumps(r).encode()),
    RECORD.map(lambda r: json.dumps(r).encode()).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda k: b[:k])
    ),
    JSONISH.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
LINE = SHALLOW_LINE | st.just(DEEP)


@pytest.mark.slow
def test_generated_garbage_gives_a_report_or_a_clean_error(tmp_path, capsys):
    good_events = _event_file_bytes(tmp_path / "seed_tb")

    @settings(
        max_examples=60,
        deadline=timedelta(seconds=20),
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(
        train=st.lists(LINE, max_size=30),
        val=st.lists(LINE, max_size=10),
        events=st.one_of(
            st.binary(max_size=600),
            st.integers(0, len(good_events)).map(lambda k: good_events[:k]),
            st.tuples(st.integers(0, len(good_events) - 1), st.binary(min_size=1, max_size=8)).map(
                lambda t: good_events[: t[0]] + t[1] + good_events[t[0] + len(t[1]) :]
            ),
        ),
        # events.jsonl, report.json, .hydra/config.yaml; DEEP in the config is
        # test_a_config_nested_too_deep_is_skipped_and_the_run_still_analyzed's, below: PyYAML (pure
        # Python) scans it for ~1 s, and hypothesis drew it for a third of the examples (18 s of 19)
        side=st.tuples(
            LINE | st.binary(max_size=40),
            LINE | st.binary(max_size=40),
            SHALLOW_LINE | st.binary(max_size=40),
        ),
        as_file=st.booleans(),
    )
    def check(
        train: list[bytes], val: list[bytes], events: bytes, side: list[bytes], as_file: bool
    ) -> None:
        run = Path(tempfile.mkdtemp(dir=tmp_path))
        (run / "train_diagnostics.jsonl").write_bytes(b"\n".join(train))
        (run / "val_diagnostics.jsonl").write_bytes(b"\n".join(val))
        (run / ".hydra").mkdir()
        for name, content in zip(("events.jsonl", "report.json", ".hydra/config.yaml"), side):
            (run / name).write_bytes(content)
        (run / "tb").mkdir()
        (run / "tb" / "events.out.tfevents.1.junk").write_bytes(events)
        target = run / "train_diagnostics.jsonl" if as_file else run
        rc = main([str(target), "--json", "--num-classes", "10"])
        out = capsys.readouterr()
        assert rc in (0, 2)
        if rc == 0:
            report = json.loads(out.out)
            check_shape(report)
        else:  # --json: stdout is still one JSON document, the error in it and on stderr
            assert json.loads(out.out)["status"] == "error"
            assert len(out.err.strip().splitlines()) == 1

    check()


def test_a_config_nested_too_deep_is_skipped_and_the_run_still_analyzed(tmp_path, capsys):
    """The deep-nesting case of the generated garbage in the one file read as YAML, every time (a run
    directory's: a JSONL file given alone reads no config)."""
    run = tmp_path / "run"
    write_jsonl(run / "train_diagnostics.jsonl", seed_records(6))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_bytes(DEEP)
    rc, report = analyze_json(capsys, str(run), "--num-classes", "10")
    assert rc == 0, report
    check_shape(report)
    assert report["input"]["skipped"] == {".hydra/config.yaml": 1}


@pytest.mark.slow
def test_a_batch_of_the_whole_split_is_named_live_and_by_the_analyzer(tmp_path):
    """digits' training split (1294 examples) in one batch for 6 epochs: 6 optimizer steps. The live report and the
    analyzer (which reads the batch size from the run's config and the steps per epoch from its JSONL)
    both name the batch as the cause."""
    run = tmp_path / "run"
    proc = run_cli(
        ["data.batch_size=1294", "trainer.max_epochs=6", "scheduler=none", "optimizer.lr=1e-3"],
        tmp_path,
        run_dir=run,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    own = json.loads((run / "report.json").read_text())
    (live,) = [i for i in own["issues"] if i["code"] == "UNDERFITTING"]
    assert (
        "holds the whole training split: one optimizer step an epoch, 6 steps" in live["evidence"]
    )
    assert live["recommendations"][0].startswith("Use a batch size that gives many steps")
    proc = run_cli(["analyze", str(run), "--json"], tmp_path, module="diag")
    assert proc.returncode == 0, proc.stderr
    (found,) = [i for i in json.loads(proc.stdout)["issues"] if i["code"] == "UNDERFITTING"]
    assert "holds the whole training split" in found["evidence"]


def test_analyzing_from_inside_the_run_names_its_folder(tmp_path, capsys, monkeypatch):
    """``python -m diag analyze .`` from inside a run: the folder read is named, not an empty name."""
    logs = tmp_path / "lightning_logs" / "version_0"
    write_lightning_logs(logs, OVERFIT_VAL)
    monkeypatch.chdir(logs)
    rc, out, _ = analyze(capsys, ".")
    assert rc == 0
    assert "read version_0: 1 event file(s)" in out and "read : " not in out


def test_a_log_without_loss_or_accuracy_is_refused_not_called_healthy(capsys, tmp_path):
    log = tmp_path / "lronly.jsonl"
    log.write_text('{"epoch": 0, "learning_rate": 0.001}\n{"epoch": 1, "learning_rate": 0.001}\n')
    rc, out, err = analyze(capsys, str(log), "--fail-on", "warning")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"no loss or accuracy values in {log}: the diagnosis reads how the loss moves" in err
    rc, report = analyze_json(capsys, str(log))
    assert (
        rc == 2 and report["status"] == "error" and "no loss or accuracy values" in report["error"]
    )


def test_an_empty_path_is_refused_not_read_as_the_current_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "train_diagnostics.jsonl", seed_records())  # what "." would have found
    rc, out, err = analyze(capsys, "")
    assert (
        rc == 2
        and out == ""
        and err.strip()
        == ("diag analyze: PATH is empty: give a run directory, a JSONL file or a log folder")
    )
