"""``python -m diag sweep SWEEP_DIR``: one table for a multirun, the best run named, ``sweep.md`` and ``sweep.png``.

A sweep directory holds one run directory per job (Hydra's ``<sweep>/<job
number>/``). Each run contributes its overrides (``.hydra/overrides.yaml``) and
its ``report.json`` (status, diagnosis codes, metrics). A run without a report
failed before finishing; one whose report says it did not complete (SIGTERM, Ctrl-C, or killed
during an AutoTrainer restart) was interrupted: its numbers are those of a shorter run, so it is
never the best. A run whose training, validation or test loss went non-finite, or that was
diagnosed with ``LOSS_EXPLOSION``/``NONFINITE_GRADIENTS``, diverged. The best run is the lowest
best validation loss among the runs that finished and did not diverge or stop early. A job the
AutoTrainer restarted is one run: its ``attempt-N/`` folders are not runs of the sweep (the job's
own ``report.json`` holds its final attempt's numbers).

The runner calls :func:`summarize` at the end of every multirun (a Hydra
callback), so the summary is there without asking.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diag.after_repair import awaits_attempt, final_attempt_dir
from diag.codes import BLOWUP_CODES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LR_KEY = "optimizer.lr"
EXIT_USAGE = 2


@dataclass
class SweepRun:
    """What the summary knows about one run directory."""

    path: Path
    name: str
    overrides: list[str] = field(default_factory=list)
    lr: float | None = None
    status: str = "failed"
    codes: list[str] = field(default_factory=list)
    best_val_loss: float | None = None
    final_val_loss: float | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    epochs: int | None = None
    diverged: bool = False
    # a run that did not complete: the signal that stopped it ("SIGTERM"), or "unfinished"
    interrupted: str | None = None
    # a run the diagnosis stopped early (events.jsonl "stopped"): code, step, steps saved of max_steps
    stopped: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _finite(v: Any) -> float | None:
    return (
        float(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        else None
    )


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None


def _as_float(text: Any) -> float | None:
    try:
        return _finite(float(text))
    except (TypeError, ValueError):
        return None


class MalformedRun(ValueError):
    """A job directory whose files are not what the runner writes: skipped and counted, not fatal."""


def _require(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        raise MalformedRun(f"{what} is {type(value).__name__}")
    return value


def read_run(run_dir: Path) -> SweepRun:
    """One run directory → :class:`SweepRun` (a missing report means the run failed).

    Raises :class:`MalformedRun` (naming the file) when a file is not what the runner writes.
    """
    run = SweepRun(path=run_dir, name=run_dir.name)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    try:
        if overrides_file.exists():
            listed = _require(_load_yaml(overrides_file) or [], list, "overrides.yaml")
            run.overrides = [str(o) for o in listed]
        for o in run.overrides:
            key, _, value = o.partition("=")
            if key.lstrip("+~") == LR_KEY:
                run.lr = _as_float(value)
        report_file = run_dir / "report.json"
        report: dict[str, Any] = {}
        if report_file.exists():
            try:
                loaded = json.loads(report_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise MalformedRun(f"report.json is not valid JSON ({exc})") from None
            report = _require(loaded, dict, "report.json")
        if run.lr is None:
            run.lr = _lr_from_config(run_dir, report)
        if not report:
            return run
        m = _require(report.get("metrics", {}), dict, "report.json metrics")
        issues = _require(report.get("issues", []), list, "report.json issues")
        run.status = str(report.get("status", "unknown"))
        run.interrupted = _interrupted(report) if run.status != "failed" else None
        run.codes = [str(_require(i, dict, "a report.json issue").get("code")) for i in issues]
    except OSError as exc:
        raise MalformedRun(f"unreadable ({exc.strerror or exc})") from None
    except ValueError as exc:  # a file that is not valid YAML
        raise MalformedRun(str(exc)) from None
    run.best_val_loss = _finite(m.get("best_val_loss"))
    run.final_val_loss = _finite(m.get("final_val_loss"))
    run.val_acc = _finite(m.get("final_val_acc"))
    run.test_acc = _finite(m.get("test_acc"))
    epochs = m.get("epochs")
    run.epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    ran = bool(run.epochs)
    # report.json writes NaN/Inf as null: a loss that trained but is null went non-finite; a test loss
    # only when there was a test (a trial stop_on ended has none: test_acc is null too)
    tested = m.get("test_acc") is not None
    nonfinite = any(
        k in m and _finite(m[k]) is None
        for k in ("final_train_loss", "best_val_loss", "final_val_loss", "test_loss")
        if k != "test_loss" or tested
    )
    run.diverged = (ran and nonfinite) or any(c in BLOWUP_CODES for c in run.codes)
    run.stopped = _stopped(final_attempt_dir(run_dir, report) or run_dir)
    return run


def _interrupted(report: dict[str, Any]) -> str | None:
    """Why a report is not a finished run's: the signal that interrupted it, else "unfinished" when it
    says it did not complete or is the first attempt's of a run killed during an AutoTrainer restart."""
    if report.get("completed") is False or report.get("interrupted"):
        return str(report.get("interrupted") or "unfinished")
    return "unfinished" if awaits_attempt(report) else None


