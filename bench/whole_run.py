"""What the user waits for: whole epochs, whole runs and start-up, side by side with a hand loop and Lightning.

Per workload (the MLP and the CNN on the 8x8 digits, default settings otherwise), the epoch period --
training, validation and everything done at the epoch's end -- of:

1. ``hand loop``  a careful hand-written loop: forward, cross-entropy, ``zero_grad(set_to_none=True)``,
   backward, step, a scheduler stepped every step, no host sync per step, and a validation pass every
   epoch (its sums on the device, read once); ``hand loop (control)``, a second one built alike, is the
   rounds' A/A check: its ratio says how far from 1.0 and how widely the rounds read for the same work;
2. ``runner, diag=off`` / ``diag=default`` / ``diag=full``: :meth:`runner.trainer.Trainer.fit` with
   the hooks a run gets (TensorBoard, JSONL, checkpoints, the diagnostics at that level) and the run's
   own TensorBoard writer (``runner.tensorboard_run.open_writer``);
3. ``runner, diag=off, no checkpoints``: the same without the checkpoint hook;
4. ``lightning, no checkpoint`` / ``lightning, default checkpoint``: PyTorch Lightning's Trainer on a
   LightningModule around the same model, optimizer and scheduler, validating every epoch, with its
   default logger; the second with its default ``ModelCheckpoint`` (one file every epoch).

Every loop is built fresh each round from the same composed config and seed (``bench/overhead.py``'s
``compose_cfg`` and ``runner.train.build``), runs ``epochs`` epochs, and its period is the median of the
gaps between its epochs after ``warm-up``. The variants are interleaved round by round, in an order that
rotates; a variant's ratio is the hand loop's period that round over its own (higher is faster, 1.0 is
the hand loop's pace); the table gives the median over rounds and the range, on two clocks: the wall
clock (what the user waits for) and this process's CPU time over all its threads (steadier when the
machine is shared; the background writers' threads count). Torch runs one thread.

Then the same ratio paired: each epoch of ``runner, diag=off`` / ``diag=default`` / Lightning with its
default checkpoint is followed, from its own epoch-end hook or callback, by one epoch of a hand loop built
beside it; each pair's ratio is the hand epoch's time over the loop's epoch just before it (from the end of
the previous hand epoch to its own epoch end, so all of its work counts). The host's speed drifts over
seconds here; the rounds put whole runs seconds apart, a pair puts two epochs milliseconds apart. The
paired table's first row, ``hand loop (control)``, is a second hand loop in the loop's place: the same
work on both sides, so its median says how far from 1.0 the method reads and its range how far one run's
figure strays. The table's last column is the same pairs in milliseconds: how much longer the loop's epoch
took than the hand loop's (median), a figure that moves less with the host's speed than the ratio does
(the loop's own work takes about as long when the hand epoch gets shorter); the paired verdict on the
runner says it beside the milliseconds its target allows.

Then the wall time to a target validation accuracy (0.95 on the digits) of the runner (``diag=default``,
checkpoints on, build included) and of the hand loop, and the start-up of ``python -m runner`` until
its first optimizer step done against ``import torch`` plus one optimizer step of a linear model, each in a fresh process;
the runner's own share is the median over rounds of its start minus the baseline's started just before it.

    python bench/whole_run.py            # both workloads (about 10 minutes on 2 shared CPU cores)
    python bench/whole_run.py --quick    # smoke test: 1 round, 2 epochs, each config composed once,
                                         # figures not meaningful
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from overhead import (  # bench/ is on sys.path
    compose_cfg,
    compose_once,
    lightning_available,
    lightning_env,
    quiet,
)
from results_file import write_results

from diag.gradients import global_grad_norm, grads_of, host_grad_norm
from diag.hooks import FitState, Hook, HookList
from runner.train import Run

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS: dict[str, list[str]] = {
    "mlp/digits": ["data=digits", "model=mlp"],
    "cnn/digits": ["data=digits", "model=cnn"],
}
# (epochs per run, warm-up epochs not counted, rounds) at the default setting and with --quick
PLAN = {"mlp/digits": (14, 2, 11), "cnn/digits": (8, 2, 9)}
# --quick: the fewest epochs that still time one epoch after the warm-up (one gap, one epoch pair)
QUICK_PLAN = {"mlp/digits": (2, 1, 1), "cnn/digits": (2, 1, 1)}
TARGET_ACC = 0.95
Stamp = tuple[float, float]  # (wall clock, this process's CPU time, all its threads)


def now() -> Stamp:
    return time.perf_counter(), time.process_time()


HAND = "hand loop"
RUNNER = {
    "runner, diag=off": ("off", ()),
    "runner, diag=default": ("default", ()),
    "runner, diag=full": ("full", ()),
    "runner, diag=off, no checkpoints": ("off", ("callbacks.checkpoint=null",)),
}
LIGHTNING = {"lightning, no checkpoint": False, "lightning, default checkpoint": True}
TARGETS = {"mlp/digits": 0.90, "cnn/digits": 0.95}  # runner diag=default / hand loop, epoch period


def build(workload: str, diag: str, run_dir: Path, extra: tuple[str, ...], epochs: int) -> Run:
    """The runner's own set-up for one workload and diag level, ``epochs`` long."""
    from runner.train import build as build_run

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_cfg(
        [*WORKLOADS[workload], f"diag={diag}", f"trainer.max_epochs={epochs}", *extra], run_dir
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return build_run(cfg, run_dir)


class EpochClock(Hook):
    """Last in the hook list: the time each epoch's end-of-epoch work finished, and the val accuracy."""

    def __init__(self, shadow: Shadow | None = None) -> None:
        self.ends: list[Stamp] = []
        self.acc: list[float] = []
        self.shadow = shadow

    def on_epoch_end(self, state: FitState) -> None:
        self.ends.append(now())
        self.acc.append(float(state.metrics["val/acc"]))
        if self.shadow is not None:
            self.shadow()


def run_runner(parts: Run, shadow: Shadow | None = None) -> tuple[list[Stamp], list[float]]:
    """The runner's fit as ``runner.train.run`` drives it (its TensorBoard writer, fit, on_fit_end); epoch
    ends, accs. With ``shadow``, a hand epoch after each of its epochs (not counted in its epoch ends)."""
    from runner.tensorboard_run import open_writer

    state, trainer = parts.state, parts.trainer
    clock = EpochClock(shadow)
    hooks = HookList({**parts.hooks.named, "_epoch_clock": clock})
    assert state.run_dir is not None
    state.writer = open_writer(state.run_dir / "tb", state.step)  # the run's own writer
    gc.freeze()  # as runner.train.run does around its fit
    try:
        trainer.fit(state, parts.train_loader, parts.val_loader, hooks)
        state.metrics["test/loss"], state.metrics["test/acc"] = math.nan, math.nan
        hooks.on_fit_end(state)
    finally:
        gc.unfreeze()
        state.writer.close()
        state.events.close()
    return clock.ends, clock.acc


def guard_norm(
    params: list[torch.Tensor],
    host_norm: Callable[[list[torch.Tensor]], float | None] = host_grad_norm,
) -> float:
    """The global gradient norm on the host as the runner's non-finite guard reads it
    (``Trainer.training_step``); ``host_norm`` in place of ``host_grad_norm`` (another version of it)."""
    host = host_norm(grads_of(params))
    return global_grad_norm(params).item() if host is None else host


class HandLoop:
    """The careful hand loop on a built model, optimizer and loaders; a scheduler stepped every step.

    ``guard``: before each optimizer step, also what the runner's default non-finite guard does (the
    global gradient norm as a host float, :func:`guard_norm`; a NaN/Inf step skipped): what that exact
    per-step check costs any loop (``bench/epoch_costs.py``).
    """

    def __init__(self, parts: Run, epochs: int, guard: bool = False) -> None:
        self.model, self.opt, self.epochs = parts.state.model, parts.state.optimizer, epochs
        assert self.opt is not None
        # the parameters the guard reads; none without the guard (a plain hand loop)
        self.params = [p for p in self.model.parameters() if p.requires_grad] if guard else []
        self.train_loader, self.val_loader = parts.train_loader, parts.val_loader
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, T_max=epochs * len(parts.train_loader)
        )

    def epoch(self) -> float:
        """One epoch of training and a validation pass; its val accuracy."""
        model, opt, sched, params = self.model, self.opt, self.sched, self.params
        model.train()
        for x, y in self.train_loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if params and not math.isfinite(guard_norm(params)):
                continue
            opt.step()
            sched.step()
        model.eval()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        seen = 0
        with torch.no_grad():
            for x, y in self.val_loader:
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
        val_loss = loss_sum.item() / seen  # what a person prints or early-stops on
        return correct.item() / seen if math.isfinite(val_loss) else math.nan


