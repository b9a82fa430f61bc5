"""Every dashboard page in headless Chromium, on models a user brings: weights files imported at 224 pixels.

    python bench/walk_pages.py [--models torchvision/resnet18 torchvision/mobilenet_v3_small timm/convnext_atto]
                               [--data PATH | --per-class N | --classes 1000] [--out artifacts/walk]
    python bench/walk_pages.py --checkpoints checkpoints [--only Errors "One image" ...]   # as they are

What it does, in one run:
  1. data: --data (an ImageFolder with train/ and test/), or the first N train and N test CIFAR-10 JPEGs per
     class of .cache/cifar10-jpeg upscaled to 224 x 224 under --work (git-ignored; never commit it);
  2. for each model: random weights (seed 0) saved the way a user saves theirs,
     `torch.save(model.state_dict(), FILE)`, then `python -m cnnlib import FILE --model NAME --data DATA`
     with the family's default preprocessing (resize 256, centre crop 224, ImageNet statistics);
  3. one `streamlit run dashboard/Home.py` on a loopback port with the imported checkpoints in its folder,
     one Chromium (1400 x 900, empty profile); for each checkpoint, chosen in the sidebar's picker as a user
     would, every page of the page list is opened, and the pages' main actions are done: Errors' first
     "Explain", an uploaded image on Saliency, "Optimise an image" on Channel visualisation;
  4. prints, per checkpoint and page, the seconds until the page was ready, any exception box or error box,
     and the first warning / info sentence (what the page says it cannot show), then the server's peak
     resident memory (its process and children, sampled every 0.25 s); a screenshot of each view goes to
     --out. Exit status 1 when any page showed an exception or an error box.

`walk(url, checkpoints, out)` is what tests/test_browser_imported.py runs on small synthetic folders.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "dashboard"), str(Path(__file__).resolve().parent)]

from pagedriver import CHROMIUM, SERVER_PIDS, chromium_page, serve  # noqa: E402,F401 - the one page driver
PAGE_TIMEOUT_MS = int(float(os.environ.get("CNNLENS_WALK_TIMEOUT_S", "300")) * 1000)   # one page at 224 px on 2 cores, all it computes
# the element each page shows when it has done its job (None: the title and a finished script are enough)
READY = {"Architecture": ".st-key-arch_rf .main-svg", "Evaluation": ".st-key-eval_cm .nsewdrag",
         "Errors": ".st-key-err_gallery img", "Filters": ".st-key-filt_first img", "Feature_maps": ".st-key-fm_grid img",
         "Saliency": ".st-key-sal_result img", "Embeddings": ".st-key-emb_chart .main-svg"}


# ----------------------------------------------------------------------------- data, weights, import

def cifar224(src: Path, dst: Path, per_class: int) -> Path:
    """The first `per_class` train and test images of each CIFAR-10 class, upscaled to 224 x 224 (bilinear)."""
    from PIL import Image
    if (dst / "done").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    for split in ("train", "test"):
        for c in sorted(os.listdir(src / split)):
            (dst / split / c).mkdir(parents=True)
            for name in sorted(os.listdir(src / split / c))[:per_class]:
                with Image.open(src / split / c / name) as im:
                    im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR).save(dst / split / c / name,
                                                                                         quality=90)
    (dst / "done").touch()
    return dst


def many_classes(src: Path, dst: Path, k: int, test_per_class: int, train_per_class: int, size: int) -> Path:
    """An ImageNet-shaped folder from the CIFAR-10 copy: k classes (class_0000 ...), each holding a fixed sample
    of CIFAR images (whatever their CIFAR class) upscaled to size x size (bilinear); never commit it."""
    import random
    from PIL import Image
    if (dst / "done").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    rng = random.Random(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        pool = sorted(str(p) for p in (src / split).glob("*/*.jpg"))
        picks = rng.sample(pool, k * n)
        for c in range(k):
            folder = dst / split / f"class_{c:04d}"
            folder.mkdir(parents=True)
            for i, path in enumerate(picks[c * n:(c + 1) * n]):
                with Image.open(path) as im:
                    im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i}.jpg",
                                                                                           quality=90)
    (dst / "done").touch()
    return dst


def save_weights(model: str, num_classes: int, path: Path) -> Path:
    """Random weights (seed 0) of a torchvision or timm network, saved as a bare state dict."""
    import torch
    torch.manual_seed(0)
    family, name = model.split("/", 1)
    if family == "torchvision":
        import torchvision
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    elif family == "timm":
        import timm
        net = timm.create_model(name, pretrained=False, num_classes=num_classes)
    else:
        raise SystemExit(f"--models takes torchvision/<name> or timm/<name>, not {model!r}")
    torch.save(net.state_dict(), path)
    return path


def import_checkpoint(weights: Path, model: str, data: Path, out: Path, root: Path) -> float:
    """`python -m cnnlib import` as a user types it; returns its wall seconds."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cnnlib", "import", str(weights), "--model", model, "--data",
                        str(data), "--out", str(out), "--data-root", str(root)],
                       cwd=REPO, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"import of {model} failed:\n{r.stdout[-1500:]}{r.stderr[-1500:]}")
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the walk

