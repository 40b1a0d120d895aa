"""diag outside the runner: the same faults through a hand loop, a Lightning Trainer and the analyzer.

Five cases on scikit-learn's 8x8 digits (no download), each a plain PyTorch MLP:
``lr_far_too_high`` (SGD at 20), ``lr_far_too_low`` (SGD at 1e-5, no momentum), ``deep_sigmoid``
(ten sigmoid layers under SGD at 0.05), ``dead_relu`` (every bias at -5) and ``healthy`` (Adam at 1e-3,
seeds 0, 1, 2). Each is trained three ways:

- ``hand``: a hand-written loop with the documented glue (``TrainingDebugger().watch(...)``,
  ``train_step(loss)``, ``end_epoch(val_loss=..., val_acc=...)``, ``finish()``);
- ``lightning``: a ``LightningModule`` under ``Trainer(callbacks=[DiagnosticsCallback()])``;
- ``analyze@N``: ``python -m diag analyze`` on the log directory of a Lightning run without the
  callback, with Lightning's defaults otherwise (``train_loss`` on step and epoch, ``val_loss``,
  ``val_acc``, a ``LearningRateMonitor``, the default ``ModelCheckpoint``), logged every N steps
  (Lightning's ``log_every_n_steps``), with no flags. The checkpoint's optimizer state is the only
  per-layer evidence such logs hold (``diag/optimizer_state.py``).

A fault is found when a warning or critical finding names the expected code; a healthy run is
clean when it has no warning or critical finding. ``python bench/anyloop.py [--only CASE] [--ways ...]``
prints a markdown table and writes it to ``bench/results/anyloop.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

EPOCHS = 20
BATCH = 64

CASES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "lr_far_too_high": ("LOSS_EXPLOSION", {"opt": "sgd", "lr": 20.0, "momentum": 0.9}),
    "lr_far_too_low": ("SLOW_CONVERGENCE", {"opt": "sgd", "lr": 1e-5}),
    "deep_sigmoid": (
        "VANISHING_GRADIENTS",
        {"opt": "sgd", "lr": 0.05, "momentum": 0.9, "hidden": [64] * 10, "act": "sigmoid"},
    ),
    "dead_relu": ("DEAD_NEURONS", {"bias": -5.0}),
    "healthy_0": (None, {"seed": 0}),
    "healthy_1": (None, {"seed": 1}),
    "healthy_2": (None, {"seed": 2}),
}
# what else counts as a right answer (a cause the expected symptom is reported as)
ALSO_RIGHT = {
    "LOSS_EXPLOSION": {"NONFINITE_GRADIENTS", "EXPLODING_GRADIENTS"},
    "SLOW_CONVERGENCE": {"NO_LEARNING", "UNDERFITTING"},
    "VANISHING_GRADIENTS": {"SATURATED_ACTIVATIONS"},
    "DEAD_NEURONS": set(),
}


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardized digits, split 80/20 by a seeded permutation."""
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n = int(0.8 * len(x))
    mean, std = x[:n].mean(0), x[:n].std(0) + 1e-6
    x = (x - mean) / std
    return x[:n], y[:n], x[n:], y[n:]


def make_model(
    hidden: list[int] | None = None, act: str = "relu", bias: float | None = None
) -> nn.Module:
    """An MLP on the 64 pixels; ``bias`` fills every bias (the dead-ReLU fault)."""
    layers: list[nn.Module] = []
    width = 64
    for h in hidden or [256, 256]:
        layers += [nn.Linear(width, h), nn.Sigmoid() if act == "sigmoid" else nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    model = nn.Sequential(*layers)
    if bias is not None:
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, bias)
    return model


def make_optimizer(
    model: nn.Module, opt: str = "adam", lr: float = 1e-3, momentum: float = 0.0
) -> torch.optim.Optimizer:
    if opt == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return torch.optim.Adam(model.parameters(), lr=lr)


