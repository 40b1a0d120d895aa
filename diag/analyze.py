"""``diag analyze PATH``: why a finished (or running) run is sick and what to change.

Reads a run directory, a per-epoch JSONL file or TensorBoard logs through
:mod:`diag.readers`, diagnoses the series with :func:`diag.diagnosis.diagnose`
(the same rules the live run uses) and prints either a human report (learning
rate, loss, accuracy, gradient norms, weight updates, then the diagnosis) or,
with ``--json``, the ``report.json`` shape. ``--fail-on`` turns the status into
an exit code for CI; a path that cannot be analyzed exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from diag.advice import RENDERERS, Advice, Renderer, render, render_all, runner_table
from diag.after_repair import attempt_note, final_attempt_dir, last_repair_step, series_after
from diag.codes import SEVERITY_RANK, Issue, advice_of
from diag.diagnosis import diagnose, run_rules
from diag.readers import ReadError, ReadResult, attempt_number, parse_tag_map, read_path, tag_roles
from diag.report import action_line, build_report

EXIT_FAIL = 1  # the status reached --fail-on
EXIT_USAGE = 2  # nothing could be analyzed: missing path, no data, bad --tags
FAIL_LEVEL = {"warning": 1, "critical": 2}
STATUS_LEVEL = {"healthy": 0, "warning": 1, "critical": 2}


# -- numbers -----------------------------------------------------------------
def _finite(values: list[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def _fmt(v: float | None, spec: str = ".4g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def _first_nonfinite(values: list[float]) -> int | None:
    for i, v in enumerate(values):
        if not math.isfinite(v):
            return i
    return None


def _at(steps: list[int], i: int) -> int | None:
    return steps[i] if 0 <= i < len(steps) else None


def _stats(values: list[float]) -> dict[str, float | None]:
    f = _finite(values)
    if not f.size:
        return {"initial": None, "final": None, "min": None, "median": None, "max": None}
    return {
        "initial": float(np.median(f[:3])),
        "final": float(f[-1]),
        "min": float(f.min()),
        "median": float(np.median(f)),
        "max": float(f.max()),
    }


# -- what changed in the learning rate --------------------------------------
def lr_changes(lrs: list[float]) -> list[tuple[int, float, float]]:
    """(index, before, after) wherever the LR changed by more than a rounding error."""
    out = []
    for i in range(1, len(lrs)):
        a, b = lrs[i - 1], lrs[i]
        if math.isfinite(a) and math.isfinite(b) and abs(b - a) > 1e-9 * max(abs(a), abs(b), 1e-30):
            out.append((i, a, b))
    return out


def _lr_source(r: ReadResult) -> tuple[list[int], list[float], str]:
    s = r.series
    if len(s.epoch_lr) >= 2:
        return s.epoch_step, s.epoch_lr, "epoch"
    return s.step, s.lr, "step"


def _where(unit: str, steps: list[int], i: int) -> str:
    step = _at(steps, i)
    return f"epoch {i + 1} (step {step})" if unit == "epoch" else f"step {step}"


def lr_section(r: ReadResult) -> list[str]:
    steps, lrs, unit = _lr_source(r)
    f = _finite(lrs)
    if not f.size:
        return ["  no learning-rate values recorded"]
    changes = lr_changes(lrs)
    count = f"{len(lrs)} {unit}s"
    if not changes:
        return [f"  constant at {f[0]:.3g} over {count}: never reduced"]
    lines = [
        f"  initial {f[0]:.3g}, peak {f.max():.3g}, final {f[-1]:.3g} "
        f"(final/initial x{f[-1] / f[0]:.3g}) over {count}"
        if f[0] > 0
        else f"  initial {f[0]:.3g}, peak {f.max():.3g}, final {f[-1]:.3g} over {count}"
    ]
    cuts = [c for c in changes if c[2] < c[1]]
    total = steps[-1] if steps else 0
    if len(changes) <= 8:
        for i, a, b in changes:
            verb = "reduced" if b < a else "raised"
            lines.append(
                f"  {verb} at {_where(unit, steps, i)}: {a:.3g} -> {b:.3g} (x{b / a:.3g})"
                if a > 0
                else f"  {verb} at {_where(unit, steps, i)}: {a:.3g} -> {b:.3g}"
            )
    else:
        lines.append(
            f"  changed at {len(changes)} points (a schedule); "
            f"{len(cuts)} reductions, {len(changes) - len(cuts)} increases"
        )
    if cuts:
        i = cuts[0][0]
        at = _at(steps, i)
        share = f" ({at / total:.0%} of the run)" if at is not None and total > 0 else ""
        lines.append(f"  first reduced at {_where(unit, steps, i)}{share}")
    else:
        lines.append("  never reduced")
    return lines


# -- loss and accuracy -------------------------------------------------------
def _loss_line(label: str, values: list[float], steps: list[int], unit: str) -> list[str]:
    f = _finite(values)
    lines = []
    if f.size:
        best_i = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
        change = f"{(f[-1] - f[0]) / abs(f[0]):+.1%}" if f[0] != 0 else "n/a"
        lines.append(
            f"  {label}: initial {f[0]:.4g}, final {f[-1]:.4g}, best {f.min():.4g} at "
            f"{_where(unit, steps, best_i)}, change {change}"
        )
    bad = _first_nonfinite(values)
    if bad is not None:
        n = len(values) - len(f)
        lines.append(
            f"  {label}: {n} non-finite value(s), first {values[bad]} at {_where(unit, steps, bad)}"
        )
    return lines


def _plateau_line(values: list[float], unit: str, label: str) -> str | None:
    """How long since the best value, and how much the recent window improved (numbers, not a verdict)."""
    a = np.asarray(values, dtype=float)
    if a.size < 3 or not np.isfinite(a).any():
        return None
    best_i = int(np.nanargmin(np.where(np.isfinite(a), a, np.nan)))
    since = a.size - 1 - best_i
    w = min(5, a.size - 1)
    start, end = a[-w - 1], a[-1]
    recent = (
        f"{(end - start) / abs(start):+.1%}"
        if math.isfinite(start) and math.isfinite(end) and start
        else "n/a"
    )
    when = f"at the last {unit}" if since == 0 else f"{since} {unit}(s) before the end"
    return f"  plateau check ({label}): best {when}; change over the last {w} {unit}(s) {recent}"


def loss_section(r: ReadResult) -> list[str]:
    s = r.series
    lines: list[str] = []
    if s.epoch_train_loss or s.epoch_val_loss:
        lines += _loss_line("train", s.epoch_train_loss, s.epoch_step, "epoch")
        lines += _loss_line("val  ", s.epoch_val_loss, s.epoch_step, "epoch")
        plateau = _plateau_line(
            s.epoch_val_loss or s.epoch_train_loss,
            "epoch",
            "validation loss" if s.epoch_val_loss else "training loss",
        )
    else:
        plateau = None
    if s.loss and (not s.epoch_train_loss or len(s.loss) > len(s.epoch_train_loss)):
        lines += _loss_line("train (sampled steps)", s.loss, s.step, "step")
        if plateau is None:
            plateau = _plateau_line(s.loss, "sample", "training loss")
    if plateau:
        lines.append(plateau)
    if s.num_classes:
        lines.append(f"  chance level: ln({s.num_classes}) = {math.log(s.num_classes):.4g}")
    return lines or ["  no loss values recorded"]


def _acc_line(label: str, values: list[float], steps: list[int]) -> str | None:
    f = _finite(values)
    if not f.size:
        return None
    best_i = int(np.nanargmax(np.where(np.isfinite(values), values, np.nan)))
    return (
        f"  {label}: initial {f[0]:.4f}, final {f[-1]:.4f}, best {f.max():.4f} at "
        f"{_where('epoch', steps, best_i)}"
    )


def accuracy_section(r: ReadResult) -> list[str]:
    s = r.series
    lines = [
        x
        for x in (
            _acc_line("train", s.epoch_train_acc, s.epoch_step),
            _acc_line("val  ", s.epoch_val_acc, s.epoch_step),
        )
        if x
    ]
    test = r.metrics.get("test_acc")
    if isinstance(test, (int, float)):
        lines.append(f"  test : {test:.4f} (from report.json)")
    if s.num_classes and lines:
        lines.append(f"  chance level: 1/{s.num_classes} = {1 / s.num_classes:.4f}")
    return lines or ["  no accuracy values recorded"]


# -- gradients and weights ---------------------------------------------------
def gradient_section(r: ReadResult) -> list[str]:
    s = r.series
    lines = []
    if s.grad_norm:
        st = _stats(s.grad_norm)
        lines.append(
            f"  global norm over {len(s.grad_norm)} samples: initial {_fmt(st['initial'])}, "
            f"final {_fmt(st['final'])}, min {_fmt(st['min'])}, median {_fmt(st['median'])}, "
            f"max {_fmt(st['max'])}"
        )
        initial, final, peak = st["initial"], st["final"], st["max"]
        if initial and peak is not None and final is not None:  # _stats sets final and max together
            lines.append(
                f"  growth: max/initial x{peak / initial:.3g}, final/initial x{final / initial:.3g}"
            )
        bad = _first_nonfinite(s.grad_norm)
        if bad is not None:
            lines.append(
                f"  non-finite gradient norm in {len(s.grad_norm) - _finite(s.grad_norm).size} "
                f"sample(s), first at step {_at(s.step, bad)}"
            )
    if r.epoch_grad_min or r.epoch_grad_max:
        mins, maxs = _finite(r.epoch_grad_min), _finite(r.epoch_grad_max)
        if mins.size and maxs.size:
            lines.append(
                f"  per-batch norm across epochs: smallest {mins.min():.4g}, largest {maxs.max():.4g}; "
                f"last epoch {mins[-1]:.4g} .. {maxs[-1]:.4g}"
            )
    if s.layer_grad_norm:
        names = list(s.layer_grad_norm)
        med = {
            n: float(np.median(v)) if (v := _finite(s.layer_grad_norm[n])).size else math.nan
            for n in names
        }
        shown = names if len(names) <= 8 else [*names[:4], *names[-4:]]
        lines.append(
            "  per layer (median): "
            + ", ".join(f"{n} {_fmt(med[n], '.3g')}" for n in shown)
            + (f" ({len(names) - 8} more)" if len(names) > 8 else "")
        )
        first, last = med[names[0]], med[names[-1]]
        if len(names) >= 2 and math.isfinite(first) and math.isfinite(last) and last > 0:
            lines.append(
                f"  first/last layer norm ratio: {first / last:.3g} ({names[0]} vs {names[-1]})"
            )
    if s.skipped_steps:
        lines.append(
            f"  skipped steps (non-finite gradients): {len(s.skipped_steps)}, "
            f"first at step {min(s.skipped_steps)}"
        )
    if s.first_nonfinite_layer:
        lines.append(
            f"  first non-finite gradient in layer {s.first_nonfinite_layer} "
            f"at step {s.first_nonfinite_step}"
        )
    return lines or ["  no gradient norms recorded"]


def weights_section(r: ReadResult) -> list[str]:
    s = r.series
    lines = []
    if s.epoch_weight_update:
        st = _stats(s.epoch_weight_update)
        lines.append(
            f"  per-epoch change |dw|/|w|: first {_fmt(_finite(s.epoch_weight_update)[0] if st['min'] is not None else None)}, "
            f"final {_fmt(st['final'])}, min {_fmt(st['min'])}, median {_fmt(st['median'])}"
        )
    if s.update_ratio:
        st = _stats(s.update_ratio)
        lines.append(
            f"  per-step update ratio: median {_fmt(st['median'])}, min {_fmt(st['min'])}, "
            f"max {_fmt(st['max'])}"
        )
    if s.layer_update_ratio:
        med = {
            n: float(np.median(f))
            for n, v in s.layer_update_ratio.items()
            if (f := _finite(v)).size
        }
        if med:
            lo = min(med, key=med.__getitem__)
            hi = max(med, key=med.__getitem__)
            lines.append(f"  per layer: smallest {lo} {med[lo]:.3g}, largest {hi} {med[hi]:.3g}")
    for label, d in (
        ("dead units", s.layer_dead_fraction),
        ("saturated units", s.layer_saturation),
    ):
        last = {n: float(f[-1]) for n, v in d.items() if (f := _finite(v)).size}
        if last:
            worst = max(last, key=last.__getitem__)
            lines.append(f"  {label}: worst layer {worst} {last[worst]:.0%} at the last sample")
    return lines or ["  no weight-update values recorded"]


# -- the report --------------------------------------------------------------
def compute_metrics(r: ReadResult) -> dict[str, Any]:
    """Headline numbers: the run's own report.json metrics, then what the series show."""
    s = r.series
    metrics: dict[str, Any] = dict(r.metrics)
    train = s.epoch_train_loss or s.loss
    tf, vf = _finite(train), _finite(s.epoch_val_loss)
    steps, lrs, _ = _lr_source(r)
    lf = _finite(lrs)
    gn = _stats(s.grad_norm)
    computed = {
        "epochs": len(s.epoch_step) or None,
        "steps": max([0, *s.step[-1:], *s.epoch_step[-1:], *s.layer_step[-1:]]) or None,
        "initial_train_loss": float(tf[0]) if tf.size else None,
        "final_train_loss": float(train[-1]) if train else None,
        "best_train_loss": float(tf.min()) if tf.size else None,
        "final_val_loss": float(s.epoch_val_loss[-1]) if s.epoch_val_loss else None,
        "best_val_loss": float(vf.min()) if vf.size else None,
        "final_train_acc": float(s.epoch_train_acc[-1]) if s.epoch_train_acc else None,
        "final_val_acc": float(s.epoch_val_acc[-1]) if s.epoch_val_acc else None,
        "best_val_acc": float(_finite(s.epoch_val_acc).max())
        if _finite(s.epoch_val_acc).size
        else None,
        "initial_lr": float(lf[0]) if lf.size else None,
        "final_lr": float(lf[-1]) if lf.size else None,
        "lr_reductions": sum(1 for _, a, b in lr_changes(lrs) if b < a) if lf.size else None,
        "initial_grad_norm": gn["initial"],
        "final_grad_norm": gn["final"],
        "max_grad_norm": gn["max"],
        "nonfinite_loss_values": (len(train) - int(tf.size)) if train else None,
        "skipped_steps": len(s.skipped_steps),
    }
    for key, value in computed.items():
        if value is not None:
            metrics[key] = value
    return metrics