def _idle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=PAGE_TIMEOUT_MS)


def _texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(f'[data-testid="stMain"] {selector}').all_inner_texts() if t.strip()]


def _pick_checkpoint(page, name: str) -> None:
    box = page.locator(".st-key-side_ckpt input").first        # a searchable combobox: type, then pick
    box.click()
    box.fill(name)
    page.get_by_role("option", name=name).first.click()
    _idle(page)
    shown = box.input_value()                                    # "name.pt · date"
    if not shown.startswith(name):
        raise RuntimeError(f"the picker shows {shown!r} after choosing {name}")


def _act(page, url_name: str, upload: Path | None) -> str:
    """The page's main action, as a user does it; returns what was done ('' for none)."""
    if url_name == "Errors" and page.get_by_role("button", name="Explain").count():
        page.get_by_role("button", name="Explain").first.click()
        page.locator(".st-key-err_explain_panel img").first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
        return "explained the first error"
    if url_name == "Saliency" and upload is not None:
        page.locator(".st-key-sal_src").get_by_text("Upload an image").click()
        _idle(page)
        page.locator(".st-key-sal_upload input[type=file]").set_input_files(str(upload))
        page.get_by_text(f"{upload.name} (resized to the model's input)").first.wait_for(
            state="visible", timeout=PAGE_TIMEOUT_MS)
        _idle(page)
        page.locator(".st-key-sal_result img").first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
        return f"uploaded {upload.name}"
    if url_name == "Channel_visualisation" and page.locator(".st-key-cv_go button").count():
        page.locator(".st-key-cv_go button").first.click()
        _idle(page)
        return "optimised an image"
    return ""


def wait_warm(page, timeout_s: float = 1800) -> float:
    """Wait until the sidebar says the open checkpoint's background preparation has finished; its seconds as the
    sidebar states them (NaN when the dashboard's warm-up is off)."""
    import re
    done = page.locator(".st-key-side_warm", has_text="Prepared in")
    stopped = page.locator(".st-key-side_warm", has_text="stopped early")
    deadline = time.monotonic() + timeout_s
    last_seen = time.monotonic()
    while time.monotonic() < deadline:
        if done.count():
            m = re.search(r"Prepared in (\d+) s", done.first.inner_text())
            return float(m.group(1)) if m else float("nan")
        if stopped.count():
            raise RuntimeError("the background preparation stopped early (see the server log)")
        if page.locator(".st-key-side_warm").count():
            last_seen = time.monotonic()
        elif time.monotonic() - last_seen > 30:
            return float("nan")                     # no progress shown for 30 s: the warm-up is off
        page.wait_for_timeout(1000)
    raise TimeoutError(f"the background preparation had not finished after {timeout_s:.0f} s")