def _stopped(run_dir: Path) -> dict[str, Any] | None:
    """The last "stopped" event of the run's events.jsonl (a run ended early by its diagnosis)."""
    events = run_dir / "events.jsonl"
    if not events.is_file():
        return None
    found = None
    for line in events.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"stopped"' not in line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("kind") == "stopped":
            found = {k: event.get(k) for k in ("code", "step", "saved_steps", "max_steps")}
            if isinstance(event.get("projection"), dict):  # a slow run stopped on its own curve
                found["projection"] = event["projection"]
            if isinstance(event.get("compared_with"), dict):  # behind a finished trial of the sweep
                found["compared_with"] = event["compared_with"]
    return found


def _stop_why(stopped: dict[str, Any]) -> str:
    """``CODE at step N``, with the projected end of a slow run stopped on its own curve."""
    why = f"{stopped['code']} at step {stopped['step']}"
    projected = _finite((stopped.get("projection") or {}).get("projected_val_loss"))
    ref = stopped.get("compared_with") or {}
    reached, final = _finite(ref.get("projected_val_acc")), _finite(ref.get("ref_final_val_acc"))
    if ref.get("trial") is not None and reached is not None and final is not None:
        return why + (
            f", behind run {ref['trial']}: projected to reach val acc {reached:.3f} of its {final:.3f}"
        )
    return why + (
        f", projected to end at val loss {projected:.3g}" if projected is not None else ""
    )


def compute_saved(runs: list[SweepRun]) -> tuple[int, int]:
    """Steps the stopped runs did not train, and the sweep's planned steps (every run as long as the
    longest stopped one planned: the runs of an LR sweep share their length)."""
    stopped = [r.stopped for r in runs if r.stopped]
    saved = sum(int(s.get("saved_steps") or 0) for s in stopped)
    per_run = max((int(s.get("max_steps") or 0) for s in stopped), default=0)
    return saved, per_run * len(runs)


def _stopped_line(runs: list[SweepRun]) -> str | None:
    stopped = [r for r in runs if r.stopped]
    if not stopped:
        return None
    saved, planned = compute_saved(runs)
    each = ", ".join(f"{r.name} ({_stop_why(r.stopped)})" for r in stopped if r.stopped)
    share = f" ({saved / planned:.0%} of the sweep's steps)" if planned else ""
    return f"stopped early by stop_on: {each}; {saved} steps not trained{share}"


