"""How fast the dashboard's first page is ready, against Streamlit's own floor, in one run on one machine.

    python bench/bench_firstpage.py [--repeats 5] [--checkpoints checkpoints]

Each repeat starts a fresh `streamlit run` on a loopback port and a fresh headless Chromium (empty profile,
1400 x 900), then times from the moment the server answers its health check until the page is ready (its
title shown and the script finished; for CNN Lens, Home's summary card visible). Two apps, alternating:
  (a) the floor: a one-line Streamlit app (`st.title`), what any Streamlit page costs here;
  (b) CNN Lens: `dashboard/Home.py` with the checkpoint folder given.
Prints each repeat, the medians, and (b) minus (a): the part of the wait that is CNN Lens's own.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from machine import machine  # noqa: E402
from pagedriver import REPO, chromium_page, serve  # noqa: E402

FLOOR_APP = 'import streamlit as st\nst.title("Floor")\nst.write("one line")\n'


def first_page(script: Path, checkpoints: Path, title: str, extra: str | None, work: Path) -> tuple[float, float]:
    """(seconds from launch to healthy, seconds from healthy to the first page ready)."""
    with chromium_page() as page:
        page.goto("about:blank")                          # the browser itself is up before the clock starts
        t_launch = time.perf_counter()
        with serve(checkpoints, None, work / "streamlit.log", script=script) as url:
            t_up = time.perf_counter()
            page.goto(url + "/")
            page.locator("h1", has_text=title).first.wait_for(state="visible", timeout=120_000)
            if extra:
                page.locator(extra).first.wait_for(state="visible", timeout=120_000)
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=120_000)
            ready = time.perf_counter() - t_up
    return t_up - t_launch, ready

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnlens-firstpage-"))
    floor = work / "floor.py"
    floor.write_text(FLOOR_APP)
    apps = {"(a) one-line Streamlit app": (floor, "Floor", None),
            "(b) CNN Lens Home": (REPO / "dashboard" / "Home.py", "CNN Lens", ".st-key-home_card")}
    results = {name: [] for name in apps}
    print(f"{machine()}: first page ready after the server is up ({args.repeats} repeats, fresh server and "
          f"browser each)\n", flush=True)
    for r in range(args.repeats):
        for name, (script, title, extra) in apps.items():
            boot, ready = first_page(script, args.checkpoints, title, extra, work)
            results[name].append((boot, ready))
            print(f"  repeat {r + 1}: {name:<28} server up after {boot:5.2f} s, page ready {ready:5.2f} s later",
                  flush=True)
    print()
    med = {}
    for name, rows in results.items():
        med[name] = statistics.median(r[1] for r in rows)
        print(f"{name:<28} median: server up {statistics.median(r[0] for r in rows):5.2f} s, "
              f"first page ready {med[name]:5.2f} s (min {min(r[1] for r in rows):.2f}, "
              f"max {max(r[1] for r in rows):.2f})")
    a, b = med.values()
    print(f"CNN Lens's own share of the first page: {b - a:+.2f} s ({b / a:.2f}x the floor)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