LIGHTNING_TAGS = ("train_loss", "train_loss_step", "train_loss_epoch", "val_loss", "val_acc")
RUNNER_TAGS = ("train/lr", "train/grad_norm")


def advice_for(r: ReadResult) -> str:
    """Whose words the recommendations use: the runner's for its run directories and files, Lightning's
    for logs with Lightning's tag names, plain words for anything else (Hugging Face, a hand loop)."""
    if r.kind in ("run_dir", "jsonl"):
        return "runner"
    tags = set(r.tags_used.values())
    if tags & set(LIGHTNING_TAGS) or any(t.startswith("lr-") for t in tags):
        return "lightning"
    if "train/learning_rate" in tags or "eval/loss" in tags:
        return "plain"
    if tags & set(RUNNER_TAGS) and "train/loss" in tags:
        return "runner"
    return "plain"


# Below these the LR itself explains a loss that does not move (adaptive optimizers take steps of about
# the LR; plain SGD takes steps of LR x gradient).
LOW_LR = {"adaptive": 1e-5, "other": 1e-3}
_ADAPTIVE = ("adam", "rmsprop", "adagrad", "adadelta", "adafactor", "lion", "nadam", "radam")
GRADIENT_FLOW = Advice(
    "Check that gradients reach the early layers: a non-saturating activation{activation}, biases "
    "near zero{bias_init}",
    {"activation": "relu", "bias_init": "0"},
)