def walk(url: str, checkpoint_names: list[str], out: Path, upload: Path | None = None, log=print,
         only: list[str] | None = None, warm: bool = False, memory=None) -> list[dict]:
    """Open every page (or the titles in `only`) for every checkpoint (chosen in the picker); one row per view:
    {checkpoint, page, seconds, action, exceptions, errors, notes, mib}. Screenshots to out/<ckpt>_<page>.png.
    warm: first wait for the checkpoint's background preparation (its time is logged); memory: a MemorySampler
    whose per-page peak goes into each row."""
    import frame
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with chromium_page() as page:
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(url + "/")
        _idle(page)
        for ck in checkpoint_names:
            _pick_checkpoint(page, ck)
            if warm:                    # the first page with pixels while the preparation runs, then wait for it
                errors = next(e for e in frame.PAGES if e.url == "Errors")
                first = _view(page, ck, errors, out, None, log)
                log(f"  {'':<34} {'(first page with pixels, during the preparation)':<24} {first['seconds']:6.1f} s",
                    flush=True)
                t0 = time.perf_counter()
                said = wait_warm(page)
                log(f"  {ck:<34} {'(background preparation)':<24} {time.perf_counter() - t0:6.1f} s  "
                    f"(the sidebar says {said:.0f} s)", flush=True)
                _idle(page)
            for e in [e for e in frame.PAGES if only is None or e.title in only]:
                if memory is not None:
                    memory.window = 0.0
                try:
                    rows.append(_view(page, ck, e, out, upload, log))
                    if memory is not None:
                        rows[-1]["mib"] = memory.window
                        log(f"  {'':<34} {'':<24} server peak during the page {memory.window:6.0f} MiB", flush=True)
                except Exception:
                    page.screenshot(path=str(out / f"FAILED_{Path(ck).stem}_{e.url}.png"))
                    log(f"  {ck:<34} {e.title:<24} FAILED (screenshot FAILED_{Path(ck).stem}_{e.url}.png)")
                    raise
    return rows


