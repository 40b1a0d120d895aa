"""``python -m runner.check_data data=cifar10``: look at the data before spending a run on it.

Composes its own root config (``runner/conf/check_data.yaml``) over the same ``data``
group as ``python -m runner`` (so every ``data.*`` override works) and prints a sanity
report: split sizes, class balance, label range, pixel mean/std after normalisation, and
whether the train and val transforms really differ (validation must never be augmented). It
writes sample grids of train and val images to TensorBoard and to
``samples.png``, and the numbers to ``data_report.json``, in its output
directory (``${paths.log_dir}/check_data/<time>`` unless ``hydra.run.dir`` is given).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from runner.conf_dir import CONF_DIR
from runner.data.datamodule import SPLITS, ImageDataModule
from runner.errors import UserError, report_error
from runner.report import tensorboard_command
from runner.run_dir import RUN_MARKS, claim

GRID = 32  # sample images per grid
IMBALANCE_WARN = 1.5  # largest/smallest class count in a split
# ...and only when sampling noise cannot explain it: a chi-square test against equal classes
IMBALANCE_P = 1e-3


def imbalanced(counts: list[int]) -> bool:
    """Classes differ more than a random split of this size would make them differ.

    A 144-example split of 10 classes has ~14 per class and a spread of +-4 by chance alone, so a
    ratio test by itself warns on every small split; the chi-square p-value scales with the size.
    """
    from scipy.stats import chisquare

    present = [v for v in counts if v > 0]
    if len(present) < 2 or max(present) / min(present) <= IMBALANCE_WARN:
        return False
    return float(chisquare(present).pvalue) < IMBALANCE_P


def _moments(loader, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of everything ``loader`` yields (accumulated in float64)."""
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for x, _ in loader:
        x = x.double()
        total += x.sum(dim=(0, 2, 3)).cpu()
        squares += (x * x).sum(dim=(0, 2, 3)).cpu()
        count += x.numel() // channels
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt()
    # + 0.0 turns a rounded -0.0 into 0.0 (printed as "-0.0" it reads as a sign problem)
    return [round(float(v), 4) + 0.0 for v in mean], [round(float(v), 4) + 0.0 for v in std]