def _peak_lr(r: ReadResult) -> float | None:
    values = [v for v in (r.series.lr or r.series.epoch_lr) if math.isfinite(v) and v > 0]
    return max(values) if values else None


def flat_at_chance_without_weights(r: ReadResult, found: list[Issue]) -> list[Issue]:
    """Logs without weight or per-layer statistics cannot show an LR too low: only the LR can.

    ``SLOW_CONVERGENCE`` ("raise the LR") rests on weights that barely move; where the logs hold no
    update ratios or layer statistics (other tools' logs), a loss flat at ``ln(k)`` under an ordinary
    LR is read as what it is, a model stuck at chance (gradients not reaching the weights, or labels
    that do not match the inputs), and the finding says the logs cannot tell which.
    """
    s = r.series
    slow = next((i for i in found if i.code == "SLOW_CONVERGENCE"), None)
    if slow is None or s.update_ratio or s.layer_grad_norm or s.layer_update_ratio:
        return found
    if any(math.isfinite(v) for v in s.epoch_weight_update):
        return found
    lr = _peak_lr(r)
    if lr is None or not s.num_classes:
        return found
    lr_tag = r.tags_used.get("lr", "")
    kind = "adaptive" if any(a in lr_tag.lower() for a in _ADAPTIVE) else "other"
    if lr < LOW_LR[kind]:
        return found
    stuck = next((i for i in run_rules(s) if i.code == "STUCK_AT_CHANCE"), None)
    if stuck is None:
        return found
    stuck.severity = max(stuck.severity, slow.severity, key=lambda v: SEVERITY_RANK[v])
    stuck.evidence += (
        f"; the LR ({lr:.3g}) is not low, so the gradients do not reach the weights (saturating or dead "
        "units) or the labels do not match the inputs: these logs hold no per-layer statistics to tell "
        "which (diag's DiagnosticsCallback or DiagnosticsHook records them)"
    )
    stuck.recommendations = []
    return [stuck if i is slow else i for i in found]