def _view(page, ck: str, e, out: Path, upload: Path | None, log) -> dict:
    """One page of checkpoint `ck`: open it, wait until ready, do its action, screenshot; its row."""
    import frame
    t0 = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=e.title,
                                                               exact=True).first.click()
    heading = "CNN Lens" if e is frame.PAGES[0] else e.title          # Home's own heading
    page.locator("h1", has_text=heading).first.wait_for(state="visible")
    _idle(page)
    problems = _texts(page, '[data-testid="stAlertContentError"]')
    if e.url in READY and not problems:
        page.locator(READY[e.url]).first.wait_for(state="visible")
        _idle(page)
    seconds = time.perf_counter() - t0
    action = "" if problems else _act(page, e.url, upload)
    page.wait_for_timeout(400)
    stem = f"{Path(ck).stem}_{e.url}"
    page.screenshot(path=str(out / f"{stem}.png"))
    row = {"checkpoint": ck, "page": e.title, "seconds": round(seconds, 2), "action": action,
           "exceptions": [t[:300] for t in _texts(page, '[data-testid="stException"]')],
           "errors": _texts(page, '[data-testid="stAlertContentError"]'),
           "notes": [t.split("\n")[0][:160] for t in
                     _texts(page, '[data-testid="stAlertContentWarning"]')
                     + _texts(page, '[data-testid="stAlertContentInfo"]')][:2]}
    flag = "EXCEPTION" if row["exceptions"] else "ERROR" if row["errors"] else "ok"
    log(f"  {ck:<34} {e.title:<24} {seconds:6.1f} s  {flag:<9} {action}"
        + (f"  | {row['notes'][0]}" if row["notes"] else "")
        + (f"  | {(row['exceptions'] + row['errors'])[0][:200]}" if flag != "ok" else ""),
        flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+",
                   default=["torchvision/resnet18", "torchvision/mobilenet_v3_small", "timm/convnext_atto"])
    p.add_argument("--data", type=Path, default=None, help="an ImageFolder with train/ and test/")
    p.add_argument("--per-class", type=int, default=20, help="CIFAR-10 images per class and split (no --data)")
    p.add_argument("--src", type=Path, default=REPO / ".cache" / "cifar10-jpeg")
    p.add_argument("--work", type=Path, default=REPO / ".cache" / "walk224")
    p.add_argument("--out", type=Path, default=REPO / "artifacts" / "walk")
    p.add_argument("--classes", type=int, default=0,
                   help="build an ImageNet-shaped case instead: this many classes of CIFAR images at 160 px "
                        "(5 test and 2 training images a class), e.g. --classes 1000")
    p.add_argument("--cold", action="store_true",
                   help="walk at once, without waiting for each checkpoint's background preparation")
    p.add_argument("--keep-features", action="store_true",
                   help="keep features and maps cached by an earlier run (default: delete them, so the "
                        "background preparation does its whole job; decoded images are kept)")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help="walk the checkpoints of this folder as they are (e.g. checkpoints/, on their own data) "
                        "instead of importing --models")
    p.add_argument("--only", nargs="+", default=None, help="page titles to open (default: every page)")
    args = p.parse_args()
    from machine import machine
    if args.checkpoints:
        return walk_folder(args)
    if args.classes:
        data = args.data or many_classes(args.src, args.work / f"data{args.classes}", args.classes, 5, 2, 160)
    else:
        data = args.data or cifar224(args.src, args.work / "data", args.per_class)
    classes = sorted(d for d in os.listdir(data / "test") if (data / "test" / d).is_dir())
    ckdir, root = args.work / "checkpoints", args.work / "data-root"
    shutil.rmtree(ckdir, ignore_errors=True)
    ckdir.mkdir(parents=True)
    names = []
    for model in args.models:
        stem = model.replace("/", "_")
        weights = save_weights(model, len(classes), args.work / f"{stem}.pth")
        seconds = import_checkpoint(weights, model, data, ckdir / f"{stem}.pt", root)
        print(f"imported {model}: {seconds:.1f} s", flush=True)
        names.append(f"{stem}.pt")
    if not args.keep_features:
        for f in (root / "cnnlib-cache").glob("*"):
            if f.name.startswith(("features-", "neighbors-", "projection-", "influence-")):
                f.unlink()
    print(f"\n{machine()}: every page, {len(names)} imported checkpoints, {data}\n", flush=True)
    upload = next((data / "test" / classes[0]).iterdir())
    t0 = time.perf_counter()
    from loadtest import MemorySampler
    with serve(ckdir, root, args.work / "streamlit.log") as url:
        sampler = MemorySampler(SERVER_PIDS[-1])
        sampler.start()
        rows = walk(url, names, args.out, upload=upload, warm=not args.cold, memory=sampler, only=args.only)
        peak = sampler.stop()
    return summary(rows, t0, peak, args)


def walk_folder(args) -> int:
    """--checkpoints DIR: every checkpoint there (its own data, the default data root), walked as they are."""
    from loadtest import MemorySampler
    from machine import machine
    names = sorted(p.name for p in args.checkpoints.glob("*.pt"))
    print(f"\n{machine()}: {len(names)} checkpoints of {args.checkpoints}\n", flush=True)
    upload = next(iter(sorted((REPO / ".cache" / "cifar10-jpeg" / "test").glob("*/*.jpg"))), None)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    with serve(args.checkpoints, None, args.work / "streamlit.log") as url:
        sampler = MemorySampler(SERVER_PIDS[-1])
        sampler.start()
        rows = walk(url, names, args.out, upload=upload, warm=not args.cold, memory=sampler, only=args.only)
        peak = sampler.stop()
    return summary(rows, t0, peak, args)


def summary(rows: list[dict], t0: float, peak: float, args) -> int:
    """The walk's last lines; exit status 1 when a page showed an exception or an error box."""
    bad = [r for r in rows if r["exceptions"] or r["errors"]]
    secs = sorted(r["seconds"] for r in rows)
    print(f"\n{len(rows)} page views in {time.perf_counter() - t0:.0f} s, {len(bad)} with an exception or error box; "
          f"page ready median {secs[len(secs) // 2]:.1f} s, slowest {secs[-1]:.1f} s; server peak RSS "
          f"{peak:.0f} MiB; screenshots in {args.out}")
    server_log = (args.work / "streamlit.log").read_text()
    if "Traceback" in server_log:
        print("the server log holds a traceback:\n" + server_log[-3000:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