def run_hand(parts: Run, epochs: int) -> tuple[list[Stamp], list[float]]:
    """The hand loop for ``epochs`` epochs: epoch ends, accs."""
    loop = HandLoop(parts, epochs)
    ends: list[Stamp] = []
    accs: list[float] = []
    for _ in range(epochs):
        accs.append(loop.epoch())
        ends.append(now())
    return ends, accs


def run_control(loop: HandLoop, shadow: Shadow) -> list[Stamp]:
    """A hand loop in the paired measurement's loop's place (its epoch ends), ``shadow`` after each epoch."""
    ends: list[Stamp] = []
    for _ in range(loop.epochs):
        loop.epoch()
        ends.append(now())
        shadow()
    return ends


class Shadow:
    """A hand loop that runs one epoch right after each epoch of another loop (called from its epoch-end
    hook, after that loop's stamp): both loops' epochs alternate, each timed between its neighbours."""

    def __init__(self, loop: HandLoop) -> None:
        self.loop = loop
        self.spans: list[tuple[Stamp, Stamp]] = []

    def __call__(self) -> None:
        start = now()
        self.loop.epoch()
        self.spans.append((start, now()))

    def ratios(self, ends: list[Stamp], warmup: int, clock: int) -> list[float]:
        """Per epoch after ``warmup``: the hand epoch's time over the other loop's epoch just before it
        (from the end of the previous hand epoch to its own epoch end)."""
        return [hand / theirs for theirs, hand in self._pairs(ends, warmup, clock)]

    def _pairs(self, ends: list[Stamp], warmup: int, clock: int) -> list[tuple[float, float]]:
        """Per epoch after ``warmup``: (the other loop's epoch, the hand epoch after it) on ``clock``."""
        return [
            (
                ends[i][clock] - self.spans[i - 1][1][clock],
                self.spans[i][1][clock] - self.spans[i][0][clock],
            )
            for i in range(max(warmup, 1), min(len(ends), len(self.spans)))
        ]

    def extra_ms(self, ends: list[Stamp], warmup: int) -> tuple[float, float]:
        """Medians over the same pairs, wall clock: the other loop's epoch minus the hand epoch, and the
        hand epoch, in ms. Steadier across hosts than the ratio: the loop's own work takes about as long
        on a faster host, where the hand epoch is shorter."""
        pairs = self._pairs(ends, warmup, 0)
        return (
            statistics.median(1e3 * (theirs - hand) for theirs, hand in pairs),
            statistics.median(1e3 * hand for _, hand in pairs),
        )


