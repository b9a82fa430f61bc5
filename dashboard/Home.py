"""CNN Lens: `streamlit run dashboard/Home.py`. The checkpoint summary and the network's architecture."""
import plotly.graph_objects as go
import streamlit as st

import lens
import ui

ctx = lens.setup(
    "CNN Lens",
    "A convolutional network learns small image filters, stacks them into ever larger pattern detectors and "
    "ends with one score per class. This dashboard opens a trained checkpoint and shows what it learned, how "
    "well it does and where it goes wrong. Pick a checkpoint in the sidebar (your choice follows you to every "
    "page), then walk through the pages in order.",
    needs_model=False, icon="🔬")

if ctx is not None:
    with ui.guard("summarising the checkpoint"):
        s = lens.summary(ctx)
        st.subheader(f"{ctx.label}")
        with st.container(border=True, key="home_card"):
            r1 = st.columns(4)
            r1[0].metric("Model", s["model"])
            r1[1].metric("Dataset", s["dataset"], help=f"{s['classes']} classes: " + ", ".join(ctx.classes))
            r1[2].metric("Parameters", f"{s['parameters']:,}")
            best = f"best: epoch {s['best_epoch']}" if s.get("best_epoch") else None
            r1[3].metric("Epochs", s["epochs"], delta=best, delta_color="off", delta_arrow="off")
            r2 = st.columns(4)
            r2[0].metric("Best validation accuracy", ui.pct(s["best_val_acc"]))
            r2[1].metric("Test accuracy", ui.pct(s["test_acc"]),
                         help=None if s["test_acc"] is not None else "Not measured yet: training has not finished.")
            r2[2].metric("Training time", ui.duration(s["train_seconds"]))
            r2[3].metric("Trained on", str(s["device"]).split(" (")[0].split(",")[0], help=str(s["device"]))
            st.caption(f"Trained on {s['device']} · "
                       f"input {' × '.join(map(str, s['input_shape']))} (channels × height × width) · "
                       f"recipe `{s['recipe']}` · created {ctx.meta.get('created', '—')}")

    with ui.guard("listing the layers"):
        st.subheader("Architecture")
        st.markdown("Each row is a layer that outputs a stack of feature maps (channels × height × width). "
                    "The **receptive field** is the square of input pixels one unit of that layer can see: it "
                    "grows with every convolution and pooling step, which is how later layers recognise larger shapes.")
        layers = lens.layers(ctx)
        rows = [{"layer": r["name"], "type": r["type"], "output shape": " × ".join(map(str, r["output_shape"])),
                 "parameters": r["params"], "receptive field": f"{r['rf_size']}×{r['rf_size']} px",
                 "stride (px)": r["rf_stride"]} for r in layers]
        table, chart = st.columns([3, 2])
        with table:
            st.dataframe(rows, hide_index=True, width="stretch", key="home_layers")
            ui.download_csv(rows, f"{ctx.label}-architecture.csv", key="home_csv")
        with chart:
            side = int(ctx.meta["input_shape"][1])
            fig = go.Figure(go.Bar(x=[r["name"] for r in layers], y=[r["rf_size"] for r in layers],
                                   marker_color=["#d62728" if r["type"] == "Conv2d" else "#1f77b4" for r in layers],
                                   customdata=[[r["type"], r["rf_stride"]] for r in layers],
                                   hovertemplate="%{x} (%{customdata[0]})<br>sees %{y}×%{y} input pixels"
                                                 "<br>stride %{customdata[1]} px<extra></extra>"))
            fig.add_hline(y=side, line=dict(color="gray", dash="dash"), annotation_text=f"image size ({side} px)")
            fig.update_layout(height=320, margin=dict(t=30, b=10, l=10, r=10),
                              title=dict(text="Receptive field per layer (pixels)", font=dict(size=14)))
            ui.show_chart(fig, key="home_rf", filename="receptive-field")

    st.subheader("Where to go next")
    pages = [("pages/1_Training.py", "Training", "how loss and accuracy moved, epoch by epoch; compare runs"),
             ("pages/2_Evaluation.py", "Evaluation", "confusion matrix, per-class scores, calibration"),
             ("pages/3_Errors.py", "Errors", "the misclassified images, and why the model chose wrong"),
             ("pages/4_Filters.py", "Filters", "the first layer's kernels, and how they formed during training"),
             ("pages/5_Feature_maps.py", "Feature maps", "what each layer's channels respond to in one image"),
             ("pages/6_Saliency.py", "Saliency", "which pixels drove a prediction, with eight methods"),
             ("pages/7_Embeddings.py", "Embeddings", "the whole test set as a 2-D map of the network's features")]
    for path, name, what in pages:
        st.page_link(path, label=f"**{name}** — {what}")

lens.prefetch(ctx)   # warm the caches the other pages read (background, once per checkpoint)
