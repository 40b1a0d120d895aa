"""Live diagnosis inside any loop that speaks the hook protocol.

Per step, only device arithmetic: the loss and the global gradient norm are
kept as device scalars (a step with nothing else due returns there, on one
comparison with the next step that has). Every ``scalar_every`` steps those are read
(one host sync); every ``layer_every`` steps the hook measures per-layer
gradient norms and update ratios (one ``_foreach_norm``), and watches
activations on the next forward pass. At epoch ends (at least ``diagnose_every`` steps apart),
and, in epochs longer than that, ``diagnose_every`` steps after the latest diagnosis, the rules in
:mod:`diag.diagnosis` run on what was collected;
changes go to ``events.jsonl``, TensorBoard text and, for critical findings,
one console line. At the end: ``report`` issues and ``summary.png``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diag.activation_hooks import ActivationRecorder
from diag.advice import render_all, renderer
from diag.codes import Issue, advice_of
from diag.diagnosis import diagnose, keep_unresolved
from diag.hooks import FitState, Hook, step_scalar
from diag.run_state import InputProbe, max_dropout, optimizer_settings
from diag.series import RunSeries
from diag.tensorboard import LAYERS_PREFIX, custom_scalars_layout, write_scalars

log = logging.getLogger("diag")

# The early phase (see DiagnosticsHook._early) lasts the first diagnose_every steps, at most this many. A
# larger diagnose_every asks for fewer diagnoses; uncapped, it stretched the phase of a diagnosis and a
# layer sample at every scalar read over the whole of a shorter run: diagnose_every=10**8 took the digits
# MLP's epoch from 0.88 to 0.82 of a hand loop's (+2.1 ms an epoch).
EARLY_STEPS = 50


def weight_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of Linear/Conv layers by module name, input side first (what gradient flow is read on)."""
    return {
        name: m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.weight.requires_grad
    }


