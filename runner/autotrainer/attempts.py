"""The attempt loop: the train task, and again as ``attempt-N/`` for each guided restart the policy asks for."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from diag.hooks import EventLog
from diag.report import status_of, write_report
from runner import distributed
from runner.autotrainer.restarts import MISSING, with_changes
from runner.autotrainer.settings import check_config

log = logging.getLogger("runner.autotrainer")


class Session:
    """What carries over between attempts of one run: the action list, restarts used, time spent.

    A plain class, not a dataclass: Hydra's ``instantiate`` turns dataclass arguments into configs,
    and the train task passes the session through it to the policy, which must share this object.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.attempt_started = self.started
        self.actions: list[dict[str, Any]] = []
        self.attempt = 0
        self.attempts: list[dict[str, Any]] = []
        self.gave_up: list[str] = []
        # set by the policy to stop this attempt for a guided restart; read and cleared by the loop
        self.restart_request: dict[str, Any] | None = None
        # for TensorBoard: the steps of the attempts before this one, and what this attempt changed
        self.step_offset = 0
        self.attempt_changes: dict[str, Any] = {}
        # the best validation accuracy any attempt reached at any epoch, and the last attempt's judgement
        self.best_val_acc: float | None = None
        self.judgement: dict[str, Any] | None = None


def run(cfg: DictConfig, run_dir: Path) -> float:
    """Run the train task until no guided restart is asked for; return the final attempt's objective.

    The top-level ``report.json`` ends up with the final attempt's metrics and the whole action list.
    """
    check_config(cfg)
    from runner import train  # train builds the policy: imported here, not at module level

    run_dir = Path(run_dir)
    session = Session()
    attempt_cfg, attempt_dir = cfg, run_dir
    made_by: dict[str, Any] = {}  # the config changes that made the current attempt
    repaired: dict[
        str, Any
    ] = {}  # every restart's changes so far: how the attempt differs from the run
    while True:
        t0 = session.attempt_started = time.perf_counter()
        result = train.run(attempt_cfg, attempt_dir, session=session)
        state = result.state
        if session.attempt == 0:
            # trainer.resume=auto may have continued an earlier run
            run_dir = attempt_dir = Path(result.run_dir)
        request, session.restart_request = session.restart_request, None
        issues = state.issues or []
        session.attempts.append(
            {
                "attempt": session.attempt,
                "dir": str(attempt_dir.relative_to(run_dir)) if attempt_dir != run_dir else ".",
                "changes": dict(made_by),
                "stopped_for": request["code"] if request else None,
                "status": status_of(issues),
                # reached what the run should reach (runner.autotrainer.judgement), not just no warning
                "healthy": (session.judgement or {}).get("healthy"),
                "judgement": (session.judgement or {}).get("why"),
                "codes": [i["code"] for i in issues],
                "steps": state.step,
                "test_acc": state.metrics.get("test/acc"),
                "wall_time": round(time.perf_counter() - t0, 2),
            }
        )
        session.judgement = None
        if request is None:
            break
        session.attempt += 1
        session.step_offset += state.step
        # rank 0's request: under DDP every rank starts the same attempt
        made_by = request["changes"]
        repaired.update(made_by)
        session.attempt_changes = dict(made_by)
        attempt_cfg = with_changes(attempt_cfg, made_by)
        attempt_dir = run_dir / f"attempt-{session.attempt}"
        own = attempt_dir / "checkpoints" / "last.pt"
        if (
            cfg.trainer.get("resume") == "auto" and own.is_file()
        ):  # relaunched after a kill during this attempt
            with open_dict(attempt_cfg):
                attempt_cfg.trainer.resume = str(own)
        if not distributed.is_rank_zero():
            continue
        _write_hydra_dir(attempt_dir, attempt_cfg, overrides_of(repaired, cfg))
        log.warning(
            "autotrainer: attempt-%d in %s with %s",
            session.attempt,
            attempt_dir,
            ", ".join(overrides_of(request["changes"], cfg)),
        )
    if session.attempt and distributed.is_rank_zero():
        _write_top_report(run_dir, attempt_dir, session)
    return result.objective


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar, read back as the same value (``None`` is ``null``: Hydra
    reads ``None`` as the string 'None'; a string that would read as a number or a bool is quoted)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from runner.distributed import quote_override

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if not isinstance(value, str):
        return str(value)  # bools (Hydra reads True as true), ints, floats (1e-05, inf)
    try:
        same = OverridesParser.create().parse_override(f"k={value}").value() == value
    except OverrideParseException:  # Hydra's grammar refuses it bare: quoted
        same = False
    return value if same else quote_override(value)


def overrides_of(changes: Mapping[str, Any], cfg: DictConfig) -> list[str]:
    """``changes`` as Hydra overrides on top of the run's config ``cfg`` (a key it lacks: ``++key``), so
    the user's command with them applied composes the attempt's config (:func:`runner.report.run_command`)."""

    def has(key: str) -> bool:
        found = OmegaConf.select(cfg, key, default=MISSING, throw_on_resolution_failure=False)
        return found != MISSING

    return [f"{'' if has(k) else '++'}{k}={hydra_value(v)}" for k, v in changes.items()]


def _write_hydra_dir(attempt_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """Make ``attempt-N/`` a full run directory: its config and the overrides that made it differ from
    the run (every restart's so far, in Hydra's grammar: the run's own ``overrides.yaml`` plus these
    compose this config)."""
    hydra_dir = attempt_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")


def _write_top_report(run_dir: Path, final_dir: Path, session: Session) -> None:
    """The run directory's report: the final attempt's diagnosis and metrics, every action, every attempt."""
    report = json.loads((final_dir / "report.json").read_text(encoding="utf-8"))
    report["autotrainer"] = {
        "actions": session.actions,
        "attempts": session.attempts,
        "final_attempt": session.attempts[-1]["dir"],
    }
    write_report(run_dir, report)
    events = EventLog(run_dir / "events.jsonl")
    events.write(
        "autotrainer",
        action="attempts_done",
        final_attempt=session.attempts[-1]["dir"],
        attempts=session.attempts,
    )
    events.close()
    acc = report.get("metrics", {}).get("test_acc")
    log.warning(
        "autotrainer: %d attempts, final %s (test accuracy %s, %s); every action in %s",
        len(session.attempts),
        session.attempts[-1]["dir"],
        f"{acc:.4f}" if acc is not None else "n/a",
        session.attempts[-1].get("judgement") or f"status {report.get('status')}",
        run_dir / "report.json",
    )
