"""Turn what a run left behind into a :class:`~diag.series.RunSeries`, whoever wrote it.

Three inputs are understood: a run directory (``train_diagnostics.jsonl``,
``val_diagnostics.jsonl``, TensorBoard event files (older runs: ``tb/``), ``report.json``, ``events.jsonl``,
``.hydra/``), a
single file in the per-epoch JSONL schema (see ``diag/epoch_log.py``) and a folder of TensorBoard event files,
including ones written by other tools (a tag map says which tag plays which role;
the defaults know the runner's tags and PyTorch Lightning's usual names).

Input is untrusted: files are streamed line by line with a cap on line length and
on what is kept, anything unreadable is skipped and counted, and a non-finite
value is kept as NaN because it is evidence (a loss that went ``Infinity``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from diag.optimizer_state import newest_checkpoint, read_optimizer_state
from diag.series import RunSeries

MAX_LINE_BYTES = 1 << 20  # a per-epoch record is a few hundred bytes; longer lines are junk
MAX_LINES = (
    5_000_000  # stop reading a JSONL file after this many lines (never hang on a runaway file)
)
MAX_KEPT = (
    20_000  # points kept per series; longer series are thinned evenly (first, last, first NaN kept)
)
MAX_EVENT_DIRS = 256  # directories of event files looked at under a TensorBoard root
MAX_WALK_ENTRIES = 100_000  # directory entries visited while looking for event files

TRAIN_JSONL = "train_diagnostics.jsonl"
VAL_JSONL = "val_diagnostics.jsonl"

# Role -> candidate tags, best first (fnmatch patterns). The runner's own tags come first,
# then PyTorch Lightning's usual names (self.log("train_loss", on_step, on_epoch), LearningRateMonitor).
DEFAULT_TAGS: dict[str, tuple[str, ...]] = {
    "loss": (
        "train/loss",
        "train_loss_step",
        "train_loss",
        "train/loss_step",
        "loss",
        "Loss/train",
        "training_loss",
        "train/epoch_loss",
    ),
    "lr": (
        "train/lr",
        "lr-*",
        "lr",
        "learning_rate",
        "train/learning_rate",
        "train/epoch_learning_rate",
    ),
    "grad_norm": (
        "train/grad_norm",
        "grad_norm",
        "grad_2.0_norm_total",
        "grad_norm_total",
        "train/grad_norm_total",
    ),
    "update_ratio": ("train/update_ratio", "update_ratio"),
    "train_loss_epoch": ("train/loss_epoch", "train_loss_epoch", "train/epoch_loss"),
    "train_acc": (
        "train/acc",
        "train_acc_epoch",
        "train_acc",
        "train/accuracy",
        "train_accuracy",
        "train/epoch_accuracy",
        "Accuracy/train",
    ),
    "val_loss": (
        "val/loss",
        "val_loss",
        "eval/loss",
        "eval_loss",
        "val_loss_epoch",
        "validation/loss",
        "valid_loss",
        "Loss/val",
        "validation/epoch_loss",
    ),
    "val_acc": (
        "val/acc",
        "val_acc",
        "eval/accuracy",
        "eval_accuracy",
        "val_acc_epoch",
        "val/accuracy",
        "val_accuracy",
        "valid_acc",
        "validation/accuracy",
        "Accuracy/val",
        "validation/epoch_accuracy",
    ),
    "epoch": ("train/epoch", "epoch"),
    "skipped_steps": ("train/skipped_steps",),
}
# Loss tags whose values are means over the steps since the previous point (the runner's, Hugging Face
# Trainer's "train/loss", epoch means); any other loss tag is read as one batch's loss every N steps
# (Lightning's train_loss_step), which the rules first reduce to interval means (RunSeries.sampling).
MEAN_LOSS_TAGS = ("train/loss", "train/epoch_loss", "train/loss_epoch", "train_loss_epoch")
# Per-layer families: role -> tag prefixes; the layer name is the rest of the tag.
LAYER_PREFIXES: dict[str, tuple[str, ...]] = {
    "layer_grad_norm": ("x_layers/grad_norm/", "grad_norm/", "grad_2.0_norm/"),
    "layer_update_ratio": ("x_layers/update_ratio/", "update_ratio/"),
    "layer_dead_fraction": ("x_layers/dead_fraction/", "dead_fraction/"),
    "layer_saturation": ("x_layers/saturation/", "saturation/"),
    "layer_activation_std": ("activation_std/",),
}
# Learning-rate monitors also log momentum and weight decay under lr-*; those are not the LR.
_NOT_LR = ("momentum", "weight_decay", "beta")


class ReadError(Exception):
    """Input the analyzer cannot use at all; the message is one line for the user."""


@dataclass
class ReadResult:
    """What was read: the series, where it came from, what was skipped, and extras for display."""

    kind: str  # "run_dir" | "jsonl" | "tensorboard"
    path: Path
    series: RunSeries = field(default_factory=RunSeries)
    read: list[str] = field(default_factory=list)  # "train_diagnostics.jsonl: 12 records"
    notes: list[str] = field(default_factory=list)  # skipped lines/files, missing tags, thinning
    skipped: dict[str, int] = field(
        default_factory=dict
    )  # file name -> malformed lines/records skipped
    epoch_grad_min: list[float] = field(default_factory=list)  # per epoch, aligned with epoch_step
    epoch_grad_max: list[float] = field(default_factory=list)
    epoch_grad_mean: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics of the run's own report.json
    live_report: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    tags_used: dict[str, str] = field(default_factory=dict)  # role -> TensorBoard tag read for it
    # a run directory's model section of .hydra/config.yaml: which overrides the advice may name
    model_config: dict[str, Any] = field(default_factory=dict)
    event_dirs: list[Path] = field(default_factory=list)  # the folders whose event files were read

    @property
    def has_data(self) -> bool:
        s = self.series
        return bool(
            s.loss
            or s.grad_norm
            or s.lr
            or s.epoch_train_loss
            or s.epoch_val_loss
            or s.epoch_train_acc
            or s.epoch_val_acc
            or s.layer_grad_norm
            or s.update_ratio
        )

    def skip(self, name: str, count: int, what: str = "malformed lines") -> None:
        if count:
            self.skipped[name] = self.skipped.get(name, 0) + count
            self.notes.append(f"skipped {count} {what} in {name}")


# -- tag maps ----------------------------------------------------------------
def tag_roles() -> list[str]:
    """Every key ``--tags`` accepts."""
    return [*DEFAULT_TAGS, *LAYER_PREFIXES]


def parse_tag_map(text: str | None) -> dict[str, str]:
    """``"loss=train_loss,val_loss=val/loss"`` -> dict; raises ValueError with a one-line message."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, tag = part.partition("=")
        key, tag = key.strip(), tag.strip()
        if not sep or not key or not tag:
            raise ValueError(f"--tags entry {part!r} is not key=tag")
        if key not in DEFAULT_TAGS and key not in LAYER_PREFIXES:
            raise ValueError(f"--tags key {key!r} is unknown; use one of {', '.join(tag_roles())}")
        out[key] = tag
    return out


