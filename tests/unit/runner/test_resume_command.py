"""The printed resume command, read back the way a shell and then Hydra read it, names the very run directory
(the CLI test in tests/integration/test_reliability.py runs it for real)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from runner.resume import resume_command

NAMES = [
    "plain",
    "with space",
    "a,b,c",
    "it's",
    'say "hi"',
    "both ' and \"",
    "é ü 日本",
    "x=1 [2] {3}",
    "semi;colon $HOME `cmd`",
    "tab\there",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_shell_then_hydra_read_back_the_run_directory(tmp_path, name):
    run = tmp_path / name
    command = resume_command(["hydra.mode=RUN"], ["model=cnn", "trainer.resume=auto"], run)
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "runner", "model=cnn"] and argv[-1] == "trainer.resume=auto"
    parsed = OverridesParser.create().parse_overrides(argv[3:])
    dirs = [o.value() for o in parsed if o.key_or_group == "hydra.run.dir"]
    assert dirs == [str(run.resolve())]
    assert Path(dirs[0]).name == name
