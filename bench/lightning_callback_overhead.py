"""What DiagnosticsCallback costs a Lightning Trainer: Lightning with and without it on the CNN of overhead.py.

The workload, model, optimizer, batches and lockstep timing are ``bench/overhead.py``'s (``cnn/synthetic28``:
the small CNN on seeded synthetic 28x28 inputs, batch 128, fused Adam, norm clipping at 1.0). Each round
runs ``lightning`` (its TensorBoard logger, the loss logged with ``self.log``) and ``lightning +
DiagnosticsCallback`` (the same plus ``callbacks=[DiagnosticsCallback()]`` with its defaults), each in
lockstep with a hand loop; a variant's ratio is the hand loop's CPU time over its own. The callback's cost
is ``1 - ratio(with) / ratio(without)``, median over rounds.

    python bench/lightning_callback_overhead.py [--rounds 7] [--steps 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import overhead
import torch
from overhead import LockstepBatches, build, hand_partner, lightning_available

WORKLOAD = "cnn/synthetic28"
CLIP = 1.0


def lightning_loop(parts: Any, batches: LockstepBatches, with_callback: bool) -> None:
    """overhead.py's Lightning loop (logger on), optionally with the diagnostics callback."""
    from diag.integrations.lightning import DiagnosticsCallback

    callbacks = [DiagnosticsCallback(console=False)] if with_callback else []
    overhead.lightning_loop(parts, batches, CLIP, log=True, callbacks=callbacks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    if not lightning_available():
        print("pytorch-lightning is not installed (pip install -e '.[lightning]')", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    ratios: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for with_cb in order:
                root = Path(tmp) / f"r{r}-{int(with_cb)}"
                parts, partner = (
                    build(WORKLOAD, "off", root / "run"),
                    build(WORKLOAD, "off", root / "hand"),
                )
                batches = LockstepBatches(
                    parts.train_loader, args.warmup + args.steps + 1, hand_partner(partner, CLIP)
                )
                lightning_loop(parts, batches, with_cb)
                rate = batches.rates(args.warmup, args.steps)
                ratios[with_cb].append(rate["cpu"] / rate["partner_cpu"])
            print(
                f"round {r + 1}: lightning {ratios[False][-1]:.3f}, "
                f"+ callback {ratios[True][-1]:.3f} (x hand loop, CPU time)",
                file=sys.stderr,
            )
    without, with_cb_ = statistics.median(ratios[False]), statistics.median(ratios[True])
    per_round = [1 - w / wo for w, wo in zip(ratios[True], ratios[False])]
    print("| variant | steps/s vs hand loop (median, CPU) |")
    print("|---|---|")
    print(f"| lightning | {without:.3f} |")
    print(f"| lightning + DiagnosticsCallback | {with_cb_:.3f} |")
    print(
        f"\ncallback cost: {1 - with_cb_ / without:.1%} of Lightning's step time "
        f"(median of per-round costs {statistics.median(per_round):.1%}; rounds: "
        + ", ".join(f"{c:.1%}" for c in per_round)
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
