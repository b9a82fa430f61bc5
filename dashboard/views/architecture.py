"""Architecture: every layer's output shape, parameters and receptive field, as a table and a chart."""
import plotly.graph_objects as go
import streamlit as st

import compute
import frame
import ui

ctx = frame.begin(
    "Each row is a layer that outputs a stack of feature maps (channels × height × width). The **receptive "
    "field** is the square of input pixels one unit of that layer can see: it grows with every convolution and "
    "pooling step, which is how later layers recognise larger shapes.")

with ui.guard("listing the layers"):
    layers = compute.layers(ctx)
    rows = [{"layer": r["name"], "type": r["type"], "output shape": " × ".join(map(str, r["output_shape"])),
             "parameters": r["params"], "receptive field": f"{r['rf_size']}×{r['rf_size']} px",
             "stride (px)": r["rf_stride"]} for r in layers]
    st.subheader(ctx.label)
    st.dataframe(rows, hide_index=True, width="stretch", key="arch_layers",
                 height=min(38 + 35 * len(rows), 460))      # full width: no column clipped
    ui.download_csv(rows, f"{ctx.label}-architecture.csv", key="arch_csv")
    side = int(ctx.meta["input_shape"][1])
    fig = go.Figure(go.Bar(x=[r["name"] for r in layers], y=[r["rf_size"] for r in layers],
                           marker_color=["#d62728" if r["type"] == "Conv2d" else "#1f77b4" for r in layers],
                           customdata=[[r["type"], r["rf_stride"]] for r in layers],
                           hovertemplate="%{x} (%{customdata[0]})<br>sees %{y}×%{y} input pixels"
                                         "<br>stride %{customdata[1]} px<extra></extra>"))
    fig.add_hline(y=side, line=dict(color="gray", dash="dash"), annotation_text=f"image size ({side} px)")
    fig.update_layout(height=320, margin=dict(t=40, b=10, l=10, r=10),
                      title=dict(text="Receptive field per layer (pixels; red: convolutions)", font=dict(size=14)))
    ui.show_chart(fig, key="arch_rf", filename="receptive-field")
