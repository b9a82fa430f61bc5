"""The sidebar every page shares: checkpoint picker, checkpoint upload, Data folder, and how to import your
own model. `draw()` returns the open checkpoint (or the one sentence that says why none is open)."""
from __future__ import annotations

import logging
import os

import streamlit as st

import checkpoints
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")
_BAD_UPLOADS = "sidebar.bad_uploads"      # session state: {sha256: sentence} (refused uploads are not retried)


def resolve_data(typed: str) -> str:
    """The Data folder as cnnlib wants it: a named dataset as is, a relative path from the repository root."""
    from adapters import named_datasets
    text = typed.strip()
    if not text or text.lower() in named_datasets():
        return text.lower()
    p = os.path.expanduser(text)
    return p if os.path.isabs(p) else str(checkpoints.REPO_ROOT / p)


def _upload_box() -> str | None:
    """The checkpoint uploader; a good upload becomes the picker's choice. Returns the error sentence or None."""
    import hashlib
    up = st.file_uploader("…or upload a checkpoint (.pt)", type=["pt", "pth"], key="side_upload",
                          help="A checkpoint written by `python -m cnnlib train` (or `import`). It stays "
                               "available on every page for this browser session.")
    if up is None:
        return None
    blob = up.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    bad = st.session_state.setdefault(_BAD_UPLOADS, {})
    if sha in bad:
        return bad[sha]
    if sha in checkpoints.uploads():
        return None
    try:
        choice = checkpoints.add_upload(up.name, blob)
    except CNNLibError as e:
        bad[sha] = f"{up.name} cannot be used: {_lower_first(ui.one_sentence(str(e)))}"
    except Exception as e:  # noqa: BLE001 - a hostile file must never reach a traceback
        log.exception("upload %s", up.name)
        bad[sha] = f"{up.name} cannot be used: it could not be read as a checkpoint ({type(e).__name__})."
    else:
        ui.remember("side_ckpt", choice)
        return None
    return bad[sha]


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s


def _import_help() -> None:
    with st.expander("Import your own model"):
        st.markdown("Weights trained elsewhere become a checkpoint the dashboard can open with one command, "
                    "run in the folder the dashboard was started from:")
        st.code(checkpoints.import_command(), language="bash")
        st.markdown("- `WEIGHTS`: the weights file (a PyTorch state dict, checkpoint or `.safetensors`).\n"
                    "- `--model NAME`: the architecture they belong to (`simple_cnn`, `resnet9`, …).\n"
                    "- `--data PATH`: the dataset it was trained on (a named one or an ImageFolder tree), "
                    "for class names, input size and test images.\n"
                    "- `--out`: where the checkpoint goes; files in `checkpoints/` appear in the picker above.")
        st.caption("An imported model has no training history, so the Training and Filters pages have less "
                   "to show for it.")


# The checkpoint picker and Data folder above the page list, the upload and import help below it: Streamlit
# always draws st.navigation's list first, and its 20 pages pushed the picker below a 900-px window's fold.
# The sidebar's own blocks become flex items of one column (display: contents) so `order` can place them.
_ORDER_CSS = """<style>
[data-testid="stSidebarContent"] { display: flex; flex-direction: column; }
[data-testid="stSidebarContent"] > * { flex-shrink: 0; }
[data-testid="stSidebarUserContent"], [data-testid="stSidebarUserContent"] > div,
[data-testid="stSidebarUserContent"] > div > [data-testid="stVerticalBlock"] { display: contents; }
[data-testid="stSidebarHeader"] { order: 0; }
[data-testid="stLayoutWrapper"]:has(> .st-key-side_top) { order: 1; padding: 0.25rem 0 1rem; }
[data-testid="stLayoutWrapper"]:has(> .st-key-side_warm) { order: 1; padding: 0 0 1rem; }
[data-testid="stSidebarNav"] { order: 2; }
[data-testid="stLayoutWrapper"]:has(> .st-key-side_bottom) { order: 3; padding: 1.5rem 0 6rem; }
</style>"""


def draw(load_model: bool = True) -> tuple[Ctx | None, str | None]:
    """Draw the sidebar; returns (ctx, None) or (None, the one sentence saying why no checkpoint is open).

    The checkpoint is read without PyTorch (cnnlib.io.metadata); `load_model` also loads its network now (every
    page but Home), so weights that do not fit their architecture are named here, in the sidebar."""
    st.sidebar.html(_ORDER_CSS)
    top, bottom = st.sidebar.container(key="side_top"), st.sidebar.container(key="side_bottom")
    with bottom:
        upload_error = _upload_box()
        if upload_error:
            st.error(upload_error)
    with top:
        folder_problem = None
        try:
            choices = checkpoints.checkpoint_choices()
        except Exception:  # noqa: BLE001 - an unreadable folder must never take the dashboard down
            log.exception("listing %s", checkpoints.checkpoint_dir())
            choices = [checkpoints.upload_choice(sha, n) for sha, (n, _) in checkpoints.uploads().items()]
        if not any(not c.startswith("upload:") for c in choices):
            folder_problem = checkpoints.folder_problem()
        if choices:
            st.selectbox("Checkpoint", choices, format_func=checkpoints.choice_label,
                         help=f"Trained models first (newest first), then imported ones, from "
                              f"{checkpoints.checkpoint_dir()} "
                              f"(set {checkpoints.CHECKPOINTS_ENV} to look elsewhere).",
                         **ui.kept("side_ckpt", choices[0], choices))
        if folder_problem:
            st.warning(folder_problem)
        elif not choices:
            st.caption(f"No checkpoints in `{checkpoints.checkpoint_dir()}` yet.")
        st.text_input("Data folder (optional)", placeholder="the checkpoint's own dataset",
                      help="Where the test images are: an ImageFolder tree (train/<class>/…, test/<class>/…) "
                           "or cifar10 / mnist / fashion-mnist / stl10. Empty: the dataset recorded in the checkpoint. "
                           "Relative paths start at the repository root.",
                      **ui.kept("side_data", ""))
        ctx, problem = None, None
        choice = ui.value("side_ckpt") if choices else None
        if choice:
            try:
                ctx = checkpoints.open_choice(choice, resolve_data(ui.value("side_data") or ""))
                if load_model:
                    ctx.model          # noqa: B018 - load it now (shared cache); a bad one is named below
            except CNNLibError as e:
                ctx = None
                problem = f"{checkpoints.choice_label(choice).split(' · ')[0]} cannot be opened: " \
                          f"{_lower_first(ui.one_sentence(str(e)))}"
            except Exception as e:  # noqa: BLE001
                ctx = None
                log.exception("opening %s", choice)
                problem = (f"{checkpoints.choice_label(choice).split(' · ')[0]} cannot be opened: it is not a "
                           f"readable checkpoint ({type(e).__name__}).")
        if problem:
            st.error(problem)
        elif ctx is not None:
            st.caption(f"{ctx.meta['model']['name']} · {len(ctx.classes)} classes · "
                       f"input {'×'.join(map(str, ctx.meta['input_shape']))}")
    with bottom:
        _import_help()
    if ctx is None and not problem and folder_problem and not folder_problem.endswith("does not exist."):
        problem = folder_problem
    return ctx, problem or upload_error