# -- numbers -----------------------------------------------------------------
def _num(value: Any) -> float | None:
    """A JSON value as a float; ``None`` when missing or not a number (``"NaN"`` strings count as numbers)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float is an infinite value
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str) and len(value) < 64:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _int(value: Any) -> int | None:
    f = _num(value)
    if f is None or not math.isfinite(f) or abs(f) > 1e15:
        return None
    return int(f)


class Thinned:
    """Keeps about ``cap`` items of a stream: the first tenth verbatim (the start is where rules look
    for a baseline), the rest evenly spaced, plus the last item and any pinned one."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap = max(2, MAX_KEPT if cap is None else cap)
        self.head = self.cap // 10
        self.stride = 1
        self.count = 0
        self._kept: list[tuple[int, Any, bool]] = []
        self._last: tuple[int, Any, bool] | None = None

    def add(self, item: Any, pin: bool = False) -> None:
        i = self.count
        self.count += 1
        pin = pin or i < self.head
        self._last = (i, item, pin)
        if pin or i % self.stride == 0:
            self._kept.append((i, item, pin))
            if len(self._kept) > self.cap:
                self.stride *= 2
                self._kept = [k for k in self._kept if k[2] or k[0] % self.stride == 0]

    def items(self) -> list[Any]:
        kept = list(self._kept)
        if self._last is not None and (not kept or kept[-1][0] != self._last[0]):
            kept.append(self._last)
        return [k[1] for k in kept]

    @property
    def thinned(self) -> bool:
        return self.stride > 1


