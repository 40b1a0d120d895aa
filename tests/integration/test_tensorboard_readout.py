"""What real runs leave for a reader, read back through TensorBoard's EventAccumulator: one name per layer
in tags, Custom Scalars and report; per-layer traces from the first step and around a blow-up; histograms
from step 0 with activations; a confusion matrix image; and the analyzer agreeing with a repaired run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import metadata

ENV = {"OMP_NUM_THREADS": "1"}


def _events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(
        str(run),  # the run directory itself holds its event files
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    acc.Reload()
    return acc


def _texts(acc: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    run = tmp_path / name
    proc = run_cli(list(overrides), tmp_path, run_dir=run, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.slow
def test_a_dead_relu_run_names_each_layer_alike_everywhere_from_its_first_step(tmp_path):
    run = _run(tmp_path, "dead", "model.bias_init=-5", "diag=full", "trainer.max_epochs=2")
    report = json.loads((run / "report.json").read_text())
    (dead,) = [i for i in report["issues"] if i["code"] == "DEAD_NEURONS"]
    assert dead["layer"] == "features.fc1" and "features.fc1" in dead["evidence"]
    acc = _events(run)
    scalars = acc.Tags()["scalars"]
    # the ReLU (module features.act1) is reported under the Linear it follows, as in the report
    assert "x_layers/dead_fraction/features.fc1" in scalars
    assert (
        "x_layers/grad_norm/features.fc1" in scalars and "x_layers/grad_norm/classifier" in scalars
    )
    assert not [t for t in scalars if t.endswith(("features.act1", "features.act2"))]
    # sampled at the first step, before the first scheduled sample (every 5 steps under diag=full)
    assert [e.step for e in acc.Scalars("x_layers/grad_norm/features.fc1")][:2] == [1, 5]
    # histograms from step 0 (the initial weights) and the first step's activations
    histograms = acc.Tags()["histograms"]
    assert [e.step for e in acc.Histograms("x_layers/weights/features.fc1")][:2] == [0, 1]
    assert acc.Histograms("x_layers/activations/features.fc1")[0].step == 1
    assert "x_layers/activations/features.fc2" in histograms
    # Custom Scalars: what applies to a ReLU model, one layer per chart
    (config,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {c.title: [ch.title for ch in c.chart] for c in layout.category}
    assert charts["Share of dead units by layer"] == ["features: fc1, fc2"]
    assert charts["Gradient norm by layer"] == ["features: fc1, fc2", "classifier"]
    assert not [title for title in charts if "saturat" in title]
    for category in layout.category:
        shown = []
        for chart in category.chart:
            matched = [t for t in scalars if any(re.search(p, t) for p in chart.multiline.tag)]
            assert matched, (category.title, chart.title)
            shown += matched
        if category.title == "Gradient norm by layer":  # each layer's tag in one chart
            assert sorted(shown) == sorted(t for t in scalars if "x_layers/grad_norm/" in t)
    # HParams shows the option chosen for a group placed elsewhere (diag=full fills callbacks.diagnostics)
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["diag"].string_value == "full"
    # the test confusion matrix: a PNG in the run directory and an image in TensorBoard
    assert (run / "confusion_matrix.png").is_file()
    (image,) = acc.Images("x_run/confusion_matrix")
    assert image.width > 300 and image.height > 300


@pytest.mark.slow
def test_a_blow_up_before_the_first_scheduled_sample_leaves_a_per_layer_trace(tmp_path):
    run = _run(tmp_path, "sick", "optimizer=sgd", "optimizer.lr=20", "trainer.max_epochs=2")
    acc = _events(run)
    skipped = [
        json.loads(line)["step"]
        for line in (run / "events.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "skipped_step"
    ]
    assert skipped and skipped[0] < 25  # before diag=default's first scheduled sample at step 25
    steps = sorted({e.step for e in acc.Scalars("x_layers/update_ratio/features.fc1")})
    assert steps[0] == 1  # how it started
    assert [s for s in steps if skipped[0] < s < 25]  # and right after the first non-finite step
    # and the step after the diagnosis first named it (at the first epoch's end, step 20)
    (found,) = [
        json.loads(line)
        for line in (run / "events.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "diagnosis"
    ][:1]
    assert found["step"] + 1 in steps
    # non-finite gradient norms are said in words (TensorBoard's charts cannot draw them)
    texts = _texts(acc, "x_layers/nonfinite_grads/text_summary")
    assert texts and "non-finite gradient norm in" in texts[0][1]
    assert re.search(r"(features\.\d|classifier) \((inf|nan)\)", texts[0][1])
    norms = [e.value for e in acc.Scalars("train/grad_norm")]
    assert norms and all(v == v and v != float("inf") for v in norms)


@pytest.mark.slow
def test_analyze_reads_a_repaired_run_as_its_report_does(tmp_path):
    run = _run(
        tmp_path,
        "repaired",
        "optimizer=sgd",
        "optimizer.lr=20",
        "autotrainer=default",
        "trainer.max_epochs=2",
    )
    report = json.loads((run / "report.json").read_text())
    actions = report["autotrainer"]["actions"]
    assert [a["action"] for a in actions][:1] == ["rollback"]
    assert report["status"] != "critical"
    proc = run_cli(["analyze", str(run), "--fail-on", "critical"], tmp_path, module="diag")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "CRITICAL" not in proc.stdout
    assert f"steps after its last repair (step {actions[0]['step']})" in proc.stdout
    assert "AUTOTRAINER (what it already changed in this run)" in proc.stdout
    as_json = run_cli(["analyze", str(run), "--json"], tmp_path, module="diag")
    analyzed = json.loads(as_json.stdout)
    assert analyzed["status"] == report["status"]
    assert {i["code"] for i in analyzed["issues"]} == {i["code"] for i in report["issues"]}
    assert analyzed["input"]["diagnosed_after_step"] == actions[0]["step"]