def run_lightning(
    parts: Run, epochs: int, checkpoint: bool, shadow: Shadow | None = None
) -> tuple[list[Stamp], list[float]]:
    """Lightning's Trainer around the same model, optimizer and scheduler; validation every epoch."""
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
            super().__init__()
            self.model, self._optimizer = model, optimizer

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self.model(x)
            self.log("val/loss", F.cross_entropy(logits, y))
            self.log("val/acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            steps = epochs * len(parts.train_loader)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(self._optimizer, T_max=steps)
            return {
                "optimizer": self._optimizer,
                "lr_scheduler": {"scheduler": sched, "interval": "step"},
            }

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[Stamp] = []
            self.acc: list[float] = []

        def on_validation_epoch_end(self, trainer: Any, module: Any) -> None:
            if not trainer.sanity_checking:
                self.acc.append(float(trainer.callback_metrics.get("val/acc", math.nan)))

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            self.ends.append(now())
            if shadow is not None:
                shadow()

    clock = Clock()
    run_dir, optimizer = parts.state.run_dir, parts.state.optimizer
    assert run_dir is not None and optimizer is not None
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        enable_checkpointing=checkpoint,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        callbacks=[clock],
    )
    with lightning_env():
        trainer.fit(
            Module(parts.state.model, optimizer),
            train_dataloaders=parts.train_loader,
            val_dataloaders=parts.val_loader,
        )
    return clock.ends, clock.acc


