"""A finished run's Text and Images tabs in TensorBoard, read back with tensorboard's own reader."""

from __future__ import annotations

import io

from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_a_run_shows_its_report_command_config_summary_and_inputs(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli("trainer.max_epochs=1", "model.hidden=[32]", run_dir=run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"x_run/summary", "x_run/inputs"} <= set(tags["images"])
    # the Time Series page lists scalars, images and histograms together by group: train/ and val/ first
    groups = sorted({t.split("/", 1)[0] for kind in ("scalars", "images") for t in tags[kind]})
    assert groups[:2] == ["train", "val"], groups
    summary = events.Images("x_run/summary")[-1]
    png = imread(io.BytesIO(summary.encoded_image_string), format="png")
    assert png.shape[:2] == (summary.height, summary.width) and summary.width > 600
    # the input grid: eight 1.1-inch cells a row at the figure's 100 dpi, the first batch's 16 images
    inputs = events.Images("x_run/inputs")[-1]
    grid = imread(io.BytesIO(inputs.encoded_image_string), format="png")
    assert (inputs.width, inputs.height) == (880, 260) and grid.shape[:2] == (260, 880)
    assert grid[..., :3].std() > 0.1  # images drawn, not a blank canvas
    texts = {
        t: events.Tensors(t)[-1].tensor_proto.string_val[0].decode()
        for t in events.Tags()["tensors"]
        if t.startswith("run/")
    }
    assert "model.hidden=[32]" in texts["run/command/text_summary"]
    assert (
        "hidden:" in texts["run/config/text_summary"] and "- 32" in texts["run/config/text_summary"]
    )
    assert texts["run/report/text_summary"] == (run / "report.md").read_text()