def analyze(r: ReadResult, advice: str | None = None) -> dict[str, Any]:
    """Diagnose the series and assemble the report.json-shaped dict (recommendations in ``advice``'s words)."""
    table: str | Renderer = advice_for(r) if advice in (None, "auto") else advice
    if table == "runner" and r.model_config:  # only the overrides the run's model has
        table = runner_table(r.model_config)
    # a run the AutoTrainer repaired is diagnosed as it left it (as its live diagnosis was)
    repaired = last_repair_step(r.actions, attempt_number(Path(r.path)) or 0)
    series = r.series if repaired is None else series_after(r.series, repaired)
    found = flat_at_chance_without_weights(r, diagnose(series))
    for issue in found:
        issue.recommendations = render_all(advice_of(issue), table)
        if issue.code == "STUCK_AT_CHANCE" and "per-layer statistics" in issue.evidence:
            issue.recommendations.insert(0, render(GRADIENT_FLOW, table))
    issues = [i.to_dict() for i in found]
    return build_report(
        issues,
        compute_metrics(r),
        actions=r.actions,
        input={
            "path": str(r.path),
            "kind": r.kind,
            "read": r.read,
            "skipped": r.skipped,
            "notes": r.notes,
            "tags": r.tags_used,
            "diagnosed_after_step": repaired,
        },
    )


