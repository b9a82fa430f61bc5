"""Many sessions at once (bench/loadtest.py): 3 headless-Chromium sessions drive one dashboard server on
127.0.0.1 for 20 s (pages, attributions with method changes, image and checkpoint uploads). No errors, every
session sees what a single session sees for the same inputs, and the server's peak RSS stays under the bound
the bench states (cache sizes, see its docstring). Skipped with --no-browser / CNNLENS_SKIP_BROWSER=1."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import bench_module

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent


def test_three_sessions_for_twenty_seconds(lens_checkpoints):
    lt = bench_module("loadtest")
    if not Path(lt.CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {lt.CHROMIUM} (or skip with --no-browser)")
    result = lt.run(sessions=3, seconds=20, checkpoints=lens_checkpoints["dir"], max_steps=200)
    print(result)
    assert not result["reference_errors"], result["reference_errors"]
    assert result["observations"] >= 6, result          # each session compared some results
    assert result["errors"] == [], result["errors"]
    assert result["crosstalk"] == [], result["crosstalk"]
    assert result["peak_rss_mb"] <= result["bound_mb"], result


def test_only_a_closed_tabs_traceback_is_forgiven():
    """The server-log check ignores Streamlit's note that a browser left mid-handshake, nothing else."""
    driver = bench_module("pagedriver")
    closed_tab = ('Traceback (most recent call last):\n  File "starlette_websocket.py", line 516, in _websocket_endpoint\n'
                  '    data = await websocket.receive_bytes()\nstarlette.websockets.WebSocketDisconnected: WebSocket is '
                  'not connected. Need to call "accept" first.\n')
    app_error = 'Traceback (most recent call last):\n  File "dashboard/views/x.py", line 3\n    1 / 0\nZeroDivisionError: x\n'
    assert driver.app_tracebacks("start\n" + closed_tab + "more\n") == []
    found = driver.app_tracebacks(closed_tab + "more\n" + app_error)
    assert len(found) == 1 and "ZeroDivisionError" in found[0]
