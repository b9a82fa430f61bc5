"""Home: the checkpoint's summary card and where to go next. Everything here is read from the checkpoint
without PyTorch (cnnlib.io.metadata), so the first page is up while the server still warms the model; the
architecture table is on its own page."""
import streamlit as st

import checkpoints
import frame
import ui

# a long value ("torchvision/mobilenet_v3_small", a dataset folder's name) wraps instead of ending in "…"
_WRAP_VALUES = """<style>.st-key-home_card [data-testid="stMetricValue"],
.st-key-home_card [data-testid="stMetricValue"] * { white-space: normal; overflow: visible; text-overflow: clip;
overflow-wrap: anywhere; line-height: 1.15; }</style>"""

ctx = frame.begin(
    "A convolutional network learns small image filters, stacks them into ever larger pattern detectors and "
    "ends with one score per class. This dashboard opens a trained checkpoint and shows what it learned, how "
    "well it does and where it goes wrong. Pick a checkpoint at the top of the sidebar (your choice follows you "
    "to every page), then walk through the pages in order.", title="CNN Lens", needs_model=False)

if ctx is not None:
    with ui.guard("summarising the checkpoint"):
        s = checkpoints.summary(ctx)
        st.subheader(ctx.label)
        with st.container(border=True, key="home_card"):
            st.html(_WRAP_VALUES)
            r1 = st.columns(4)
            r1[0].metric("Model", s["model"].replace("/", "/\u200b"))      # "torchvision/" may end a line
            r1[1].metric("Dataset", s["dataset"], help=f"{s['classes']} classes: " + ", ".join(ctx.classes))
            r1[2].metric("Parameters", f"{s['parameters']:,}")
            best = f"best: epoch {s['best_epoch']}" if s.get("best_epoch") else None
            r1[3].metric("Epochs", s["epochs"] or "—", delta=best, delta_color="off", delta_arrow="off",
                         help=None if s["epochs"] else "No training history: the model was imported.")
            r2 = st.columns(4)
            r2[0].metric("Best validation accuracy", ui.pct(s["best_val_acc"]))
            r2[1].metric("Test accuracy", ui.pct(s["test_acc"]),
                         help=None if s["test_acc"] is not None else "Not measured yet: training has not finished.")
            r2[2].metric("Training time", ui.duration(s["train_seconds"]))
            r2[3].metric("Trained on", str(s["device"]).split(" (")[0].split(",")[0], help=str(s["device"]))
            st.caption(f"Trained on {s['device']} · input {' × '.join(map(str, s['input_shape']))} "
                       f"(channels × height × width) · recipe `{s['recipe']}` · "
                       f"created {ctx.meta.get('created', '—')}")

    st.subheader("Where to go next")
    frame.links()

    import lesson
    lesson.share_section(ctx)
