"""Cached computations for the "why is it wrong" pages: label issues (confident learning), the training images
nearest to an image (a feature index per checkpoint and data, built once with a progress bar), 2-D projections
(PCA / t-SNE / UMAP, cached on disk by cnnlib), two checkpoints compared, the image files of the test split,
and deletion / insertion faithfulness. Keyed like compute.py: (checkpoint, data, image, options); models and
arrays unhashed. cnnlib is imported inside each loader as a module, so a test can monkeypatch it."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import streamlit as st

import adapters
import compute
import testdata
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

EMBED_DEFAULT = 2000        # test images projected by default (t-SNE / UMAP on 10,000 take tens of seconds)
NEIGHBOURS_K = 9
FAITH_N = 20                # test images averaged on the Faithfulness page by default
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
_INDEXES: dict = {}         # (checkpoint key, data key, split) -> Index (or influence features), shared by sessions
_INDEX_LOCK = threading.Lock()


def _source(ctx: Ctx, preds: dict) -> str:
    return "stored" if preds.get("source") == "stored" else "pixels:" + testdata.pixels_key(ctx)


# ----------------------------------------------------------------------------- label issues

@st.cache_data(show_spinner=False, max_entries=16)
def _label_issues(ckpt_key: str, source: str, ranked_by: str, _meta: dict, _preds: dict) -> dict:
    from cnnlib.diagnose import labels
    if source == "stored":
        return labels.label_issues_for(_meta, ranked_by=ranked_by)
    return labels.label_issues(_preds["targets"], _preds["probs"], ranked_by=ranked_by)


def label_issues(ctx: Ctx, preds: dict, ranked_by: str = "self_confidence") -> dict:
    """cnnlib.diagnose.labels.label_issues_for on the stored test predictions (label_issues on predictions computed
    from the test pixels when the checkpoint stores none): indices (flagged, worst first), ranking, quality,
    suggested, given_prob, suggested_prob, n_issues."""
    with ui.spinner("Looking for labels the model contradicts (confident learning)…"):
        return _label_issues(ctx.key, _source(ctx, preds), ranked_by, ctx.meta, preds)


def label_rankings() -> tuple[str, ...]:
    from cnnlib.diagnose import labels
    return tuple(labels.RANKINGS)


def trusted_accuracy() -> float:
    """The test accuracy from which confident learning's count is shown as an estimate of wrong labels."""
    from cnnlib.diagnose import labels
    return float(labels.TRUSTED_ACCURACY)


# ----------------------------------------------------------------------------- nearest training images

@st.cache_resource(show_spinner=False, max_entries=2)      # memory-mapped: shared, never copied per session
def _train_split(data_key: str, override: str, _meta: dict) -> tuple[np.ndarray, np.ndarray]:
    from cnnlib.data import spec as data_spec
    return data_spec.load_checkpoint_split(_meta, "train", data=override or None)


def train_pixels(ctx: Ctx, notice: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """The training split (x uint8 (N, C, H, W), y); None (and with `notice` one sentence) when not on disk."""
    try:
        with ui.spinner("Loading the training images…"):
            train = _train_split(testdata.pixels_key(ctx), ctx.data, ctx.meta)
    except CNNLibError as e:
        if notice:
            st.info("**The nearest training images need the training split on disk.** "
                    + adapters.missing_data_help(ctx.meta, e, ctx.data), icon=":material/image_not_supported:")
        return None
    if not len(train[1]):                       # a folder of <class>/* only: all of it is the test split
        if notice:
            st.info("**The nearest training images need training images.** This data folder holds only a test "
                    "set (no train/ folder), so there are none to compare with.", icon=":material/info:")
        return None
    return train


class _Counted:
    """Images (N, C, H, W) whose batch reads move a Streamlit progress bar (cnnlib streams them in slices)."""

    def __init__(self, x, bar, text: str):
        self.x, self.bar, self.text, self.done = x, bar, text, 0
        self.shape, self.dtype = x.shape, x.dtype

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, s):
        out = self.x[s]
        if isinstance(s, slice):
            self.done += len(out)
            self.bar.progress(min(1.0, self.done / max(1, len(self.x))), text=self.text)
        return out