def render_human(r: ReadResult, report: dict[str, Any]) -> str:
    """The report for people: sections in the order a debugging session asks its questions."""
    kind = {"run_dir": "run directory", "jsonl": "JSONL file", "tensorboard": "TensorBoard logs"}[
        r.kind
    ]
    out = [f"Analyzing {kind}: {r.path}"]
    out += [f"  read {x}" for x in r.read] + [f"  {n}" for n in r.notes]
    if r.series.num_classes and not any(n.startswith("classes: ") for n in r.notes):
        out.append(f"  classes: {r.series.num_classes}")
    for title, lines in (
        ("LEARNING RATE", lr_section(r)),
        ("LOSS", loss_section(r)),
        ("ACCURACY", accuracy_section(r)),
        ("GRADIENT NORMS", gradient_section(r)),
        ("WEIGHT UPDATES", weights_section(r)),
    ):
        out += ["", title, *lines]
    issues = report["issues"]
    out += ["", f"DIAGNOSIS: {report['status'].upper()}"]
    after = (report.get("input") or {}).get("diagnosed_after_step")
    if after is not None:
        out.append(
            f"  the run as the AutoTrainer left it: steps after its last repair (step {after}), "
            "as its live diagnosis read them"
        )
    if not issues:
        out.append("  no issues found")
    # the series analyzed are one attempt's (the top directory holds the first): its actions, in step order
    own = attempt_number(Path(r.path)) or 0
    acted = sorted(
        (
            a
            for a in r.actions
            if a.get("action") != "give_up"
            and isinstance(a.get("step"), int)
            and a.get("attempt", 0) == own
        ),
        key=lambda a: a["step"],
    )
    for issue in issues:
        where = f" [{issue['layer']}]" if issue.get("layer") else ""
        out.append(
            f"  {issue['severity'].upper():8} {issue['code']}{where} (first seen at step "
            f"{issue['first_step']}): {issue['evidence']}"
        )
        same = next((a for a in acted if a.get("code") == issue["code"]), None)
        # an action resets the live diagnosis: a finding already there when it acted was acted on too
        later = next((a for a in acted if a["step"] >= issue["first_step"]), None)
        if same is not None:
            out.append(
                f"           the AutoTrainer treated it at step {same['step']} ({same.get('action')}): "
                "see AUTOTRAINER below"
            )
        elif later is not None:
            out.append(
                f"           present when the AutoTrainer acted at step {later['step']} ({later.get('action')} "
                f"for {later.get('code')}): see AUTOTRAINER below"
            )
    live = r.live_report
    if isinstance(live, dict) and isinstance(live.get("status"), str):
        codes = (
            [i.get("code") for i in live.get("issues", []) if isinstance(i, dict)]
            if isinstance(live.get("issues"), list)
            else []
        )
        out.append(
            f"  (the run's own report.json says: {live['status']}"
            + (f": {', '.join(str(c) for c in codes)}" if codes else "")
            + ")"
        )
    # a run stop_on ended (behind the sweep's best, beyond repair): its logs alone may read healthy
    stopped = live.get("stop_reason") if isinstance(live, dict) and live.get("stopped") else None
    if isinstance(stopped, str) and stopped:
        out.append(f"  (stopped early: {stopped})")
    recs: list[str] = []
    for issue in sorted(issues, key=lambda i: -SEVERITY_RANK.get(i["severity"], 0)):
        for rec in issue.get("recommendations", []):
            if rec not in recs:
                recs.append(rec)
    out += ["", "RECOMMENDATIONS"]
    idle = (
        "  none from these logs: it was stopped early (above)" if stopped else "  none: keep going"
    )
    out += [f"  - {rec}" for rec in recs] or [idle]
    if r.actions:  # what was already changed, so the recommendations above are not applied twice
        out += ["", "AUTOTRAINER (what it already changed in this run)"]
        out += [f"  - {action_line(a)}" for a in r.actions]
        at = live.get("autotrainer") if isinstance(live, dict) else None
        final = at.get("final_attempt") if isinstance(at, dict) else None
        if isinstance(final, str) and final not in (".", ""):
            out.append(
                f"  the series above are the first attempt's; the final one is {final}: "
                f"python -m diag analyze {Path(r.path) / final}"
            )
    return "\n".join(out)


