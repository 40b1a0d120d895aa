"""A corrupt dataset file is named in the error with a fix that works: ``data.download=true`` alone
fetches only missing files, so it must be deleted first (or replaced)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from helpers import run_cli
from helpers.datasets import write_cifar10, write_mnist

TINY = ["trainer.max_epochs=1", "diag=off", "data.batch_size=32"]


def _error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_a_cut_mnist_label_file_is_named_and_deleting_it_then_download_fixes_it(tmp_path: Path):
    data = tmp_path / "data"
    write_mnist(data)
    raw = data / "MNIST" / "raw"
    for gz in raw.glob("*.gz"):  # unpacked, as a first run or torchvision's download leaves them
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    labels = raw / "train-labels-idx1-ubyte"
    os.truncate(labels, 20)
    args = ["data=mnist", f"paths.data_dir={data}", *TINY]

    for download in ("false", "true"):  # download=true by itself changes nothing: the file exists
        line = _error_line(run_cli([*args, f"data.download={download}"], tmp_path))
        assert line.startswith(
            f"error: data=mnist: {labels.resolve()} could not be read (20 bytes, its header says "
        )
        assert "): delete it and run again with data.download=true" in line
        assert "or replace it with a good copy" in line

    labels.unlink()  # the fix it names: delete it, then data.download=true fetches it (here: unpacks its .gz)
    fixed = run_cli([*args, "data.download=true"], tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert labels.stat().st_size == 8 + 120


def test_a_cut_cifar_batch_is_named_and_replacing_it_fixes_it(tmp_path: Path):
    data = tmp_path / "data"
    write_cifar10(data)
    batch = data / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    args = [
        "data=cifar10",
        f"paths.data_dir={data}",
        f"paths.log_dir={tmp_path}",
        "data.batch_size=32",
    ]

    line = _error_line(run_cli(args, tmp_path, module="runner.check_data"))
    assert line.startswith(f"error: data=cifar10: {batch.resolve()} could not be read (")
    assert "): delete it and run again with data.download=true" in line
    assert "data_batch_1" not in line  # only the bad file is named

    write_cifar10(data)  # the other fix: replace it with a good copy
    fixed = run_cli(args, tmp_path, module="runner.check_data")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
