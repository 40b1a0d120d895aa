"""The compose-once basic sweeper: one composition per job, the same configs, a bad job still refused first."""

from __future__ import annotations

import json
import pickle

import pytest
from helpers import run_cli
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf

import hydra_plugins.runner_sweeper as plugin
from runner.conf_dir import CONF_DIR

# as the other sweep tests: the pytest workers' OMP_NUM_THREADS, so the run forks (an MKL_NUM_THREADS the
# workers do not have made it a fresh interpreter; torch's MKL takes OpenMP's thread count)
SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}


def _master():
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    master = loader.load_configuration("config", ["optimizer=sgd"], RunMode.MULTIRUN)
    return loader, master


def test_a_kept_config_is_the_one_hydra_composes_and_is_handed_out_once():
    loader, master = _master()
    kept = plugin.KeptCompositions(loader)
    kept.keep(master, ["optimizer.lr=0.5", "model=cnn"])
    first = kept.load_sweep_config(master, ["optimizer.lr=0.5", "model=cnn"])
    assert first.optimizer.lr == 0.5 and first.model._target_.endswith("CNN")
    again = kept.load_sweep_config(master, ["optimizer.lr=0.5", "model=cnn"])  # composed afresh
    assert again is not first and not kept.kept
    assert OmegaConf.to_container(first) == OmegaConf.to_container(again)
    assert kept.get_search_path() is loader.get_search_path()  # the rest is the loader's own


def test_the_launcher_gets_the_configs_the_batch_check_composed():
    loader, master = _master()
    # Hydra's plugin scan executes the plugin modules again (Hydra's base classes too): the class it
    # instantiates is the module's after the scan
    Plugins.instance()
    sweeper = plugin.ComposeOnceSweeper(max_batch_size=None)
    context = HydraContext(config_loader=loader, callbacks=Callbacks())
    sweeper.setup(hydra_context=context, task_function=lambda cfg: None, config=master)
    batch = [["optimizer.lr=0.1"], ["optimizer.lr=0.2"]]
    sweeper.validate_batch_is_legal(batch)
    checked = dict(sweeper.kept.kept)
    assert len(checked) == 2
    assert sweeper.launcher is not None
    launcher_loader = sweeper.launcher.hydra_context.config_loader  # type: ignore[attr-defined]
    for overrides in batch:
        cfg = launcher_loader.load_sweep_config(master, overrides)
        assert cfg is checked[tuple(overrides)]  # not composed a second time
    assert not sweeper.kept.kept


@pytest.mark.slow  # two real multiruns of the CLI (~10 s): the fast tier keeps the sweeper's unit tests
def test_a_grid_sweep_runs_each_job_with_its_values_and_a_bad_job_still_fails_first(tmp_path):
    proc = run_cli(
        ["-m", "optimizer.lr=0.01,0.05", "trainer.max_epochs=1"], tmp_path, env=SINGLE_THREAD
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    assert OmegaConf.load(sweep / "multirun.yaml").hydra.sweeper._target_.endswith(
        "ComposeOnceSweeper"
    )
    lrs = [OmegaConf.load(sweep / j / ".hydra" / "config.yaml").optimizer.lr for j in "01"]
    assert lrs == [0.01, 0.05]
    assert all(json.loads((sweep / j / "report.json").read_text())["completed"] for j in "01")
    (tmp_path / "bad").mkdir()
    bad = run_cli(["-m", "model=mlp,nosuch", "trainer.max_epochs=1"], tmp_path / "bad")
    assert "model=nosuch is not an option of model" in bad.stdout + bad.stderr
    assert not list((tmp_path / "bad").rglob("report.json"))  # no job ran


def test_a_launcher_in_other_processes_gets_the_loader_without_the_kept_configs():
    # joblib's and submitit's launchers pickle the Hydra context to their workers, which compose there
    loader, master = _master()
    kept = plugin.KeptCompositions(loader)
    kept.keep(master, ["optimizer.lr=0.5"])
    copy = pickle.loads(pickle.dumps(kept))
    assert not copy.kept and kept.kept
    assert copy.load_sweep_config(master, ["optimizer.lr=0.5"]).optimizer.lr == 0.5


@pytest.mark.parametrize(
    "batch",
    [
        [["optimizer.lr=0.1", "model=cnn"], ["optimizer.lr=0.2", "model=cnn"]],
        [
            ["optimizer.lr=1e-05", "seed=3"],
            ["optimizer.lr=10", "seed=4"],
            ["optimizer.lr=0.5", "seed=3"],
        ],
        [["optimizer.lr=0.1", "stop_on=critical"], ["optimizer.lr=0.2", "stop_on=null"]],
    ],
)
def test_a_job_differing_only_in_values_is_derived_and_equals_its_full_composition(batch):
    loader, master = _master()
    kept = plugin.KeptCompositions(loader)
    for overrides in batch:
        kept.keep(master, overrides)
    assert len(kept.composed) == 1  # one composition from the YAML, the other jobs derived from it
    for overrides in batch:
        derived = kept.kept[tuple(overrides)]
        full = loader.load_sweep_config(master, list(overrides))
        assert OmegaConf.to_yaml(derived) == OmegaConf.to_yaml(full)  # the hydra node too
        assert type(derived.optimizer.lr) is type(full.optimizer.lr)  # 10 is an int to Hydra too


def test_a_job_with_another_config_group_is_composed():
    loader, master = _master()
    kept = plugin.KeptCompositions(loader)
    batch = [["optimizer.lr=0.1", "model=cnn"], ["optimizer.lr=0.1", "model=mlp"]]
    for overrides in batch:
        kept.keep(master, overrides)
    assert len(kept.composed) == 2
    assert kept.kept[tuple(batch[1])].model._target_.endswith("MLP")


@pytest.mark.parametrize(
    "launcher, reordered", [("basic", True), ("joblib", False)], ids=["basic", "joblib"]
)
def test_only_the_in_process_launcher_runs_a_comparing_sweep_middle_out(launcher, reordered):
    """BEHIND_SWEEP wants the likely best trials finished first; a parallel launcher keeps its batches whole."""
    Plugins.instance()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    master = loader.load_configuration(
        "config", ["stop_on=critical", f"hydra/launcher={launcher}"], RunMode.MULTIRUN
    )
    sweeper = plugin.ComposeOnceSweeper(max_batch_size=None)
    context = HydraContext(config_loader=loader, callbacks=Callbacks())
    sweeper.setup(hydra_context=context, task_function=lambda cfg: None, config=master)
    assert isinstance(sweeper.launcher, plugin.MiddleOutLauncher) is reordered