def neighbour_index(ctx: Ctx, train: tuple[np.ndarray, np.ndarray], split: str = "train"):
    """The checkpoint's feature index of its training images (or, split="test", of the test images `train`):
    cnnlib.diagnose.neighbors.build_index under the key index_for_checkpoint uses (so both share the disk
    cache), built once per checkpoint and data with a bar."""
    key = (ctx.key, testdata.pixels_key(ctx), split)
    index = _INDEXES.get(key)
    if index is not None:
        return index
    from cnnlib.data import spec as data_spec
    from cnnlib.data import cache as datacache
    from cnnlib.diagnose import neighbors
    with _INDEX_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            spec = data_spec.checkpoint_data_spec(ctx.meta, ctx.data or "")
            what = "training" if split == "train" else "test"
            text = f"Indexing the {len(train[1]):,} {what} images (once per checkpoint; then read from disk)…"
            bar = st.progress(0.0, text=text)
            try:
                index = neighbors.build_index(ctx.model, _Counted(train[0], bar, text), train[1],
                                              datacache.cache_dir(spec.root), f"{spec.key()}-{split}")
            finally:
                bar.empty()
            while len(_INDEXES) >= 6:
                _INDEXES.pop(next(iter(_INDEXES)))
            _INDEXES[key] = index
    return index


@st.cache_data(show_spinner=False, max_entries=128)
def _neighbours(ckpt_key: str, index_key: str, image_key: str, k: int, _model, _index, _x01) -> dict:
    from cnnlib.diagnose import neighbors
    hits = neighbors.neighbors_of(_model, _index, _x01, k=k)
    return {key: hits[key] for key in ("indices", "similarities", "labels", "pred")}


def neighbours(ctx: Ctx, pick, k: int = NEIGHBOURS_K) -> dict | None:
    """The k training images nearest to a picked image in the model's feature space: indices (rows of the
    training split), similarities (cosine, largest first), labels, pred; None when the training split is
    not on disk (one sentence says so)."""
    train = train_pixels(ctx)
    if train is None:
        return None
    index = neighbour_index(ctx, train)
    hits = _neighbours(ctx.key, testdata.pixels_key(ctx), pick.key, int(k), ctx.model, index, pick.x01)
    return {**hits, "images": train[0][hits["indices"]]}


# ----------------------------------------------------------------------------- triage and influence

_TRIAGED: set = set()       # (checkpoint key, data key, source) whose verdicts are in the cache: shown at once


@st.cache_data(show_spinner=False, max_entries=8)      # the indexes unhashed: keyed by checkpoint and data
def _triage(ckpt_key: str, data_key: str, source: str, _meta: dict, _preds: dict, _test, _train) -> dict:
    from cnnlib.diagnose import triage
    records = triage.triage(_meta, _preds["probs"], _preds["targets"], _test.features, _train.features,
                            _train.labels, preds=_preds["preds"])
    return {int(r["index"]): r for r in records}


def triage_ready(ctx: Ctx, preds: dict) -> bool:
    """Have this checkpoint's verdicts been worked out already (by any session)?"""
    return (ctx.key, testdata.pixels_key(ctx), _source(ctx, preds)) in _TRIAGED