def period(ends: list[Stamp], warmup: int, clock: int) -> float:
    """Median gap between consecutive epoch ends after ``warmup`` epochs, on clock 0 (wall) or 1 (CPU)."""
    gaps = [b[clock] - a[clock] for a, b in zip(ends, ends[1:])][max(warmup - 1, 0) :]
    return statistics.median(gaps)


def measure(workload: str, root: Path, with_lightning: bool, quick: bool) -> dict[str, list[float]]:
    """Per variant and clock, its epoch period's ratio to the hand loop's of the same round, one per round."""
    epochs, warmup, rounds = (QUICK_PLAN if quick else PLAN)[workload]
    # CONTROL: a second hand loop, the rounds' A/A check (how far from 1.0 and how widely they read when
    # the work is the same); the paired table has its own
    names = [HAND, CONTROL, *RUNNER, *(LIGHTNING if with_lightning else {})]
    periods: dict[str, list[Stamp]] = {n: [] for n in names}
    for r in range(rounds + (0 if quick else 1)):  # the first round of a full run is a warm-up
        order = names[r % len(names) :] + names[: r % len(names)]
        this: dict[str, Stamp] = {}
        for name in order:
            run_dir = root / workload.replace("/", "_") / f"r{r}_{len(this)}"
            level, extra = RUNNER.get(name, ("off", ()))
            parts = build(workload, level, run_dir, extra, epochs)
            if name in (HAND, CONTROL):
                ends, _ = run_hand(parts, epochs)
            elif name in RUNNER:
                ends, _ = run_runner(parts)
            else:
                ends, _ = run_lightning(parts, epochs, LIGHTNING[name])
            this[name] = (period(ends, warmup, 0), period(ends, warmup, 1))
        if r == 0 and not quick:
            continue
        for name in names:
            periods[name].append(this[name])
        print(
            f"  {workload} round {len(periods[HAND])}/{rounds}: "
            + ", ".join(f"{n} {this[HAND][0] / this[n][0]:.2f}" for n in names),
            file=sys.stderr,
            flush=True,
        )
    ratios = {n: [h[0] / p[0] for h, p in zip(periods[HAND], periods[n])] for n in names}
    for n in names:
        ratios[f"_cpu {n}"] = [h[1] / p[1] for h, p in zip(periods[HAND], periods[n])]
    ratios["_hand_ms"] = [1e3 * p[0] for p in periods[HAND]]
    return ratios