def _split(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    model_kw = {k: cfg[k] for k in ("hidden", "act", "bias") if k in cfg}
    opt_kw = {k: cfg[k] for k in ("opt", "lr", "momentum") if k in cfg}
    return model_kw, opt_kw, int(cfg.get("seed", 0))


def hand_loop(cfg: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """The documented glue around a plain loop; returns the report's issue details."""
    from diag import TrainingDebugger

    model_kw, opt_kw, seed = _split(cfg)
    torch.manual_seed(seed)
    xt, yt, xv, yv = digits(seed)
    model = make_model(**model_kw)
    optimizer = make_optimizer(model, **opt_kw)
    steps = EPOCHS * ((len(xt) + BATCH - 1) // BATCH)
    debugger = TrainingDebugger().watch(
        model, optimizer, num_classes=10, max_steps=steps, run_dir=run_dir
    )
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xt)).split(BATCH):
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            debugger.train_step(loss)
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            val_loss = nn.functional.cross_entropy(logits, yv).item()
            val_acc = (logits.argmax(1) == yv).float().mean().item()
        debugger.end_epoch(val_loss=val_loss, val_acc=val_acc)
    return debugger.finish()["details"]


def lightning_run(
    cfg: dict[str, Any],
    run_dir: Path,
    callback: bool = True,
    log_every: int = 50,
    checkpointing: bool = False,
) -> list[dict[str, Any]]:
    """A LightningModule with Lightning's usual logging; the callback's issue details (or none)."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    model_kw, opt_kw, seed = _split(cfg)
    pl.seed_everything(seed, verbose=False)
    xt, yt, xv, yv = digits(seed)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model(**model_kw)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self.net(x)
            self.log("val_loss", nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(self.net, **opt_kw)

    callbacks: list[Any] = [pl.callbacks.LearningRateMonitor(logging_interval="step")]
    if callback:
        from diag.integrations.lightning import DiagnosticsCallback

        callbacks.append(DiagnosticsCallback())
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(run_dir)),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpointing,
        log_every_n_steps=log_every,
    )
    trainer.fit(
        Module(),
        DataLoader(TensorDataset(xt, yt), batch_size=BATCH, shuffle=True),
        DataLoader(TensorDataset(xv, yv), batch_size=512),
    )
    if not callback:
        return []
    report = json.loads((Path(trainer.log_dir) / "report.json").read_text())
    return report["issues"]


def analyze_lightning(cfg: dict[str, Any], run_dir: Path, log_every: int) -> list[dict[str, Any]]:
    from diag.analyze import main

    lightning_run(cfg, run_dir, callback=False, log_every=log_every, checkpointing=True)
    out = io.StringIO()
    with redirect_stdout(out):
        main([str(run_dir / "lightning_logs"), "--json"])
    return json.loads(out.getvalue())["issues"]


def verdict(expected: str | None, issues: list[dict[str, Any]]) -> tuple[bool, str]:
    serious = [i["code"] for i in issues if i["severity"] in ("warning", "critical")]
    found = ", ".join(serious) or "-"
    if expected is None:
        return not serious, found
    return bool(set(serious) & ({expected} | ALSO_RIGHT[expected])), found


WAYS: dict[str, Callable[[dict[str, Any], Path], list[dict[str, Any]]]] = {
    "hand": hand_loop,
    "lightning": lightning_run,
    "analyze@10": lambda cfg, d: analyze_lightning(cfg, d, 10),
    "analyze@50": lambda cfg, d: analyze_lightning(cfg, d, 50),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="case names")
    parser.add_argument("--ways", nargs="*", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("diag").setLevel(logging.ERROR)
    logging.getLogger("diag").addHandler(logging.NullHandler())
    cases = {k: v for k, v in CASES.items() if not args.only or k in args.only}
    rows = [
        "| case | expected | " + " | ".join(args.ways) + " |",
        "|---|---|" + "---|" * len(args.ways),
    ]
    right = dict.fromkeys(args.ways, 0)
    for name, (expected, cfg) in cases.items():
        cells = []
        for way in args.ways:
            with tempfile.TemporaryDirectory() as tmp:
                ok, found = verdict(expected, WAYS[way](cfg, Path(tmp)))
            right[way] += ok
            cells.append(f"{'ok' if ok else 'MISS'}: {found}")
            print(f"{name:16} {way:11} {'ok' if ok else 'MISS'}  {found}", file=sys.stderr)
        rows.append(f"| {name} | {expected or 'clean'} | " + " | ".join(cells) + " |")
    rows.append(
        "| **right** | | " + " | ".join(f"{right[w]}/{len(cases)}" for w in args.ways) + " |"
    )
    table = "\n".join(rows)
    print(table)
    if not args.no_write and not args.only:
        out = Path(__file__).parent / "results" / "anyloop.md"
        out.write_text("# diag outside the runner (`python bench/anyloop.py`)\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
