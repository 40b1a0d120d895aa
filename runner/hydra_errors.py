"""Hydra's own errors (an unknown key or option, an override that does not parse) as one line.

Hydra prints these over several lines with exit code 1; the runner's own errors are one line with
exit code 2. The entry point asks Hydra to raise them instead (``HYDRA_FULL_ERROR``) and rewrites them
here, with a "did you mean" from the composed config's own keys and options. An object Hydra could not
build (``InstantiationException``) is said by its cause: the message the runner or ``diag`` raised
(``model.activation='foo': choose one of ...``), not Hydra's "Error in call to target".
"""

from __future__ import annotations

import difflib
import linecache
import os
import re
from collections.abc import Iterator
from pathlib import Path

from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf

from runner.errors import UserError

# the project's own sources: a ValueError/TypeError raised there is a message written for the user
_PROJECT_DIRS = tuple(
    os.path.realpath(Path(__file__).resolve().parent.parent / name) + os.sep
    for name in ("runner", "diag")
)

GRAMMAR = "overrides are key=value, +key=value to add a key, ~key to remove one"


def one_line(
    exc: BaseException,
    conf_dir: str,
    config_name: str = "config",
    command: str = "python -m runner",
) -> str:
    """What went wrong and the fix, in one line (``config_name``: the root config ``command`` composes)."""
    if isinstance(exc, InstantiationException):
        return instantiation_line(exc)
    text = str(exc).strip()
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        keys = _config_keys(conf_dir, config_name)
        # the default config has it: a group choice on this command line left it out
        if key in keys:
            return (
                f"{key} is not a key of the config these overrides compose (the default config has it: "
                "a group choice on the command line, such as diag=off, leaves it out): drop that "
                f"choice or this override; `{command} <overrides> --cfg job` lists the keys"
            )
        if config_name != "config" and key in _config_keys(conf_dir, "config"):
            return (
                f"{key} is a key of a training run's config, not of {command}'s: drop it "
                f"(`{command} --cfg job` lists the keys it reads)"
            )
        hint = _did_you_mean(key, keys)
        return (
            f"{key} is not a config key{hint}: list the keys with `{command} --cfg job` "
            f"(to add a new key on purpose: +{key}=...)"
        )
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, re.M)
        hint = _did_you_mean(option, options)
        listed = f": choose one of {', '.join(options)}" if options else ""
        return f"{group}={option} is not an option of {group}{hint}{listed}"
    ambiguous = re.search(r"Ambiguous value for argument '(([^'=]+)=([^']*))'", text)
    if ambiguous:  # Hydra's own three fixes are on the lines below the first: said here in one
        arg, key, value = ambiguous.groups()
        return (
            f"{arg} lists several values, which only a multirun sweeps over: add -m (--multirun) to "
            f"sweep over it ({command} -m {arg}); for a list value write {key}=[{value}], for "
            f"a string with commas quote it: {key}='{value}'"
        )
    if type(exc).__name__ == "OverrideParseException":
        first = text.splitlines()[0]
        return f"cannot read the command line ({first}): {GRAMMAR}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first} ({type(exc).__name__}): check the overrides on the command line"


def instantiation_line(exc: InstantiationException) -> str:
    """An object Hydra could not build, said by its cause.

    Hydra wraps what the constructor raised in "Error in call to target '...'", which names neither the
    key nor the fix. The first error of the cause chain the project raised (a ``UserError``, or a
    ``ValueError``/``TypeError`` from a ``raise`` in ``runner``/``diag``) is the message written for the
    user: it is the line, prefixed with the config key when it does not name it. The outermost such
    error is taken, not the innermost: a ``UserError`` raised ``from`` a lower error is the one meant
    to be read. A cause the project did not phrase (torch refusing a value) is named with its key, as
    ``validation.build_errors`` names what torch refuses.
    """
    text = str(exc).strip()
    key = re.search(r"^full_key: (\S+)$", text, re.M)
    full_key = key.group(1) if key else None
    causes = list(_causes(exc))
    own = next((e for e in causes if _project_raised(e)), None)
    if own is not None:
        message = str(own).strip() or type(own).__name__
        return message if full_key is None or full_key in message else f"{full_key}: {message}"
    if causes and full_key is not None:
        return f"{full_key}: {_reason(causes[0])}: fix the {full_key}.* values"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first} ({type(exc).__name__}): check the overrides on the command line"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The errors below ``exc``, outermost first, Hydra's own wrappers left out (each once)."""
    seen = {id(exc)}
    current: BaseException | None = exc
    while current is not None:
        below = current.__cause__
        if below is None and not current.__suppress_context__:
            below = current.__context__
        if below is None or id(below) in seen:
            return
        seen.add(id(below))
        if not isinstance(below, HydraException):
            yield below
        current = below


def _project_raised(exc: BaseException) -> bool:
    """A ``UserError``, or a ``ValueError``/``TypeError`` a ``raise`` statement of the project raised.

    The innermost frame alone is not enough: torch's C functions have no frame of their own, so
    ``tensor.fill_('abc')`` looks raised by the project's line that called it; a ``raise`` on that
    line is what says the project wrote the message.
    """
    if isinstance(exc, UserError):
        return True
    if not isinstance(exc, (ValueError, TypeError)) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not os.path.realpath(filename).startswith(_PROJECT_DIRS):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of a message the project did not write (a trailing colon dropped)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200].rstrip(':')}" if text else type(exc).__name__


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _config_keys(conf_dir: str, config_name: str = "config") -> list[str]:
    """Every dotted key of a root config as composed by default (again: only on this error path)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose(config_name=config_name)
    return _flatten(cfg)


def _flatten(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        path = f"{prefix}{key!s}"
        keys.append(path)
        value = node._get_node(key)
        if OmegaConf.is_dict(value):
            keys += _flatten(value, path + ".")  # type: ignore[arg-type]
    return keys
