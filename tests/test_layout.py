"""The house plan: cnnlib is a few subpackages, one per job, each saying its job and naming its public
functions in its __init__ docstring; no import circle between modules; no module over ~400 lines; nothing
re-exported twice; the top-level package imports no PyTorch."""
import ast
import pathlib
import subprocess
import sys

CNNLIB = pathlib.Path(__file__).resolve().parent.parent / "cnnlib"
SUBPACKAGES = ["data", "models", "training", "io", "explain", "diagnose", "teach", "lesson"]
MAX_LINES = 410


def _modules():
    """{dotted name: path} of every module in cnnlib (packages as their __init__)."""
    out = {}
    for f in CNNLIB.rglob("*.py"):
        rel = f.relative_to(CNNLIB.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """Modules of cnnlib that `name` imports (at any depth of its code), resolved to module names."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:          # `from cnnlib.data import spec`: the module cnnlib.data.spec, else the package
            if t in modules:
                deps.add(t)
                if not isinstance(node, ast.ImportFrom):
                    continue
    return {d for d in deps if d != name}


def test_ls_shows_the_plan():
    top = sorted(p.name for p in CNNLIB.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert top == sorted(SUBPACKAGES + ["lesson"]) or top == sorted(SUBPACKAGES), top
    loose = sorted(p.stem for p in CNNLIB.glob("*.py"))
    assert loose == ["__init__", "__main__", "config", "errors", "inference", "modelops", "viz"], loose


def test_every_subpackage_says_its_job_and_names_its_public_functions():
    for pkg in (CNNLIB / p for p in SUBPACKAGES):
        init = pkg / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init} needs a docstring saying its job"
        for mod in pkg.glob("*.py"):
            if mod.name == "__init__.py":
                continue
            assert mod.stem in doc, f"{init}'s docstring does not mention its module {mod.stem}"
            tree = ast.parse(mod.read_text())
            exported = next((n.value for n in tree.body if isinstance(n, ast.Assign)
                             and any(getattr(t, "id", "") == "__all__" for t in n.targets)), None)
            names = [e.value for e in exported.elts] if exported is not None else []
            for public in (n for n in names if not n.isupper()):     # functions and classes, not constants
                assert public in doc, f"{init}'s docstring does not name {mod.stem}.{public}"


def test_no_import_circle_no_module_getattr_and_no_module_too_long():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        assert "__getattr__" not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name
        assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path} is over {MAX_LINES} lines: split it"
        if path.name != "__init__.py":
            graph[name] = {d for d in _imports(name, path, modules)
                           if not (modules[d].name == "__init__.py")}   # a package's own __init__ is not a module

    def reaches(start, node, seen):
        for nxt in graph.get(node, ()):
            if nxt == start:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if reaches(start, nxt, seen):
                    return True
        return False
    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles, circles


def test_nothing_is_reexported_twice():
    """A name defined in a module is imported into at most one package __init__ (models' registry API)."""
    seen = {}
    for init in CNNLIB.rglob("__init__.py"):
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnlib."):
                for a in node.names:
                    key = (node.module, a.name)
                    assert key not in seen, f"{a.name} re-exported by {init} and {seen[key]}"
                    seen[key] = init


def test_importing_cnnlib_and_its_checkpoint_reader_imports_no_torch():
    code = ("import sys, cnnlib, cnnlib.io.metadata, cnnlib.io.validate, cnnlib.data, cnnlib.training, "
            "cnnlib.explain, cnnlib.diagnose, cnnlib.teach; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CNNLIB.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
