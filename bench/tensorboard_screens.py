"""Screenshots of a run's TensorBoard tabs, as a user opens them: ``python bench/tensorboard_screens.py PATH``.

Serves PATH on loopback with TensorBoard's own server (``tensorboard.program``) the way the runner's printed
command does: a run directory through its parent (``--logdir <run>/..``, so the run shows under its own
name, beside the runs next to it; Time Series filtered to it with ``?runFilter=``), a sweep directory or
any folder of runs as it is (its runs ``0``, ``1``, ...). Opens each main tab in headless Chromium through
Playwright and writes one PNG per tab to ``--out`` (default ``PATH/screens``). Prints a table: tab, file,
size, seconds until the page settled.

Needs ``pip install -e ".[screens]"`` (Playwright) and a Chromium: Debian's ``apt-get install chromium``
gives ``/usr/bin/chromium`` (``--chromium``), or ``playwright install chromium`` downloads its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import quote

TABS = {  # TensorBoard's dashboards by URL fragment
    "timeseries": "timeseries",
    "scalars": "scalars",
    "images": "images",
    "text": "text",
    "hparams": "hparams",
    "custom_scalars": "custom_scalars",
    "histograms": "histograms",
}


def is_run(path: Path) -> bool:
    """A run directory (its own event files or report), not a folder of runs."""
    return (path / "report.json").is_file() or any(path.glob("events.out.tfevents.*"))


def serve(logdir: Path) -> tuple[object, str]:
    """Start TensorBoard on 127.0.0.1 (a free port) for ``logdir``; return it and its URL."""
    from tensorboard import program

    tb = program.TensorBoard()
    tb.configure(
        argv=[
            "tensorboard",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--reload_interval",
            "0",  # load once: the run is finished
        ]
    )
    return tb, tb.launch()


def wait_for_runs(url: str, timeout: float = 120.0) -> list[str]:
    """Poll the server until it lists the run (its loader reads the event files in the background)."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "data/runs", timeout=10) as r:
            runs = json.loads(r.read())
        if runs:
            return runs
        time.sleep(0.5)
    raise TimeoutError(f"TensorBoard at {url} listed no runs within {timeout:.0f} s")


def screenshot_tabs(
    url: str,
    out: Path,
    tabs: list[str],
    chromium: str | None,
    size: tuple[int, int],
    query: str = "",
) -> list[tuple[str, Path, float]]:
    """Open each tab in one headless Chromium page (``query``, e.g. ``?runFilter=...``, before its
    fragment) and save a PNG of the viewport."""
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        for tab in tabs:
            t0 = time.perf_counter()
            page.goto(f"{url}{query}#{TABS[tab]}", wait_until="networkidle")
            page.wait_for_timeout(2500)  # charts draw after their data arrives
            page.wait_for_load_state("networkidle")
            path = out / f"tensorboard_{tab}.png"
            page.screenshot(path=str(path), full_page=False)
            shots.append((tab, path, time.perf_counter() - t0))
        browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "path", type=Path, help="a run directory, or a sweep directory (a folder of runs)"
    )
    ap.add_argument("--out", type=Path, help="where the PNGs go (default PATH/screens)")
    ap.add_argument("--tabs", default=",".join(TABS), help=f"comma-separated, of {', '.join(TABS)}")
    ap.add_argument(
        "--chromium", default="/usr/bin/chromium", help="Chromium binary ('' for Playwright's own)"
    )
    ap.add_argument("--size", default="1400x900", help="viewport WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    path = args.path.resolve()
    runs_inside = [d for d in path.iterdir() if d.is_dir() and is_run(d)] if path.is_dir() else []
    if not path.is_dir() or not (is_run(path) or runs_inside):
        print(
            f"tensorboard_screens: {path} is neither a run directory nor a folder of runs: pass one",
            file=sys.stderr,
        )
        return 2
    tabs = [t for t in args.tabs.split(",") if t]
    unknown = [t for t in tabs if t not in TABS]
    if unknown:
        print(
            f"tensorboard_screens: unknown tab(s) {', '.join(unknown)}: choose from {', '.join(TABS)}",
            file=sys.stderr,
        )
        return 2
    chromium = args.chromium or None
    if chromium and not Path(chromium).is_file():
        print(
            f"tensorboard_screens: no Chromium at {chromium}: apt-get install chromium, or pass --chromium ''",
            file=sys.stderr,
        )
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = (args.out or path / "screens").resolve()
    out.mkdir(parents=True, exist_ok=True)
    logdir = path.parent if is_run(path) else path  # as the runner's printed command does
    query = f"?runFilter=^{quote(path.name)}($|/)" if is_run(path) else ""
    _tb, url = serve(logdir)
    runs = wait_for_runs(url)
    print(f"TensorBoard {url} serving {logdir}: runs {', '.join(runs)}")
    shots = screenshot_tabs(url, out, tabs, chromium, (width, height), query)
    print()
    print("| tab | file | size | seconds |")
    print("|---|---|---|---|")
    for tab, path, seconds in shots:
        print(f"| {tab} | {path} | {path.stat().st_size // 1024} KiB | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
