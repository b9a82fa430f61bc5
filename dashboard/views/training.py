"""Training curves (loss, accuracy, learning rate) with the best epoch marked; several runs compared."""
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import checkpoints
import compute
import frame
import ui

ctx = frame.begin(
    "Each point is one epoch (one pass over the training images). **Loss** is what the optimiser pushes down; "
    "**accuracy** is what we care about. When the validation curve stops improving while the training curve "
    "keeps going, the model starts memorising instead of learning (overfitting) — the ★ marks the epoch whose "
    "weights were kept. Other runs on the same dataset are overlaid for comparison; add or remove them below.")

with ui.guard("drawing the training curves"):
    current = ui.value("side_ckpt")
    others = [c for c in checkpoints.checkpoint_choices() if c != current]
    compare = st.multiselect("Compare with", others, format_func=checkpoints.choice_label,
                             placeholder="other checkpoints (all of checkpoints/ are listed)",
                             **ui.kept("train_compare", checkpoints.same_dataset(others, ctx.classes), others))
    opened, problems = checkpoints.open_many(compare)
    runs = [ctx] + opened
    for problem in problems:
        st.error(problem)

    palette = ui.class_palette(len(runs))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss (cross-entropy)", "Accuracy",
                                                        "Learning rate (log scale)"), horizontal_spacing=0.07)
    rows_csv, empty = [], []
    for run, color in zip(runs, palette):
        hist = checkpoints.history(run)
        if not hist:
            empty.append(run.label)
            continue
        ep, name = [h["epoch"] for h in hist], run.label
        for col, key, dash, what in ((1, "train_loss", "solid", "train"), (1, "val_loss", "dash", "validation"),
                                     (2, "train_acc", "solid", "train"), (2, "val_acc", "dash", "validation")):
            fmt = ui.PCT_D3 if key.endswith("acc") else ".4f"
            fig.add_trace(go.Scatter(x=ep, y=[h.get(key) for h in hist], mode="lines+markers",
                                     name=f"{name} · {what}", legendgroup=name, showlegend=col == 1,
                                     line=dict(color=color, dash=dash), marker=dict(size=5),
                                     hovertemplate=f"{name}<br>{what} {key.split('_')[1]}"
                                                   f" %{{y:{fmt}}}<br>epoch %{{x}}<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(x=ep, y=[h.get("lr") for h in hist], mode="lines", name=f"{name} · lr",
                                 legendgroup=name, showlegend=False, line=dict(color=color),
                                 hovertemplate=f"{name}<br>lr %{{y:.2e}}<br>epoch %{{x}}<extra></extra>"),
                      row=1, col=3)
        best = run.meta.get("best_epoch")
        best_row = next((h for h in hist if h["epoch"] == best), None)
        if best_row is not None:
            for col, key in ((1, "val_loss"), (2, "val_acc")):
                fmt = ui.PCT_D3 if key.endswith("acc") else ".4f"
                fig.add_trace(go.Scatter(x=[best], y=[best_row.get(key)], mode="markers", legendgroup=name,
                                         showlegend=False, name=f"{name} · best epoch",
                                         marker=dict(symbol="star", size=16, color=color,
                                                     line=dict(color="black", width=1)),
                                         hovertemplate=f"{name}: best epoch %{{x}}<br>{key} %{{y:{fmt}}}"
                                                       "<extra></extra>"), row=1, col=col)
            fig.add_vline(x=best, line=dict(color=color, dash="dot", width=1), row=1, col=2)
        rows_csv += [{"run": name, **h} for h in hist]
    fig.update_xaxes(title_text="epoch", **ui.epoch_ticks(max((len(checkpoints.history(r)) for r in runs), default=1),
                                                         panel_px=260))       # a third of the main column
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="e", row=1, col=3)     # 3e-3 and 0.2 schedules both readable
    fig.update_layout(height=420, margin=dict(t=40, b=10), legend=dict(orientation="h", y=-0.2))
    if empty:
        st.info(("This checkpoint has" if empty == [ctx.label] else "These checkpoints have") +
                " no training history (imported models have none), so there are no curves for: " +
                ", ".join(empty) + ".")
    if rows_csv:
        ui.show_chart(fig, key="train_curves", filename="training-curves")
        st.caption("Solid: training split; dashed: validation split; ★: the kept (best) epoch. "
                   "Click legend entries to hide a run; the camera icon saves the chart as PNG.")
        ui.download_csv(rows_csv, "training-history.csv", key="train_csv")
    summaries = [(r, checkpoints.summary(r)) for r in runs]
    st.dataframe([{"run": r.label, "best epoch": "—" if s["best_epoch"] is None else str(s["best_epoch"]),  # one type
                   "best validation accuracy": ui.pct(s["best_val_acc"]), "test accuracy": ui.pct(s["test_acc"]),
                   "training time": ui.duration(s["train_seconds"]), "recipe": s["recipe"], "model": s["model"]}
                  for r, s in summaries], hide_index=True, width="stretch", key="train_runs")

with ui.guard("comparing per-class accuracy"):
    st.subheader("Per-class test accuracy")
    st.markdown("The share of each class's test images the model got right (recall), from the predictions stored "
                "in each checkpoint. Classes where runs disagree most are where a recipe change mattered.")
    bars, table, missing, reps = go.Figure(), {}, [], []
    for run, color in zip(runs, palette):
        rep = compute.stored_report(run)
        if rep is None:
            missing.append(run.label)
            continue
        reps.append((run, color, rep))
        for r in rep["per_class"]:
            table.setdefault(r["class"], {"class": r["class"]})[run.label] = round(100 * r["recall"], 1)
    shown = ui.bar_classes(table, [run.label for run, _, _ in reps])   # at most ui.MAX_BARS classes in the chart
    for run, color, rep in reps:
        kept = [r for r in rep["per_class"] if r["class"] in shown]
        bars.add_trace(go.Bar(x=[r["class"] for r in kept], y=[r["recall"] for r in kept], name=run.label,
                              marker_color=color,
                              hovertemplate=f"{run.label}<br>%{{x}}: %{{y:{ui.PCT_D3}}}<extra></extra>"))
    if missing:
        st.info("No stored test predictions (training did not finish, or the model was imported) in: "
                + ", ".join(missing) + ".")
    if table:
        if len(shown) < len(table):
            st.caption(f"The chart shows the {len(shown)} of {len(table):,} classes "
                       + ("where the runs differ most" if len(reps) > 1 else "the model gets right least often")
                       + "; the table below has every class (sort it by a column).")
        bars.update_layout(barmode="group", height=380, yaxis=dict(tickformat=".0%", range=[0, 1]),
                           margin=dict(t=10, b=10), legend=dict(orientation="h", y=1.1))
        ui.show_chart(bars, key="train_class_bars", filename="per-class-accuracy")
        rows = list(table.values())
        st.dataframe(rows, hide_index=True, width="stretch", key="train_class_table",
                     column_config={r.label: st.column_config.NumberColumn(r.label, format="%.1f%%")
                                    for r in runs})
        ui.download_csv(rows, "per-class-accuracy.csv", key="train_class_csv")
