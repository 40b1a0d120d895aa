"""The LR range test inside the runner: ``mode=lr_find`` and ``optimizer.lr=auto``.

Both work on the :class:`runner.train.Run` a training run builds (:func:`runner.train.build`):
:class:`diag.lr_finder.LearningRateFinder` sets each LR and the trainer's own
``training_step`` takes the step (the run's precision, AMP scaling and clipping), and the
model, optimizer, scaler and RNGs are put back as they were. What they write into the run
directory: ``lr_find.png``, ``lr_find.json`` and ``lr_find/*`` TensorBoard scalars among the run's event files.

A test with too little curve to read (fewer than :data:`diag.lr_finder.MIN_POINTS` points before it
diverged, or a non-finite loss at its first step) suggests nothing: both say why in one line and which
``lr_find`` setting to change, and exit 2 (:func:`unreadable`), rather than print or train at the finder's
fallback LR.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import ReduceLROnPlateau
from tqdm.auto import tqdm

from diag.hooks import FitState
from diag.lr_finder import (
    MIN_POINTS,
    LearningRateFinder,
    NothingMeasured,
    candidate_ladder,
    cycle_batches,
    interpolate,
    next_candidate,
    optimizer_family,
    outside_tested,
    pick_trial,
    rule_label,
)
from diag.lr_rules import ALIASES, LABELS
from diag.training_state import apply, capture
from runner import distributed
from runner.errors import UserError
from runner.schedulers import build_scheduler
from runner.validation import lr_find_errors

if TYPE_CHECKING:
    import torch

    from runner.train import Run

log = logging.getLogger(__name__)


def build_finder(
    cfg: DictConfig,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int | None = None,
) -> LearningRateFinder:
    """The finder from the ``lr_find`` config block (its YAML holds the defaults); bad values: :class:`UserError`.

    ``optimizer`` is the run's: ``lr_find.method=auto`` reads a different rule for SGD. ``batch_size``
    is the training loader's: SGD's ceiling on a test that never diverged scales with it.
    """
    errors = lr_find_errors(cfg)
    if errors:
        raise UserError("\n".join(errors))
    node = cfg.lr_find
    return LearningRateFinder(
        min_lr=float(node.min_lr),
        max_lr=float(node.max_lr),
        num_steps=int(node.num_steps),
        method=str(node.method),
        smooth=float(node.smooth),
        diverge_factor=float(node.diverge_factor),
        optimizer_family=optimizer_family(optimizer) if optimizer is not None else None,
        batch_size=batch_size,
    )


@contextlib.contextmanager
def off_the_record(
    r: Run, desc: str, total: int
) -> Iterator[tuple[FitState, Any, Callable[[], None]]]:
    """Training steps that leave no trace: yields a probe state for the trainer's own ``training_step``,
    a progress bar and ``restore`` (model, optimizer, scaler, RNGs and data order back to where they
    were on entry); everything is restored on exit, gradients dropped and the skip count reset."""
    state, trainer = r.state, r.trainer
    saved = capture(
        state.model, state.optimizer, scaler=trainer.scaler, rng=True, generator=state.generator
    )
    trainer.attach(state.model)
    was_training = state.model.training
    state.model.train()
    bar = tqdm(
        total=total,
        desc=desc,
        unit="step",
        leave=False,
        disable=not trainer.progress,
        dynamic_ncols=True,
    )

    def restore() -> None:
        apply(saved, state.model, state.optimizer, scaler=trainer.scaler, generator=state.generator)

    try:
        yield FitState(model=state.model, optimizer=state.optimizer), bar, restore
    finally:
        bar.close()
        restore()
        for p in state.model.parameters():
            p.grad = None
        state.model.train(was_training)
        trainer.reset_skips()


def range_test(r: Run, finder: LearningRateFinder) -> dict[str, Any]:
    """Run ``finder`` with the trainer's own step on the training loader; everything is restored after.

    The schedule is left out (the finder sets each step's LR) and so are the hooks.
    """
    batches = cycle_batches(r.train_loader)
    with off_the_record(r, "LR range test", finder.num_steps) as (probe, bar, _):

        def step(lr: float) -> float:
            for group in r.optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            r.trainer.training_step(probe, x, y)
            loss = (
                probe.loss.item() if probe.loss is not None else math.nan
            )  # the stop rule needs it
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{loss:.3g}", refresh=False)
            bar.update()
            return loss

        try:
            return finder.range_test(step)
        except NothingMeasured:
            first = probe.loss.item() if probe.loss is not None else math.nan
            raise UserError(
                f"lr_find: the range test's first loss ({first}) is not finite: it is the untrained "
                "model's, before any LR acted, so no LR can be read and none is suggested; the model "
                "or the data is broken, not the LR (look at model.init, model.init_scale, "
                "model.init_std and the data: python -m runner.check_data)"
            ) from None


def run_steps(r: Run) -> int:
    """How many optimizer steps the run itself will take (``max_epochs`` x its loader, or ``max_steps``)."""
    total = int(r.trainer.max_epochs) * len(r.train_loader)
    return min(total, r.trainer.max_steps) if r.trainer.max_steps else total


def divergence_lr(result: dict[str, Any]) -> float:
    """The LR the range test stopped at when it diverged (nothing above it is worth a trial), else ``max_lr``."""
    stopped = str(result["stop_reason"]).startswith(("diverged", "non-finite"))
    return float(result["lrs"][-1]) if stopped and result["lrs"] else float(result["max_lr"])


def check(r: Run, finder: LearningRateFinder, result: dict[str, Any]) -> dict[str, Any]:
    """Check the curve rule's pick by training: ``lr_find.candidates`` LRs 3x apart around it, each a
    ``lr_find.verify_steps``-step trial (the run in miniature: the run's own schedule compressed into
    the trial, :func:`trial_scheduler`; the trainer's own step) from the same saved start, scored by the
    validation loss; the lowest becomes the suggestion.

    Why: nine rounds of curve rules (bench/results/lr_finder_round*.md) missed by 2.5-3.6x on curves
    that do not show where the best LR is (SGD whose test hardly falls, batch-size effects, a capped
    AdamW); a short trial shows it. The validation split, not the test split, and its loss rather than
    its accuracy: on a small split the loss moves smoothly with the LR where the accuracy is coarse.
    The trials are capped at the run's own length (a shorter run is trialled whole). Model, optimizer,
    scaler and RNGs (the data order too) are put back after every trial, so each starts where the
    range test did and training starts as if none had run. The suggestion is the winning trial's LR
    moved to the vertex of the parabola through its score and its neighbours' when they bracket it
    (:func:`diag.lr_finder.interpolate`, at most half a rung). Returns ``result`` with the suggestion
    replaced and ``verify`` added (candidates, scores, the pick, the suggestion, seconds).
    """
    node = r.cfg.lr_find
    steps = min(int(node.verify_steps), run_steps(r))
    count = int(node.candidates)
    if steps <= 0 or len(result["lrs"]) < MIN_POINTS:
        return result
    curve_lr = float(result["suggested_lr"])
    high = divergence_lr(result)
    ladder = candidate_ladder(curve_lr, count, finder.min_lr, high)
    t0 = time.perf_counter()
    trials: list[dict[str, Any]] = []
    with off_the_record(r, "LR check", len(ladder) * steps) as (probe, bar, restore):
        start_score = float(r.trainer.evaluate(r.state.model, r.val_loader)["loss"])
        for lr in ladder:
            trials.append(_trial(r, probe, lr, steps, finder.diverge_factor, bar))
            restore()
        # the best at an end of the ladder: follow it that way, at most as many trials again
        for _ in range(count):
            more = next_candidate(trials, finder.min_lr, high, start_score)
            if more is None:
                break
            bar.total += steps
            trials.append(_trial(r, probe, more, steps, finder.diverge_factor, bar))
            restore()
    trials.sort(key=lambda t: t["lr"])
    truncated = steps < run_steps(r)
    best = pick_trial(trials, start_score, truncated)
    # between the rungs when the pick's neighbours bracket it: the three scores say which side
    suggested = interpolate(trials, best, start_score) if best is not None else None
    verify = {
        # the validation loss; the training loss only when the run has no validation split
        "metric": "train_loss"
        if any(t["score_from"] == "train_loss" for t in trials)
        else "val_loss",
        "steps": steps,
        "candidates": count,
        "run_steps": run_steps(r),
        "curve_lr": curve_lr,
        "start_score": start_score,
        "truncated": truncated,
        "picked_lr": best["lr"] if best else None,
        "suggested_lr": suggested,
        "trials": trials,
        "seconds": time.perf_counter() - t0,
    }
    out = {**result, "verify": verify, "curve_lr": curve_lr}
    if suggested is not None:
        out["suggested_lr"] = suggested
    return out


def trial_scheduler(r: Run, lr: float) -> Any:
    """The run's own scheduler, built as the run will build it (``runner.schedulers.build_scheduler``,
    ``optimizer.lr`` set to ``lr`` so OneCycle's ``max_lr`` follows), starting from ``lr``; None for a run
    with no schedule (a constant-LR trial) or a plateau schedule (it moves on metrics, not on steps).

    Why the run's own: a short trial ranks LRs the way the run will use them only when its LR has the
    run's shape; the old per-step cosine to zero held a lower mean LR than the runner's per-epoch cosine
    and no LR at all like a constant run's (bench/results/lr_finder_round11.md).
    """
    for group in r.optimizer.param_groups:
        group["lr"] = lr
        group.pop("initial_lr", None)  # a torch scheduler starts from initial_lr when it is set
    found = OmegaConf.merge(r.cfg, {"optimizer": {"lr": lr}})
    schedule = found.get("scheduler") if isinstance(found, DictConfig) else None
    scheduler = build_scheduler(
        schedule, r.optimizer, len(r.train_loader), int(r.trainer.max_epochs)
    )
    if isinstance(scheduler, ReduceLROnPlateau):
        return None
    return scheduler


def schedule_calls(interval: str, steps_per_epoch: int, step: int) -> int:
    """How many times the run's loop has stepped its scheduler before its optimizer step ``step``
    (0-based): once a step for ``interval=step``, once an epoch otherwise."""
    return step if interval == "step" else step // max(1, steps_per_epoch)


def _trial(
    r: Run, probe: FitState, lr: float, steps: int, diverge_factor: float, bar: Any
) -> dict[str, Any]:
    """One candidate's short run from the saved start, its LR on the run's own schedule compressed
    into ``steps`` (the trial's step k is the run's step k x run steps / ``steps``); diverged when a
    loss is non-finite or the running mean of the loss exceeds ``diverge_factor`` x the first loss
    (stopped there: no cost wasted)."""
    state, trainer = r.state, r.trainer
    state.model.train()
    batches = cycle_batches(r.train_loader)
    scheduler = trial_scheduler(r, lr)
    total, calls = run_steps(r), 0
    losses: list[float] = []
    lrs: list[float] = []  # the LR each step took: the schedule as the trial ran it
    avg, diverged = 0.0, False
    for k in range(steps):
        # the schedule where the run has it at the same fraction of its steps
        due = schedule_calls(trainer.scheduler_interval, len(r.train_loader), k * total // steps)
        while scheduler is not None and calls < due:
            scheduler.step()
            calls += 1
        lrs.append(float(r.optimizer.param_groups[0]["lr"]))
        x, y = next(batches)
        trainer.training_step(probe, x, y)
        loss = probe.loss.item() if probe.loss is not None else math.nan
        losses.append(loss)
        bar.update()
        avg = 0.9 * avg + 0.1 * loss
        if not math.isfinite(loss) or avg / (1 - 0.9 ** (k + 1)) > diverge_factor * losses[0]:
            diverged = True
            bar.update(steps - k - 1)
            break
    val = {"loss": math.nan, "acc": math.nan}
    if not diverged:
        val = trainer.evaluate(state.model, r.val_loader)
    tail = losses[-max(1, len(losses) // 4) :]
    train_loss = float(sum(tail) / len(tail))
    # no validation split (val_fraction=0): the trial's last quarter of training loss stands in
    from_val = math.isfinite(val["loss"])
    score = float(val["loss"]) if from_val else (math.nan if diverged else train_loss)
    bar.set_postfix(lr=f"{lr:.2e}", score=f"{score:.3g}", refresh=False)
    return {
        "lr": lr,
        "diverged": diverged,
        "steps_run": len(losses),
        "score": score,
        "score_from": "val_loss" if from_val else ("diverged" if diverged else "train_loss"),
        "val_loss": float(val["loss"]),
        "val_acc": float(val["acc"]),
        "train_loss": train_loss,
        "schedule": type(scheduler).__name__ if scheduler is not None else "constant",
        "losses": losses,
        "lrs": lrs,
    }


def find(r: Run) -> dict[str, Any]:
    """Run the range test and the check of its pick, then write png, json and TensorBoard scalars into
    the run directory."""
    finder = build_finder(r.cfg, r.optimizer, getattr(r.train_loader, "batch_size", None))
    t0 = time.perf_counter()
    result = range_test(r, finder)
    range_seconds = time.perf_counter() - t0
    result = check(r, finder, result)
    result["seconds"] = {
        "range_test": range_seconds,
        "check": (result.get("verify") or {}).get("seconds", 0.0),
    }
    r.run_dir.mkdir(parents=True, exist_ok=True)
    finder.plot(r.run_dir / "lr_find.png", result)
    (r.run_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _write_scalars(
        r.run_dir, result
    )  # beside the run's own event files: TensorBoard names it by its folder
    return result


def unreadable(r: Run, result: dict[str, Any], trains: bool = False) -> str | None:
    """Why ``result`` suggests nothing the run may use, in one line naming the ``lr_find`` keys to
    change; None when its curve has the :data:`~diag.lr_finder.MIN_POINTS` points a rule reads.

    Why a refusal, not the finder's fallback LR: a curve of a few points before a divergence says
    where the loss blew up, not which LR trains (``min_lr=1 max_lr=2``: diverged at 1.01 after 2 points);
    printed as a suggestion or trained at (``optimizer.lr=auto``, ``trains``), it looks like a reading.
    """
    n = len(result["lrs"])
    if n >= MIN_POINTS:
        return None
    lo, hi = float(result["min_lr"]), float(result["max_lr"])
    steps = int(r.cfg.lr_find.num_steps)
    diverged = result.get("diverged_lr")
    fix = (
        "start the test further under where it diverged or give it more steps"
        if diverged
        else "give it more steps"
    )
    what = "none is suggested and the run does not train" if trains else "none is suggested"
    return (
        f"lr_find: the range test read {n} point{'s' if n != 1 else ''} (lr_find.num_steps={steps} "
        f"from lr_find.min_lr={lo:g} to lr_find.max_lr={hi:g}) before it stopped, "
        f"{result['stop_reason']}; an LR needs at least {MIN_POINTS}, so {what}: {fix}, e.g. "
        f"{more_points(lo, hi, steps, diverged or hi)} (the curve: {r.run_dir / 'lr_find.png'})"
    )


def more_points(lo: float, hi: float, steps: int, edge: float) -> str:
    """``lr_find`` overrides that put twice :data:`~diag.lr_finder.MIN_POINTS` steps under ``edge`` (where
    the test diverged) if it diverges there again: more steps when ``min_lr`` is a decade or more under
    it already, else ``min_lr`` three decades under it (and more steps if that still leaves too few)."""
    want = 2 * MIN_POINTS

    def steps_for(low: float) -> int:
        return math.ceil(want * math.log(hi / low) / math.log(edge / low)) + 1

    if edge >= 10 * lo:
        return f"lr_find.num_steps={max(steps_for(lo), steps + 1)}"
    low = 10.0 ** math.floor(math.log10(edge) - 3)
    out = f"lr_find.min_lr={low:g}"
    if (steps - 1) * math.log(edge / low) / math.log(hi / low) < want:
        out += f" lr_find.num_steps={steps_for(low)}"
    return out


def method_name(cfg: DictConfig, method: str) -> str:
    """A rule's name as the config spells it (``minimum/10``, not the internal ``min10``)."""
    configured = str(cfg.lr_find.method)
    if ALIASES.get(configured, configured) == method:
        return configured
    return LABELS.get(method, method)


def chosen_name(cfg: DictConfig, result: dict[str, Any]) -> str:
    """The rule that chose, as printed: ``minimum/10``, or ``auto for sgd: descent``."""
    if result.get("rule") == "auto":
        return rule_label(result)
    return method_name(cfg, result["method"])


def _write_scalars(tb_dir: Path, result: dict[str, Any]) -> None:
    """``lr_find/loss``, ``lr_find/smoothed_loss`` and ``lr_find/lr`` against the finder's step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tb_dir))
    try:
        for step, (lr, raw, smooth) in enumerate(
            zip(result["lrs"], result["losses"], result["smoothed_losses"])
        ):
            writer.add_scalar("lr_find/loss", raw, step)
            writer.add_scalar("lr_find/smoothed_loss", smooth, step)
            writer.add_scalar("lr_find/lr", lr, step)
        writer.add_scalar("lr_find/suggested_lr", result["suggested_lr"], 0)
    finally:
        writer.close()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What ``report.json`` keeps of a range test (the curves stay in ``lr_find.json``)."""
    return {
        k: result[k]
        for k in (
            "suggested_lr",
            "method",
            "capped_at",
            "cap_reason",
            "rule",
            "optimizer_family",
            "suggestions",
            "stop_reason",
            "num_steps_run",
            "min_lr",
            "max_lr",
        )
    } | {
        "curve_lr": result.get("curve_lr", result["suggested_lr"]),
        "seconds": result.get("seconds"),
        "verify": _verify_summary(result.get("verify")),
    }


def _verify_summary(verify: dict[str, Any] | None) -> dict[str, Any] | None:
    """The check without each trial's loss and LR curves (``lr_find.json`` keeps those)."""
    if not verify:
        return None
    trials = [{k: v for k, v in t.items() if k not in ("losses", "lrs")} for t in verify["trials"]]
    return {**verify, "trials": trials}


def auto_lr(r: Run) -> dict[str, Any]:
    """``optimizer.lr=auto``: rank 0 finds the LR and every rank sets it on its optimizer, data order in step."""
    result, refused = None, None
    if r.rank == 0:
        try:
            with r.trainer.alone():  # under torchrun the other ranks wait in the broadcast below
                found = find(r)
            refused = unreadable(r, found, trains=True)
        except UserError as exc:
            refused = str(exc)  # said by every rank after the broadcast: none is left waiting in it
        if refused is None:
            log.info(
                "optimizer.lr=auto: the LR range test (%d steps, %s) suggests %.3g (%s): training with it",
                found["num_steps_run"],
                found["stop_reason"],
                found["suggested_lr"],
                chosen_name(r.cfg, found),
            )
            if found.get("verify"):
                log.info("optimizer.lr=auto: the check: %s", check_line(found))
            result = {**summary(found), "plot": "lr_find.png", "data": "lr_find.json"}
    generator = r.state.generator
    result, data_rng, refused = distributed.broadcast_object(
        (result, generator.get_state() if generator else None, refused)
    )
    if refused is not None:
        raise UserError(refused)
    if generator is not None and data_rng is not None:
        generator.set_state(data_rng)
    assert result is not None, "rank 0 found it"
    for group in r.optimizer.param_groups:
        group["lr"] = result["suggested_lr"]
    return result


def task_overrides() -> list[str]:
    """The command-line overrides of this run, when Hydra is running it (empty otherwise)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def train_command(overrides: list[str], lr: float) -> str:
    """``python -m runner <same overrides but mode, optimizer.lr, lr_find.*> optimizer.lr=<lr>``, shell-quoted."""

    def needed(
        override: str,
    ) -> bool:  # the range test's own settings do not shape the training run
        key = override.split("=", 1)[0].lstrip("+~")
        return key not in ("mode", "optimizer.lr") and not key.startswith("lr_find.")

    keep = [o for o in overrides if needed(o)]
    return " ".join(["python -m runner", *(shlex.quote(o) for o in keep), f"optimizer.lr={lr:.3g}"])


def run(r: Run) -> float:
    """``python -m runner mode=lr_find``: the range test on a built run; prints and returns the suggestion."""
    try:
        result = find(r)
    finally:
        r.state.events.close()
    refused = unreadable(r, result)
    if refused is not None:  # lr_find.json and the plot are written: the curve is there to look at
        raise UserError(refused)
    lr = result["suggested_lr"]
    chosen = chosen_name(r.cfg, result)
    others = [
        f"{method_name(r.cfg, k)} {v:.3g}{outside_tested(result, v)}"
        for k, v in result["suggestions"].items()
        if k != result["method"]
    ]
    print(f"suggested lr   {lr:.3g} ({chosen}; the other rules: {', '.join(others)})")
    print(
        f"range test     {result['num_steps_run']} steps from {result['min_lr']:.1e}, {result['stop_reason']}"
    )
    if result.get("verify"):
        print(f"checked        {check_line(result)}")
    print(f"plot           {r.run_dir / 'lr_find.png'}")
    print(f"train with it  {train_command(task_overrides(), lr)}")
    return float(lr)


def check_line(result: dict[str, Any]) -> str:
    """The check in one line: each candidate's score, the pick, the seconds it took."""
    verify = result["verify"]
    cells = ", ".join(
        f"{t['lr']:.2e} " + ("diverged" if t["diverged"] else f"{t['score']:.3g}")
        for t in verify["trials"]
    )
    picked = verify["picked_lr"]
    suggested = verify.get("suggested_lr", picked)
    head = (
        f"{verify['metric']} after {verify['steps']} steps: {cells}"
        f" (the curve rule read {verify['curve_lr']:.3g}; "
    )
    if picked is None:
        tail = "none learned: kept the curve rule's"
    elif suggested != picked:
        tail = f"won {picked:.3g}, suggested {suggested:.3g} between its neighbours"
    else:
        tail = f"suggested {picked:.3g}"
    return f"{head}{tail}; {verify['seconds']:.1f}s)"
