"""End-to-end runs of the real CLI: the run-directory contract, TensorBoard, JSONL, resume, sweeps, bad input."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from helpers import cli_fork, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CONTRACT = [
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    "train_diagnostics.jsonl",
    "val_diagnostics.jsonl",
    "events.jsonl",
    "report.json",
    "report.md",
    "summary.png",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
]


def scalars(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_run_leaves_the_contract(tmp_path):
    run = tmp_path / "run"
    res = run_cli(["trainer.max_epochs=2", "diag=full"], tmp_path, run_dir=run)
    assert res.returncode == 0, res.stderr
    for rel in CONTRACT:
        assert (run / rel).exists(), rel
    assert (
        "test accuracy" in res.stdout
        and str(run) in res.stdout
        # the run under its own name: its parent as the logdir, the Time Series page filtered to it
        and f"tensorboard --logdir {tmp_path}   # this run: "
        f"http://localhost:6006/?runFilter=^{run.name}($|/)\n"
        in res.stdout
    )
    epochs = re.findall(r"epoch +(\d)/2 .* val_acc [01]\.\d{3} .* (\d+ms|\d+\.\ds)\n", res.stdout)
    assert [e[0] for e in epochs] == ["1", "2"] and "0.0s" not in res.stdout, res.stdout
    tags = scalars(run)
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "val/loss",
        "val/acc",
        "train/samples_per_sec",
        "train/skipped_steps",
        "x_run/test_acc",
    ):
        assert tag in tags and all(map(lambda v: v == v and abs(v) < float("inf"), tags[tag])), tag
    assert any(t.startswith("x_layers/grad_norm/") for t in tags) and any(
        t.startswith("x_layers/update_ratio/") for t in tags
    )
    lines = [json.loads(x) for x in (run / "train_diagnostics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    for key in (
        "loss",
        "accuracy",
        "learning_rate",
        "mean_grad_norm",
        "min_grad_norm",
        "max_grad_norm",
        "weight_update_magnitude",
        "num_batches",
    ):
        assert key in lines[0]
    assert lines[0]["min_grad_norm"] <= lines[0]["mean_grad_norm"] <= lines[0]["max_grad_norm"]
    val = [json.loads(x) for x in (run / "val_diagnostics.jsonl").read_text().splitlines()]
    assert len(val) == 2 and 0 <= val[-1]["accuracy"] <= 1
    report = json.loads((run / "report.json").read_text())
    assert report["status"] in ("healthy", "warning", "critical")
    assert set(report) >= {"status", "issues", "metrics", "autotrainer"}
    assert 0 < report["metrics"]["test_acc"] <= 1
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and "model" in ckpt and "optimizer" in ckpt


@pytest.mark.slow
def test_default_run_reaches_095(tmp_path):
    res = run_cli([], tmp_path, run_dir=tmp_path / "run")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["metrics"]["test_acc"] >= 0.95
    assert report["status"] == "healthy"


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "model=mlp",
            "optimizer=adam",
            "scheduler=cosine",
            "trainer.precision=bf16",
            "trainer.clip.max_norm=1.0",
        ],
        ["trainer.precision=fp16"],
        ["model=cnn", "scheduler=onecycle", "optimizer=sgd"],
    ],
)
def test_precision_and_schedule_overrides_run(tmp_path, overrides):
    res = run_cli([*overrides, "trainer.max_epochs=2"], tmp_path, run_dir=tmp_path / "run")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["metrics"]["test_acc"] > 0.5


def test_an_epoch_schedulers_lr_is_the_one_each_epoch_trained_at_everywhere(tmp_path):
    """A StepLR cutting after every epoch: the epoch line, the JSONL, the history and the analyzer name
    each epoch's own LR (they named the next epoch's, which the scheduler sets before the epoch's end)."""
    run = tmp_path / "run"
    res = run_cli(
        [
            "debug=fast",
            "trainer.max_epochs=3",
            "scheduler=step",
            "scheduler.lr_scheduler.step_size=1",
        ],
        tmp_path,
        run_dir=run,
    )
    assert res.returncode == 0, res.stderr
    trained = [1e-3, 1e-4, 1e-5]  # optimizer.lr, then x0.1 after each epoch
    shown = [float(m) for m in re.findall(r"^epoch +\d+/3 .* lr (\S+) ", res.stdout, re.M)]
    assert shown == pytest.approx(trained)
    lines = (run / "train_diagnostics.jsonl").read_text().splitlines()
    assert [json.loads(line)["learning_rate"] for line in lines] == pytest.approx(trained)
    analyzed = run_cli(["analyze", str(run), "--json"], tmp_path, module="diag")
    metrics = json.loads(analyzed.stdout)["metrics"]
    assert (metrics["initial_lr"], metrics["final_lr"]) == pytest.approx((1e-3, 1e-5))