# the method's control: a second hand loop in the loop's place; its ratio shows how far from 1.0 and how
# widely the pairing itself reads when both loops do the same work
CONTROL = "hand loop (control)"
PAIRED = [CONTROL, "runner, diag=off", "runner, diag=default", "lightning, default checkpoint"]
# (epochs per run, warm-up epochs not counted, rounds) of the paired measurement: one run's figure moves
# by 3-5 points between runs here (the control's too), so the targets are read on the median of 13
PAIRED_PLAN = {"mlp/digits": (14, 2, 13), "cnn/digits": (8, 2, 13)}


def measure_paired(
    workload: str, root: Path, with_lightning: bool, quick: bool
) -> dict[str, list[float]]:
    """Per loop and clock, its per-epoch ratio to a hand loop whose epochs alternate with its own (the
    median over each run's epoch pairs, one per round): the two epochs of a pair are run back to back, so
    the host's speed, which drifts over seconds here, is nearly the same for both."""
    epochs, warmup, rounds = (QUICK_PLAN if quick else PAIRED_PLAN)[workload]
    names = [n for n in PAIRED if with_lightning or n not in LIGHTNING]
    out: dict[str, list[float]] = {}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run_dir = root / workload.replace("/", "_") / f"p{r}_{name.replace(' ', '')}"
            level, extra = RUNNER.get(name, ("off", ()))
            parts = build(workload, level, run_dir, extra, epochs)
            shadow = Shadow(HandLoop(build(workload, "off", run_dir / "hand", (), epochs), epochs))
            if name == CONTROL:
                ends = run_control(HandLoop(parts, epochs), shadow)
            elif name in RUNNER:
                ends, _ = run_runner(parts, shadow)
            else:
                ends, _ = run_lightning(parts, epochs, LIGHTNING[name], shadow)
            for clock, key in ((0, name), (1, f"_cpu {name}")):
                out.setdefault(key, []).append(
                    statistics.median(shadow.ratios(ends, warmup, clock))
                )
            extra, hand = shadow.extra_ms(ends, warmup)
            out.setdefault(f"_extra_ms {name}", []).append(extra)
            out.setdefault(f"_hand_ms {name}", []).append(hand)
        print(
            f"  {workload} paired round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {out[n][-1]:.2f}" for n in names),
            file=sys.stderr,
            flush=True,
        )
    return out


def time_to_accuracy(workload: str, root: Path, quick: bool) -> dict[str, float | None]:
    """Seconds from the start of the build to the first epoch whose val accuracy reaches TARGET_ACC."""
    epochs = 2 if quick else 30
    out: dict[str, float | None] = {}
    for name in (HAND, "runner, diag=default"):
        t0 = now()[0]
        parts = build(
            workload, "default", root / f"tta_{workload.replace('/', '_')}_{len(out)}", (), epochs
        )
        ends, accs = run_runner(parts) if name != HAND else run_hand(parts, epochs)
        hit = next((t[0] for t, a in zip(ends, accs) if a >= TARGET_ACC), None)
        out[name] = hit - t0 if hit is not None else None
    return out


# Runs ``python -m runner`` in this process until its loop is entered, then exits: the time to that point
# is the start-up the user waits for (imports, config, data, model, optimizer, hooks, TensorBoard writer).
_TO_FIRST_STEP = """
import os, sys, time
import runner.trainer
step = runner.trainer.Trainer.training_step
def first_step(self, *args, **kwargs):
    step(self, *args, **kwargs)
    print("START", time.time(), time.process_time(), flush=True)
    os._exit(0)
runner.trainer.Trainer.training_step = first_step
sys.argv = ["runner", *sys.argv[1:]]
from runner.__main__ import main
main()
"""
_BASELINE = """
import time, torch
model = torch.nn.Linear(64, 10)
opt = torch.optim.Adam(model.parameters(), fused=True)
torch.nn.functional.cross_entropy(model(torch.randn(32, 64)), torch.randint(0, 10, (32,))).backward()
opt.step()
print("START", time.time(), time.process_time(), flush=True)
"""
STARTUP = ("import torch + one optimizer step", "runner to its first step")
# the runner's start minus the baseline's started just before it, per round: the host's speed drifts over
# seconds here, and a difference of the two medians carried that drift (one run read 0.63 s where an A/B
# of the same code read 0.33)
SHARE = "runner's own share (per round: runner minus baseline)"


