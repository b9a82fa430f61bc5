"""A report that leaves the app: one self-contained HTML file about a checkpoint, for a colleague or a pull request.

    html = build_report(model, data=None, errors=12)          # str: the whole page
    info = write_report("ckpt.pt", "report.html")             # {"path", "bytes", "sections", "absent"}
    python -m cnnlib report CKPT --out FILE.html [--data PATH] [--errors N] [--method gradcam] [--no-triage]

Sections: summary card, training curves (best epoch marked), confusion matrix (up to 30 classes; above, the most
confused pairs), per-class precision / recall / F1 with top-1 and top-5, calibration (reliability diagram and
ECE, before and after the stored temperature), the N most confident errors with the image and a saliency map
for the predicted and the true class (cnnlib.explain.attribution) and triage's verdict (cnnlib.diagnose.triage,
when it runs), label issues (cnnlib.diagnose.labels) and robustness (only results `cnnlib robustness` cached).

The file loads nothing: plain HTML and inline CSS, images as PNG data: URLs, no script, and a
Content-Security-Policy that forbids any request (cnnlib.io.webpage). Everything taken from the checkpoint or the
data folder is escaped text. When the test images are not on disk, the parts that need pixels say so in one
sentence and the rest (from the checkpoint's stored predictions) still renders.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

import numpy as np

from cnnlib.errors import CNNLibError
from cnnlib.diagnose import report_sections as rs

__all__ = ["build_report", "write_report", "report_main", "ERRORS"]

ERRORS = 12              # most confident errors shown by default
LABEL_ROWS = 12          # flagged label issues listed
SIDE = 96                # pixels of each picture in an error card


def _pixels(meta: dict, data: str | None, root: str | None):
    """(x, y, None) or (None, None, one sentence why the test images are not available)."""
    from cnnlib.data.spec import load_checkpoint_split, missing_data_help
    try:
        x, y = load_checkpoint_split(meta, "test", data, root)
    except CNNLibError as e:
        return None, None, missing_data_help(meta, e, data or "")
    if len(y) == 0:
        return None, None, "The data has no test images."
    return x, y, None


def _paths(meta: dict, data: str | None, root: str | None, n: int) -> list[str] | None:
    """The test files relative to the data folder (a folder's data only; aligned with the pixels), else None."""
    from cnnlib.data.spec import checkpoint_data_spec
    from cnnlib.diagnose.compare import split_paths
    try:
        files = split_paths(meta, "test", data, root)
        source = checkpoint_data_spec(meta, data or "", root).source
    except (CNNLibError, OSError):
        return None
    if files is None or len(files) != n:
        return None
    return [os.path.relpath(f, source) for f in files]


def _triage(model, data, root) -> tuple[dict, str | None, str]:
    """({test index: record} from cnnlib.diagnose.triage, None, "train" or "test": where the neighbours came
    from), or ({}, one sentence, "") when it is missing or fails."""
    try:
        from cnnlib.diagnose.triage import triage_for_checkpoint
        result = triage_for_checkpoint(model, data, root)
        return {int(r["index"]): r for r in result["records"]}, None, result["among"]
    except Exception as e:  # noqa: BLE001 - an optional section: one sentence, the rest renders
        why = str(e) if isinstance(e, CNNLibError) else f"{type(e).__name__}: {str(e)[:160]}"
        return {}, f"Triage verdicts are left out: {why.rstrip('.')}.", ""


def _slices(model, data, root, x, verdicts: dict) -> tuple[list[dict] | None, str | None]:
    """The five worst failure slices (cnnlib.diagnose.slices) with thumbnails of their typical images."""
    try:
        from cnnlib.diagnose.slices import find_slices
        from cnnlib.diagnose.neighbors import index_for_checkpoint
        from cnnlib.diagnose.evaluate import stored_predictions
        from cnnlib.diagnose.triage import cached_test_predictions
        index = index_for_checkpoint(model, "test", data, root)
        preds = stored_predictions(model.meta) if data is None else None
        if preds is None or not np.array_equal(preds["targets"], np.asarray(index.labels)):
            preds = cached_test_predictions(model, x, index.labels, root, data, None)
        found = find_slices(index.features, preds["targets"], preds["preds"], top=5,
                            verdicts=list(verdicts.values()))
    except Exception as e:  # noqa: BLE001 - an optional section: one sentence, the rest renders
        why = str(e) if isinstance(e, CNNLibError) else f"{type(e).__name__}: {str(e)[:160]}"
        return None, f"Failure slices are left out: {why.rstrip('.')}."
    for s in found:
        s["images"] = [_picture(x[i], 48) for i in s["typical"][:6]]
    return found, None


def _cached_robustness(model, meta, data, root, x, y) -> tuple[dict | None, str | None]:
    """The largest cached `cnnlib robustness` result for exactly this model and these test images."""
    if x is None:
        return None, "Robustness needs the test images (to find its cached results), which are not on disk."
    from cnnlib.data.cache import cache_dir
    from cnnlib.data.spec import checkpoint_data_spec
    from cnnlib.diagnose.robustness import cache_key
    folder = cache_dir(checkpoint_data_spec(meta, data or "", root).root)
    best = None
    try:
        names = [f for f in os.listdir(folder) if f.startswith("robustness-") and f.endswith(".json")]
    except OSError:
        names = []
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                res = json.load(f)
            idx = np.asarray(res["indices"], np.int64)
            if len(idx) == 0 or idx.max() >= len(y):
                continue
            if name != f"robustness-{cache_key(model, np.asarray(x[idx]), np.asarray(y)[idx], res['settings'])}.json":
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if best is None or res["n"] > best["n"]:
            best = res
    if best is None:
        return None, ("No cached robustness results for this model and these test images: "
                      "`python -m cnnlib robustness CKPT` computes them (then build the report again).")
    return best, None


def _error_cards(model, x, preds, classes, n, method, verdicts, paths) -> tuple[list[dict], str]:
    """The n most confident mistakes with their pictures: image, saliency for the predicted and the true class."""
    import torch
    from cnnlib.explain.attribution import METHOD_LABELS, attribute_many
    probs, targets, pred = preds["probs"], preds["targets"], preds["preds"]
    conf = probs[np.arange(len(targets)), pred]
    wrong = np.flatnonzero(pred != targets)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    if len(order) == 0:
        return [], METHOD_LABELS.get(method, method)
    xs = torch.from_numpy(np.asarray(x[order], np.float32) / 255.0)
    maps = None
    for m in dict.fromkeys((method, "saliency")):       # a model without a conv layer: plain gradients instead
        try:
            on_pred = attribute_many(model, xs, m, [int(pred[i]) for i in order])
            on_true = attribute_many(model, xs, m, [int(targets[i]) for i in order])
            maps, method = (on_pred, on_true), m
            break
        except CNNLibError:
            continue
    cards = []
    for j, i in enumerate(order):
        t, p = int(targets[i]), int(pred[i])
        pics = [(_picture(x[i]), "test image", "image")]
        if maps is not None:
            for r, who in ((maps[0][j], "predicted"), (maps[1][j], "true")):
                none = " (none)" if not r["scale"] > 0 else ""      # no pixel raised this class's score
                pics.append((_picture(r["overlay"]), f"saliency for the {who} class", f"→ {who}{none}"))
        cards.append({"index": int(i), "true": classes[t], "pred": classes[p], "confidence": float(conf[i]),
                      "true_prob": float(probs[i, t]), "images": pics, "verdict": _verdict(verdicts.get(int(i))),
                      "path": paths[i] if paths else None})
    return cards, METHOD_LABELS.get(method, method)


def _picture(a, side: int = SIDE) -> np.ndarray:
    """Small images enlarged (nearest neighbour, crisp) to about `side`; large ones (224 px) shrunk to 4/3 of it."""
    from PIL import Image
    from cnnlib import viz
    a = viz.to_hwc_uint8(a)
    if max(a.shape[:2]) <= side * 4 // 3:
        return viz.enlarge(a, side)
    im = Image.fromarray(a)
    im.thumbnail((side * 4 // 3, side * 4 // 3), Image.Resampling.LANCZOS)
    return np.asarray(im)


def _verdict(record: dict | None) -> dict | None:
    if not record:
        return None
    ev = record.get("evidence") or {}
    return {"verdict": record["verdict"], "confidence": float(record["confidence"]), "rule": ev.get("rule", "")}


def _labels(preds, classes, x, paths) -> tuple[dict | None, str | None, list[dict]]:
    from cnnlib.diagnose.labels import TRUSTED_ACCURACY, label_issues
    try:
        info = label_issues(preds["targets"], preds["probs"])
    except Exception as e:  # noqa: BLE001 - cleanlab may refuse a tiny split: one sentence
        return None, f"Label issues could not be computed: {str(e)[:200].rstrip('.')}.", []
    info["trusted"] = TRUSTED_ACCURACY
    rows = []
    for i in info["indices"][:LABEL_ROWS]:
        i = int(i)
        rows.append({"index": i, "given": classes[int(preds["targets"][i])], "suggested": classes[int(info["suggested"][i])],
                     "quality": float(info["quality"][i]), "path": paths[i] if paths else None,
                     "image": None if x is None else _picture(x[i], 48)})
    return info, None, rows


def build_report(model, data: str | None = None, root: str | None = None, errors: int = ERRORS,
                 method: str = "gradcam", label: str | None = None, triage: bool = True) -> str:
    """The whole report page (str) for a loaded model (`cnnlib.inference.load_model`): see the module docstring.
    data: another test folder or dataset name; label: the checkpoint's name in the title."""
    from cnnlib.diagnose.calibration import apply_temperature
    from cnnlib.diagnose.evaluate import calibration, compute_report, predictions_for, stored_predictions
    from cnnlib.io.validate import summary
    from cnnlib.io.webpage import esc, page
    if errors < 0:
        raise CNNLibError("--errors must be 0 or more")
    meta = getattr(model, "meta", None) or {}
    classes = [str(c) for c in meta.get("classes") or []]
    x, y, why_pixels = _pixels(meta, data, root)
    preds, why_preds = None, None
    try:
        preds = predictions_for(model, "test", x, y) if x is not None else stored_predictions(meta)
    except CNNLibError as e:
        why_preds = str(e)
    if preds is None:
        why_preds = why_preds or ("This checkpoint stores no test predictions and its test images are not on disk: "
                                  + why_pixels)
    source = ("Metrics from the checkpoint's stored test predictions." if preds and preds.get("source") == "stored"
              else "Metrics computed on the test images." if preds else "")
    if why_pixels:
        source += f" The test images are not on disk: {why_pixels}"
    card = summary({**meta, "state_dict": model.state_dict()})
    parts = [rs.summary_card(card, None, source) if preds is None else None, rs.curves(meta.get("history"),
                                                                                     meta.get("best_epoch"))]
    rep = None
    if preds is not None:
        rep = compute_report(preds["targets"], preds["probs"], classes, preds["losses"], preds=preds["preds"], top=30)
        parts[0] = rs.summary_card(card, rep, source)
        temp = meta.get("temperature") if isinstance(meta.get("temperature"), dict) else None
        after = None
        if temp and temp.get("T"):
            scaled = apply_temperature(preds["probs"], float(temp["T"]))
            cal = calibration(scaled.max(1), scaled.argmax(1) == preds["targets"])
            after = {"ece": cal.pop("ece"), "calibration": cal}
        parts += [rs.confusion(rep), rs.per_class(rep), rs.calibration_section(rep, after, temp)]
        paths = _paths(meta, data, root, len(preds["targets"])) if x is not None else None
        verdicts, triage_note, among = ({}, None if triage else "Triage verdicts are left out (asked for with "
                                        "--no-triage).", "")
        if x is not None and errors and triage:
            verdicts, triage_note, among = _triage(model, data, root)
        if x is None:
            cards, mlabel, why_err = [], method, ("The top errors need the test images, which are not on disk: "
                                                  + why_pixels)
        else:
            cards, mlabel = _error_cards(model, x, preds, classes, errors, method, verdicts, paths)
            why_err = None
        n_wrong = int((preds["preds"] != preds["targets"]).sum())
        counts = {}
        for r in verdicts.values():
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        parts.append(rs.errors_section(cards, n_wrong, mlabel, why_err, triage_note, counts, among))
        parts.append(rs.label_section(*_labels(preds, classes, x, paths)))
        if x is None or not triage:
            why_slices = ("Failure slices need the test images, which are not on disk." if x is None else
                          "Failure slices are left out with triage (--no-triage): both need every test image's "
                          "features.")
            parts.append(rs.slices_section(None, why_slices, classes))
        else:
            parts.append(rs.slices_section(*_slices(model, data, root, x, verdicts), classes))
    else:
        for sid, title in (("confusion", "Confusion matrix"), ("per-class", "Per-class precision, recall and F1"),
                           ("calibration", "Calibration"), ("errors", "Top errors (most confident wrong)"),
                           ("labels", "Probably mislabelled (confident learning)")):
            parts.append(rs.section(sid, title, rs.absent(why_preds)))
    parts.append(rs.robustness_section(*_cached_robustness(model, meta, data, root, x, y)))
    name = label or str(card["model"])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f'<a href="#{sid}">{t}</a>' for sid, t in (
        ("summary", "Summary"), ("curves", "Curves"), ("confusion", "Confusion"), ("per-class", "Per class"),
        ("calibration", "Calibration"), ("errors", "Errors"), ("labels", "Labels"), ("slices", "Slices"),
        ("robustness", "Robustness")))
    head = (f"<header><h1>CNN Lens report: {esc(name)}</h1><p class=\"sub\">{esc(card['model'])} on "
            f"{esc(card['dataset'])}, {len(classes)} classes; written {when} by <code>python -m cnnlib report"
            f"</code>. Everything is inside this file.</p><nav>{nav}</nav></header>")
    return page(f"CNN Lens report: {name}", "<main>" + head + "\n".join(parts) + "</main>", rs.CSS)


def write_report(checkpoint: str, out: str, data: str | None = None, root: str | None = None,
                 errors: int = ERRORS, method: str = "gradcam", triage: bool = True) -> dict:
    """build_report for a checkpoint file, written atomically to `out`: {"path", "bytes"}."""
    from cnnlib.inference import load_model
    from cnnlib.io.files import atomic_write
    if os.path.isdir(out):
        raise CNNLibError(f"--out {out} is a folder: give the HTML file to write, e.g. {os.path.join(out, 'report.html')}")
    model = load_model(checkpoint, "cpu")
    text = build_report(model, data, root, errors, method, label=os.path.basename(checkpoint),
                        triage=triage).encode("utf-8")
    atomic_write(out, lambda f: f.write(text))
    return {"path": out, "bytes": len(text)}


def report_main(argv=None) -> int:
    from cnnlib.explain.attribution import METHODS
    p = argparse.ArgumentParser(prog="python -m cnnlib report",
                                description="Write one self-contained HTML report of a checkpoint (summary, curves, "
                                            "confusion matrix, per-class scores, calibration, top errors with "
                                            "saliency and verdicts, label issues, cached robustness): no network, "
                                            "no script, images inside.")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")
    p.add_argument("--data", default=None, metavar="PATH", help="test images (default: the checkpoint's own)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets and caches live")
    p.add_argument("--errors", type=int, default=ERRORS, metavar="N",
                   help=f"most confident errors to show with saliency (default {ERRORS})")
    p.add_argument("--method", default="gradcam", choices=METHODS, help="saliency method (default gradcam)")
    p.add_argument("--no-triage", action="store_true",
                   help="leave out triage's verdicts (its first run computes features of every training image)")
    args = p.parse_args(argv)
    if args.errors < 0:
        raise CNNLibError("--errors must be 0 or more")
    info = write_report(args.checkpoint, args.out, args.data, args.data_root, args.errors, args.method,
                        triage=not args.no_triage)
    print(f"wrote {info['path']} ({info['bytes'] / 1024:.0f} KiB)")
    return 0
