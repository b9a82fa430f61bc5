"""The installed product: the wheel built from this tree holds every cnnlib subpackage and the dashboard, and
`cnnlib dashboard` run from an empty folder by a fresh virtual environment that has only that wheel (its
dependencies come from the test environment through a .pth file: nothing is downloaded) serves the dashboard,
which a headless Chromium opens: the frame, the sidebar and the sentence for an empty checkpoint folder, no
exception box, no traceback in the server log."""
from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import bench_module

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600,
                           cwd=str(out))
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (found,) = out.glob("cnnlib-*.whl")
    return found


def test_the_wheel_holds_the_subpackages_and_the_dashboard(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in ("data", "models", "training", "io", "explain", "diagnose", "teach", "lesson"):
        assert f"cnnlib/{pkg}/__init__.py" in names, pkg
    for shipped in ("cnnlib/dashboard/Home.py", "cnnlib/dashboard/config.toml", "cnnlib/dashboard/frame.py",
                    "cnnlib/dashboard/views/evaluation.py", "cnnlib/lesson/web/core.js",
                    "cnnlib/lesson/vendor/ort-wasm-simd-threaded.wasm.gz", "cnnlib/lesson/vendor/ort.wasm.min.mjs"):
        assert shipped in names, shipped
    pages = {p.name for p in (REPO / "dashboard" / "views").glob("*.py")}
    assert pages <= {Path(n).name for n in names if n.startswith("cnnlib/dashboard/views/")}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cnnlib = cnnlib.__main__:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.browser
def test_cnnlib_dashboard_from_an_empty_folder_in_a_fresh_venv(wheel, tmp_path):
    driver = bench_module("pagedriver")
    problem = driver.chromium_problem()
    if problem:
        pytest.fail(problem)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, streamlit, ...) from this environment, after the venv's own site-packages
    Path(purelib, "test_env_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run([str(py), "-c", "import cnnlib; print(cnnlib.__file__)"], cwd=str(empty),
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    assert (venv / "bin" / "cnnlib").is_file()

    log = tmp_path / "dashboard.log"
    command = [str(venv / "bin" / "cnnlib"), "dashboard", "--port", "{port}", "--host", "127.0.0.1"]
    with driver.serve(empty, None, log, command=command, cwd=empty) as url:
        with driver.chromium_page() as page:
            page.goto(url + "/")
            driver.wait_ready(page, "CNN Lens")
            driver.no_exception(page, "Home from an installed wheel")
            sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
            assert f"No checkpoints in `{empty}`".replace("`", "") in sidebar.replace("`", ""), sidebar[:1000]
            driver.screenshot(page, REPO / "artifacts" / "wheel" / "home_empty_folder.png")
    text = log.read_text()
    assert f"with the checkpoints in {empty}" in text, text[-2000:]
    import urllib.request
    with pytest.raises(OSError):      # stopping `cnnlib dashboard` stopped the server: it is the server (exec)
        urllib.request.urlopen(url + "/_stcore/health", timeout=5)
    assert not driver.app_tracebacks(text), text[-3000:]
