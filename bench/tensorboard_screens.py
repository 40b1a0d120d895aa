"""Screenshots of a run's TensorBoard tabs, as a user opens them: ``python bench/tensorboard_screens.py RUN``.

Serves the run directory on loopback with TensorBoard's own server (``tensorboard.program``, the run under
its own name as the runner's printed command does), opens each main tab in headless Chromium through
Playwright, and writes one PNG per tab to ``--out`` (default ``RUN/screens``). Prints a table: tab, file,
size, seconds until the page settled.

Needs ``pip install -e ".[screens]"`` (Playwright) and a Chromium: Debian's ``apt-get install chromium``
gives ``/usr/bin/chromium`` (``--chromium``), or ``playwright install chromium`` downloads its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TABS = {  # TensorBoard's dashboards by URL fragment
    "scalars": "scalars",
    "images": "images",
    "text": "text",
    "hparams": "hparams",
    "custom_scalars": "custom_scalars",
    "histograms": "histograms",
}


def serve(run: Path, name: str) -> tuple[object, str]:
    """Start TensorBoard on 127.0.0.1 (a free port) for ``run`` named ``name``; return it and its URL."""
    from tensorboard import program

    tb = program.TensorBoard()
    tb.configure(
        argv=[
            "tensorboard",
            "--logdir_spec",
            f"{name}:{run}",
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
    url: str, out: Path, tabs: list[str], chromium: str | None, size: tuple[int, int]
) -> list[tuple[str, Path, float]]:
    """Open each tab in one headless Chromium page and save a full-page PNG of it."""
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        for tab in tabs:
            t0 = time.perf_counter()
            page.goto(f"{url}#{TABS[tab]}", wait_until="networkidle")
            page.wait_for_timeout(2500)  # charts draw after their data arrives
            page.wait_for_load_state("networkidle")
            path = out / f"tensorboard_{tab}.png"
            page.screenshot(path=str(path), full_page=False)
            shots.append((tab, path, time.perf_counter() - t0))
        browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (with tb/)")
    ap.add_argument("--out", type=Path, help="where the PNGs go (default RUN/screens)")
    ap.add_argument("--tabs", default=",".join(TABS), help=f"comma-separated, of {', '.join(TABS)}")
    ap.add_argument(
        "--chromium", default="/usr/bin/chromium", help="Chromium binary ('' for Playwright's own)"
    )
    ap.add_argument("--size", default="1400x900", help="viewport WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    run = args.run.resolve()
    if not (run / "tb").is_dir():
        print(
            f"tensorboard_screens: {run} has no tb/ directory: pass a run directory",
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
    out = (args.out or run / "screens").resolve()
    out.mkdir(parents=True, exist_ok=True)
    _tb, url = serve(run, run.name)
    runs = wait_for_runs(url)
    print(f"TensorBoard {url} serving {run} as {', '.join(runs)}")
    shots = screenshot_tabs(url, out, tabs, chromium, (width, height))
    print()
    print("| tab | file | size | seconds |")
    print("|---|---|---|---|")
    for tab, path, seconds in shots:
        print(f"| {tab} | {path} | {path.stat().st_size // 1024} KiB | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
