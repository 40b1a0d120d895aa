"""What TensorBoard shows for a 2-run sweep: tag groups, one HParams column set, status and failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import event_file, run_cli
from tbparse import SummaryReader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

SWEEP = [
    "-m",
    "optimizer=sgd",
    "optimizer.lr=1e-3,1e3",
    "model.activation=tanh",
    "trainer.max_epochs=1",
    "diag=full",
]


def _hparams_plugin(run: Path) -> dict[str, object]:
    """The run's experiment columns, its session's hparams and its end status, as TensorBoard reads them."""
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    return {
        "columns": [h.name for h in experiment.hparam_infos],
        "differs": [h.name for h in experiment.hparam_infos if h.differs],
        "metrics": [m.name.tag for m in experiment.metric_infos],
        "hparams": dict(start.hparams),
        "status": end.status,
        "scalars": acc.Tags()["scalars"],
    }


@pytest.mark.slow
def test_sweep_runs_share_one_hparams_column_set_and_mark_the_diverged_run(tmp_path):
    proc = run_cli(SWEEP, tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = list((tmp_path / "multirun").iterdir())
    good, bad = (_hparams_plugin(sweep / str(i)) for i in range(2))
    # one column set whatever the order TensorBoard reads the runs in; model.* overrides kept
    assert good["columns"] == bad["columns"]
    assert "model.activation" in good["columns"] and "optimizer.lr" in good["columns"]
    assert good["hparams"]["model.activation"].string_value == "tanh"
    # the swept key is marked as varying (TensorBoard lists and shows those columns first), and only it
    assert good["differs"] == bad["differs"] == ["optimizer.lr"]
    assert good["metrics"] == bad["metrics"]
    for metric in ("status", "warnings", "criticals", "autotrainer_actions", "skipped_steps"):
        assert f"x_run/{metric}" in good["metrics"]
    # the diverged run ends its session as a failure and its status metric says critical (2)
    reports = [json.loads((sweep / str(i) / "report.json").read_text()) for i in range(2)]
    assert reports[1]["status"] == "critical"
    assert bad["status"] == api_pb2.STATUS_FAILURE
    assert good["status"] == api_pb2.STATUS_SUCCESS
    scalars = SummaryReader(event_file(sweep / "1")).scalars
    assert scalars[scalars.tag == "x_run/status"]["value"].tolist() == [2.0]
    criticals = scalars[scalars.tag == "x_run/criticals"]["value"].tolist()
    assert criticals == [float(sum(i["severity"] == "critical" for i in reports[1]["issues"]))]
    # train/ and val/ are the first tag groups TensorBoard lists; per-layer statistics in one group
    groups = sorted({t.split("/", 1)[0] for t in good["scalars"]})
    assert groups[:2] == ["train", "val"], groups
    layer_tags = [t for t in good["scalars"] if "grad_norm/" in t and t != "train/grad_norm"]
    assert layer_tags and all(t.startswith("x_layers/grad_norm/") for t in layer_tags)