def triage(ctx: Ctx, preds: dict, pixels) -> dict | None:
    """cnnlib.diagnose.triage's verdicts for the misclassified test images, {test index: record}, from the
    penultimate features of the test and training images (the neighbour indexes, built once with a bar);
    None, with one sentence, when the training images are not on disk."""
    train = train_pixels(ctx, notice=False)
    if train is None:
        st.info("**The verdicts need the training images**, and they are not on disk for this checkpoint (or this "
                "data folder holds only a test set): the gallery works without them.", icon=":material/info:")
        return None
    if pixels is None or len(pixels[1]) != len(preds["targets"]):
        st.info("**The verdicts need the test images** the predictions were made on, and they are not on disk.",
                icon=":material/image_not_supported:")
        return None
    test_index = neighbour_index(ctx, pixels, split="test")
    train_index = neighbour_index(ctx, train)
    key = (ctx.key, testdata.pixels_key(ctx), _source(ctx, preds))
    with ui.spinner("Weighing the evidence for every mistake…"):
        out = _triage(*key, ctx.meta, preds, test_index, train_index)
    _TRIAGED.add(key)
    return out


def _influence_features(ctx: Ctx, train) -> np.ndarray:
    """The training images' unnormalised penultimate features (TracIn's input), shared by every session."""
    key = (ctx.key, testdata.pixels_key(ctx), "influence")
    with _INDEX_LOCK:
        if key not in _INDEXES:
            while len(_INDEXES) >= 6:
                _INDEXES.pop(next(iter(_INDEXES)))
            _INDEXES[key] = _influence_compute(ctx, *train)
    return _INDEXES[key]


def _influence_compute(_ctx: Ctx, _x, _y) -> np.ndarray:
    from cnnlib.data import cache as datacache
    from cnnlib.data import spec as data_spec
    from cnnlib.diagnose import neighbors
    from cnnlib.explain import influence
    spec = data_spec.checkpoint_data_spec(_ctx.meta, _ctx.data or "")   # influence_for_checkpoint's disk cache
    key = f"{spec.key()}-train"
    expect = {"kind": "influence-features", "model": neighbors.model_key(_ctx.model), "data": key, "n": len(_y)}
    folder, name = datacache.cache_dir(spec.root), f"influence-{expect['model']}-{neighbors._safe(key)}"
    hit = neighbors.read_entry(folder, name, expect)
    if hit is not None and np.array_equal(hit[0]["labels"], _y):
        return hit[0]["features"]
    text = f"Reading the {len(_y):,} training images through the network (once per checkpoint)…"
    bar = st.progress(0.0, text=text)
    try:
        f = influence.train_features(_ctx.model, _Counted(_x, bar, text))
    finally:
        bar.empty()
    with contextlib.suppress(OSError):          # read-only or full: kept in memory only
        neighbors.write_entry(folder, name, {"features": f, "labels": np.asarray(_y, np.int64)}, expect)
    return f


@st.cache_data(show_spinner=False, max_entries=64)
def _influence(ckpt_key: str, data_key: str, image_key: str, k: int, _model, _x01, _y, _f) -> dict:
    from cnnlib.explain import influence
    return influence.proponents_opponents(_model, _x01, train_y=_y, k=k, features=_f)


def influence(ctx: Ctx, pick, k: int = 6) -> dict | None:
    """TracIn's proponents and opponents (cnnlib.explain.influence) of a pick's prediction, with their pixels;
    None (one sentence) without training images; CNNLibError for a head that is not a final Linear layer."""
    train = train_pixels(ctx, notice=False)
    if train is None:
        st.info("**The most influential training images need the training images**, and they are not on disk "
                "for this checkpoint (or this data folder holds only a test set).", icon=":material/info:")
        return None
    f = _influence_features(ctx, train)
    with ui.spinner("Scoring every training image's influence (TracIn)…"):
        res = _influence(ctx.key, testdata.pixels_key(ctx), pick.key, int(k), ctx.model, pick.x01, train[1], f)
    return {**res, **{w: {**res[w], "images": train[0][res[w]["indices"]]} for w in ("proponents", "opponents")}}


# ----------------------------------------------------------------------------- projections

@st.cache_data(show_spinner=False, max_entries=16)
def _projection(ckpt_key: str, data_key: str, method: str, n: int | None, _model, _data: str) -> dict:
    from cnnlib.diagnose import projection
    return projection.embedding_for_checkpoint(_model, method, n=n, data=_data or None)


