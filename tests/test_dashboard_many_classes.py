"""Every page at 300 classes (issue 20): a synthetic 300-class checkpoint (a random simple_cnn on 16 px images,
with stored test predictions that confuse classes within hidden groups of six), walked page by page in
AppTest with no exception and no error box; the figures sent to the browser stay small (the confusion
matrix is an overview of blocks, never 300 x 300 cells and hit targets; no legend of 300 entries)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from test_dashboard_support import DASH, arr, chart, ok, texts, walk, widget

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")

K, PER_CLASS, GROUP = 300, 5, 6
WORDS = ["tench", "goldfinch", "tree frog", "box turtle", "garter snake", "tarantula", "peacock", "hummingbird",
         "koala", "jellyfish", "sea slug", "hermit crab", "flamingo", "pelican", "border collie", "timber wolf"]
CLASSES = [f"{k:03d} {WORDS[k % len(WORDS)]}" for k in range(K)]      # sorted = label order (ImageFolder's)


def _write_folder(root) -> str:
    rng = np.random.default_rng(0)
    for split, n in (("train", 1), ("test", PER_CLASS)):
        for k, name in enumerate(CLASSES):
            d = os.path.join(root, split, name)
            os.makedirs(d)
            for i in range(n):
                img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                img[:, :, k % 3] = 40 + (k * 7) % 200
                Image.fromarray(img).save(os.path.join(d, f"{i}.png"))
    return str(root)


def _predictions(y: np.ndarray, seed: int, k: int = K) -> dict:
    """Stored test predictions: 55% right, 35% mistaken for a class of the same hidden group, 10% anything."""
    K = k  # noqa: N806
    rng = np.random.default_rng(seed)
    group = rng.permutation(K).reshape(-1, GROUP)            # hidden groups of similar classes, not contiguous
    mates = {int(c): g for g in group for c in g}
    preds = y.copy()
    u = rng.random(len(y))
    for i, t in enumerate(y.tolist()):
        if u[i] > 0.9:
            preds[i] = rng.integers(K)
        elif u[i] > 0.55:
            preds[i] = rng.choice([c for c in mates[t] if c != t])
    probs = rng.dirichlet(np.full(K, 0.05), size=len(y)).astype(np.float32) * 0.3
    probs[np.arange(len(y)), preds] += 0.7
    probs /= probs.sum(1, keepdims=True)
    return {"targets": torch.from_numpy(y).to(torch.int16), "preds": torch.from_numpy(preds).to(torch.int16),
            "probs": torch.from_numpy(probs).to(torch.float16)}


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A folder of two 300-class checkpoints (A newest, and B with other predictions) on a 300-class folder."""
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.io.checkpoint import save_checkpoint
    from cnnlib.models.registry import get_model

    base = tmp_path_factory.mktemp("many")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLIB_DATA_ROOT", str(base / "data-root"))
        data = _write_folder(base / "data")
        kwargs = {"num_classes": K, "image_size": 16}
        meta = {"model": {"name": "simple_cnn", "kwargs": kwargs}, "classes": CLASSES, "input_shape": [3, 16, 16],
                "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                "data": {"name": "many", "path": data, "split_seed": 0}}
        _, y = load_checkpoint_split(meta, "test")
        assert len(y) == K * PER_CLASS
        folder = base / "checkpoints"
        folder.mkdir()
        for name, seed in (("b.pt", 1), ("a.pt", 2)):          # a.pt written last: the newest, opened first
            torch.manual_seed(seed)
            save_checkpoint({**meta, "state_dict": get_model("simple_cnn", **kwargs).state_dict(),
                             "test_predictions": _predictions(np.asarray(y), seed)}, str(folder / name))
            os.utime(folder / name, (1e9 + seed, 1e9 + seed))
    return {"dir": str(folder), "root": str(base / "data-root"), "a": str(folder / "a.pt")}


@pytest.fixture(autouse=True)
def _env(monkeypatch, many):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", many["dir"])
    monkeypatch.setenv("CNNLIB_DATA_ROOT", many["root"])
    monkeypatch.setenv("CNNLENS_PREFETCH", "0")


def size(trace: dict) -> int:
    """How many values a trace sends for its points (the largest of x, y, z, flattened)."""
    return max([arr(trace[k]).size for k in ("x", "y", "z") if trace.get(k) is not None] or [0])


def charts(at):
    """(key, spec) of every Plotly chart on the page."""
    import json
    return [(n.proto.id, json.loads(n.proto.spec)) for n in walk(at.main) if getattr(n, "type", None) == "plotly_chart"]


def legend_entries(spec: dict) -> int:
    return sum(1 for t in spec["data"] if t.get("showlegend", True) and t.get("type") != "heatmap"
               and t.get("name"))


def open_app():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(DASH / "Home.py"), default_timeout=180).run()
    ok(at)
    return at