def test_best_pt_by_accuracy_keeps_the_highest_accuracy_epoch(tmp_path):
    run = tmp_path / "run"
    res = run_cli(
        ["debug=fast", "trainer.max_epochs=4", "callbacks.checkpoint.monitor=val/acc"],
        tmp_path,
        run_dir=run,
    )
    assert res.returncode == 0, res.stderr
    accs = [
        json.loads(x)["accuracy"] for x in (run / "val_diagnostics.jsonl").read_text().splitlines()
    ]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["monitor"] == "val/acc" and best["value"] == pytest.approx(max(accs))
    assert best["epoch"] == accs.index(max(accs))  # the first epoch that reached it
    assert len(set(accs)) > 1  # the epochs differ: a lowest-is-best pick would have chosen another


def test_resume_matches_an_uninterrupted_run(tmp_path):
    common = ["trainer.deterministic=true", "scheduler=cosine", "model.dropout=0.1"]
    straight = run_cli([*common, "trainer.max_epochs=2"], tmp_path, run_dir=tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    first = run_cli(
        [*common, "trainer.max_epochs=1", "scheduler.lr_scheduler.T_max=2"],
        tmp_path,
        run_dir=tmp_path / "b",
    )
    assert first.returncode == 0, first.stderr
    second = run_cli(
        [*common, "trainer.max_epochs=2", "trainer.resume=auto"], tmp_path, run_dir=tmp_path / "b"
    )
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    epochs = [
        json.loads(x)["epoch"]
        for x in (tmp_path / "b/train_diagnostics.jsonl").read_text().splitlines()
    ]
    assert epochs == [0, 1]  # the resumed log continues without duplicates


def test_a_resumed_run_announces_only_new_findings(tmp_path):
    """The live diagnosis is saved with its findings: after a resume, no second console line or event for them."""
    sick, run = ["optimizer=sgd", "optimizer.lr=5", "trainer.max_epochs=4"], tmp_path / "run"
    first = run_cli([*sick, "trainer.max_steps=40"], tmp_path, run_dir=run)
    assert first.returncode == 0 and "diag: LOSS_EXPLOSION" in first.stdout + first.stderr
    second = run_cli([*sick, "trainer.resume=auto"], tmp_path, run_dir=run)
    assert second.returncode == 0 and "resumed from" in second.stdout, second.stderr
    assert "diag: LOSS_EXPLOSION" not in second.stdout + second.stderr
    added = [
        c
        for line in (run / "events.jsonl").read_text().splitlines()
        if (e := json.loads(line))["kind"] == "diagnosis"
        for c in e["added"]
    ]
    assert added.count("LOSS_EXPLOSION") == 1
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["steps"] == 80 and "LOSS_EXPLOSION" in [
        i["code"] for i in report["issues"]
    ]


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optimizer.lr=-1", "optimizer.lr=-1"),
        ("optimizer.lr=abc", "optimizer.lr='abc'"),
        ("trainer.max_epochs=-3", "trainer.max_epochs=-3"),
        ("trainer.max_epochs=two", "trainer.max_epochs='two'"),
        ("trainer.precision=fp8", "trainer.precision='fp8'"),
        ("trainer.clip.max_norm=0", "trainer.clip.max_norm=0"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5"),
        ("data.batch_size=100000", "data.batch_size=100000"),
        ("trainer.resume=/nonexistent/ckpt.pt", "trainer.resume=/nonexistent/ckpt.pt"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, override, needle):
    res = run_cli(
        [override, "trainer.max_epochs=1"] if "max_epochs" not in override else [override], tmp_path
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not list((tmp_path / "runs").glob("*")), "a refused start leaves no run directory behind"


def test_unknown_group_option_lists_choices(tmp_path):
    res = run_cli(["model=transformer"], tmp_path)
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "error: model=transformer is not an option of model: choose one of cnn, mlp, resnet18"
    )


def test_multirun_makes_one_directory_per_run(tmp_path):
    res = run_cli(["-m", "optimizer.lr=0.01,0.1", "trainer.max_epochs=1"], tmp_path)
    assert res.returncode == 0, res.stderr
    reports = sorted((tmp_path / "multirun").glob("*/*/report.json"))
    assert len(reports) == 2
    lrs = sorted(
        json.loads((r.parent / ".hydra/overrides.yaml").read_text().count("0.1") and "1" or "0")
        for r in reports
    )
    assert len(lrs) == 2


def test_weights_ten_times_too_large_show_in_the_first_loss(tmp_path):
    """model.init_scale=10 on the CNN (4x He scale, hidden by batch norm except at the head): the first loss, read
    live from the run's first step, is far above ln(10), and the report says so."""
    run = tmp_path / "run"
    res = run_cli(
        ["model=cnn", "model.init_scale=10", "trainer.max_epochs=1"], tmp_path, run_dir=run
    )
    assert res.returncode == 0, res.stderr
    report = json.loads((run / "report.json").read_text())
    (issue,) = [i for i in report["issues"] if i["code"] == "BAD_INITIALIZATION"]
    first = float(re.search(r"the first loss is ([\d.]+)", issue["evidence"]).group(1))
    assert first > 2 * 2.302585, issue
    ok = run_cli(["model=cnn", "trainer.max_epochs=1"], tmp_path, run_dir=tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert "BAD_INITIALIZATION" not in (tmp_path / "ok" / "report.json").read_text()


def run_on_a_terminal(args: list[str], tmp_path, columns: int = 120) -> str:
    """``python -m runner`` on a pseudo-terminal of ``columns`` columns (as in a shell): all it printed.
    Forked (:func:`helpers.cli_fork.start_on_terminal`): the run opens the terminal as its stdout and
    stderr, as a shell's child has it."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = cli_fork.start_on_terminal(
        [sys.executable, "-m", "runner", *args, f"paths.log_dir={tmp_path}"],
        tmp_path,
        slave,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    chunks = []
    deadline = time.monotonic() + 120
    try:
        # the slave stays open here until the run has exited (a forked run opens it by name), so the
        # terminal is read until the run has exited and then drained
        while True:
            done = proc.poll() is not None
            if select.select([master], [], [], 0 if done else 0.1)[0]:
                chunks.append(os.read(master, 65536))
            elif done:
                break
            else:
                assert time.monotonic() < deadline, "the run on a terminal did not end"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_show_on_a_terminal_and_epoch_lines_stay(tmp_path):
    out = run_on_a_terminal(["debug=fast", "trainer.progress=true", "diag=off"], tmp_path)
    # tqdm's bars: the epochs and each epoch's steps, with a rate
    assert re.search(r"epochs:\s+\d+%\|", out), out[-2000:]
    assert re.search(r"epoch 1/2:\s+\d+%\|.*it/s\]", out), out[-2000:]
    # the bars go away (leave=False); the epoch lines printed through tqdm.write stay
    assert re.search(r"epoch\s+2/2\s+train_loss \d", out)
    assert "test accuracy" in out
