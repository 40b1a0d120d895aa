"""Is a change to the runner's loop or hooks faster? Its classes against a git revision's, in one process.

Whole-run figures (``bench/whole_run.py``) move by +-0.3 ms an epoch from run to run on a shared host,
more than most single changes to a hook are worth. Here both versions run in the same process, built
from the same config, alternating round by round (the order flips each round): ``old`` has the named
classes' methods taken from the revision's source of their modules, ``new`` is the working tree. Each
run is paired with a hand loop whose epochs alternate with its own (``whole_run.Shadow``), and a round
gives, per version, the median over its epochs of the epoch minus the hand epoch after it (ms); the
verdict is the median over rounds of old minus new, and in how many rounds new was faster.

    python bench/ab_revision.py --classes diag.epoch_log:EpochJSONL,runner.trainer:Trainer
    python bench/ab_revision.py --rev HEAD~3 --classes diag.live:DiagnosticsHook --rounds 24

Only methods and class attributes are swapped: a change to a module-level function the classes call,
or to a class not named, is in both versions, unless the function is named in ``--functions``: the old
classes' code then calls the revision's version of it (where their module imported it by name).

    python bench/ab_revision.py --rev c407ca2 --classes runner.trainer:Trainer \
        --functions diag.gradients:host_grad_norm
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch
from overhead import quiet  # bench/ is on sys.path
from results_file import write_results
from whole_run import PLAN, QUICK_PLAN, WORKLOADS, HandLoop, Shadow, build, run_runner

ROOT = Path(__file__).resolve().parents[1]
# the class attributes that are not the class's own code
_NOT_SWAPPED = frozenset(("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__"))
_ABSENT = object()


class BadInput(Exception):
    """What the user asked for cannot be found: one line, exit 2."""


def revision_object(rev: str, spec: str, flag: str = "--classes") -> tuple[Any, Any]:
    """``module:name`` as imported now and as the revision's source of that module defines it (``flag``
    names the option it came from in the one-line errors)."""
    modname, sep, name = spec.partition(":")
    if not sep or not name:
        raise BadInput(f"{flag}: {spec!r} is not module:name (e.g. diag.epoch_log:EpochJSONL)")
    try:
        current = getattr(importlib.import_module(modname), name)
    except (ImportError, AttributeError):
        raise BadInput(f"{flag}: no {name} in module {modname}") from None
    path = modname.replace(".", "/") + ".py"
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True
    )
    if shown.returncode:
        raise BadInput(f"--rev {rev}: git has no {path} there ({shown.stderr.strip()})")
    module = types.ModuleType(f"{modname}@{rev}")
    module.__file__ = f"{rev}:{path}"
    sys.modules[module.__name__] = module  # dataclasses and typing look their module up by name
    exec(compile(shown.stdout, module.__file__, "exec"), module.__dict__)
    if not hasattr(module, name):
        raise BadInput(f"--rev {rev}: {path} has no {name}")
    return current, getattr(module, name)


def revision_class(rev: str, spec: str) -> tuple[type, type]:
    """``module:Class`` as imported now and as the revision's source of that module defines it."""
    current, old = revision_object(rev, spec)
    if not isinstance(current, type) or not isinstance(old, type):
        raise BadInput(f"--classes: {spec} is not a class (now or at --rev {rev})")
    return current, old


def use_revision_functions(pairs: list[tuple[type, type]], rev: str, specs: list[str]) -> None:
    """In the old classes' modules, each name bound to one of the ``module:function`` specs now is bound to
    the revision's version of it (the new classes' modules keep the current one)."""
    for spec in specs:
        current, old = revision_object(rev, spec, flag="--functions")
        if not callable(old):
            raise BadInput(f"--functions: {spec} is not a function at --rev {rev}")
        rebound = 0
        for module in {sys.modules[old_cls.__module__] for _, old_cls in pairs}:
            for name, value in list(vars(module).items()):
                if value is current:
                    setattr(module, name, old)
                    rebound += 1
        if not rebound:
            raise BadInput(f"--functions: none of the --classes' modules imports {spec} by name")