# -- CLI ---------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``analyze`` on the ``diag`` command's subparsers."""
    p = subparsers.add_parser(
        "analyze",
        help="diagnose a run directory, a JSONL file or TensorBoard logs",
        description="Diagnose a finished or running training run: learning rate, loss, accuracy, "
        "gradients, weight updates, then issues and what to change.",
    )
    p.add_argument(
        "path", help="run directory, per-epoch JSONL file, or folder of TensorBoard event files"
    )
    p.add_argument(
        "--json", action="store_true", help="print the report.json shape instead of text"
    )
    p.add_argument(
        "--fail-on",
        choices=sorted(FAIL_LEVEL),
        default=None,
        help="exit 1 when the status reaches this level (for CI)",
    )
    p.add_argument(
        "--tags",
        default="",
        metavar="ROLE=TAG,...",
        help="which TensorBoard tag plays which role; roles: " + ", ".join(tag_roles()),
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="number of classes, for the chance-level checks when the logs do not say",
    )
    p.add_argument(
        "--advice",
        choices=["auto", *sorted(RENDERERS)],
        default="auto",
        help="whose words the recommendations use (auto: the runner's for its runs, Lightning's for "
        "Lightning logs, plain words otherwise)",
    )
    p.set_defaults(func=run)
    return p


