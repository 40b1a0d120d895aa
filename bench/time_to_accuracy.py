"""What a user waits for: ``python -m runner`` from process start to the end of training, and the accuracy it reaches.

Each run is a fresh ``python -m runner ...`` subprocess (Hydra start-up, imports,
data, model, the loop, the test pass, reports), timed from just before the
process is started. The child's own ``events.jsonl`` timestamps split the wall
time into

* start-up: process start -> ``fit_start`` (interpreter, imports, Hydra composition,
  data loading, model and optimizer building);
* end of training: process start -> ``fit_end`` (after the last epoch and the test pass,
  when ``report.json`` is written);
* exit: the process has ended (TensorBoard files closed, summary.png drawn).

Rows: the default run (MLP on the 8x8 digits, 20 epochs), the CNN on the digits
(``model=cnn``), and the start-up alone (``trainer.max_epochs=0``: build, test
the untrained model, report, exit). The floor row is a bare ``python -c`` that
imports torch and builds one optimizer (torch imports its compiler stack on the
first optimizer): no Python program using torch starts faster on this machine.
Each row is the median of ``--repeats`` runs, interleaved.

    python bench/time_to_accuracy.py            # 5 repeats (about 1-3 minutes on 2 CPU cores)
    python bench/time_to_accuracy.py --quick    # smoke test: 1 repeat, dry run + default run for 1 epoch
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_file import write_results  # bench/ is on sys.path: this script's folder

ROOT = Path(__file__).resolve().parents[1]

RUNS: dict[str, list[str]] = {
    "start-up only (trainer.max_epochs=0)": ["trainer.max_epochs=0"],
    "mlp/digits (the default run)": [],
    "cnn/digits (model=cnn)": ["model=cnn"],
}
FLOOR = "floor: python -c 'import torch; one optimizer'"
FLOOR_CODE = "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"
STARTUP_TARGET_S = 3.0


def _events(run_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    path = run_dir / "events.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") in ("fit_start", "fit_end") and rec["kind"] not in out:
                out[rec["kind"]] = float(rec["time"])
    return out


def run_once(overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """One ``python -m runner`` subprocess; wall times from just before it started."""
    cmd = [
        sys.executable,
        "-m",
        "runner",
        *overrides,
        f"hydra.run.dir={run_dir}",
        "trainer.progress=false",
    ]
    cpu0 = _children_cpu()
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    exit_s = time.time() - start
    cpu_s = _children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    ev = _events(run_dir)
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    m = report.get("metrics", {})
    return {
        "startup": ev["fit_start"] - start if "fit_start" in ev else float("nan"),
        "trained": ev["fit_end"] - start if "fit_end" in ev else float("nan"),
        "exit": exit_s,
        "cpu": cpu_s,
        "test_acc": m.get("test_acc"),
        "epochs": m.get("epochs"),
        "steps": m.get("steps"),
    }


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (all their threads)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def floor_once(env: dict[str, str]) -> tuple[float, float]:
    cpu0 = _children_cpu()
    start = time.time()
    subprocess.run([sys.executable, "-c", FLOOR_CODE], cwd=ROOT, env=env, check=True)
    return time.time() - start, _children_cpu() - cpu0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: 1 repeat, 1 epoch per training run"
    )
    ap.add_argument(
        "--repeats", type=int, default=None, help="runs per row (default 5; 1 with --quick)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "time_to_accuracy.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    runs = dict(RUNS)
    if args.quick:  # the dry run and the default run for 1 epoch: every code path, a few seconds
        runs = {
            name: [*ov, *([] if "max_epochs" in " ".join(ov) else ["trainer.max_epochs=1"])]
            for name, ov in RUNS.items()
            if not ov or "max_epochs" in " ".join(ov)
        }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    floors: list[tuple[float, float]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tta-") as tmp:
        for r in range(repeats):
            floors.append(floor_once(env))
            for i, (name, overrides) in enumerate(runs.items()):
                res = run_once(overrides, Path(tmp) / f"r{r}_{i}", env)
                results[name].append(res)
                print(
                    f"  repeat {r + 1}/{repeats} {name}: start-up {res['startup']:.2f} s, "
                    f"trained {res['trained']:.2f} s, exit {res['exit']:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )

    med = statistics.median
    lines = [
        "| run | start-up: to first step (s) | to end of training (s) | process exit (s) | process CPU time (s) "
        "| test accuracy | epochs (steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in results.items():
        accs = [x["test_acc"] for x in rs if x["test_acc"] is not None]
        acc = f"{med(accs):.4f}" if accs else "n/a"
        lines.append(
            f"| {name} | {med(x['startup'] for x in rs):.2f} | {med(x['trained'] for x in rs):.2f} | "
            f"{med(x['exit'] for x in rs):.2f} | {med(x['cpu'] for x in rs):.2f} | {acc} | "
            f"{rs[0]['epochs']} ({rs[0]['steps']}) |"
        )
    floor_wall, floor_cpu = med(f[0] for f in floors), med(f[1] for f in floors)
    lines.append(f"| {FLOOR} | {floor_wall:.2f} | - | {floor_wall:.2f} | {floor_cpu:.2f} | - | - |")
    dry = results["start-up only (trainer.max_epochs=0)"]
    startup = med(x["startup"] for x in dry)
    # paired: same repeat, same neighbours
    own = med(x["startup"] - f[0] for x, f in zip(dry, floors))
    dry_exit = med(x["exit"] for x in results["start-up only (trainer.max_epochs=0)"])
    notes = [
        "",
        f"- start-up (to the first step) {startup:.2f} s: target < {STARTUP_TARGET_S:.0f} s -> "
        f"{'met' if startup < STARTUP_TARGET_S else 'MISSED'}; of it, {floor_wall:.2f} s is the floor "
        "(the interpreter, torch and its first optimizer); the runner's own share (median over repeats of "
        f"start-up minus that repeat's floor, which also pays an interpreter exit) is {own:+.2f} s",
        f"- the dry run (max_epochs=0) exits after {dry_exit:.2f} s",
        f"- median of {repeats} run(s) each, interleaved; torch {_torch_version(env)}, default threads; "
        "wall times on a shared 2-core machine vary with the neighbours' load",
    ]
    if args.quick:
        notes.append(
            "- --quick: 1 epoch per training run (a smoke test: figures are not meaningful)"
        )
    text = "\n".join(lines + notes)
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "time_to_accuracy.py", text, argv)
    return 0


def _torch_version(env: dict[str, str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:  # pragma: no cover
        return "?"


if __name__ == "__main__":
    sys.exit(main())