def projection(ctx: Ctx, method: str, n: int, n_total: int) -> dict:
    """cnnlib.diagnose.projection.embedding_for_checkpoint of n test images: xy, indices, labels, preds, correct,
    seconds, cached (on disk, so each map is computed once per checkpoint, data, method and n)."""
    slow = "" if method == "pca" else " t-SNE and UMAP take tens of seconds for thousands of points, once: " \
                                      "the map is then cached on disk."
    with ui.spinner(f"Projecting {min(n, n_total):,} test images with {PROJECTIONS[method]}…{slow}"):
        return _projection(ctx.key, testdata.pixels_key(ctx), method, None if n >= n_total else int(n),
                           ctx.model, ctx.data)


# ----------------------------------------------------------------------------- two checkpoints

@st.cache_data(show_spinner=False, max_entries=16)
def _compare(key_a: str, key_b: str, source: str, classes: tuple, _meta_a, _meta_b, _pa, _pb) -> dict:
    from cnnlib.diagnose import compare
    if source == "stored":
        return compare.compare_checkpoints(_meta_a, _meta_b)
    return compare.compare(_pa["targets"], _pa["preds"], _pb["preds"], list(classes))


def on_data_of(b: Ctx, a: Ctx) -> Ctx:
    """Checkpoint b looking at a's test images (a's Data folder, else the dataset a records)."""
    import copy
    try:
        source = a.data or adapters.checkpoint_data_spec(a.meta, a.data).source
    except CNNLibError:
        source = a.data
    out = copy.copy(b)
    out.data = source
    return out


def test_images(meta: dict) -> tuple | None:
    """What names a checkpoint's test images: its dataset, their preprocessing and input shape (and, for a
    test split carved from train/, the seed and fraction that carved it); None when it records no dataset."""
    import os
    try:
        spec = adapters.checkpoint_data_spec(meta)
    except CNNLibError:
        return None
    carved = spec.source not in adapters.named_datasets() and not os.path.isdir(os.path.join(spec.source, "test"))
    return (spec.source, spec.image_size, spec.resize, tuple(meta.get("input_shape") or ()),
            (spec.split_seed, spec.test_fraction) if carved else None)


def _test_images_of(choice: str) -> tuple | None:
    import checkpoints
    try:
        return test_images(checkpoints.open_choice(choice).meta)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not comparable; choosing it says why
        return None


def comparable_first(a: Ctx, choices: list[str]) -> tuple[list[str], int]:
    """(choices with those tested on A's test images first, each group in its order; how many those are)."""
    mine = test_images(a.meta)
    same = [c for c in choices if mine is not None and _test_images_of(c) == mine]
    return same + [c for c in choices if c not in same], len(same)


def comparison(a: Ctx, b: Ctx, pixels) -> tuple[dict, dict, dict]:
    """(cnnlib.diagnose.compare result, predictions of a, predictions of b) on the same test images: the stored
    predictions when both checkpoints have them and were tested on the same images, else both computed from A's
    test pixels (B evaluated on A's test images)."""
    stored_a, stored_b = compute.evaluation(a, None)[0], compute.evaluation(b, None)[0]
    same = test_images(a.meta) is not None and test_images(a.meta) == test_images(b.meta)
    if stored_a is not None and stored_b is not None and same and not a.data \
            and np.array_equal(stored_a["targets"], stored_b["targets"]):
        return _compare(a.key, b.key, "stored", tuple(a.classes), a.meta, b.meta, None, None), stored_a, stored_b
    if pixels is None:
        raise CNNLibError(("B was tested on other images than A, and A's" if not same else "Comparing needs stored "
                           "test predictions in both checkpoints or A's") + " test images are not on disk to "
                          "evaluate both on them: type their folder into Data folder")
    shape_a, shape_b = (tuple(int(v) for v in m.get("input_shape") or ()) for m in (a.meta, b.meta))
    if shape_a != shape_b:
        raise CNNLibError(f"B takes {'x'.join(map(str, shape_b))} images and A's test images are "
                          f"{'x'.join(map(str, shape_a))} (C x H x W), so the two cannot be compared on the same pixels")
    key = "pixels:" + testdata.pixels_key(a)                 # B's predictions on A's pixels are keyed by A's data
    pa, pb = compute.evaluation(a, pixels)[0], compute.evaluation(b, pixels, key)[0]
    return _compare(a.key, b.key, key, tuple(a.classes), None, None, pa, pb), pa, pb