def init_scale_ratios(layers: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer: weight std over the He-normal std for its fan-in (PyTorch's default init gives ~0.4).

    A layer with no weights (a fan-in or fan-out of 0, e.g. ``nn.Linear(0, k)`` on empty inputs) has no
    scale to judge and is skipped: its He std is 1/0 and its std that of nothing.
    """
    out = {}
    for name, w in layers.items():
        if w.dim() < 2 or w.numel() == 0:
            continue
        fan_in = w[0].numel()  # (out, in, *kernel): everything but the output dimension
        out[name] = float(w.detach().float().std()) / math.sqrt(2.0 / fan_in)
    return out


def _steps(name: str, value: int) -> int:
    """A cadence of the hook: a whole number >= 1 (0 used to be taken as 1, sampling every step unasked)."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"DiagnosticsHook({name}={value!r}): a whole number >= 1")
    return int(value)


class DiagnosticsHook(Hook):
    """Collects a :class:`RunSeries` during training and diagnoses it as it grows."""

    def __init__(
        self,
        scalar_every: int = 10,
        layer_every: int = 25,
        diagnose_every: int = 50,
        diagnose_gap: float = 0.02,
        histogram_every: int = 0,
        dead_window: int = 4,
        activations: bool = True,
        layer_scalars: bool = True,
        summary_png: bool = True,
        console: bool = True,
        advice: str | Mapping[str, str] = "plain",
        write_report: bool = False,
        every_epoch: bool = False,
    ) -> None:
        """``advice`` says how recommendations name what to change: ``"plain"`` words (the default),
        ``"runner"`` (the runner's overrides; its ``conf/diag/*.yaml`` select it), ``"lightning"``, or
        a table of your own from knob to text (see :mod:`diag.advice`). ``write_report`` writes
        ``report.json``/``report.md`` into ``state.run_dir`` at the fit's end (the runner writes its own).
        ``every_epoch`` diagnoses at every epoch end, however short the epochs: for a reader that acts on
        each epoch's findings (the runner's AutoTrainer and stop_on set it on the hook they read)."""
        self.scalar_every = _steps("scalar_every", scalar_every)
        self.layer_every = _steps("layer_every", layer_every)
        self.diagnose_every = _steps("diagnose_every", diagnose_every)
        # The rules rescan the whole history: on a long run diagnose at most once per this share of the steps
        # so far (a finding then waits at most 2% of the run; the total cost stays O(n log n), not O(n^2)).
        # Step-driven and epoch-end diagnoses keep separate clocks: an epoch end brings new evidence (its
        # validation metrics) even at the step a step-driven diagnosis just ran. Unless every_epoch, epoch-end
        # diagnoses are also at least diagnose_every steps apart (but for the fit's last epoch), and epochs
        # of fewer steps have no step-driven ones: they are diagnosed every few epoch ends (20-step epochs
        # every third), not at each (see _step_driven).
        self.diagnose_gap = float(diagnose_gap)
        self._diagnosed_at = {"step": -(10**9), "epoch": -(10**9)}
        # the step of the latest diagnosis of any kind: a step-driven one waits diagnose_every steps after
        # it, so epochs no longer than that are diagnosed at their ends (they bring the validation too)
        self._diagnosed_step = -(10**9)
        self.every_epoch = bool(every_epoch)
        self.histogram_every = int(histogram_every)
        self.dead_window = _steps("dead_window", dead_window)
        self.watch_activations = activations
        self.layer_scalars = layer_scalars
        self.summary_png = summary_png
        self.console = console
        self.write_report = write_report
        self.advice = renderer(advice)  # an unknown name fails here, not at the first finding
        self.series = RunSeries()
        self._past: list[
            RunSeries
        ] = []  # segments before each reset: the figure shows the whole run
        self.issues: list[Issue] = []
        self.detected_at: dict[str, int] = {}
        self._critical: dict[
            str, Issue
        ] = {}  # each code's first critical finding (kept unless resolved)
        # the last _n steps' loss and gradient norm (device scalars), reduced every scalar_every steps
        self._losses: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []
        self._n = 0
        self._snapshot: list[torch.Tensor] | None = None
        # an out-of-schedule sample: the run's first step, and the step after a finding first appears
        self._sample_at: int | None = None
        # the next step at which this hook does more than keep the step's loss and norm (see _busy_from);
        # 0 makes the next step take the full path, which works it out again
        self._next_busy = 0
        self._first_step = 0
        self._epoch_len = 0
        self._nonfinite_layers: Any = {}.keys()  # layers whose last sampled gradient norm was NaN/Inf
        self._window_samples = 0
        self._dead: dict[str, float] = {}
        self._last_step: int | None = None  # None until on_fit_start: the event order is checked

    # -- set-up --------------------------------------------------------------
    def on_fit_start(self, state: FitState) -> None:
        if not isinstance(state, FitState):
            raise TypeError(
                f"DiagnosticsHook events take a diag.FitState, got {type(state).__name__}"
            )
        if not isinstance(state.model, nn.Module):
            raise TypeError(
                f"FitState.model must be the torch.nn.Module being trained, got {type(state.model).__name__}"
            )
        self._last_step = state.step
        self.layers = weight_layers(state.model)
        self._layer_names = list(self.layers)
        self._weights = list(self.layers.values())
        self.recorder = ActivationRecorder(state.model) if self.watch_activations else None
        self.series.num_classes = state.num_classes
        self.series.planned_steps = state.max_steps
        if state.steps_per_epoch:
            self.series.steps_per_epoch = int(state.steps_per_epoch)
        self.series.layer_width = {name: int(w.shape[0]) for name, w in self.layers.items()}
        if state.step == 0:
            self.series.init_scale_ratio = init_scale_ratios(self.layers)
            if self._weights:  # one read at fit start: what weight decay shrinks from
                norms = torch.stack(torch._foreach_norm([w.detach() for w in self._weights]))
                self.series.initial_weight_norm = float(torch.linalg.vector_norm(norms))
        self._read_settings(state)
        self._input_probe = (
            InputProbe(state.model) if self.series.input_mean is None else None
        )  # the first batch's scale
        if state.writer is not None and state.is_rank_zero:
            measures = self.recorder.measures() if self.recorder is not None else {}
            state.writer.add_custom_scalars(custom_scalars_layout(self._layer_names, measures))
        # the first step is sampled (and its histograms written): a run that breaks before the first
        # scheduled sample still leaves a per-layer trace of how it started
        self._first_step = state.step + 1
        # the epoch's length, for the diagnosis cadence (_step_driven): the loop's, or the first epoch's
        self._epoch_len = int(state.steps_per_epoch or 0)
        self._sample_at = self._first_step
        self._next_busy = 0
        if self.histogram_every:
            self._histograms(state)  # the initial weights, at the step the run starts from
        self._arm_if_next_is_sampled(state.step)

    def _read_settings(self, state: FitState) -> None:
        """The run's settings the cause rules read (weight decay, momentum, dropout): host floats, read at
        fit start and before each diagnosis (a policy may have changed them), never per step."""
        for key, value in optimizer_settings(state.optimizer).items():
            setattr(self.series, key, value)
        self.series.dropout = max_dropout(state.model)

    # -- every step (device arithmetic only) -----------------------------------
    def on_train_batch_end(self, state: FitState) -> None:
        # No device op per step (each costs a fixed launch overhead): the interval's values are reduced in _read_scalars.
        # The contract is checked here with attribute reads only (no device op, no host sync).
        step = state.step
        last = self._last_step
        if last is None:
            raise RuntimeError(
                "DiagnosticsHook.on_train_batch_end was called before on_fit_start: "
                "call hook.on_fit_start(state) once before the first step"
            )
        if not isinstance(step, int) or step <= last:
            raise ValueError(
                f"FitState.step must count optimizer steps and increase with every call, got {step!r} "
                f"after {last}: set state.step += 1 after optimizer.step(), before on_train_batch_end"
            )
        self._last_step = step
        loss, grad_norm = state.loss, state.grad_norm
        if type(loss) is not torch.Tensor or loss.ndim:
            loss = state.loss = step_scalar(loss, "loss")
        if type(grad_norm) is not torch.Tensor or grad_norm.ndim:
            grad_norm = state.grad_norm = step_scalar(grad_norm, "grad_norm")
        self._losses.append(loss)
        self._norms.append(grad_norm)
        self._n += 1
        if step < self._next_busy and not state.step_skipped:
            return  # most steps: nothing is read, sampled or diagnosed at this one or armed for the next
        sampled = self._layer_step(step)
        if state.step_skipped:
            self.series.skipped_steps.append(step)
            if self.series.first_nonfinite_step is None:
                self._locate_nonfinite(state)
                self._sample_at = (
                    step + 1
                )  # the next step's gradients and activations, layer by layer
        if sampled:
            self._sample_layers(state)
        if step % self.scalar_every == 0:
            self._read_scalars(state)
        if (self._step_driven() and step - self._diagnosed_step >= self.diagnose_every) or (
            self._early(step) and (sampled or step % self.scalar_every == 0)
        ):
            self._diagnose(state, "step")
        if self._histogram_step(step):
            self._histograms(state)
        self._arm_if_next_is_sampled(step)
        self._next_busy = self._busy_from(step)

    def _busy_from(self, step: int) -> int:
        """The first step after ``step`` at which the per-step event has more to do than keep the step's loss
        and gradient norm: a scalar read, a layer sample or the arming for one, a histogram or its arming,
        a step-driven diagnosis. Every step of the early phase is (see :meth:`_early`).

        Why: the full check is a dozen attribute reads and calls per step, ~10 us in a training loop's cold
        cache; the steps between (most of them) skip it on one comparison. Anything that moves these steps
        earlier (a finding asks for a sample, a reset) sets ``_next_busy`` to 0; cadence settings changed
        mid-fit apply from the next busy step, at most ``scalar_every`` steps later.
        """
        nxt = step + 1
        if self._early(nxt):
            return nxt
        # a sampled step is busy, and so is the step before it (it arms the sample): for a sample at nxt
        # that is this step, armed already
        samples = [-(-nxt // self.layer_every) * self.layer_every]  # the first multiple from nxt on
        if self._sample_at is not None and self._sample_at >= nxt:
            samples.append(self._sample_at)
        if self.histogram_every:
            samples.append(-(-nxt // self.histogram_every) * self.histogram_every)
        due = [(step // self.scalar_every + 1) * self.scalar_every, *(at - 1 for at in samples)]
        if self._step_driven():  # due already (spaced by the gap): nxt
            due.append(self._diagnosed_step + self.diagnose_every)
        return max(nxt, min(due))

    def _step_driven(self) -> bool:
        """Are there diagnoses between epoch ends (``diagnose_every`` steps after the latest)? For epochs
        longer than ``diagnose_every``, before the first epoch end of a loop that did not give its epoch's
        length, and when a policy reads every epoch end (``every_epoch``). Shorter epochs are diagnosed at
        their ends only, at least ``diagnose_every`` steps apart: one between two of them would run the
        rules (~1 ms in a run) a few steps before the next epoch end brings its validation."""
        return self.every_epoch or not self._epoch_len or self._epoch_len > self.diagnose_every

    def _early(self, step: int) -> bool:
        """The run's first ``diagnose_every`` steps (``EARLY_STEPS`` at most): layers are also sampled at
        every scalar read, and the rules run at every scalar read and layer sample. A fault its settings and first steps already show
        (a blow-up, units dead or saturated from the start, weights decayed away, a vanishing gradient) is
        named within the first tenth of a short run, not at its 50th step. A handful of extra samples and
        diagnoses of a short series, once per fit (from its first step), none in the steps after."""
        return step - self._first_step < min(self.diagnose_every, EARLY_STEPS)

    def _layer_step(self, step: int) -> bool:
        """Are the layers sampled at ``step``?"""
        return (
            step % self.layer_every == 0
            or step == self._sample_at
            or (self._early(step) and step % self.scalar_every == 0)
        )

    def _histogram_step(self, step: int) -> bool:
        return bool(self.histogram_every) and (
            step % self.histogram_every == 0 or step == self._first_step
        )

    def _arm_if_next_is_sampled(self, step: int) -> None:
        """Snapshot weights and attach activation hooks right before a sampled step's forward pass."""
        nxt = step + 1
        if self._layer_step(nxt) or self._histogram_step(nxt):
            self._snapshot = [w.detach().clone() for w in self._weights]
            if self.recorder is not None:
                self.recorder.keep_values = self._histogram_step(nxt)
                self.recorder.attach()

    def _read_scalars(self, state: FitState) -> None:
        if not self._n:
            return
        n = self._n
        values = torch.stack(
            self._losses[-n:] + self._norms[-n:]
        ).tolist()  # one device op, one host read
        finite = [g for g in values[n:] if math.isfinite(g)]  # the mean norm is over finite steps
        loss_sum, gsum, gcount = (
            sum(values[:n]),
            sum(finite),
            len(finite),
        )  # a loss sum keeps its NaN/Inf
        s = self.series
        probe: InputProbe | None = getattr(self, "_input_probe", None)
        if probe is not None and (seen := probe.read()) is not None:
            s.input_mean, s.input_std = seen
            self._input_probe = None
        if s.batch_size is None and state.batch_size:
            s.batch_size = int(state.batch_size)
        if state.step == n and not self._past:  # this interval began at the run's first step
            s.initial_loss = values[0]
        s.step.append(state.step)
        s.loss.append(loss_sum / self._n)
        s.grad_norm.append(gsum / gcount if gcount else math.inf)
        s.lr.append(state.current_lr)
        self._losses, self._norms = [], []
        self._n = 0

    @torch.no_grad()
    def _sample_layers(self, state: FitState) -> None:
        s = self.series
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self._weights]
        if not grads:
            return
        snapshot = self._snapshot
        if snapshot is None:
            norms = list(torch._foreach_norm(grads))
        else:  # the weights before the step, then (in place: the copy is not used again) the step's change
            before = torch._foreach_norm(snapshot)
            torch._foreach_sub_(snapshot, self._weights)
            norms = [*torch._foreach_norm(grads + snapshot), *before]
        values = torch.stack(norms).tolist()  # one host read for all layers
        n = len(grads)
        s.layer_step.append(state.step)
        self._snapshot_read = snapshot is not None
        for name, v in zip(self._layer_names, values[:n]):
            s.layer_grad_norm.setdefault(name, []).append(v)
        if snapshot is not None:
            deltas, sizes = values[n : 2 * n], values[2 * n :]
            for name, d, w in zip(self._layer_names, deltas, sizes):
                s.layer_update_ratio.setdefault(name, []).append(d / w if w > 0 else math.nan)
            total_w = math.sqrt(sum(w * w for w in sizes))
            s.update_ratio.append(
                math.sqrt(sum(d * d for d in deltas)) / total_w if total_w > 0 else math.nan
            )
            s.weight_norm.append(total_w)
            self._snapshot = None
        acts = {}
        if self.recorder is not None:
            self._window_samples += 1
            acts = self.recorder.collect()
            self.recorder.detach()
            window_done = self._window_samples >= self.dead_window
            for name, entry in acts.items():
                if "saturation" in entry:
                    s.layer_saturation.setdefault(name, []).append(entry["saturation"])
                if "dead_fraction" in entry:
                    if window_done:  # a unit is dead only if it stayed silent for the whole window
                        self._dead[name] = entry["dead_fraction"]
                    s.layer_dead_fraction.setdefault(name, []).append(
                        self._dead.get(name, math.nan)
                    )
            if window_done:
                self.recorder.reset_window()
                self._window_samples = 0
        if state.writer is not None and state.is_rank_zero and self.layer_scalars:
            scalars: dict[str, float] = {}  # one TensorBoard event for all of them
            if self._snapshot_read:
                scalars["train/update_ratio"] = s.update_ratio[-1]
            nonfinite = {}
            for name in self._layer_names:
                g = s.layer_grad_norm[name][-1]
                if math.isfinite(g):
                    scalars[f"{LAYERS_PREFIX}grad_norm/{name}"] = g
                else:  # TensorBoard's charts cannot draw Inf/NaN: said in words instead of a gap
                    nonfinite[name] = g
                if name in s.layer_update_ratio:
                    scalars[f"{LAYERS_PREFIX}update_ratio/{name}"] = s.layer_update_ratio[name][-1]
            if nonfinite and nonfinite.keys() != self._nonfinite_layers:
                listed = ", ".join(f"{name} ({g})" for name, g in nonfinite.items())
                state.writer.add_text(
                    f"{LAYERS_PREFIX}nonfinite_grads",
                    f"step {state.step}: non-finite gradient norm in {listed}",
                    state.step,
                )
            self._nonfinite_layers = nonfinite.keys()
            for name in acts:
                if name in self._dead:
                    scalars[f"{LAYERS_PREFIX}dead_fraction/{name}"] = s.layer_dead_fraction[name][
                        -1
                    ]
                if name in s.layer_saturation:
                    scalars[f"{LAYERS_PREFIX}saturation/{name}"] = s.layer_saturation[name][-1]
            write_scalars(state.writer, scalars, state.step)

    @torch.no_grad()
    def _locate_nonfinite(self, state: FitState) -> None:
        """On the first skipped step (rare: the loop already synced), find the first layer with NaN/Inf."""
        self.series.first_nonfinite_step = state.step
        for name, w in self.layers.items():
            if w.grad is not None and not bool(torch.isfinite(w.grad).all()):
                self.series.first_nonfinite_layer = name
                break

    def _histograms(self, state: FitState) -> None:
        """Weights, gradients and (when the step's forward pass was watched) activations, per layer."""
        values = {}
        if self.recorder is not None:
            values, self.recorder.values = self.recorder.values, {}
            self.recorder.keep_values = False
        if state.writer is None or not state.is_rank_zero:
            return
        tensors: list[tuple[str, str, torch.Tensor | None]]
        tensors = [("weights", name, w) for name, w in self.layers.items()]
        tensors += [("grads", name, w.grad) for name, w in self.layers.items()]
        tensors += [("activations", name, v) for name, v in values.items()]
        for tag, name, t in tensors:
            if t is None:
                continue
            v = t.detach().float().flatten()
            v = v[torch.isfinite(v)]
            if v.numel():
                state.writer.add_histogram(f"{LAYERS_PREFIX}{tag}/{name}", v.cpu(), state.step)

    # -- epochs ----------------------------------------------------------------
    def _check_started(self, event: str) -> None:
        if self._last_step is None:
            raise RuntimeError(
                f"DiagnosticsHook.{event} was called before on_fit_start: "
                "call hook.on_fit_start(state) once before the first step"
            )

    def on_validation_end(self, state: FitState) -> None:
        self._check_started("on_validation_end")
        s, m = self.series, state.metrics
        if not any(k in m for k in ("val/loss", "val/acc", "train/loss", "train/acc")):
            raise ValueError(
                f"FitState.metrics has none of 'val/loss', 'val/acc', 'train/loss', 'train/acc' "
                f"(it holds {sorted(m)}): put the validation mean loss under 'val/loss' and accuracy "
                "(0-1) under 'val/acc' before on_validation_end"
            )
        for key in ("val/loss", "val/acc", "train/loss", "train/acc"):
            if key in m and not isinstance(m[key], (float, int)):
                raise TypeError(
                    f"FitState.metrics[{key!r}] must be a host float, got {type(m[key]).__name__}: "
                    "pass float(value)"
                )
        s.epoch_step.append(state.step)
        s.epoch_train_loss.append(m.get("train/loss", math.nan))
        s.epoch_train_acc.append(m.get("train/acc", math.nan))
        if "val/loss" in m:
            if not s.epoch_val_loss:  # given from this epoch on: the epochs before carry its value
                s.epoch_val_loss.extend([m["val/loss"]] * (len(s.epoch_step) - 1))
            s.epoch_val_loss.append(m["val/loss"])
        elif s.epoch_val_loss:  # no longer in the metrics: the last one carries over
            s.epoch_val_loss.append(s.epoch_val_loss[-1])
        # never given: no validation-loss series (as TrainingHistory and the analyzer have it); NaN
        # placeholders would read as NaN losses, which the diagnosis calls a blow-up
        s.epoch_val_acc.append(m.get("val/acc", math.nan))
        s.epoch_lr.append(state.current_lr)

    def on_epoch_end(self, state: FitState) -> None:
        self._check_started("on_epoch_end")
        if not self._epoch_len:  # a loop that did not say: its first epoch's steps (a rollback
            # before its end, which moved the step back: the next epoch's)
            self._epoch_len = max(state.step - self._first_step + 1, 0)
            self._next_busy = 0  # the step-driven diagnoses may have stopped (see _step_driven)
        self._read_scalars(state)
        self._diagnose(state, "epoch")

    # -- diagnosis ---------------------------------------------------------------
    def _diagnose(self, state: FitState, when: str = "final") -> None:
        """Run the rules (``when``: "step", "epoch" or "final"; the last always runs)."""
        if when != "final":
            gap = self.diagnose_gap * state.step
            last = bool(state.max_steps) and state.step >= state.max_steps
            if when == "epoch" and not (self.every_epoch or last):
                # epoch ends at least diagnose_every steps apart (the last always): a short epoch's every
                # few (20-step epochs every third), a longer one's each; the rules cost ~1 ms in a run,
                # a 20-step epoch ~20 ms
                gap = max(gap, self.diagnose_every)
            if state.step - self._diagnosed_at[when] < gap:
                return
            self._diagnosed_at[when] = state.step
        self._diagnosed_step = state.step
        self._read_settings(state)
        issues = keep_unresolved(diagnose(self.series), self._critical, self.series)
        for issue in issues:
            if issue.severity == "critical" and issue.code not in self._critical:
                self._critical[issue.code] = Issue(**issue.to_dict())
        for issue in issues:
            issue.recommendations = render_all(advice_of(issue), self.advice)
        before = {i.code: i.severity for i in self.issues}
        after = {i.code: i.severity for i in issues}
        for issue in issues:
            self.detected_at.setdefault(issue.code, state.step)
        self.issues = issues
        state.issues = [self._as_dict(i) for i in issues]
        if before == after:
            return
        added = [c for c in after if c not in before]
        if added:
            self._sample_at = state.step + 1  # a per-layer trace of the state the finding describes
            self._next_busy = 0
        state.events.write(
            "diagnosis",
            step=state.step,
            epoch=state.epoch,
            added=added,
            removed=[c for c in before if c not in after],
            issues=state.issues,
        )
        if state.writer is not None and state.is_rank_zero:
            state.writer.add_text("diagnosis", self.markdown(), state.step)
        if self.console and state.is_rank_zero:
            for issue in issues:
                if issue.code in added:
                    line = (
                        f"diag: {issue.code} ({issue.severity}) at step {state.step}: {issue.evidence}. "
                        f"Try: {issue.recommendations[0]}"
                    )
                    (log.warning if issue.severity == "critical" else log.info)(line)

    def reset(self, step: int) -> None:
        """Start a fresh series at ``step``, keeping ``num_classes`` and ``planned_steps``.

        For a policy that changed the run (rolled it back, re-tuned its LR): the
        history before the change describes a run that no longer exists, and
        would re-diagnose the symptom that was just treated.
        """
        s = self.series
        self._past.append(s)
        self.series = RunSeries(
            num_classes=s.num_classes,
            planned_steps=s.planned_steps,
            epoch_offset=s.epoch_offset + len(s.epoch_step),
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            decoupled_weight_decay=s.decoupled_weight_decay,
            dropout=s.dropout,
            batch_size=s.batch_size,
            steps_per_epoch=s.steps_per_epoch,
            initial_weight_norm=s.initial_weight_norm,
            input_mean=s.input_mean,
            input_std=s.input_std,
        )  # evidence names real epochs; the run's settings carry over
        self.issues = []
        self.detected_at = {}
        self._critical = {}
        self._losses, self._norms = [], []
        self._n = 0
        self._snapshot = None
        self._dead = {}
        self._window_samples = 0
        if self._last_step is not None:  # a rolled-back loop may count on from an earlier step
            self._last_step = min(self._last_step, step - 1)
        # and its next diagnoses are spaced from the reset, not from a later step it will count up to again
        self._diagnosed_step = min(self._diagnosed_step, step)
        self._diagnosed_at = {k: min(v, step) for k, v in self._diagnosed_at.items()}
        recorder: ActivationRecorder | None = getattr(self, "recorder", None)  # set by on_fit_start
        if recorder is not None:
            recorder.reset_window()
        self._next_busy = 0
        if hasattr(
            self, "_weights"
        ):  # the repaired run's first step is sampled, as a run's first step is
            self._sample_at = step + 1
            self._arm_if_next_is_sampled(step)

    def _as_dict(self, issue: Issue) -> dict[str, Any]:
        d = issue.to_dict()
        d["detected_step"] = self.detected_at.get(issue.code, issue.first_step)
        return d

    def markdown(self) -> str:
        if not self.issues:
            return "**healthy**: no issues"
        return "\n".join(
            f"- **{i.code}** ({i.severity}, step {i.first_step}): {i.evidence}" for i in self.issues
        )

    def on_fit_end(self, state: FitState) -> None:
        self._check_started("on_fit_end")
        self._read_scalars(state)
        self._diagnose(state, "final")
        if self.recorder is not None:
            self.recorder.detach()
        probe: InputProbe | None = getattr(self, "_input_probe", None)
        if probe is not None:
            probe.remove()
        if state.writer is not None and state.is_rank_zero:
            state.writer.add_text("diagnosis/final", self.markdown(), state.step)
        if self.write_report and state.run_dir is not None and state.is_rank_zero:
            from diag.report import write_report

            write_report(Path(state.run_dir), self.report(state))
        if self.summary_png and state.run_dir is not None and state.is_rank_zero:
            from diag.summary_plot import plot_summary

            plot_summary(
                RunSeries.concat([*self._past, self.series]),
                Path(state.run_dir) / "summary.png",
                self.issues,
                annotations=state.annotations,
                final_lr=state.current_lr,
            )

    def report(self, state: FitState) -> dict[str, Any]:
        """The ``report.json`` shape of the diagnosis so far, with the fit's headline numbers."""
        from diag.report import build_report

        m, s = state.metrics, self.series
        finite_val = [v for v in s.epoch_val_loss if math.isfinite(v)]
        metrics = {
            "final_train_loss": s.loss[-1] if s.loss else m.get("train/loss"),
            "final_val_loss": m.get("val/loss"),
            "best_val_loss": min(finite_val) if finite_val else None,
            "final_val_acc": m.get("val/acc"),
            "steps": state.step,
            "skipped_steps": len(s.skipped_steps),
        }
        issues = (
            state.issues if state.issues is not None else [self._as_dict(i) for i in self.issues]
        )
        return build_report(issues, metrics, actions=state.actions, completed=True)

    def state_dict(self) -> dict[str, Any]:
        """The series so far (every checkpoint, every epoch: list copies, not ``asdict``'s deep copy per float)."""
        return {
            "series": self.series.to_dict(),
            "past": [p.to_dict() for p in self._past],
            "detected_at": dict(self.detected_at),
            "issues": [i.to_dict() for i in self.issues],
            "critical": [i.to_dict() for i in self._critical.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "series" in state:
            self.series = RunSeries(**state["series"])
        self._past = [RunSeries(**p) for p in state.get("past", [])]
        self.detected_at = dict(state.get("detected_at", {}))
        # what was already announced: a resumed run says only what is new (no second console line or event)
        self.issues = [Issue(**i) for i in state.get("issues", [])]
        self._critical = {i["code"]: Issue(**i) for i in state.get("critical", [])}