# -- JSONL -------------------------------------------------------------------
def iter_jsonl(path: Path, result: ReadResult, name: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of ``path`` one line at a time; count and skip everything else."""
    name = name or path.name
    bad = 0
    lines = 0
    with path.open("rb") as fh:
        while True:
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            lines += 1
            if lines > MAX_LINES:
                result.notes.append(f"stopped reading {name} after {MAX_LINES:,} lines")
                break
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while True:  # drain the rest of an over-long line without keeping it
                    chunk = fh.readline(MAX_LINE_BYTES)
                    if not chunk or chunk.endswith(b"\n"):
                        break
                bad += 1
                continue
            text = line.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError):  # truncated JSON, binary junk, undecodable bytes
                bad += 1
                continue
            if not isinstance(obj, dict):
                bad += 1
                continue
            yield obj
    result.skip(name, bad)


# The per-epoch JSONL schema's names first (diag/epoch_log.py), then the names other collectors use for the same quantity.
_TRAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "train_loss"),
    "acc": ("accuracy", "acc", "train_accuracy", "train_acc"),
    "lr": ("learning_rate", "lr"),
    "grad_mean": ("mean_grad_norm", "grad_norm"),
    "grad_min": ("min_grad_norm",),
    "grad_max": ("max_grad_norm",),
    "update": ("weight_update_magnitude", "update_ratio"),
    "val_loss": ("val_loss",),
    "val_acc": ("val_accuracy", "val_acc"),
}
_VAL_FIELDS: dict[str, tuple[str, ...]] = {
    "val_loss": ("loss", "val_loss"),
    "val_acc": ("accuracy", "acc", "val_accuracy", "val_acc"),
}


def _row(
    obj: dict[str, Any],
    fields: dict[str, tuple[str, ...]],
    index: int,
    cum_steps: int | None,
    bad_values: list[int],
    name: str,
) -> dict[str, Any] | None:
    row: dict[str, Any] = {
        "epoch": _int(obj.get("epoch")),
        "step": _int(obj.get("step")),
        "cum_steps": cum_steps,
        "skipped": _int(obj.get("skipped_steps")),
        "index": index,
        "file": name,
    }
    if row["epoch"] is None:
        row["epoch"] = index
    usable = False
    for key, names in fields.items():
        for field_name in names:
            if field_name in obj:
                raw = obj[field_name]
                value = _num(raw)
                if value is None and raw is not None:
                    bad_values[0] += 1  # a string or object where a number belongs: as if absent
                    break
                row[key] = value
                # null in a file that also has numbers means "not finite" (JSON has no NaN)
                row[key + "_null"] = raw is None
                usable = True
                break
    return row if usable else None


def _read_epoch_file(
    path: Path, fields: dict[str, tuple[str, ...]], result: ReadResult, name: str
) -> list[dict[str, Any]]:
    kept = Thinned()
    bad_values = [0]
    unusable = 0
    cum = 0
    have_batches = True
    pinned = False
    for i, obj in enumerate(iter_jsonl(path, result, name)):
        nb = _int(obj.get("num_batches"))
        if nb is None or nb < 0:
            have_batches = False
        else:
            cum += nb
        row = _row(obj, fields, i, cum if have_batches else None, bad_values, name)
        if row is None:
            unusable += 1
            continue
        nonfinite = any(
            (isinstance(v, float) and not math.isfinite(v)) or v is True
            for k, v in row.items()
            if k.endswith("_null") or isinstance(v, float)
        )  # null is how JSON says NaN
        kept.add(row, pin=nonfinite and not pinned)
        pinned = pinned or nonfinite
    result.skip(name, unusable, "records without any known field")
    result.skip(name, bad_values[0], "non-numeric values")
    if kept.thinned:
        result.notes.append(
            f"{name}: kept {len(kept.items()):,} of {kept.count:,} records (evenly spaced)"
        )
    rows = kept.items()
    result.read.append(f"{name}: {kept.count} records")
    # A resumed run may repeat epochs: the later line wins.
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in rows:
        by_epoch[r["epoch"]] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


# a quantity's partner of the same split: a loss written as null in every record while its accuracy
# is a number there was measured and is NaN (a blown-up model's loss; its accuracy is still counted)
_COMPANION = {"loss": "acc", "acc": "loss", "val_loss": "val_acc", "val_acc": "val_loss"}


def _column(
    rows: list[dict[str, Any]], key: str, result: ReadResult | None = None, name: str = ""
) -> list[float]:
    """Values of ``key``; empty when the quantity was not measured.

    ``null`` among numbers is non-finite (NaN: JSON has no NaN, so collectors write null). A key
    that is null in every record is not measured, unless its partner of the same split
    (``_COMPANION``) has numbers in those records: then it is NaN throughout. A record that lacks
    the key altogether says nothing about it: the previous value carries over (the next one at the
    start), and a note says how many were filled.
    """
    label = (_VAL_FIELDS if name.startswith("val") else _TRAIN_FIELDS).get(key, (key,))[0]
    if not any(r.get(key) is not None for r in rows):
        partner = _COMPANION.get(key)
        if partner is None or not any(key in r and r.get(partner) is not None for r in rows):
            return []  # absent, or present but always null: the quantity was not measured
        if result is not None:
            result.notes.append(
                f"{name}: {label} is null in every record, beside numbers for its "
                f"{'accuracy' if 'loss' in key else 'loss'}: read as NaN (non-finite)"
            )
    out: list[float | None] = []
    missing = 0
    for r in rows:
        if key in r:
            out.append(math.nan if r[key] is None else float(r[key]))
        else:
            out.append(None)
            missing += 1
    if missing:
        if result is not None:
            result.notes.append(
                f"{missing} records in {name} lack {label}: filled from the neighbouring record"
            )
        first = next(v for v in out if v is not None)
        prev = first
        for i, v in enumerate(out):
            if v is None:
                out[i] = prev
            else:
                prev = v
    return [
        float(v) for v in out if v is not None
    ]  # every None was filled above: this drops nothing


def _fraction(values: list[float], what: str, result: ReadResult) -> list[float]:
    """Accuracies written in percent (0-100) become fractions, which the diagnosis expects."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and max(finite) > 1.0 and max(finite) <= 100.0 and min(finite) >= 0.0:
        result.notes.append(f"{what} looks like a percentage; read as a fraction")
        return [v / 100.0 for v in values]
    return values


def _asof(grid: list[int], steps: list[int], values: list[float]) -> list[float]:
    """The latest value at or before each grid step (the first value before the series starts)."""
    if not steps:
        return []
    out = []
    for g in grid:
        i = bisect_right(steps, g) - 1
        out.append(values[max(i, 0)])
    return out


def _apply_epochs(
    rows: list[dict[str, Any]], val_rows: list[dict[str, Any]], result: ReadResult
) -> None:
    """Fill the per-epoch fields of the series from train rows and validation rows."""
    s = result.series
    base = rows or val_rows
    if not base:
        return
    if all(r["step"] is not None for r in base):
        steps = [r["step"] for r in base]
    elif all(r["cum_steps"] is not None for r in base):
        steps = [r["cum_steps"] for r in base]
    else:
        steps = [r["epoch"] + 1 for r in base]
        result.notes.append("no step counts in the records: steps are counted in epochs")
    s.epoch_step = steps
    if rows:
        tn = rows[0]["file"]
        s.epoch_train_loss = _column(rows, "loss", result, tn)
        s.epoch_train_acc = _fraction(_column(rows, "acc", result, tn), "train accuracy", result)
        s.epoch_lr = _column(rows, "lr", result, tn)
        s.epoch_weight_update = _column(rows, "update", result, tn)
        result.epoch_grad_mean = _column(rows, "grad_mean", result, tn)
        result.epoch_grad_min = _column(rows, "grad_min", result, tn)
        result.epoch_grad_max = _column(rows, "grad_max", result, tn)
        s.epoch_val_loss = _column(rows, "val_loss", result, tn)
        s.epoch_val_acc = _fraction(
            _column(rows, "val_acc", result, tn), "validation accuracy", result
        )
    if val_rows:
        epochs = [r["epoch"] for r in base]
        vepochs = [r["epoch"] for r in val_rows]
        vn = val_rows[0]["file"]
        vloss, vacc = (
            _column(val_rows, "val_loss", result, vn),
            _column(val_rows, "val_acc", result, vn),
        )
        if vloss:
            s.epoch_val_loss = _asof(epochs, vepochs, vloss)
        if vacc:
            s.epoch_val_acc = _fraction(_asof(epochs, vepochs, vacc), "validation accuracy", result)
    # Skipped steps as the runner counts them (cumulative per epoch), seen at the epoch's last step.
    prev = 0
    for r, st in zip(rows, steps):
        if r.get("skipped") is not None and r["skipped"] > prev:
            s.skipped_steps.extend([st] * min(r["skipped"] - prev, MAX_KEPT - len(s.skipped_steps)))
            prev = r["skipped"]


def _fill_steps_from_epochs(result: ReadResult) -> None:
    """Without step-level logs, the per-epoch values are the samples (one every epoch)."""
    s = result.series
    if s.step or not s.epoch_step:
        return
    s.step = list(s.epoch_step)
    s.loss = list(s.epoch_train_loss)
    s.grad_norm = list(result.epoch_grad_mean)
    s.lr = list(s.epoch_lr)


def read_jsonl_file(path: Path, result: ReadResult | None = None) -> ReadResult:
    """A single per-epoch JSONL file; a file named ``val*`` is read as validation records."""
    result = result or ReadResult("jsonl", path)
    is_val = path.name.startswith("val")
    rows = _read_epoch_file(path, _VAL_FIELDS if is_val else _TRAIN_FIELDS, result, path.name)
    if is_val:
        _apply_epochs([], rows, result)
    else:
        _apply_epochs(rows, [], result)
    _fill_steps_from_epochs(result)
    return result


# -- TensorBoard -------------------------------------------------------------
def _is_event_file(name: str) -> bool:
    return "tfevents" in name


def find_event_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` holding event files, bounded in how much of the tree is walked."""
    found: list[Path] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        seen += len(dirnames) + len(filenames)
        dirnames.sort()
        if any(_is_event_file(f) for f in filenames):
            found.append(Path(dirpath))
        if seen > MAX_WALK_ENTRIES or len(found) >= MAX_EVENT_DIRS:
            break
    return found


class _TruncationCounter(logging.Handler):
    """Counts the records tensorboard's reader could not read (it logs them at debug level and moves on)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.files: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Truncated record in "):
            self.files.add(msg[len("Truncated record in ") :].split(" (")[0])


def _load_event_dir(path: Path, result: ReadResult) -> dict[str, tuple[list[int], list[float]]]:
    """All scalars under one event directory (or file): tag -> (steps, values), sorted, last value per step."""
    from tensorboard.backend.event_processing import event_accumulator as ea_mod
    from tensorboard.util import tensor_util

    guidance = {
        ea_mod.SCALARS: 0,
        ea_mod.TENSORS: 0,
        ea_mod.HISTOGRAMS: 1,
        ea_mod.IMAGES: 1,
        ea_mod.AUDIO: 1,
        ea_mod.COMPRESSED_HISTOGRAMS: 1,
    }
    logger = logging.getLogger("tensorboard")
    counter = _TruncationCounter()
    old_level, old_prop = logger.level, logger.propagate
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        acc = ea_mod.EventAccumulator(str(path), size_guidance=guidance)
        acc.Reload()
    except Exception as exc:  # a reader failure on hostile bytes must not end the analysis
        result.notes.append(f"could not read event files in {path.name}: {type(exc).__name__}")
        return {}
    finally:
        logger.removeHandler(counter)
        logger.setLevel(old_level)
        logger.propagate = old_prop
    if counter.files:
        names = sorted(Path(f).name for f in counter.files)
        result.skip(
            path.name if path.is_dir() else path.parent.name,
            len(names),
            "unreadable or truncated event files"
            + f" ({', '.join(names[:3])}"
            + (", ..." if len(names) > 3 else "")
            + ")",
        )
    tags = acc.Tags()
    out: dict[str, tuple[list[int], list[float]]] = {}
    for tag in tags.get("scalars", []):
        out[tag] = _dedupe((e.step, float(e.value)) for e in acc.Scalars(tag))
    for tag in tags.get("tensors", []):  # TF2-style scalars are stored as tensors
        if tag in out:
            continue
        try:
            if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
                continue
            pts = []
            for e in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                if arr.size == 1:
                    pts.append((e.step, float(arr.reshape(-1)[0])))
        except Exception:
            result.skip(path.name, 1, "unreadable tensor tags")
            continue
        if pts:
            out[tag] = _dedupe(pts)
    return out


def _dedupe(points: Any) -> tuple[list[int], list[float]]:
    last: dict[int, float] = {}
    for step, value in points:
        last[int(step)] = value
    steps = sorted(last)
    thin = Thinned()
    first_bad = True
    for st in steps:
        v = last[st]
        bad = not math.isfinite(v)
        thin.add((st, v), pin=bad and first_bad)
        first_bad = first_bad and not bad
    kept = thin.items()
    return [k[0] for k in kept], [k[1] for k in kept]


def _mtime(d: Path) -> float:
    try:
        return max(f.stat().st_mtime for f in d.iterdir() if _is_event_file(f.name))
    except (OSError, ValueError):
        return 0.0


_SPLIT_DIRS = {"train", "training", "validation", "val", "valid", "eval", "test"}


def _shown(path: Path) -> str:
    """A folder's name as the analyzer's output names it ("." when run from inside it has no name)."""
    return path.name or path.resolve().name


def load_scalars(root: Path, result: ReadResult) -> dict[str, tuple[list[int], list[float]]]:
    """Scalars of one run under ``root``; several runs side by side: the newest, said in a note."""
    if root.is_file():
        loaded = _load_event_dir(root, result)
        result.read.append(f"{root.name}: {len(loaded)} scalar tags")
        return loaded
    dirs = find_event_dirs(root)
    if not dirs:
        return {}
    if root in dirs:
        chosen = [root]
    elif (
        len(dirs) > 1
        and {d.name for d in dirs} <= _SPLIT_DIRS
        and len({d.parent for d in dirs}) == 1
    ):
        chosen = (
            dirs  # Keras-style train/ and validation/ of one run: tags get the folder as prefix
        )
    elif len(dirs) > 1:
        chosen = [max(dirs, key=_mtime)]
        result.notes.append(
            f"{len(dirs)} runs of event files under {_shown(root)}; analyzed the newest, "
            f"{chosen[0].relative_to(root)} (point PATH at one run to choose)"
        )
    else:
        chosen = dirs
    scalars: dict[str, tuple[list[int], list[float]]] = {}
    result.event_dirs = list(chosen)
    for d in chosen:
        loaded = _load_event_dir(d, result)
        prefix = "" if len(chosen) == 1 else f"{d.name}/"
        for tag, sv in loaded.items():
            scalars[prefix + tag] = sv
        n_files = sum(1 for f in d.iterdir() if _is_event_file(f.name))
        rel = _shown(root) if d == root else f"{_shown(root)}/{d.relative_to(root)}"
        result.read.append(f"{rel}: {n_files} event file(s), {len(loaded)} scalar tags")
    return scalars


def _resolve(role: str, tags: list[str], tag_map: dict[str, str], result: ReadResult) -> str | None:
    patterns = (tag_map[role],) if role in tag_map else DEFAULT_TAGS[role]
    for pattern in patterns:
        matches = [t for t in tags if fnmatchcase(t, pattern)]
        if pattern.startswith("lr-"):
            matches = [t for t in matches if not any(w in t for w in _NOT_LR)]
        if matches:
            tag = sorted(matches, key=lambda t: (len(t), t))[0]  # lr-Adam before lr-Adam/pg2
            result.tags_used[role] = tag
            return tag
    if role in tag_map:  # asked for by name: a diagnosis without it would answer another question
        shown = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "")
        raise ReadError(
            f"--tags {role}={tag_map[role]}: no tag matches it in {result.path} "
            f"(tags: {shown or 'none'}); name one of them"
        )
    return None


def _layers(
    prefixes: tuple[str, ...], scalars: dict[str, tuple[list[int], list[float]]]
) -> dict[str, str]:
    """Layer name -> tag, in the order the layers were first logged (first layer first)."""
    for prefix in prefixes:
        found = {
            t[len(prefix) :]: t for t in scalars if t.startswith(prefix) and len(t) > len(prefix)
        }
        if found:
            return found
    return {}


def apply_scalars(
    scalars: dict[str, tuple[list[int], list[float]]],
    result: ReadResult,
    tag_map: dict[str, str],
    epochs_known: bool,
) -> None:
    """Map tags to roles and fill the series; per-epoch fields only when no JSONL gave them."""
    s = result.series
    tags = list(scalars)
    role_tag = {role: _resolve(role, tags, tag_map, result) for role in DEFAULT_TAGS}

    def get(role: str) -> tuple[list[int], list[float]]:
        tag = role_tag.get(role)
        return scalars[tag] if tag else ([], [])

    # step-level: the grid is the loss's steps (else grad norm's, else LR's); the rest as-of joined
    for master in ("loss", "grad_norm", "lr"):
        grid = get(master)[0]
        if grid:
            s.step = list(grid)
            s.loss = _asof(grid, *get("loss"))
            s.grad_norm = _asof(grid, *get("grad_norm"))
            s.lr = _asof(grid, *get("lr"))
            s.update_ratio = _asof(grid, *get("update_ratio"))
            loss_tag = role_tag.get("loss")
            if s.loss and loss_tag is not None and loss_tag not in MEAN_LOSS_TAGS:
                s.sampling = "step"
                if grid[0] > 1:  # the first sample is not the loss on the initial weights
                    s.initial_loss = math.nan
            break
    # cumulative skipped-step counter: each increase is seen at the step it was logged
    if not s.skipped_steps:
        prev = 0.0
        for st, v in zip(*get("skipped_steps")):
            if math.isfinite(v) and v > prev:
                s.skipped_steps.extend([st] * int(min(v - prev, MAX_KEPT - len(s.skipped_steps))))
                prev = v
    # per-layer families on one grid
    families = {
        role: _layers((tag_map[role],) if role in tag_map else LAYER_PREFIXES[role], scalars)
        for role in LAYER_PREFIXES
    }
    for role, layers in families.items():
        if role in tag_map and not layers:
            result.notes.append(f"no tags start with {tag_map[role]!r} for {role}")
    layer_grid: list[int] = next(
        (scalars[next(iter(f.values()))][0] for f in families.values() if f), []
    )
    if layer_grid:
        s.layer_step = list(layer_grid)
        for role, layers in families.items():
            target: dict[str, list[float]] = getattr(s, role)
            for name, tag in layers.items():
                target[name] = _asof(layer_grid, *scalars[tag])
    if epochs_known:
        return
    # per-epoch: the grid is where validation (else the epoch loss/accuracy) was logged
    grid = []
    for role in ("val_loss", "train_loss_epoch", "val_acc", "train_acc"):
        grid = get(role)[0]
        if grid:
            break
    if not grid:
        ep_steps, ep_vals = get("epoch")
        grid = [
            st
            for i, st in enumerate(ep_steps)
            if i + 1 == len(ep_steps) or ep_vals[i + 1] != ep_vals[i]
        ]
    if not grid:
        return
    s.epoch_step = list(grid)
    s.epoch_val_loss = _asof(grid, *get("val_loss"))
    s.epoch_val_acc = _fraction(_asof(grid, *get("val_acc")), "validation accuracy", result)
    s.epoch_train_acc = _fraction(_asof(grid, *get("train_acc")), "train accuracy", result)
    s.epoch_lr = _asof(grid, *get("lr"))
    if get("train_loss_epoch")[0]:
        s.epoch_train_loss = _asof(grid, *get("train_loss_epoch"))
    elif s.loss:
        s.epoch_train_loss = _window_means(s.step, s.loss, grid)


def _window_means(steps: list[int], values: list[float], grid: list[int]) -> list[float]:
    """Mean of the step samples inside each epoch (prev boundary, boundary]; as-of when a window is empty."""
    out: list[float] = []
    lo = -math.inf
    for g in grid:
        window = [v for st, v in zip(steps, values) if lo < st <= g]
        out.append(sum(window) / len(window) if window else _asof([g], steps, values)[0])
        lo = g
    return out


def read_tensorboard(
    root: Path,
    tag_map: dict[str, str] | None = None,
    result: ReadResult | None = None,
    epochs_known: bool = False,
) -> ReadResult:
    """A folder of event files (or one event file), from the runner or from another tool."""
    result = result or ReadResult("tensorboard", root)
    scalars = load_scalars(root, result)
    if scalars:
        apply_scalars(scalars, result, tag_map or {}, epochs_known)
    if not result.series.layer_grad_norm:
        # Logs without per-layer statistics (plain Lightning): the optimizer state in the checkpoint
        # Lightning saves beside them records each layer's gradients.
        for d in result.event_dirs:
            ckpt = newest_checkpoint(d)
            if ckpt is not None and read_optimizer_state(ckpt, result.series, result.notes):
                result.read.append(f"{d.name}/checkpoints/{ckpt.name}: optimizer state")
                break
    return result


# -- run directory -----------------------------------------------------------
def _read_json(path: Path, result: ReadResult) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > 64 * MAX_LINE_BYTES:
            result.skip(path.name, 1, "oversized files")
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        result.skip(path.name, 1, "unreadable files")
        return None
    if not isinstance(data, dict):
        result.skip(path.name, 1, "unreadable files")
        return None
    return data


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    """``cfg[key]`` when it is a mapping, else an empty one."""
    value = cfg.get(key)
    return value if isinstance(value, dict) else {}


def _read_config(run: Path, result: ReadResult) -> dict[str, Any]:
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        import yaml

        # libyaml's parser where PyYAML was built with it (its wheels are): the same documents, ~7x faster
        # than the pure-Python one, and a nesting bomb is refused in ms rather than recursed into for a second
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        cfg = (
            yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
            if path.stat().st_size < MAX_LINE_BYTES
            else None
        )
    except Exception:  # PyYAML errors, bad encodings: the config only adds context
        cfg = None
    if not isinstance(cfg, dict):
        result.skip(".hydra/config.yaml", 1, "unreadable files")
        return {}
    return cfg


def _read_events(path: Path, result: ReadResult) -> None:
    """``events.jsonl``: exact skipped steps, and where non-finite gradients first appeared."""
    s = result.series
    skipped: list[int] = []
    kinds: dict[str, int] = {}
    for obj in iter_jsonl(path, result, "events.jsonl"):
        kind = str(obj.get("kind", ""))[:40]
        # bounded, whatever the file holds
        label = kind if kind in kinds or len(kinds) < 20 else "other"
        kinds[label] = kinds.get(label, 0) + 1
        step = _int(obj.get("step"))
        if kind == "skipped_step" and step is not None and len(skipped) < MAX_KEPT:
            skipped.append(step)
        if (
            kind == "diagnosis"
            and s.first_nonfinite_step is None
            and isinstance(obj.get("issues"), list)
        ):
            # the live diagnosis names the layer where NaN/Inf gradients first appeared
            for issue in obj["issues"]:
                if isinstance(issue, dict) and issue.get("code") == "NONFINITE_GRADIENTS":
                    s.first_nonfinite_step = _int(issue.get("first_step"))
                    layer = issue.get("layer")
                    s.first_nonfinite_layer = (
                        layer
                        if isinstance(layer, str) and s.first_nonfinite_step is not None
                        else None
                    )
    if skipped:
        s.skipped_steps = skipped
    summary = ", ".join(
        f"{n} {k or '?'}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]
    )
    result.read.append(f"events.jsonl: {summary or 'no events'}")


def read_run_dir(run: Path, tag_map: dict[str, str] | None = None) -> ReadResult:
    """A run directory as the runner writes it; each part is optional."""
    result = ReadResult("run_dir", run)
    s = result.series
    rows = (
        _read_epoch_file(run / TRAIN_JSONL, _TRAIN_FIELDS, result, TRAIN_JSONL)
        if (run / TRAIN_JSONL).is_file()
        else []
    )
    val_rows = (
        _read_epoch_file(run / VAL_JSONL, _VAL_FIELDS, result, VAL_JSONL)
        if (run / VAL_JSONL).is_file()
        else []
    )
    _apply_epochs(rows, val_rows, result)
    if (run / "events.jsonl").is_file():
        skipped_before = list(s.skipped_steps)
        s.skipped_steps = []
        _read_events(run / "events.jsonl", result)
        if not s.skipped_steps:
            s.skipped_steps = skipped_before
    # the runner writes its event files in the run directory itself (older runs: in tb/); an
    # attempt-N/ below holds another attempt's, which load_scalars leaves out when the root has its own
    try:
        own = any(_is_event_file(e.name) and e.is_file() for e in os.scandir(run))
    except OSError:
        own = False
    tb = run / "tb" if not own and (run / "tb").is_dir() else run
    read_tensorboard(tb, tag_map, result, epochs_known=bool(s.epoch_step))
    _fill_steps_from_epochs(result)
    cfg = _read_config(run, result)
    data, model = _section(cfg, "data"), _section(cfg, "model")
    result.model_config = model
    k = _int(data.get("num_classes")) or _int(model.get("num_classes"))
    s.num_classes = k if k and k > 1 else None
    batch = _int(data.get("batch_size"))
    if (
        batch and batch > 0
    ):  # what the live hook reads from the loop: the noise of a step, the batch rules
        s.batch_size = batch
    trainer = _section(cfg, "trainer")
    max_steps, max_epochs = _int(trainer.get("max_steps")), _int(trainer.get("max_epochs"))
    per_epoch = _int(rows[0].get("cum_steps")) if rows else None
    if per_epoch and per_epoch > 0:
        s.steps_per_epoch = per_epoch
    # the loop stops at whichever comes first, as the live hook's planned steps say
    by_epochs = max_epochs * per_epoch if max_epochs and max_epochs > 0 and per_epoch else None
    if max_steps and max_steps > 0:
        s.planned_steps = min(max_steps, by_epochs or max_steps)
    elif by_epochs:
        s.planned_steps = by_epochs
    if (run / "report.json").is_file():
        report = _read_json(run / "report.json", result)
        if report is not None:
            result.live_report = report
            if isinstance(report.get("metrics"), dict):
                result.metrics = {k: v for k, v in report["metrics"].items() if isinstance(k, str)}
            actions = (
                (report.get("autotrainer") or {}).get("actions")
                if isinstance(report.get("autotrainer"), dict)
                else None
            )
            if isinstance(actions, list):
                result.actions = [a for a in actions if isinstance(a, dict)]
    return result


def is_run_dir(path: Path) -> bool:
    """A directory laid out as a runner's run directory (any of its files will do)."""
    return any(
        (path / n).exists() for n in (TRAIN_JSONL, VAL_JSONL, "report.json", "events.jsonl", "tb")
    )


def attempt_number(path: Path) -> int | None:
    """N when ``path`` is an AutoTrainer attempt directory ``attempt-N/`` inside a run directory, else None."""
    match = re.fullmatch(r"attempt-(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def _child_runs(path: Path) -> list[Path]:
    """Run directories directly inside ``path`` (a multirun sweep folder, an ``outputs/runs`` folder)."""
    try:
        children = sorted(path.iterdir())[:MAX_EVENT_DIRS]
    except OSError:
        return []
    return [c for c in children if c.is_dir() and is_run_dir(c)]


def read_path(
    path: Path, tag_map: dict[str, str] | None = None, num_classes: int | None = None
) -> ReadResult:
    """Read a run directory, a JSONL file or TensorBoard logs; raises :class:`ReadError` for unusable paths."""
    path = Path(path)
    if not path.exists():
        raise ReadError(f"no such file or directory: {path}")
    if path.is_dir():
        runs = [] if is_run_dir(path) else _child_runs(path)
        if is_run_dir(path):
            result = read_run_dir(path, tag_map)
        elif runs:
            shown = ", ".join(r.name for r in runs[:3]) + (", ..." if len(runs) > 3 else "")
            raise ReadError(
                f"{path} holds {len(runs)} run directories ({shown}): analyze one of them, "
                f"e.g. diag analyze {runs[0]}"
            )
        elif find_event_dirs(path):
            result = read_tensorboard(path, tag_map)
        else:
            raise ReadError(
                f"{path} holds no diagnostics: expected {TRAIN_JSONL}, tb/ or TensorBoard event files"
            )
    elif path.is_file():
        if _is_event_file(path.name):
            result = read_tensorboard(path, tag_map)
        else:
            result = read_jsonl_file(path)
    else:
        raise ReadError(f"{path} is not a regular file or directory")
    if num_classes:
        result.series.num_classes = num_classes
    elif result.series.num_classes is None:
        infer_num_classes(result)
    return result


CHANCE_BAND = 0.03  # the first loss within 3% of ln(k): a classifier's outputs still near uniform


def infer_num_classes(result: ReadResult) -> int | None:
    """The class count a classifier's first logged loss implies (it starts near ``ln(k)``), or None.

    Taken only when the loss is then still at its start: logged at the first step, or the next sample
    is also near ``ln(k)`` (a run that learned before its first log starts lower than ``ln(k)``, and
    would be read as fewer classes).
    """
    s = result.series
    values = list(s.loss or s.epoch_train_loss)[:3]
    steps = s.step if s.loss else s.epoch_step
    if not values or not all(math.isfinite(v) for v in values):
        return None
    start = sorted(values)[
        len(values) // 2
    ]  # the median of the first three: one batch's noise is not k
    if not start > math.log(1.5):
        return None
    k = round(math.exp(start))
    if not 2 <= k <= 100_000:
        return None
    chance = math.log(k)

    def near(v: float) -> bool:
        return abs(v - chance) <= CHANCE_BAND * chance

    first_step = steps[0] if steps else 0
    if not near(values[0]) or not (first_step <= 1 or len(values) == 1 or near(values[1])):
        return None
    s.num_classes = k
    result.notes.append(
        f"classes: {k}, inferred from the first logged loss {start:.3g} ~ ln({k}) (--num-classes sets it)"
    )
    return k