def test_every_page_renders_at_300_classes_with_small_figures():
    import frame
    at = open_app()
    assert "a.pt" in str(widget(at, "side_ckpt").value)
    for entry in frame.PAGES[1:]:
        at.switch_page(entry.path).run()
        ok(at)
        for key, spec in charts(at):
            assert sum(size(t) for t in spec["data"]) <= 10_000, (entry.title, key)
            assert legend_entries(spec) <= 30, (entry.title, key)


def test_confusion_matrix_overview_zoom_and_pairs():
    import confusion
    at = open_app()
    at.switch_page("views/evaluation.py").run()
    ok(at)
    spec = chart(at, "eval_cm")
    heat, targets = spec["data"]
    nb = confusion.blocks(K)[1]
    assert arr(heat["z"]).shape == (nb, nb) and nb <= confusion.SIDE       # blocks, not 300 x 300
    assert size(targets) == nb * nb
    assert arr(heat["z"]).sum() == np.sum([c for c in _mistakes(at)])      # mistakes only, by default
    assert "300 classes, ordered by similarity" in texts(at)
    pairs = next(d.value for d in at.dataframe if "predicted as" in d.value.columns)
    assert 0 < len(pairs) <= 200 and list(pairs["images"]) == sorted(pairs["images"], reverse=True)
    widget(at, "eval_view").set_value("zoom").run()
    ok(at)
    heat, targets = chart(at, "eval_cm")["data"]
    assert arr(heat["z"]).shape == (confusion.SIDE, confusion.SIDE) and size(targets) == confusion.SIDE ** 2
    t_name, p_name = pairs.iloc[0]["true class"], pairs.iloc[0]["predicted as"]
    assert f"around **{t_name}** → **{p_name}**" in texts(at)
    # the similarity order puts each class's most frequent confusion near it: the top pair is inside the zoom
    assert t_name in str(targets["text"]) and p_name in str(targets["text"])
    (box,) = chart(at, "eval_cm")["layout"]["shapes"]                      # the chosen cell, outlined
    j, i = int(box["x0"] + 0.5), int(box["y0"] + 0.5)
    assert targets["text"][i * confusion.SIDE + j] == f"true <b>{t_name}</b>, predicted <b>{p_name}</b>"
    widget(at, "eval_find").set_value("tarantula").run()
    ok(at)
    table = next(d.value for d in at.dataframe if "F1" in d.value.columns)
    assert len(table) == sum("tarantula" in c for c in CLASSES) and all("tarantula" in c for c in table["class"])


def _mistakes(at):
    from cnnlib.diagnose.evaluate import stored_predictions
    from cnnlib.inference import load_model
    p = stored_predictions(load_model(widget(at, "side_ckpt").value).meta)
    return [int((p["targets"] != p["preds"]).sum())]


def test_embeddings_colours_neighbouring_classes_apart_without_a_300_entry_legend():
    at = open_app()
    at.switch_page("views/embeddings.py").run()
    ok(at)
    spec = chart(at, "emb_chart")
    assert len(spec["data"]) <= 2 and legend_entries(spec) == 0
    assert "neighbouring classes" in texts(at)
    xy = np.concatenate([np.stack([arr(t["x"]), arr(t["y"])], 1) for t in spec["data"]])
    colours = sum((list(t["marker"]["color"]) for t in spec["data"]), [])
    names = sum(([c[1] for c in t["customdata"]] for t in spec["data"]), [])
    centre = {n: xy[[m == n for m in names]].mean(0) for n in set(names)}
    colour = {n: c for n, c in zip(names, colours)}
    assert len(set(colour.values())) > 20                     # a long palette
    keys = list(centre)
    pts = np.stack([centre[n] for n in keys])
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(1)
    same = np.mean([colour[keys[i]] == colour[keys[j]] for i, j in enumerate(nearest)])
    assert same < 0.05, same                                  # the class next door almost never shares the colour
    widget(at, "emb_classes").set_value(CLASSES[:3]).run()    # few classes picked: a legend again
    ok(at)
    assert legend_entries(chart(at, "emb_chart")) == 3