class Versions:
    """Swaps the named classes' own attributes between the revision's and the working tree's."""

    def __init__(self, pairs: list[tuple[type, type]]) -> None:
        self.swaps = [
            (cls, name, old.__dict__.get(name, _ABSENT), cls.__dict__.get(name, _ABSENT))
            for cls, old in pairs
            for name in (set(cls.__dict__) | set(old.__dict__)) - _NOT_SWAPPED
        ]

    def use(self, which: str) -> None:
        """``"old"``: the revision's methods in the classes; ``"new"``: the working tree's again."""
        for cls, name, old, new in self.swaps:
            value = old if which == "old" else new
            if value is _ABSENT:
                if name in cls.__dict__:
                    delattr(cls, name)
            else:
                setattr(cls, name, value)


def measure(
    versions: Versions, workload: str, diag: str, rounds: int, quick: bool, root: Path
) -> dict[str, list[float]]:
    """Per version, one figure per round: the median over its epochs of (its epoch - the hand epoch
    after it), in ms."""
    # whole_run's runs (epochs, warm-up); the rounds are this script's
    epochs, warmup = (QUICK_PLAN if quick else PLAN)[workload][:2]
    out: dict[str, list[float]] = {"old": [], "new": [], "hand": []}
    try:
        for r in range(rounds):
            for which in ("old", "new") if r % 2 == 0 else ("new", "old"):
                versions.use(which)
                run_dir = root / f"r{r}_{which}"
                parts = build(workload, diag, run_dir, (), epochs)
                shadow = Shadow(
                    HandLoop(build(workload, "off", run_dir / "hand", (), epochs), epochs)
                )
                ends, _ = run_runner(parts, shadow)
                extra, hand = shadow.extra_ms(ends, warmup)
                out[which].append(extra)
                out["hand"].append(hand)
            print(
                f"  round {r + 1}/{rounds}: old {out['old'][-1]:+.2f} ms, new {out['new'][-1]:+.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    finally:
        versions.use("new")
    return out


def report(res: dict[str, list[float]], rev: str, classes: str) -> list[str]:
    med = statistics.median
    diff = [o - n for o, n in zip(res["old"], res["new"])]
    faster = sum(d > 0 for d in diff)
    return [
        "| version | epoch minus the hand loop's (ms, median over rounds) | range |",
        "|---|---|---|",
        *(
            f"| {name} | {med(res[key]):+.3f} | {min(res[key]):+.3f} - {max(res[key]):+.3f} |"
            for key, name in (("old", f"old ({rev})"), ("new", "new (working tree)"))
        ),
        "",
        f"- {classes}: old minus new, per round: median {med(diff):+.3f} ms (positive: new is faster); "
        f"new faster in {faster}/{len(diff)} rounds; hand epoch {med(res['hand']):.1f} ms",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the git revision to compare with (default HEAD)")
    ap.add_argument("--classes", required=True, help="module:Class[,module:Class...] to swap")
    ap.add_argument(
        "--functions",
        default="",
        help="module:function[,...] the old classes call in the revision's version",
    )
    ap.add_argument("--workload", choices=list(WORKLOADS), default="mlp/digits")
    ap.add_argument("--diag", choices=("off", "default", "full"), default="default")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 epochs")
    ap.add_argument("--out", type=Path, help="also write the table here")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.rounds < 1:
        print("ab_revision: --rounds must be at least 1", file=sys.stderr)
        return 2
    try:
        pairs = [revision_class(args.rev, s) for s in args.classes.split(",")]
        use_revision_functions(pairs, args.rev, [f for f in args.functions.split(",") if f])
        versions = Versions(pairs)
    except BadInput as exc:
        print(f"ab_revision: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rounds = 1 if args.quick else args.rounds
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, quiet():
        res = measure(versions, args.workload, args.diag, rounds, args.quick, Path(tmp))
    header = [
        f"torch {torch.__version__}, 1 intra-op thread; {args.workload}, diag={args.diag}; {rounds} "
        "round(s), the versions alternating"
        + ("; --quick (smoke test: figures are not meaningful)" if args.quick else ""),
        "",
    ]
    swapped = args.classes + (f" (and {args.functions})" if args.functions else "")
    text = "\n".join(header + report(res, args.rev, swapped))
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.out:
        write_results(args.out, "ab_revision.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
