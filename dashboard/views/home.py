"""Home: the checkpoint's summary card, its architecture, and where to go next."""
import plotly.graph_objects as go
import streamlit as st

import checkpoints
import compute
import frame
import ui

ctx = frame.begin(
    "A convolutional network learns small image filters, stacks them into ever larger pattern detectors and "
    "ends with one score per class. This dashboard opens a trained checkpoint and shows what it learned, how "
    "well it does and where it goes wrong. Pick a checkpoint in the sidebar (your choice follows you to every "
    "page), then walk through the pages in order.", title="CNN Lens", needs_model=False)

if ctx is not None:
    with ui.guard("summarising the checkpoint"):
        s = checkpoints.summary(ctx)
        st.subheader(ctx.label)
        with st.container(border=True, key="home_card"):
            r1 = st.columns(4)
            r1[0].metric("Model", s["model"])
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

    with ui.guard("listing the layers"):
        st.subheader("Architecture")
        st.markdown("Each row is a layer that outputs a stack of feature maps (channels × height × width). "
                    "The **receptive field** is the square of input pixels one unit of that layer can see: it "
                    "grows with every convolution and pooling step, which is how later layers recognise larger "
                    "shapes.")
        layers = compute.layers(ctx)
        rows = [{"layer": r["name"], "type": r["type"], "output shape": " × ".join(map(str, r["output_shape"])),
                 "parameters": r["params"], "receptive field": f"{r['rf_size']}×{r['rf_size']} px",
                 "stride (px)": r["rf_stride"]} for r in layers]
        st.dataframe(rows, hide_index=True, width="stretch", key="home_layers",
                     height=min(38 + 35 * len(rows), 460))      # full width: no column clipped
        ui.download_csv(rows, f"{ctx.label}-architecture.csv", key="home_csv")
        side = int(ctx.meta["input_shape"][1])
        fig = go.Figure(go.Bar(x=[r["name"] for r in layers], y=[r["rf_size"] for r in layers],
                               marker_color=["#d62728" if r["type"] == "Conv2d" else "#1f77b4" for r in layers],
                               customdata=[[r["type"], r["rf_stride"]] for r in layers],
                               hovertemplate="%{x} (%{customdata[0]})<br>sees %{y}×%{y} input pixels"
                                             "<br>stride %{customdata[1]} px<extra></extra>"))
        fig.add_hline(y=side, line=dict(color="gray", dash="dash"), annotation_text=f"image size ({side} px)")
        fig.update_layout(height=320, margin=dict(t=40, b=10, l=10, r=10),
                          title=dict(text="Receptive field per layer (pixels; red: convolutions)",
                                     font=dict(size=14)))
        ui.show_chart(fig, key="home_rf", filename="receptive-field")

    st.subheader("Where to go next")
    frame.links()
