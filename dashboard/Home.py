"""CNN Lens: `streamlit run dashboard/Home.py` in the repository, `cnnlib dashboard` once installed. The frame around every page: page config, the sidebar
(checkpoint picker), the open checkpoint, the page list, the page, then the background work: the import of
torch (first session only) and the warm-up of the checkpoint. Home itself needs no torch: it reads the
checkpoint with cnnlib.io.metadata. The background import starts only once the page's script has finished:
started at the top, it held the GIL against the first page's own script and made the first page 2.9 s
slower (bench/bench_firstpage.py); every other page gets the model loaded first."""
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# the dashboard's modules; in a repository checkout also cnnlib beside it (installed, cnnlib is importable
# already, and its own folder must not go on the path: cnnlib/io would shadow the standard library's io)
for _p in [str(_HERE)] + ([str(_HERE.parent)] if (_HERE.parent / "cnnlib" / "__init__.py").is_file() else []):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import streamlit as st  # noqa: E402

import frame  # noqa: E402
import sidebar  # noqa: E402
import warmup  # noqa: E402

st.set_page_config(page_icon=":material/center_focus_strong:", layout="wide")
page = frame.navigation()
ctx, problem = sidebar.draw(load_model=page.title != frame.PAGES[0].title)    # Home: no model, no torch
frame.set_current(ctx, problem, page.title)
progress_slot = st.sidebar.empty()       # the warm-up's progress, under the checkpoint picker (sidebar.py's order)
shown = warmup.progress(ctx) is not None
if shown:                                # drawn before the page: it stays in view while the page is drawn
    with progress_slot:
        warmup.status(ctx)
try:
    with warmup.page_running():          # the background preparation pauses while a page is being drawn
        page.run()
finally:
    warmup.start_imports()     # once per server process: torch and cnnlib's heavy modules, after this page
    warmup.start(ctx)          # once per checkpoint and data folder per server process
    if not shown:
        with progress_slot:
            warmup.status(ctx)