def _views(data: ImageDataModule, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same images through the train pipeline and the val pipeline of the configured loader path."""
    if data.loader_kind == "dataloader":
        from torchvision.transforms.functional import to_pil_image

        torch.manual_seed(0)
        pils = [to_pil_image(img) for img in images]
        train_tf, val_tf = data.vision_transform("train"), data.vision_transform("val")
        return torch.stack([train_tf(p) for p in pils]), torch.stack([val_tf(p) for p in pils])
    scale = (1.0 / (255.0 * data.std)).view(1, -1, 1, 1)
    shift = (data.mean / data.std).view(1, -1, 1, 1)
    aug = data.augment_fn()
    train = aug(images, torch.Generator().manual_seed(0)) if aug is not None else images
    return train.float() * scale - shift, images.float() * scale - shift


def check(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build the configured data, measure it, write the sample grids; return the report as a dict."""
    data: ImageDataModule = instantiate(cfg.data)
    data.setup()
    splits = {s: getattr(data, s) for s in SPLITS}
    counts = {
        s: torch.bincount(split.labels, minlength=data.num_classes).tolist()
        for s, split in splits.items()
    }
    lo = min(int(split.labels.min()) for split in splits.values())
    hi = max(int(split.labels.max()) for split in splits.values())
    train_loader = data.loader("train", generator=torch.Generator().manual_seed(int(cfg.seed)))
    moments = {
        "train": _moments(train_loader, data.in_channels),
        "val": _moments(data.loader("val"), data.in_channels),
    }
    val_a, val_b = next(iter(data.loader("val")))[0], next(iter(data.loader("val")))[0]
    assert data.val is not None, "setup() made the splits"
    probe = data.val.images[:64]
    train_view, val_view = _views(data, probe)
    changed = int((train_view != val_view).flatten(1).any(1).sum())

    warnings = []
    if lo < 0 or hi >= data.num_classes:
        warnings.append(f"labels span {lo}..{hi} but data.num_classes={data.num_classes}")
    for s, c in counts.items():
        present = [v for v in c if v > 0]
        if len(present) < data.num_classes and s == "train":
            warnings.append(f"{data.num_classes - len(present)} classes have no training examples")
        if imbalanced(c):
            warnings.append(
                f"{s} classes are imbalanced (largest/smallest = {max(present) / min(present):.2f})"
            )
    mean, std = moments["val"]
    if data.normalize and (max(abs(m) for m in mean) > 0.5 or max(abs(v - 1) for v in std) > 0.5):
        warnings.append(
            f"after normalisation val pixels have mean {mean} and std {std}: the data.mean/data.std "
            "in config do not fit this data (set them to null to measure them)"
        )
    if data.augmentation == "standard" and changed == 0:
        warnings.append(
            "augmentation=standard but the train transform changed none of the sample images"
        )
    if not torch.equal(val_a, val_b):
        warnings.append(
            "the validation batch differs between two reads: validation is being augmented"
        )

    report = {
        "data": cfg.data.get("_target_"),
        "loader": data.loader_kind,
        "sizes": {s: len(split) for s, split in splits.items()},
        "num_classes": data.num_classes,
        "label_range": [lo, hi],
        "class_counts": counts,
        "pixel_mean": {k: v[0] for k, v in moments.items()},
        "pixel_std": {k: v[1] for k, v in moments.items()},
        "transforms": {
            "train": data.describe_transform("train"),
            "val": data.describe_transform("val"),
            "test": data.describe_transform("test"),
        },
        "transforms_differ": changed > 0,
        "changed_by_train_transform": [changed, len(probe)],
        "val_repeatable": bool(torch.equal(val_a, val_b)),
        "warnings": warnings,
    }
    _write_samples(data, train_loader, out_dir, report)
    (out_dir / "data_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _denormalise(x: torch.Tensor, data: ImageDataModule) -> torch.Tensor:
    return (x.cpu() * data.std.view(1, -1, 1, 1) + data.mean.view(1, -1, 1, 1)).clamp(0, 1)


def _write_samples(
    data: ImageDataModule, train_loader, out_dir: Path, report: dict[str, Any]
) -> None:
    """Sample grids of train (as augmented) and val images: TensorBoard images and ``samples.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.utils import make_grid

    grids, labels, images = {}, {}, {}
    for split, loader in (("train", train_loader), ("val", data.loader("val"))):
        x, y = next(iter(loader))
        images[split] = _denormalise(x[:GRID], data)
        labels[split] = [int(v) for v in y[:GRID].cpu()]
        grids[split] = make_grid(images[split], nrow=8, padding=2, pad_value=1.0)
    writer = SummaryWriter(str(out_dir))  # in the folder itself: TensorBoard names it after it
    try:
        for split, grid in grids.items():
            writer.add_image(f"samples/{split}", grid, 0)
        writer.add_text("data_report", f"```\n{json.dumps(report, indent=2)}\n```", 0)
    finally:
        writer.close()
    # one cell per image with its label under it: a wrong label is visible at a glance
    cols = 8
    rows = (GRID + cols - 1) // cols
    fig = plt.figure(figsize=(13, 1.05 * rows + 0.7))
    halves: Any = fig.subfigures(1, 2, wspace=0.04)  # an array of two SubFigures
    for half, split in zip(halves, ("train", "val")):
        axes = half.subplots(rows, cols)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k >= len(labels[split]):
                continue
            img = images[split][k].permute(1, 2, 0).numpy()
            ax.imshow(
                img[..., 0] if img.shape[2] == 1 else img,
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.text(
                0.5,
                -0.04,
                str(labels[split][k]),
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=8,
            )
        half.suptitle(
            f"{split} (label under each image): {report['transforms'][split]}", fontsize=9
        )
    name = str(report["data"]).rsplit(".", 1)[-1]
    fig.suptitle(
        f"{name}: {GRID} train and {GRID} val images as the loaders yield them "
        f"({report['loader']} loader)",
        fontsize=11,
        y=1.08,
    )
    fig.savefig(out_dir / "samples.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def format_report(report: dict[str, Any], out_dir: Path) -> str:
    """The report as the lines a person reads."""

    def balance(c: list[int]) -> str:
        present = [v for v in c if v > 0]
        if not present:
            return "empty"
        return f"min {min(present)} / max {max(present)} per class ({len(present)} classes present)"

    sizes = report["sizes"]
    lines = [
        f"data         {report['data']} ({report['loader']} loader)",
        f"splits       train {sizes['train']} | val {sizes['val']} | test {sizes['test']}",
        f"labels {report['label_range'][0]}..{report['label_range'][1]} "
        f"(num_classes {report['num_classes']})",
        *(f"balance      {s:5s} {balance(c)}" for s, c in report["class_counts"].items()),
        "pixels after normalisation (per channel)",
        *(
            f"  {s:5s} mean {report['pixel_mean'][s]} std {report['pixel_std'][s]}"
            for s in ("train", "val")
        ),
        f"transforms   train: {report['transforms']['train']}",
        f"             val/test: {report['transforms']['val']}",
        f"train and val transforms differ: {'yes' if report['transforms_differ'] else 'no'} "
        f"({report['changed_by_train_transform'][0]} of {report['changed_by_train_transform'][1]} "
        "sample images changed by the train transform)",
        f"val batch identical when read twice: {'yes' if report['val_repeatable'] else 'NO'}",
        *(f"WARNING      {w}" for w in report["warnings"]),
        f"samples      {out_dir / 'samples.png'}",
        f"tensorboard  {tensorboard_command(out_dir)}",
    ]
    return "\n".join(lines)


def training_run_marks(folder: Path) -> list[str]:
    """What in ``folder`` says a training run is there (its checkpoint, report, events or config)."""
    marks = [m for m in (*RUN_MARKS, "events.jsonl") if (folder / m).exists()]
    config = folder / ".hydra" / "config.yaml"
    if config.is_file() and re.search(
        r"^trainer:", config.read_text(encoding="utf-8", errors="replace"), re.M
    ):
        marks.append(".hydra/config.yaml of a training run")
    return marks


def refuse_a_training_run(folder: Path, key: str, named: str) -> None:
    """check_data writes ``.hydra/``, its report and sample grids into its folder: a folder holding a
    training run is refused before anything is written (no ``trainer.resume`` applies to a data check)."""
    marks = training_run_marks(folder)
    if marks:
        raise UserError(
            f"{named} holds a training run ({', '.join(marks)}), which check_data would overwrite: "
            f"choose another {key} (nothing was changed)"
        )


class ClaimCheckDir(Callback):
    """check_data's own run-directory callback (``conf/check_data.yaml``), in place of the runner's
    ``ClaimRunDir``: whose refusal of a folder holding a run offers ``trainer.resume=auto``, which
    check_data has not, and which ``+trainer.resume=auto`` let through to overwrite the run."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        """Refuse a folder holding a training run (read only), then own it as a training run's is owned."""
        try:
            run_dir = Path(str(config.hydra.run.dir))
            refuse_a_training_run(run_dir, "hydra.run.dir", f"hydra.run.dir={run_dir}")
            claim(run_dir)
        except UserError as exc:  # Hydra turns a callback's exceptions into warnings: exit here
            report_error(exc)
            sys.exit(exc.exit_code)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        """Refuse a sweep folder whose job folders hold training runs before any job writes into one."""
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            for job in sorted(p for p in sweep.iterdir() if p.is_dir()) if sweep.is_dir() else ():
                refuse_a_training_run(
                    job, "hydra.sweep.dir", f"hydra.sweep.dir={sweep}: job {job.name}"
                )
        except UserError as exc:
            report_error(exc)
            sys.exit(exc.exit_code)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="check_data")
def main(cfg: DictConfig) -> None:
    """The Hydra task: print the report, or one line and exit code 2 for user errors."""
    try:
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        print(format_report(check(cfg, out_dir), out_dir))
    except UserError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)


def cli() -> None:
    """``python -m runner.check_data``: Hydra's composition errors (an unknown key, a bad option) said in
    one line with exit code 2, as ``python -m runner`` says them (``HYDRA_FULL_ERROR=1`` keeps Hydra's)."""
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if full_error:
            raise
        from runner.hydra_errors import one_line

        command = "python -m runner.check_data"
        report_error(UserError(one_line(exc, CONF_DIR, "check_data", command)))
        sys.exit(UserError.exit_code)


if __name__ == "__main__":
    cli()
