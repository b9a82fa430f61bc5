"""The report's sections as HTML fragments (cnnlib.diagnose.report gathers the numbers, this draws them).

Every function returns one <section> (or a fragment of one); every text that comes from a checkpoint or a folder
(class names, file names) goes through webpage.esc, so it is shown as text and never becomes markup. Charts are
matplotlib PNGs drawn on a bare `Figure` (no pyplot, no display), inlined as data: URLs.
"""
from __future__ import annotations

import numpy as np

from cnnlib.io.webpage import esc, figure_data_url, img

__all__ = ["CSS", "section", "absent", "summary_card", "curves", "confusion", "per_class", "calibration_section",
           "errors_section", "label_section", "slices_section", "robustness_section", "pct"]

MATRIX_MAX = 30          # classes up to which the whole confusion matrix is drawn

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;margin:0;
 background:#f5f6f8;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7rem;margin:0 0 4px}h2{font-size:1.3rem;margin:0 0 10px;border-bottom:2px solid #dfe3ea;
 padding-bottom:4px}h3{font-size:1.05rem;margin:14px 0 6px}
section{background:#fff;border:1px solid #dfe3ea;border-radius:8px;padding:16px 20px;margin:18px 0}
nav{font-size:.92rem}nav a{margin-right:12px;color:#2255aa}
.sub{color:#5a6372;font-size:.92rem}.note{color:#5a6372;font-size:.9rem;margin:6px 0}
.absent{background:#fff7e6;border-left:4px solid #e6a23c;padding:8px 12px;margin:6px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#f0f3f8;border-radius:6px;padding:8px 12px;
 min-width:120px}.card b{display:block;font-size:1.15rem}.card span{font-size:.82rem;color:#5a6372}
table{border-collapse:collapse;font-size:.88rem;margin:6px 0}th,td{border:1px solid #dfe3ea;padding:3px 7px;
 text-align:right}th{background:#f0f3f8}td.l,th.l{text-align:left;max-width:260px;overflow-wrap:anywhere}
table.cm td{min-width:26px;text-align:center;font-variant-numeric:tabular-nums}table.cm.small{font-size:.72rem}
table.cm td,table.cm th{padding:2px 4px}
.errs{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.err{border:1px solid #dfe3ea;border-radius:6px;padding:8px}.err .imgs{display:flex;gap:6px}
.err figure{margin:0;text-align:center;font-size:.75rem;color:#5a6372}.err figure img{display:block}
.err p{margin:4px 0;font-size:.85rem;overflow-wrap:anywhere}img{image-rendering:pixelated}
img.chart{image-rendering:auto;max-width:100%;height:auto}
.verdict{display:inline-block;border-radius:4px;padding:0 6px;background:#e8edf7;font-weight:600}
"""


def pct(v, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * float(v):.{digits}f}%"


def section(sid: str, title: str, body: str) -> str:
    """<section id=sid><h2>title</h2>body</section>; sid and title are ours, escaped all the same."""
    return f'<section id="{esc(sid)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def absent(sentence: str) -> str:
    """One sentence saying why a part is missing."""
    return f'<p class="absent">{esc(sentence)}</p>'


def _figure(w: float, h: float, cols: int = 1):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h))
    axes = fig.subplots(1, cols)
    return fig, (axes if cols > 1 else [axes])


def summary_card(s: dict, rep: dict | None, source: str) -> str:
    mins = None if s.get("train_seconds") is None else s["train_seconds"] / 60
    cards = [("model", s["model"]), ("dataset", s["dataset"]), ("classes", s["classes"]),
             ("input (C×H×W)", "×".join(map(str, s["input_shape"]))), ("parameters", f"{s['parameters']:,}"),
             ("epochs", s["epochs"] or "—"), ("best epoch", s["best_epoch"] or "—"),
             ("best val accuracy", pct(s["best_val_acc"])), ("test accuracy (stored)", pct(s["test_acc"])),
             ("training time", "—" if mins is None else f"{mins:.1f} min"), ("device", s["device"])]
    if rep is not None:
        cards += [("top-1 accuracy", pct(rep["accuracy"], 2)), (f"top-{rep['top5_k']} accuracy",
                                                                 pct(rep["top5_accuracy"], 2)),
                  ("mean loss", f"{rep['mean_loss']:.3f}"), ("ECE", f"{rep['ece']:.3f}"), ("test images", rep["n"])]
    body = '<div class="cards">' + "".join(f"<div class=\"card\"><b>{esc(v)}</b><span>{esc(k)}</span></div>"
                                           for k, v in cards) + "</div>"
    body += f'<p class="note">{esc(source)}</p>'
    return section("summary", "Summary", body)


def curves(history: list[dict], best_epoch) -> str:
    rows = [r for r in history or [] if isinstance(r, dict) and "epoch" in r]
    if not rows:
        return section("curves", "Training curves", absent("This checkpoint has no training history (an imported "
                                                           "model, or one saved before its first epoch)."))
    from matplotlib.ticker import MaxNLocator
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = _figure(11, 3.6, 2)
    for ax, key, name in ((a, "loss", "loss"), (b, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            vals = [r.get(f"{split}_{key}") for r in rows]
            if any(v is not None for v in vals):
                ax.plot(ep, [np.nan if v is None else v for v in vals], style, ms=3, label=f"{split} {name}")
        if best_epoch:
            ax.axvline(best_epoch, color="#c03030", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return section("curves", "Training curves", img(figure_data_url(fig), "loss and accuracy per epoch", cls="chart")
                   + '<p class="note">Training and validation loss and accuracy per epoch; the dashed line marks the '
                     "best epoch (the weights kept).</p>")


def confusion(rep: dict) -> str:
    classes, cm = rep["classes"], np.asarray(rep["confusion_matrix"])
    norm = np.asarray(rep["confusion_normalized"])
    k = len(classes)
    if k > MATRIX_MAX:
        rows = "".join(f"<tr><td class=\"l\">{esc(classes[c['true']])}</td><td class=\"l\">{esc(classes[c['pred']])}"
                       f"</td><td>{c['count']}</td></tr>" for c in rep["most_confused"])
        body = absent(f"The full {k} × {k} matrix is left out (readable up to {MATRIX_MAX} classes); the "
                      f"{len(rep['most_confused'])} most confused pairs (true → predicted) are listed instead.")
        body += f'<table><tr><th class="l">true class</th><th class="l">predicted as</th><th>images</th></tr>{rows}</table>'
        return section("confusion", "Confusion matrix", body)
    named = k <= 10
    head = "".join(f"<th>{esc(c) if named else i}</th>" for i, c in enumerate(classes))
    body_rows = []
    for i, c in enumerate(classes):
        cells = []
        for j in range(k):
            v = norm[i, j]
            colour = f"rgba(34,85,170,{0.08 + 0.85 * v:.2f})" if cm[i, j] else "#fff"
            ink = "#fff" if v > 0.55 else "#1d2330"
            cells.append(f'<td style="background:{colour};color:{ink}">{cm[i, j]}</td>')
        body_rows.append(f'<tr><th class="l">{"" if named else f"{i} "}{esc(c)}</th>{"".join(cells)}</tr>')
    small = "" if k <= 12 else " small"
    body = (f'<table class="cm{small}"><tr><th class="l">true ↓ / predicted →</th>{head}</tr>{"".join(body_rows)}'
            f'</table><p class="note">Counts; the colour is the share of the true class (row).'
            f'{"" if named else " Columns follow the numbered rows."}</p>')
    if rep["most_confused"]:
        top = rep["most_confused"][:5]
        body += "<p class=\"note\">Most confused: " + "; ".join(
            f"{esc(classes[c['true']])} → {esc(classes[c['pred']])} ({c['count']})" for c in top) + ".</p>"
    return section("confusion", "Confusion matrix", body)


def per_class(rep: dict) -> str:
    rows = "".join(f"<tr><td class=\"l\">{esc(r['class'])}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}"
                   f"</td><td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>" for r in rep["per_class"])
    m = rep["macro"]
    rows += (f"<tr><th class=\"l\">macro average</th><th>{m['precision']:.3f}</th><th>{m['recall']:.3f}</th>"
             f"<th>{m['f1']:.3f}</th><th>{rep['n']}</th></tr>")
    body = (f"<p>Top-1 accuracy {pct(rep['accuracy'], 2)}, top-{rep['top5_k']} accuracy "
            f"{pct(rep['top5_accuracy'], 2)} on {rep['n']} test images.</p>"
            '<table><tr><th class="l">class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>'
            f"{rows}</table>")
    return section("per-class", "Per-class precision, recall and F1", body)


def _reliability(ax, bins: dict, title: str, ece: float) -> None:
    lo, hi = np.asarray(bins["bin_lower"]), np.asarray(bins["bin_upper"])
    acc = [np.nan if a is None else a for a in bins["accuracy"]]
    ax.bar(lo, acc, width=hi - lo, align="edge", color="#2255aa", alpha=.75, edgecolor="white", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="#888", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: ECE {ece:.3f}")
    ax.legend(fontsize=8, loc="upper left")


def calibration_section(rep: dict, after: dict | None, temp: dict | None) -> str:
    """rep: compute_report's; after: {"calibration", "ece"} of the test set with the stored temperature."""
    panels = [("test, as trained", rep["calibration"], rep["ece"])]
    if after is not None:
        panels.append((f"test, T = {temp['T']:.3f}", after["calibration"], after["ece"]))
    fig, axes = _figure(4.6 * len(panels), 4, len(panels))
    for ax, (title, bins, ece) in zip(axes, panels):
        _reliability(ax, bins, title, ece)
    fig.tight_layout()
    body = img(figure_data_url(fig), "reliability diagram", cls="chart")
    body += ('<p class="note">Expected calibration error (ECE): the mean gap between confidence and accuracy over '
             '15 equal-width confidence bins, weighted by the images in each.</p>')
    if temp is None:
        body += absent("No temperature is stored in this checkpoint: `python -m cnnlib calibrate CKPT` fits one on "
                       "the validation split, and the report then shows the diagram after it.")
    else:
        body += (f"<p>Temperature T = {temp['T']:.4f} fitted on the {esc(temp.get('fitted_on', 'validation split'))}"
                 f": ECE there {temp.get('ece_before', float('nan')):.4f} → {temp.get('ece_after', float('nan')):.4f}, "
                 f"NLL {temp.get('nll_before', float('nan')):.4f} → {temp.get('nll_after', float('nan')):.4f}.</p>")
    return section("calibration", "Calibration", body)


def errors_section(cards: list[dict], n_wrong: int, method: str, why: str | None, triage_note: str | None,
                   verdict_counts: dict | None = None, among: str = "train") -> str:
    title = "Top errors (most confident wrong)"
    if why:
        return section("errors", title, absent(why))
    if not cards:
        return section("errors", title, "<p>The model gets every test image right: there is no error to show.</p>")
    out = [f"<p>The {len(cards)} most confident of {n_wrong} misclassified test images, with {esc(method)} for the "
           "predicted and for the true class (red: what raised that class's score).</p>"]
    if triage_note:
        out.append(absent(triage_note))
    elif verdict_counts:
        out.append("<p>Triage of all " + str(sum(verdict_counts.values())) + " mistakes (cnnlib triage): " + ", ".join(
            f"{esc(v)} {c}" for v, c in verdict_counts.items()) + "." + (
            " The data has no training images: each mistake's neighbours are the other test images, with their "
            "given labels." if among == "test" else "") + "</p>")
    out.append('<div class="errs">')
    for c in cards:
        figs = "".join(f"<figure>{img(a, alt, 96)}{esc(cap)}</figure>" for a, alt, cap in c["images"])
        verdict = ""
        if c.get("verdict"):
            v = c["verdict"]
            verdict = (f'<p>Triage: <span class="verdict">{esc(v["verdict"])}</span> (confidence '
                       f'{v["confidence"]:.2f}) — {esc(v["rule"])}</p>')
        where = f"<p class=\"sub\">{esc(c['path'])}</p>" if c.get("path") else ""
        out.append(f'<div class="err"><div class="imgs">{figs}</div><p>#{c["index"]}: true '
                   f"<b>{esc(c['true'])}</b>, predicted <b>{esc(c['pred'])}</b> at {pct(c['confidence'])} "
                   f"(true class {pct(c['true_prob'])})</p>{verdict}{where}</div>")
    out.append("</div>")
    return section("errors", title, "".join(out))


def label_section(info: dict | None, why: str | None, rows: list[dict]) -> str:
    title = "Probably mislabelled (confident learning)"
    if info is None:
        return section("labels", title, absent(why or "Label issues could not be computed."))
    m, n = len(info["indices"]), len(info["quality"])
    body = (f"<p>cleanlab flags {m} of {n} test images ({pct(m / max(n, 1))}) whose given label this model's "
            "probabilities contradict.</p>")
    if info.get("estimated_wrong") is None:
        body += absent(f"The model's accuracy on these images is {pct(info['accuracy'])}, below "
                       f"{pct(info['trusted'], 0)}: the count is mostly its own confident mistakes, not an "
                       "estimate of how many labels are wrong.")
    else:
        body += ('<p class="note">The model is accurate enough for the count to estimate the wrong labels; every '
                 "flagged image still needs a look.</p>")
    if rows:
        trs = "".join(f"<tr><td>{r['index']}</td><td>{img(r['image'], 'test image', 48) if r.get('image') is not None else ''}"
                      f"</td><td class=\"l\">{esc(r['given'])}</td><td class=\"l\">{esc(r['suggested'])}</td>"
                      f"<td>{r['quality']:.3f}</td><td class=\"l\">{esc(r.get('path') or '')}</td></tr>" for r in rows)
        body += ('<table><tr><th>index</th><th>image</th><th class="l">given label</th><th class="l">model says'
                 f'</th><th>label quality</th><th class="l">file</th></tr>{trs}</table>')
    return section("labels", title, body)


def slices_section(found: list[dict] | None, why: str | None, classes: list[str]) -> str:
    """Failure slices: groups of similar test images the model gets wrong far more often, worst first."""
    title = "Failure slices"
    if found is None:
        return section("slices", title, absent(why or "Failure slices could not be computed."))
    if not found:
        return section("slices", title, "<p>No group of similar test images is wrong significantly more often than "
                                        "the model as a whole (binomial test, 1% family-wise).</p>")

    def mix(pairs):
        return ", ".join(f"{esc(classes[i] if i < len(classes) else i)} {n}" for i, n in pairs[:3])
    rows = "".join(
        f"<tr><td>{s['rank']}</td><td>{s['size']}</td><td>{pct(s['error_rate'], 0)}</td>"
        f"<td>+{pct(s['excess'], 0)}</td><td class=\"l\">{mix(s['classes'])}</td><td class=\"l\">{mix(s['predicted'])}"
        f"</td><td class=\"l\">{esc(', '.join(f'{k} {v}' for k, v in (s.get('verdicts') or {}).items()))}</td>"
        f"<td class=\"l\">{''.join(img(a, 'typical image', 40) for a in s.get('images', []))}</td></tr>"
        for s in found)
    body = ("<p>Groups of test images that look alike to the network (k-means on its features within each class) "
            "and that it gets wrong far more often than overall, ranked by size times excess error.</p>"
            '<table><tr><th>rank</th><th>images</th><th>wrong</th><th>excess</th><th class="l">classes</th>'
            '<th class="l">predicted</th><th class="l">verdicts</th><th class="l">typical images</th></tr>'
            f"{rows}</table>")
    return section("slices", title, body)


def robustness_section(res: dict | None, why: str | None) -> str:
    title = "Robustness (common corruptions)"
    if res is None:
        return section("robustness", title, absent(why or "No cached robustness results."))
    sev = res["settings"]["severities"]
    fig, (ax,) = _figure(9, 3.6)
    for i, (c, row) in enumerate(res["accuracy"].items()):             # 10 colours: the rest dashed
        ax.plot(sev, row, "--o" if i >= 10 else "-o", ms=2.5, lw=1, alpha=.8, label=c)
    mean = np.mean(np.asarray(list(res["accuracy"].values())), 0)
    ax.plot(sev, mean, "-o", color="black", lw=2.5, label="mean of all corruptions")
    ax.axhline(res["clean_accuracy"], ls="--", color="#c03030", lw=1, label="clean")
    ax.set_xticks(sev)
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    head = "".join(f"<th>s{s}</th>" for s in sev)
    rows = "".join(f"<tr><td class=\"l\">{esc(c)}</td>" + "".join(f"<td>{pct(a)}</td>" for a in row)
                   + f"<td>{pct(res['mean_accuracy'][c])}</td></tr>" for c, row in res["accuracy"].items())
    body = (f"<p>Accuracy on {res['n']} test images (seed {res['settings']['seed']}): clean "
            f"{pct(res['clean_accuracy'])}; {len(res['first_flip'])} images right when clean turn wrong under some "
            "corruption. Cached result of <code>python -m cnnlib robustness</code>.</p>"
            + img(figure_data_url(fig), "accuracy per severity", cls="chart")
            + f'<table><tr><th class="l">corruption</th>{head}<th>mean</th></tr>{rows}</table>')
    return section("robustness", title, body)