def test_two_models_draws_the_largest_differences_and_tables_the_rest():
    at = open_app()
    at.switch_page("views/compare.py").run()
    ok(at)
    bars = chart(at, "cmp_per_class")["data"][0]
    table = next(d.value for d in at.dataframe if "B − A (points)" in d.value.columns)
    assert len(arr(bars["y"])) == 30 and len(table) == K
    assert min(abs(arr(bars["y"]))) >= np.sort(abs(table["B − A (points)"].to_numpy()))[-30] - 1e-6
    widget(at, "cmp_find").set_value("koala").run()
    ok(at)
    table = next(d.value for d in at.dataframe if "B − A (points)" in d.value.columns)
    assert len(table) == sum("koala" in c for c in CLASSES) and all("koala" in c for c in table["class"])
    a, b = (_stored(f"{n}.pt") for n in "ab")
    only_a = (a["preds"] == a["targets"]) & (b["preds"] != b["targets"])        # A right, B wrong: the default
    k = int(np.bincount(a["targets"][only_a]).argmax())
    widget(at, "cmp_classes").set_value([CLASSES[k]]).run()
    ok(at)
    assert at.text_input(key="cmp_tag_name").label == f"Tag these {int((only_a & (a['targets'] == k)).sum())} images as"


def _stored(name: str) -> dict:
    from cnnlib.diagnose.evaluate import stored_predictions
    from cnnlib.inference import load_model
    return stored_predictions(load_model(os.path.join(os.environ["CNNLENS_CHECKPOINTS"], name)).meta)


def test_label_issues_and_selections_filter_by_class():
    at = open_app()
    at.switch_page("views/label_issues.py").run()
    ok(at)
    widget(at, "li_list").set_value("all").run()
    name = CLASSES[7]
    widget(at, "li_classes").set_value([name]).run()
    ok(at)
    table = next(d.value for d in at.dataframe if "suggested label" in d.value.columns)
    assert len(table) == PER_CLASS and set(table["given label"]) == {name}
    at.text_input(key="li_tag_name").set_value("every label").run()
    widget(at, "li_classes").set_value([]).run()
    at.button(key="li_tag").click().run()
    ok(at)
    at.switch_page("views/selections.py").run()
    ok(at)
    widget(at, "sel_classes_0").set_value([name]).run()
    ok(at)
    rows = next(d.value for d in at.dataframe if "prediction" in d.value.columns)
    assert len(rows) and all(name in (r["label"], r["prediction"]) for _, r in rows.iterrows())
    assert f"of {K * PER_CLASS:,} rows have one of these classes" in texts(at)


def test_errors_filter_by_several_classes_typed():
    at = open_app()
    at.switch_page("views/errors.py").run()
    ok(at)
    a = _stored("a.pt")
    wrong = a["preds"] != a["targets"]
    picked = [int(k) for k in np.flatnonzero(np.bincount(a["targets"][wrong], minlength=K))[:3]]
    widget(at, "err_true_many").set_value([CLASSES[k] for k in picked]).run()
    ok(at)
    expect = int((wrong & np.isin(a["targets"], picked)).sum())
    assert f"**{expect}** misclassified images match" in texts(at)
    table = next(d.value for d in at.dataframe if "top-3" in d.value.columns)
    assert len(table) == min(expect, 24) and set(table["true"]) <= {CLASSES[k] for k in picked}
    widget(at, "err_pred_many").set_value([table.iloc[0]["predicted"]]).run()
    ok(at)
    table = next(d.value for d in at.dataframe if "top-3" in d.value.columns)
    assert set(table["predicted"]) == {table.iloc[0]["predicted"]}