# ----------------------------------------------------------------------------- the files behind the test split

@st.cache_data(show_spinner=False, max_entries=8)
def _split_paths(ckpt_key: str, data_key: str, _meta: dict, data: str) -> list[str] | None:
    from cnnlib.diagnose import compare
    return compare.split_paths(_meta, "test", data or None)


def split_paths(ctx: Ctx) -> list[str] | None:
    """The test split's image files (ImageFolder data), None for named datasets or when unreadable."""
    try:
        return _split_paths(ctx.key, testdata.pixels_key(ctx), ctx.meta, ctx.data)
    except (CNNLibError, OSError):
        return None


# ----------------------------------------------------------------------------- faithfulness

@st.cache_data(show_spinner=False, max_entries=128)
def _curves(ckpt_key: str, image_key: str, method: str, target: int, steps: int, baseline: str,
            _model, _x01, _heatmap) -> dict:
    from cnnlib.explain import faithfulness
    return faithfulness.deletion_insertion(_model, _x01, _heatmap, target, steps=steps, baseline=baseline)


def curves(ctx: Ctx, pick, method: str, target: int, steps: int, baseline: str) -> dict:
    """Deletion and insertion curves (and their AUCs) of one method's map for one image and class."""
    heat = compute.attributions(ctx, pick, method, [target])[0]["heatmap"]
    return _curves(ctx.key, pick.key, method, int(target), int(steps), baseline, ctx.model, pick.x01, heat)


def faith_subset(n_total: int, n: int) -> np.ndarray:
    """The test images the faithfulness average uses: a fixed random sample (seed 0), in data order."""
    return np.sort(np.random.default_rng(0).permutation(n_total)[:min(n, n_total)])


@st.cache_data(show_spinner=False, max_entries=64)
def _table_row(ckpt_key: str, data_key: str, method: str, n: int, steps: int, baseline: str, _model, _x) -> dict:
    from cnnlib.explain import faithfulness
    rows = faithfulness.faithfulness_table(_model, _x, [] if method == "random" else [method], steps=steps,
                                           baseline=baseline, include_random=method == "random")
    return rows[0]


def faith_table(ctx: Ctx, pixels, methods: list[str], n: int, steps: int, baseline: str) -> list[dict]:
    """cnnlib.explain.faithfulness.faithfulness_table over n test images, one method at a time (a progress bar; each
    method's row cached), plus the random-map reference last."""
    idx = faith_subset(len(pixels[1]), n)
    x = np.asarray(pixels[0][idx])
    todo = list(methods) + ["random"]
    labels = compute.attribution_methods()
    bar = st.progress(0.0, text="Deletion and insertion curves…")
    rows = []
    try:
        for i, m in enumerate(todo):
            bar.progress(i / len(todo), text=f"Deletion and insertion curves of {labels.get(m, 'a random map')} "
                                             f"on {len(idx)} test images ({i + 1} of {len(todo)})…")
            rows.append(_table_row(ctx.key, testdata.pixels_key(ctx), m, len(idx), int(steps), baseline,
                                   ctx.model, x))
    finally:
        bar.empty()
    return rows


def baselines() -> tuple[str, ...]:
    from cnnlib.explain import faithfulness
    return tuple(faithfulness.BASELINES)