def _usage_error(message: str) -> int:
    print(f"diag analyze: {message}", file=sys.stderr)
    return EXIT_USAGE


def _emit(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    """Read, diagnose, print; the exit code follows ``--fail-on``.

    With ``--json`` stdout is always one JSON document: an input that cannot be analyzed (or a failure
    of the analyzer itself) gives ``{"status": "error", "error": "..."}`` beside the usual exit code 2,
    so a tool parsing stdout never meets an empty or half-written answer.
    """
    if not getattr(args, "json", False):
        return _run(args)
    try:
        return _run(args)
    except Exception as exc:  # the JSON contract holds even for a bug in the analyzer
        message = f"internal error: {type(exc).__name__}: {exc}"
        print(f"diag analyze: {message}", file=sys.stderr)
        _emit(json.dumps({"status": "error", "error": message}))
        return EXIT_USAGE


def _usage_error_json(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        _emit(json.dumps({"status": "error", "error": message}))
    return _usage_error(message)


def _run(args: argparse.Namespace) -> int:
    try:
        tag_map = parse_tag_map(args.tags)
    except ValueError as exc:
        return _usage_error_json(args, str(exc))
    if not str(
        args.path
    ).strip():  # Path("") is ".": an empty argument would analyze whatever is here
        return _usage_error_json(
            args, "PATH is empty: give a run directory, a JSONL file or a log folder"
        )
    if args.num_classes is not None and args.num_classes < 2:
        return _usage_error_json(args, f"--num-classes must be at least 2, got {args.num_classes}")
    try:
        result = read_path(Path(args.path), tag_map, args.num_classes)
        final = (
            final_attempt_dir(Path(args.path), result.live_report)
            if result.kind == "run_dir"
            else None
        )
        if final is not None:  # the run's result is its final attempt's: read that one
            top = result
            result = read_path(final, tag_map, args.num_classes)
            result.actions = result.actions or top.actions
            result.notes.insert(0, attempt_note(Path(args.path), final, top.live_report))
    except ReadError as exc:
        return _usage_error_json(args, str(exc))
    except OSError as exc:
        return _usage_error_json(args, f"cannot read {args.path}: {exc.strerror or exc}")
    if not result.has_data:
        skipped = sum(result.skipped.values())
        return _usage_error_json(
            args,
            f"no training records found in {args.path}"
            + (f" (skipped {skipped} unreadable lines/files)" if skipped else ""),
        )
    s = result.series
    if not (
        s.loss or s.epoch_train_loss or s.epoch_val_loss or s.epoch_train_acc or s.epoch_val_acc
    ):
        # a learning rate or gradient norms alone say nothing of whether the run learns: not "healthy"
        return _usage_error_json(
            args,
            f"no loss or accuracy values in {args.path}: the diagnosis reads how the loss moves"
            + (
                " (a TensorBoard log: name its loss tag with --tags loss=<tag>)"
                if result.kind == "tensorboard"
                else ""
            ),
        )
    # Hostile magnitudes (1e308) overflow in arithmetic; the result is inf/nan, which is what we report.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = analyze(result, getattr(args, "advice", None))
        text = (
            json.dumps(report, indent=2, allow_nan=False)
            if args.json
            else render_human(result, report)
        )
    if args.json:
        for note in result.notes:
            print(f"diag analyze: {note}", file=sys.stderr)
    _emit(text)
    if args.fail_on and STATUS_LEVEL.get(report["status"], 0) >= FAIL_LEVEL[args.fail_on]:
        return EXIT_FAIL
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m diag.analyze PATH``: the same as ``diag analyze PATH``."""
    parser = argparse.ArgumentParser(prog="diag")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