def test_overview_blocks_sum_the_ordered_matrix_and_name_their_largest_mix_up():
    """A click on a block zooms in on (top_true, top_pred): the largest off-diagonal cell of that block pair."""
    import confusion
    rng = np.random.default_rng(3)
    k = 130
    cm = rng.poisson(0.3, (k, k)) + np.diag(rng.integers(5, 9, k))
    order = rng.permutation(k)
    size, nb = confusion.blocks(k)
    assert size * confusion.SIDE >= k and nb <= confusion.SIDE
    ov = confusion.overview(cm, order, mistakes_only=True)
    assert ov["counts"].sum() == cm.sum() - np.trace(cm)
    for bi, bj in ((0, 0), (1, 5), (nb - 1, nb - 1), (nb - 1, 0)):
        rows, cols = order[slice(*ov["ranges"][bi])], order[slice(*ov["ranges"][bj])]
        block = cm[np.ix_(rows, cols)].astype(float)
        block[rows[:, None] == cols[None, :]] = -1
        assert ov["counts"][bi, bj] == cm[np.ix_(rows, cols)].sum() - (np.trace(cm[np.ix_(rows, cols)]) if bi == bj else 0)
        t, p = ov["top_true"][bi, bj], ov["top_pred"][bi, bj]
        if block.max() < 0:                      # a one-class diagonal block: no mix-up, its diagonal cell
            assert t == p and t in rows
        else:
            assert t in rows and p in cols and t != p and cm[t, p] == block.max()
    assert confusion.window(k, 100, None) == 100 - confusion.SIDE // 2
    assert confusion.window(k, 100, 60) == 60                     # already in view: the matrix does not move
    assert confusion.window(k, 129, None) == k - confusion.SIDE and confusion.window(20, 5, None) == 0


def test_forty_classes_show_every_cell_in_similarity_order(tmp_path, monkeypatch):
    """Between 30 and 60 classes: no overview, the whole matrix ordered by similarity (stored predictions only)."""
    from cnnlib.io.checkpoint import save_checkpoint
    from cnnlib.models.registry import get_model
    k = 42
    names = CLASSES[:k]
    kwargs = {"num_classes": k, "image_size": 16}
    y = np.repeat(np.arange(k), 4)
    save_checkpoint({"model": {"name": "simple_cnn", "kwargs": kwargs}, "classes": names, "input_shape": [3, 16, 16],
                     "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                     "data": {"name": "gone", "path": str(tmp_path / "gone"), "split_seed": 0},
                     "state_dict": get_model("simple_cnn", **kwargs).state_dict(),
                     "test_predictions": _predictions(y, 0, k)}, str(tmp_path / "forty.pt"))
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(tmp_path))
    at = open_app()
    at.switch_page("views/evaluation.py").run()
    ok(at)
    heat, targets = chart(at, "eval_cm")["data"]
    assert arr(heat["z"]).shape == (k, k) and size(targets) == k * k
    ticks = chart(at, "eval_cm")["layout"]["xaxis"]["ticktext"]
    assert sorted(ticks) == names and ticks != names                   # every class, reordered
    assert f"All {k} classes, ordered by similarity" in texts(at)
    assert not [w for w in walk(at.main) if getattr(w, "key", None) == "eval_view"]


def test_training_per_class_bars_show_at_most_thirty_classes_and_the_table_all():
    at = open_app()
    at.switch_page("views/training.py").run()
    ok(at)
    spec = chart(at, "train_class_bars")
    assert spec["data"] and all(len(arr(t["x"])) <= 30 for t in spec["data"])
    table = next(d.value for d in at.dataframe if "class" in d.value.columns and len(d.value) == K)
    assert len(table) == K
    assert any("classes where the runs differ most" in c.value or "gets right least often" in c.value
               for c in at.caption)
    if len(spec["data"]) > 1:       # the shown classes are those where the runs differ most
        cols = [t["name"] for t in spec["data"]]
        spread = (table[cols].max(axis=1) - table[cols].min(axis=1)).to_numpy()
        shown = set(arr(spec["data"][0]["x"]).tolist())
        assert min(spread[table["class"].isin(shown).to_numpy()]) >= np.sort(spread)[-30] - 1e-9
