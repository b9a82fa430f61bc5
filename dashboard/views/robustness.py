"""Robustness: accuracy under the 15 common corruptions (CIFAR-10-C's) at 5 severities, per class, and the images
that flip first, on a sample of the test images; computed on request with a progress bar, cached on disk."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

import frame
import robust
import testdata
import ui

ctx = frame.begin(
    "How much of the accuracy survives noise, blur, weather and digital artefacts? Each of the 15 corruptions of "
    "CIFAR-10-C (Hendrycks & Dietterich, 2019) is applied at 5 severities to a sample of the test images, and the "
    "model is tested again. A model that drops a lot under mild noise or blur has learned fine texture rather "
    "than shape. The images that flip first (right when clean, wrong at the lowest severity) show where.")

pixels = testdata.test_pixels(ctx, why="The robustness sweep")
if pixels is None:
    st.stop()
n_total = len(pixels[1])
names = list(robust.corruptions())

with ui.guard("reading the settings"):
    c1, c2, c3 = st.columns([1, 3, 1], vertical_alignment="bottom")
    images = int(c1.number_input("Test images (sample)", 1, n_total, step=50,
                                 **ui.kept("rob_images", min(robust.DEFAULT_IMAGES, n_total), bounds=(1, n_total))))
    chosen = c2.multiselect("Corruptions", names, format_func=lambda c: c.replace("_", " "),
                            **ui.kept("rob_corruptions", names, names))
    run = c3.button("Run", key="rob_run", type="primary", icon=":material/play_arrow:", width="stretch",
                    disabled=not chosen)
    st.caption(f"A random sample (seed 0) of {min(images, n_total):,} of the {n_total:,} test images, each corrupted "
               f"{5 * len(chosen)} times. Each corruption's result is kept on disk: asking again loads it at once.")

if not chosen:
    st.info("Choose at least one corruption.", icon=":material/info:")
    st.stop()
res = None
with ui.guard("measuring the accuracy under corruption"):
    if run or robust.cached(ctx, pixels, chosen, images):
        res = robust.run(ctx, pixels, chosen, images, bar=None if not run else st.progress(0.0, text="Starting…"))
if res is None:
    st.info("Press **Run** to corrupt the sample and test the model on it (a progress bar shows each corruption).",
            icon=":material/play_arrow:")
    st.stop()

classes = ctx.classes
acc = res["accuracy"]
sev = res["settings"]["severities"]
mean_all = float(np.mean(list(res["mean_accuracy"].values())))
m1, m2, m3 = st.columns(3)
m1.metric("Clean accuracy", ui.pct(res["clean_accuracy"]), help=f"on the {res['n']:,} sampled test images")
m2.metric("Mean under corruption", ui.pct(mean_all), delta=f"{(mean_all - res['clean_accuracy']) * 100:+.1f} points",
          help="the mean over the chosen corruptions and the 5 severities")
worst = min(res["mean_accuracy"], key=res["mean_accuracy"].get)
m3.metric("Hardest corruption", worst.replace("_", " "), help=f"mean accuracy {ui.pct(res['mean_accuracy'][worst])}")

with ui.guard("drawing the accuracy table"):
    rows = list(acc)
    z = np.array([acc[c] for c in rows], float)
    fig = go.Figure(go.Heatmap(z=z, x=[f"severity {s}" for s in sev], y=[c.replace("_", " ") for c in rows],
                               zmin=0, zmax=1, colorscale="RdYlGn", colorbar={"title": "accuracy", "tickformat": ".0%"},
                               text=[[ui.pct(v) for v in r] for r in z], texttemplate="%{text}",
                               hovertemplate="%{y}, %{x}: %{text}<extra></extra>"))
    fig.update_layout(height=120 + 30 * len(rows), margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title=f"Accuracy under corruption (clean: {ui.pct(res['clean_accuracy'])})")
    fig.update_yaxes(autorange="reversed")
    ui.show_chart(fig, key="rob_heatmap", filename="robustness")
    table = [{"corruption": c, **{f"s{s}": round(a, 4) for s, a in zip(sev, acc[c])},
              "mean": round(res["mean_accuracy"][c], 4)} for c in rows]
    ui.download_csv(table, "robustness.csv", key="rob_csv")

with ui.guard("drawing the per-class accuracy"):
    pick = st.selectbox("Per class, under", rows, format_func=lambda c: c.replace("_", " "),
                        **ui.kept("rob_corruption", rows[0], rows))
    per = [res["clean_per_class"]] + list(res["per_class"][pick])
    zc = np.array([[np.nan if v is None else v for v in col] for col in per], float).T     # (classes, 1 + severities)
    fig = go.Figure(go.Heatmap(z=zc, x=["clean"] + [f"severity {s}" for s in sev], y=classes, zmin=0, zmax=1,
                               colorscale="RdYlGn", colorbar={"title": "accuracy", "tickformat": ".0%"},
                               text=[["–" if np.isnan(v) else ui.pct(v) for v in r] for r in zc],
                               texttemplate="%{text}", hovertemplate="%{y}, %{x}: %{text}<extra></extra>"))
    fig.update_layout(height=120 + 28 * len(classes), margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title=f"Accuracy per class under {pick.replace('_', ' ')}")
    fig.update_yaxes(autorange="reversed")
    ui.show_chart(fig, key="rob_per_class", filename=f"robustness-{pick}")

with ui.guard("drawing the images that flip first"):
    flips = res["first_flip"]
    right = round(res["clean_accuracy"] * res["n"])
    st.subheader("The images that flip first")
    if not flips:
        st.caption("No image that is right when clean turns wrong under the chosen corruptions.")
    else:
        st.caption(f"{len(flips)} of the {right} sampled images the model gets right flip under some corruption; "
                   "the first 8, each clean (left) and at the severity where it first turns wrong (right):")
        ims, caps = robust.flip_pairs(ctx, pixels, flips)
        with st.container(key="rob_flips"):
            st.image(ims, caption=caps, width=2 * 96 + 4)
