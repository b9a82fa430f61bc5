"""`cnnlib lesson` figures: single-file size, time to interactive in headless Chromium, one classification of an
uploaded photo, one unit's arithmetic.

    python bench/bench_lesson.py [--ckpt checkpoints/simple_cnn.pt] [--images 20] [--resnet18] [--repeats 20]

Targets (issue 19; 2-core machine, headless Chromium): simple_cnn with 20 images per class under 15 MB as one
file; interactive within 2 s of opening; a classification under 50 ms (simple_cnn) and under 500 ms (a 224-px
resnet18, --resnet18: random weights imported on a small synthetic folder); a unit's arithmetic under 20 ms.
The "upload" is a 640 x 480 PNG (so the page resizes it as the checkpoint says). Times are medians measured
inside the page (performance.now()). Prints the CPU model and the load average: other processes slow every number.
"""
import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import cpu_name  # noqa: E402

CHROMIUM = os.environ.get("CNNLENS_CHROMIUM", "/usr/bin/chromium")


def photo_url(seed=0) -> str:
    from PIL import Image
    rng = np.random.default_rng(seed)
    img = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def measure(page_file: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = b.new_page()
            t0 = time.perf_counter()
            page.goto(page_file.as_uri())
            page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
            wall = time.perf_counter() - t0
            assert page.evaluate("document.body.dataset.ready") == "1", page.locator("#status").text_content()
            ready_ms = float(page.evaluate("document.body.dataset.readyMs"))
            conv = page.evaluate("window.cnnlens.payload.layers.filter((r) => r.type === 'Conv2d').pop().name")
            times = page.evaluate("""async ([url, n, conv]) => {
                const c = [], u = [];
                await window.cnnlens.classify(url);
                for (let i = 0; i < n; i++) { const t = performance.now(); await window.cnnlens.classify(url); c.push(performance.now() - t); }
                await window.cnnlens.unit(conv, 0, 0, 0, 0);
                for (let i = 0; i < n; i++) { const t = performance.now(); await window.cnnlens.unit(conv, i % 2, 1, 1, 0); u.push(performance.now() - t); }
                return [c, u];
            }""", [photo_url(), repeats, conv])
        finally:
            b.close()
    return {"ready_ms": ready_ms, "wall_s": wall, "classify_ms": statistics.median(times[0]),
            "unit_ms": statistics.median(times[1])}


def resnet18_checkpoint(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_image_folder
    import walk_pages
    data = write_image_folder(tmp / "d224", n_train=6, n_test=6, classes=["a", "b", "c"], size=224)
    weights = walk_pages.save_weights("torchvision/resnet18", 3, tmp / "r18.pth")
    walk_pages.import_checkpoint(weights, "torchvision/resnet18", Path(data), tmp / "r18.pt", tmp / "root")
    return tmp / "r18.pt"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "simple_cnn.pt"))
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--resnet18", action="store_true", help="also a random-weight 224-px torchvision/resnet18")
    args = p.parse_args()
    from cnnlib.lesson.build import build_lesson
    load = os.getloadavg()
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = [("simple_cnn", Path(args.ckpt), args.images, 50.0)]
        if args.resnet18:
            jobs.append(("resnet18 224 px", resnet18_checkpoint(tmp), 2, 500.0))
        for name, ckpt, images, target_ms in jobs:
            t0 = time.perf_counter()
            page = Path(build_lesson(ckpt, tmp / f"{name.split()[0]}.html", images=images, single_file=True))
            build_s = time.perf_counter() - t0
            size = page.stat().st_size / 1e6
            m = measure(page, args.repeats)
            print(f"{name}: single file {size:.2f} MB ({images} images/class; built in {build_s:.1f} s); "
                  f"interactive {m['ready_ms'] / 1000:.2f} s after navigation (goto->ready {m['wall_s']:.2f} s); "
                  f"classify an upload {m['classify_ms']:.1f} ms (target {target_ms:.0f}); "
                  f"unit arithmetic {m['unit_ms']:.2f} ms (target 20)")
            if name == "simple_cnn":
                failed |= size >= 15 or m["ready_ms"] > 2000
            failed |= m["classify_ms"] > target_ms or m["unit_ms"] > 20
    print("all targets met" if not failed else "a target was missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