def startup(repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds in fresh processes, alternated: ``import torch`` + one optimizer, and
    ``python -m runner`` (default config) until its first optimizer step is done (the baseline takes one
    too): what the loop's hooks do before that step (``on_fit_start``) counts. ``SHARE``: the median of
    each round's difference of the two."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in STARTUP}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Python's default: bytecode cached in __pycache__ (as a wheel install ships it). A shell that sets
    # PYTHONDONTWRITEBYTECODE (this project's machines do) would recompile every project module at every
    # start and charge it to the runner; the first round, a warm-up (not with one repeat), writes the cache.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warmup = int(repeats > 1)
    for i in range(warmup + repeats):
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
            for name, code, args in (
                (STARTUP[0], _BASELINE, []),
                (STARTUP[1], _TO_FIRST_STEP, ["trainer.progress=false", f"paths.log_dir={tmp}"]),
            ):
                t0 = time.time()
                done = subprocess.run(
                    [sys.executable, "-c", code, *args],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                    check=True,
                )
                line = next(x for x in done.stdout.splitlines() if x.startswith("START"))
                wall, cpu = map(float, line.split()[1:])
                if i >= warmup:
                    out[name].append((wall - t0, cpu))
    out[SHARE] = [(r[0] - b[0], r[1] - b[1]) for b, r in zip(out[STARTUP[0]], out[STARTUP[1]])]
    return {
        name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for name, v in out.items()
    }


def verdicts(
    prefix: str, workload: str, res: dict[str, list[float]], with_lightning: bool
) -> list[str]:
    """The targets' lines for one workload's table (``prefix`` names the table)."""
    med, target = statistics.median, TARGETS[workload]
    got, cpu = med(res["runner, diag=default"]), med(res["_cpu runner, diag=default"])
    lines = [
        f"- {prefix}runner diag=default >= {target:.2f} x hand loop, {workload}: wall {got:.3f} -> "
        f"{'met' if got >= target else 'MISSED'}; CPU time {cpu:.3f} -> "
        f"{'met' if cpu >= target else 'MISSED'}"
    ]
    if "_extra_ms runner, diag=default" in res:  # the paired runs: the same target in milliseconds
        extra = med(res["_extra_ms runner, diag=default"])
        hand = med(res["_hand_ms runner, diag=default"])
        lines[0] += (
            f" (its epoch over the hand loop's {hand:.1f} ms: {extra:+.2f} ms; {target:.2f} allows "
            f"{hand * (1 / target - 1):+.2f} ms)"
        )
    if with_lightning:
        theirs = med(res["lightning, default checkpoint"])
        lines.append(
            f"- {prefix}ahead of Lightning with its defaults, {workload}: {got:.3f} vs {theirs:.3f} -> "
            f"{'met' if got > theirs else 'MISSED'}"
        )
    return lines


def report(
    results: dict[str, dict[str, list[float]]],
    paired: dict[str, dict[str, list[float]]],
    tta: dict[str, dict[str, float | None]],
    start: dict[str, tuple[float, float]],
    why_not: str | None,
) -> list[str]:
    med = statistics.median
    lines = [
        "| workload | loop | epoch-period ratio to hand loop (wall, median) | range over rounds | "
        "ratio (process CPU time, median) | CPU range |",
        "|---|---|---|---|---|---|",
    ]
    for workload, res in results.items():
        for name, r in res.items():
            if name.startswith("_"):
                continue
            c = res[f"_cpu {name}"]
            lines.append(
                f"| {workload} | {name} | {med(r):.3f} | {min(r):.3f} - {max(r):.3f} | "
                f"{med(c):.3f} | {min(c):.3f} - {max(c):.3f} |"
            )
        if why_not:
            for name in LIGHTNING:
                lines.append(f"| {workload} | {name} | {why_not} | - | - | - |")
    lines += [
        "",
        "Paired epochs (each epoch of the loop followed by one epoch of its own hand loop; per run the median "
        "of the epoch pairs' ratios; median and range over runs):",
        "",
        "| workload | loop | paired ratio to hand loop (wall, median) | range over runs | "
        "ratio (process CPU time, median) | CPU range | epoch minus the hand loop's (wall ms, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, res in paired.items():
        for name, r in res.items():
            if not name.startswith("_"):
                c = res[f"_cpu {name}"]
                lines.append(
                    f"| {workload} | {name} | {med(r):.3f} | {min(r):.3f} - {max(r):.3f} | "
                    f"{med(c):.3f} | {min(c):.3f} - {max(c):.3f} | {med(res[f'_extra_ms {name}']):+.2f} |"
                )
        if why_not:
            lines.append(
                f"| {workload} | lightning, default checkpoint | {why_not} | - | - | - | - |"
            )
    lines += ["", "| workload | loop | wall time to val acc >= 0.95 (s) |", "|---|---|---|"]
    for workload, t in tta.items():
        for name, s in t.items():
            lines.append(f"| {workload} | {name} | {'not reached' if s is None else f'{s:.2f}'} |")
    lines += [
        "",
        "| start-up (fresh process) | wall s (median) | CPU s (median) |",
        "|---|---|---|",
    ]
    for name, (wall, cpu) in start.items():
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    lines += [""]
    for workload in results:
        for prefix, res in (("", results[workload]), ("paired: ", paired[workload])):
            lines += verdicts(prefix, workload, res, with_lightning=not why_not)
    if start:
        wall, cpu = start[SHARE]
        lines.append(
            f"- the runner's own start-up share <= 0.5 s: wall {wall:.2f} s -> "
            f"{'met' if wall <= 0.5 else 'MISSED'}; CPU {cpu:.2f} s -> {'met' if cpu <= 0.5 else 'MISSED'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 epochs")
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument(
        "--no-lightning", action="store_true", help="skip Lightning even when installed"
    )
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "whole_run.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:  # each distinct config composed once (a full run composes every build's afresh)
        compose_once()
    installed = lightning_available()
    with_lightning = installed and not args.no_lightning
    why_not = (
        None
        if with_lightning
        else ("skipped (--no-lightning)" if installed else "pytorch-lightning not installed")
    )
    started = time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {}
    paired: dict[str, dict[str, list[float]]] = {}
    tta: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-whole-run-") as tmp, quiet():
        for workload in args.workloads:
            results[workload] = measure(workload, Path(tmp), with_lightning, args.quick)
            paired[workload] = measure_paired(workload, Path(tmp), with_lightning, args.quick)
            tta[workload] = time_to_accuracy(workload, Path(tmp), args.quick)
    start = {} if args.no_startup else startup(1 if args.quick else 9)
    hand_ms = ", ".join(
        f"{w} {statistics.median(r['_hand_ms']):.1f} ms" for w, r in results.items()
    )
    plan = QUICK_PLAN if args.quick else PLAN
    header = [
        f"torch {torch.__version__}, 1 intra-op thread, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other users; "
        + (
            "pytorch-lightning " + __import__("pytorch_lightning").__version__
            if with_lightning
            else str(why_not)
        )
        + "; hand loop epoch period: "
        + hand_ms
        + "; "
        + ", ".join(
            f"{w}: {plan[w][2]} round(s) of {plan[w][0]} epochs, {plan[w][1]} warm-up"
            for w in args.workloads
        )
        + ("; --quick (smoke test: figures are not meaningful)" if args.quick else ""),
        "",
    ]
    text = "\n".join(header + report(results, paired, tta, start, why_not))
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "whole_run.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
