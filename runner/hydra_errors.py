"""Hydra's own errors (an unknown key or option, an override that does not parse) as one line.

Hydra prints these over several lines with exit code 1; the runner's own errors are one line with
exit code 2. The entry point asks Hydra to raise them instead (``HYDRA_FULL_ERROR``) and rewrites them
here, with a "did you mean" from the composed config's own keys and options.
"""

from __future__ import annotations

import difflib
import re

from omegaconf import DictConfig, OmegaConf

GRAMMAR = "overrides are key=value, +key=value to add a key, ~key to remove one"


def one_line(exc: BaseException, conf_dir: str) -> str:
    """What went wrong and the fix, in one line."""
    text = str(exc).strip()
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        keys = _config_keys(conf_dir)
        # the default config has it: a group choice on this command line left it out
        if key in keys:
            return (
                f"{key} is not a key of the config these overrides compose (the default config has it: "
                "a group choice on the command line, such as diag=off, leaves it out): drop that "
                "choice or this override; `python -m runner <overrides> --cfg job` lists the keys"
            )
        hint = _did_you_mean(key, keys)
        return (
            f"{key} is not a config key{hint}: list the keys with `python -m runner --cfg job` "
            f"(to add a new key on purpose: +{key}=...)"
        )
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, re.M)
        hint = _did_you_mean(option, options)
        listed = f": choose one of {', '.join(options)}" if options else ""
        return f"{group}={option} is not an option of {group}{hint}{listed}"
    if type(exc).__name__ == "OverrideParseException":
        first = text.splitlines()[0]
        return f"cannot read the command line ({first}): {GRAMMAR}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first} ({type(exc).__name__}): check the overrides on the command line"


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _config_keys(conf_dir: str) -> list[str]:
    """Every dotted key of the default config (composed again: only on this error path)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose(config_name="config")
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