def _lr_from_config(run_dir: Path, report: dict[str, Any]) -> float | None:
    """The LR when it was not overridden: the composed config's value, or the finder's for ``lr=auto``."""
    finder = report.get("lr_finder") or {}
    if isinstance(finder, dict) and _finite(finder.get("suggested_lr")) is not None:
        return float(finder["suggested_lr"])
    config_file = run_dir / ".hydra" / "config.yaml"
    if config_file.exists():
        cfg = _require(_load_yaml(config_file) or {}, dict, "config.yaml")
        optimizer = cfg.get("optimizer") or {}
        return _as_float(optimizer.get("lr")) if isinstance(optimizer, dict) else None
    return None


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (sys.maxsize, str(path))


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run directories under ``sweep_dir``: those with a ``.hydra`` folder or a ``report.json``.

    A folder inside a run (an AutoTrainer restart's ``attempt-N/``) is part of that run, not another one.
    """
    found = {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    found |= {p.parent for p in sweep_dir.rglob("report.json")}
    found.discard(sweep_dir)
    outer = {p for p in found if not any(parent in found for parent in p.parents)}
    return sorted(outer, key=_job_order)


def one_sweep(path: Path) -> Path:
    """The sweep ``path`` names: itself, or the one sweep below it (a folder with Hydra's ``multirun.yaml``,
    e.g. ``outputs/multirun`` holding one); a folder of several is refused, naming them (their runs in one
    table compared runs of different searches, and the best of them was no search's best). A folder of
    runs without any ``multirun.yaml`` is read as one sweep."""
    if (path / "multirun.yaml").is_file():
        return path
    sweeps = sorted(
        (p.parent for p in path.rglob("multirun.yaml")), key=lambda p: p.stat().st_mtime
    )
    if len(sweeps) == 1:
        return sweeps[0]
    if len(sweeps) > 1:
        shown = ", ".join(str(p) for p in sweeps[-3:])
        raise ValueError(
            f"{path} holds {len(sweeps)} sweeps (folders with Hydra's multirun.yaml): pass one of "
            f"them, e.g. the newest, {sweeps[-1]} (newest last: {shown})"
        )
    return path


def _short(override: str) -> str:
    """``optimizer.lr=0.0457056309980145`` → ``optimizer.lr=0.04571``: long floats are noise in a table."""
    key, sep, value = override.partition("=")
    num = _as_float(value)
    return f"{key}={num:.4g}" if sep and num is not None and len(value) > 8 else override


def summarize(sweep_dir: str | Path, write: bool = True) -> dict[str, Any]:
    """Read every run, pick the best, and (``write``) put ``sweep.md`` and ``sweep.png`` in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ValueError(
            f"{sweep_dir} is not a directory: pass a multirun sweep directory "
            "(e.g. outputs/multirun/<timestamp>)"
        )
    sweep_dir = one_sweep(sweep_dir)
    found = find_runs(sweep_dir)
    if not found:
        raise ValueError(
            f"no run directories in {sweep_dir}: expected <sweep>/<job>/.hydra or report.json"
        )
    runs, skipped = [], []
    for path in found:
        try:
            runs.append(read_run(path))
        except MalformedRun as exc:  # one damaged job does not hide the others
            skipped.append({"path": str(path), "name": path.name, "why": str(exc)})
    common = (
        [o for o in runs[0].overrides if all(o in r.overrides for r in runs)]
        if len(runs) > 1
        else []
    )
    candidates = [
        r
        for r in runs
        if r.best_val_loss is not None and not r.diverged and not r.stopped and not r.interrupted
    ]
    # every candidate has a best_val_loss: the inf is never used
    best = (
        min(candidates, key=lambda r: math.inf if r.best_val_loss is None else r.best_val_loss)
        if candidates
        else None
    )
    summary = {
        "sweep_dir": str(sweep_dir),
        "runs": [r.to_dict() for r in runs],
        "common_overrides": common,
        "best": best.to_dict() if best else None,
        "optuna": _optuna_result(sweep_dir),
        "skipped": skipped,
    }
    summary["table"] = render_table(runs, common)
    if write:
        (sweep_dir / "sweep.md").write_text(render_markdown(summary, runs, best), encoding="utf-8")
        plot_sweep(runs, best, sweep_dir / "sweep.png")
        summary["written"] = [str(sweep_dir / "sweep.md"), str(sweep_dir / "sweep.png")]
    return summary


def _optuna_result(sweep_dir: Path) -> dict[str, Any] | None:
    path = sweep_dir / "optimization_results.yaml"
    if not path.exists():
        return None
    try:
        data = _load_yaml(path) or {}
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {"best_params": data.get("best_params"), "best_value": data.get("best_value")}


def _fmt(v: float | None, spec: str = ".4f") -> str:
    """``0.2120``; a blown-up loss as ``5.782e+33`` (``.4f`` made it a 34-digit number)."""
    if v is None:
        return "-"
    if spec == ".4f" and abs(v) >= 1e4:
        return format(v, ".4g")
    return format(v, spec)


def _rows(runs: list[SweepRun], common: list[str]) -> list[list[str]]:
    rows = []
    for r in runs:
        varying = " ".join(_short(o) for o in r.overrides if o not in common) or "(none)"
        status = "diverged" if r.diverged else r.status
        if r.interrupted and not r.diverged:
            status = f"interrupted ({r.interrupted})"
        if r.stopped:
            status = f"stopped at step {r.stopped['step']} ({r.stopped['code']})"
            ref = r.stopped.get("compared_with") or {}
            if ref.get("trial") is not None:
                status = status[:-1] + f" behind run {ref['trial']})"
        rows.append(
            [
                r.name,
                varying,
                _fmt(r.lr, ".3g"),
                status,
                ",".join(r.codes) or "-",
                _fmt(r.best_val_loss),
                _fmt(r.val_acc),
                _fmt(r.test_acc),
                "-" if r.epochs is None else str(r.epochs),
            ]
        )
    return rows


HEADER = [
    "run",
    "overrides",
    "lr",
    "status",
    "codes",
    "best val loss",
    "val acc",
    "test acc",
    "epochs",
]


def render_table(runs: list[SweepRun], common: list[str]) -> str:
    """A fixed-width text table, one line per run."""
    rows = [HEADER, *_rows(runs, common)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _best_line(best: SweepRun | None, common: list[str]) -> str:
    if best is None:
        return "best run: none (every run failed, diverged, stopped early or was interrupted)"
    what = " ".join(_short(o) for o in best.overrides if o not in common) or best.name
    return (
        f"best run: {best.name} ({what}): best val loss {_fmt(best.best_val_loss)}, "
        f"val acc {_fmt(best.val_acc)}, test acc {_fmt(best.test_acc)} — {best.path}"
    )


def render_text(summary: dict[str, Any]) -> str:
    """What the CLI and the end-of-multirun callback print."""
    runs = [SweepRun(**{**r, "path": Path(r["path"])}) for r in summary["runs"]]
    best = (
        SweepRun(**{**summary["best"], "path": Path(summary["best"]["path"])})
        if summary["best"]
        else None
    )
    lines = [f"sweep {summary['sweep_dir']}: {len(runs)} runs"]
    if summary["common_overrides"]:
        lines.append("common overrides: " + " ".join(summary["common_overrides"]))
    lines += ["", summary["table"], "", _best_line(best, summary["common_overrides"])]
    diverged = [r.name for r in runs if r.diverged]
    failed = [r.name for r in runs if r.status == "failed"]
    if diverged:
        lines.append("diverged: " + ", ".join(diverged))
    stopped = _stopped_line(runs)
    if stopped:
        lines.append(stopped)
    if failed:
        lines.append("failed: " + ", ".join(failed))
    interrupted = _interrupted_line(runs)
    if interrupted:
        lines.append(interrupted)
    lines += _skipped_lines(summary)
    if summary.get("optuna"):
        lines.append(
            f"optuna: best params {summary['optuna']['best_params']}, best value "
            f"{summary['optuna']['best_value']}"
        )
    if summary.get("written"):
        lines.append("wrote " + ", ".join(summary["written"]))
    return "\n".join(lines)


def _interrupted_line(runs: list[SweepRun]) -> str | None:
    """The runs that did not finish, and how to finish them (never the best run until they have)."""
    names = [r.name for r in runs if r.interrupted and not r.diverged]
    if not names:
        return None
    return (
        f"interrupted (not finished, never the best run): {', '.join(names)}; run the same sweep "
        "again with trainer.resume=auto to finish them"
    )


def _skipped_lines(summary: dict[str, Any]) -> list[str]:
    skipped = summary.get("skipped") or []
    if not skipped:
        return []
    return [f"skipped {len(skipped)} malformed job(s):"] + [
        f"  {s['name']}: {s['why']}" for s in skipped
    ]


def render_markdown(summary: dict[str, Any], runs: list[SweepRun], best: SweepRun | None) -> str:
    """``sweep.md``: the same table as the CLI, as Markdown, with the best run and the plot."""
    common = summary["common_overrides"]
    lines = [
        f"# Sweep summary: {Path(summary['sweep_dir']).name}",
        "",
        f"{len(runs)} runs in `{summary['sweep_dir']}`.",
        "",
    ]
    if common:
        lines += ["Common overrides: " + " ".join(f"`{o}`" for o in common), ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(runs, common):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += ["", "**" + _best_line(best, common) + "**", ""]
    diverged = [r.name for r in runs if r.diverged]
    if diverged:
        lines += ["Diverged: " + ", ".join(diverged) + " (marked ✕ in the plot).", ""]
    stopped = _stopped_line(runs)
    if stopped:
        lines += [stopped[0].upper() + stopped[1:] + ".", ""]
    interrupted = _interrupted_line(runs)
    if interrupted:
        lines += [interrupted[0].upper() + interrupted[1:] + ".", ""]
    if summary.get("skipped"):
        lines += ["\n".join(_skipped_lines(summary)).replace("\n  ", "\n- ") + "", ""]
    if summary.get("optuna"):
        lines += [
            f"Optuna: best params `{summary['optuna']['best_params']}`, best value "
            f"{summary['optuna']['best_value']}.",
            "",
        ]
    lines += ["![best and final validation loss against learning rate](sweep.png)", ""]
    return "\n".join(lines)


def plot_sweep(runs: list[SweepRun], best: SweepRun | None, path: Path) -> Path:
    """``sweep.png``: :func:`sweep_figure` saved to ``path``."""
    fig = sweep_figure(runs, best)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def sweep_figure(runs: list[SweepRun], best: SweepRun | None) -> Figure:
    """Best and final validation loss against LR (log axes), each point named by its run, best starred.

    Diverged, failed, stopped and interrupted runs have no loss worth a height: they sit on a separate
    band above the plot, named by run. When the runs do not differ in LR (a sweep over something else,
    each run at the config's LR) the x axis is the run, labelled with what it varies. Runs that share
    an LR in an LR sweep share an x position and are told apart by their labels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diag.log_ticks import plain_log_labels

    fig = Figure(figsize=(7, 5))
    FigureCanvasAgg(fig)
    band, ax = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 6], "hspace": 0.05}
    )
    # by_lr: every lr is set and positive (a log axis; a sweep of refused lr=-1 jobs has nothing to place
    # on it), and the LR is what varies (a dropout sweep at one LR would draw every run at one x)
    lrs_set = {r.lr for r in runs}
    by_lr = all(r.lr is not None and r.lr > 0 for r in runs) and (
        len(lrs_set) > 1 or len(runs) == 1
    )
    xs: list[float] = [r.lr if by_lr and r.lr is not None else i for i, r in enumerate(runs)]
    # sorted by x alone: runs with the same LR must not be compared with each other
    ok = sorted(
        (
            (x, r)
            for x, r in zip(xs, runs)
            if r.best_val_loss is not None
            and not r.diverged
            and not r.stopped
            and not r.interrupted
        ),
        key=lambda pair: pair[0],
    )
    if ok:
        # every run in ok has one
        best_losses = [r.best_val_loss for _, r in ok if r.best_val_loss is not None]
        ax.plot([x for x, _ in ok], best_losses, "o-", color="tab:blue", label="best val loss")
        fin = [(x, r.final_val_loss) for x, r in ok if r.final_val_loss is not None]
        ax.plot(
            [x for x, _ in fin],
            [y for _, y in fin],
            "o",
            mfc="none",
            color="tab:orange",
            label="final val loss",
        )
        for k, (x, r) in enumerate(ok if by_lr else ()):  # by run: the x tick names it
            ax.annotate(
                f"run {r.name}",
                (x, r.best_val_loss),
                textcoords="offset points",
                xytext=(6, 6 + 10 * (k % 2)),  # alternate: runs with one LR do not overprint
                fontsize=7,
                color="tab:blue",
            )
    values = [
        v for _, r in ok for v in (r.best_val_loss, r.final_val_loss) if v is not None and v > 0
    ]
    bad = [
        (x, r)
        for x, r in zip(xs, runs)
        if r.diverged or r.status == "failed" or r.stopped or r.interrupted
    ]
    # one marker per kind, explained in the legend; only the run's name beside it: a grid sweep puts
    # a dozen of them half a decade apart, where "run 3 stopped" labels ran into each other
    kinds = {
        "failed": ("x", "tab:gray"),
        "diverged": ("x", "tab:red"),
        "stopped": ("s", "tab:orange"),
        "interrupted": ("D", "tab:purple"),
    }
    shown: set[str] = set()
    for k, (x, r) in enumerate(sorted(bad, key=lambda pair: pair[0])):
        what = (
            "failed"
            if r.status == "failed"
            else "diverged"
            if r.diverged
            else "stopped"
            if r.stopped
            else "interrupted"
        )
        marker, color = kinds[what]
        band.plot([x], [0.4], marker, color=color, markersize=9, markeredgewidth=2.5, mfc="none")
        band.annotate(
            r.name,
            (x, 0.4),
            textcoords="offset points",
            xytext=(0, 7 + 7 * (k % 2)),  # alternate heights: neighbours do not overprint
            ha="center",
            fontsize=7,
            color=color,
        )
        if what not in shown:  # legend entries on the main axes, where the legend is
            shown.add(what)
            label = what + (" (stop_on)" if what == "stopped" else "")
            ax.plot([], [], marker, color=color, mfc="none", markeredgewidth=2, label=label)
    band.set_ylim(0, 1)
    band.set_yticks([])
    band.set_ylabel(
        "diverged,\nstopped,\ninterrupted\nor failed",
        fontsize=8,
        rotation=0,
        ha="right",
        va="center",
    )
    if not bad:
        band.text(
            0.5,
            0.5,
            "none diverged",
            ha="center",
            va="center",
            fontsize=8,
            color="grey",
            transform=band.transAxes,
        )
    if (
        best is not None and best.best_val_loss is not None
    ):  # the best run is one with a validation loss
        bx = (
            best.lr
            if by_lr and best.lr is not None
            else runs.index(next(r for r in runs if r.path == best.path))
        )
        ax.plot(
            [bx],
            [best.best_val_loss],
            "*",
            color="gold",
            markeredgecolor="black",
            markersize=16,
            label=f"best: run {best.name}"
            + (f" (lr {best.lr:.3g})" if best.lr is not None else ""),
        )
    bottom = 0.11  # more under tick labels of several lines
    if by_lr:
        ax.set_xscale("log")
        plain_log_labels(ax.xaxis)
        ax.set_xlabel("learning rate (log scale)")
        lrs = [x for x in xs if x > 0]
        if lrs and min(lrs) == max(lrs):  # one LR: give the log axis a decade around it
            ax.set_xlim(min(lrs) / 3, max(lrs) * 3)
        elif lrs:
            ax.set_xlim(min(lrs) / 2, max(lrs) * 2)
    else:
        ticks = [_run_tick(r, runs) for r in runs]
        ax.set_xticks(range(len(runs)), ticks, fontsize=7)
        ax.set_xlim(-0.5, len(runs) - 0.5)  # room for the first and last labels
        ax.set_xlabel("run")
        bottom += 0.025 * max(t.count("\n") for t in ticks)
    if values:
        ax.set_yscale("log")
        plain_log_labels(ax.yaxis)
        ax.set_ylim(min(values) / 1.5, max(values) * 2)
    ax.set_ylabel("validation loss")
    band.set_title(f"Sweep: {len(runs)} runs", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.15, right=0.93, top=0.92, bottom=bottom)  # room for the last x label
    return fig


def _run_tick(run: SweepRun, runs: list[SweepRun]) -> str:
    """``0`` over ``model.dropout=0.3``: the run's name and the overrides it does not share with every run."""
    varying = [_short(o) for o in run.overrides if not all(o in r.overrides for r in runs)]
    return "\n".join([run.name, *varying])


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sweep`` on the ``diag`` command's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="summarise a multirun sweep directory: table, best run, sweep.md and sweep.png",
        description="Compare the runs of a sweep: overrides, status and diagnosis codes, validation loss and "
        "accuracy; names the best run and writes sweep.md and sweep.png into the sweep directory.",
    )
    p.add_argument(
        "sweep_dir", help="a multirun sweep directory, e.g. outputs/multirun/<timestamp>"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--no-write", action="store_true", help="only print; do not write sweep.md / sweep.png"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Summarise, print, write; a missing or empty directory is a one-line error with exit code 2."""
    try:
        summary = summarize(args.sweep_dir, write=not args.no_write)
    except (ValueError, OSError) as exc:
        print(f"diag sweep: {exc}", file=sys.stderr)
        if args.json:  # a script reading stdout gets JSON either way
            print(json.dumps({"error": str(exc), "sweep_dir": str(args.sweep_dir)}))
        return EXIT_USAGE
    print(json.dumps(summary, indent=2) if args.json else render_text(summary))
    return 0
