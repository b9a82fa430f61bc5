"""python -m cnnlib {train,predict,evaluate,import,export,dashboard} ...  — every cnnlib error is one message and exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cnnlib.errors import CNNLibError

USAGE = """usage: python -m cnnlib COMMAND [options]

commands:
  train     train a model and write a checkpoint                  (python -m cnnlib train --help)
  predict   classify images with a checkpoint                      (python -m cnnlib predict --help)
  evaluate  metrics of a checkpoint on a split                     (python -m cnnlib evaluate --help)
  import    your weights (.pth, .safetensors, .onnx) -> a checkpoint (python -m cnnlib import --help)
  export    a checkpoint -> ONNX, TorchScript or safetensors       (python -m cnnlib export --help)
  dashboard open the dashboard on a folder of checkpoints          (python -m cnnlib dashboard --help)
  lesson    a static lesson (CNN Explainer + exercises) in one file (python -m cnnlib lesson --help)
  triage    a verdict with its evidence per misclassified image   (python -m cnnlib triage --help)
  calibrate fit temperature scaling, store T in the checkpoint     (python -m cnnlib calibrate --help)
  robustness accuracy under 15 common corruptions x 5 severities   (python -m cnnlib robustness --help)
  report    one self-contained HTML report of a checkpoint         (python -m cnnlib report --help)
  slices    groups of similar test images the model gets wrong     (python -m cnnlib slices --help)
"""


def predict_main(argv) -> int:
    from cnnlib.data.images import load_image  # noqa: F401  (fail early if Pillow is missing)
    from cnnlib.inference import load_model, predict

    p = argparse.ArgumentParser(prog="python -m cnnlib predict", description="Top-k classes for images.")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5, help="how many classes to list per image")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--calibrated", action="store_true",
                   help="divide the logits by the temperature `python -m cnnlib calibrate` stored in the checkpoint")
    args = p.parse_args(argv)
    model = load_model(args.checkpoint, args.device)
    if args.calibrated:
        from cnnlib.diagnose.calibration import stored_temperature
        stored_temperature(model.meta)           # one sentence before any image when the checkpoint has none
    results, failed = [], 0
    for path in args.images:
        try:
            results.append({"image": path, "top": predict(model, path, k=args.top, calibrated=args.calibrated)})
        except CNNLibError as e:
            failed += 1
            results.append({"image": path, "error": str(e)})
            print(f"error: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "top" in r:
                print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"]))
    return 1 if failed else 0


def import_main(argv) -> int:
    from cnnlib.io.importer import import_weights

    p = argparse.ArgumentParser(
        prog="python -m cnnlib import",
        description="Turn a weights file (a state dict, a dict holding one, or .safetensors) into a CNN Lens "
                    "checkpoint, measured on the data's test split. Nothing in the file is executed.")
    p.add_argument("weights", help="the weights file, e.g. best_model.pth or model.safetensors, or an ONNX "
                                   "model.onnx (converted with onnx2torch; it needs no --model)")
    p.add_argument("--model",
                   help="simple_cnn | resnet9 | torchvision/<name> (e.g. torchvision/resnet18) | timm/<name> "
                        "(required, except for .onnx files)")
    p.add_argument("--data", required=True, help="cifar10 | mnist | fashion-mnist | stl10 | an ImageFolder PATH")
    p.add_argument("--out", metavar="CKPT", help="checkpoint to write (default: checkpoints/<weights name>.pt)")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="square input size (default: the family's crop, 224 for torchvision/, timm's pretrained "
                        "config for timm/; simple_cnn: the size its weights were built for; else the data's own)")
    p.add_argument("--resize", type=int, metavar="N",
                   help="shorter side in pixels before the centre crop (default: the family's, 256 for "
                        "torchvision/; 0 for cnnlib models: the shorter side goes straight to --image-size)")
    p.add_argument("--mean", type=float, nargs="+", metavar="M",
                   help="per-channel mean in [0, 1] units the model was trained with, e.g. 0.5 0.5 0.5 "
                        "(default: the family's, ImageNet's; for cnnlib models the training split's; for .onnx "
                        "files none: mean 0, std 1)")
    p.add_argument("--std", type=float, nargs="+", metavar="S", help="per-channel std, as --mean")
    p.add_argument("--classes", metavar="FILE", help="text file with the class names, one per line, in the "
                                                     "model's output order (default: the data's class folders, sorted)")
    p.add_argument("--num-classes", type=int, metavar="K", help="outputs of the model (default: read from the weights)")
    p.add_argument("--data-root", metavar="DIR", help="where datasets and decoded caches live")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per forward pass on the test split (default: by image size, 256 at 32 px, 20 at 224)")
    p.add_argument("--no-download", action="store_true", help="never download a named dataset")
    args = p.parse_args(argv)
    if (args.mean is None) != (args.std is None):
        raise CNNLibError("give --mean and --std together (the statistics the model was trained with)")
    if args.batch_size is not None and args.batch_size < 1:
        raise CNNLibError("--batch-size must be at least 1")
    out = args.out or os.path.join("checkpoints", os.path.splitext(os.path.basename(args.weights))[0] + ".pt")
    import_weights(args.weights, args.model, args.data, out=out, image_size=args.image_size, resize=args.resize,
                   mean=args.mean, std=args.std, classes=args.classes, num_classes=args.num_classes,
                   data_root=args.data_root, batch_size=args.batch_size, download=not args.no_download)
    return 0


def export_main(argv) -> int:
    from cnnlib.io.export import FORMATS, export_checkpoint

    p = argparse.ArgumentParser(prog="python -m cnnlib export",
                                description="Write a checkpoint as ONNX, TorchScript or safetensors, with a "
                                            "model card FILE.md beside it.")
    p.add_argument("checkpoint")
    p.add_argument("--format", required=True, choices=list(FORMATS),
                   help="onnx / torchscript: raw [0, 1] images in, logits out (normalization folded in); "
                        "safetensors: the state dict with metadata")
    p.add_argument("--out", metavar="FILE", help="file to write (default: the checkpoint's name with the format's "
                                                 "extension); the model card goes to FILE.md")
    args = p.parse_args(argv)
    for path in export_checkpoint(args.checkpoint, args.format, args.out):
        print(f"wrote {path}")
    return 0


def dashboard_home() -> Path:
    """The dashboard's entry script: inside the installed package (cnnlib/dashboard/Home.py, shipped as
    package data) or, in a repository checkout, dashboard/Home.py beside the cnnlib folder."""
    here = Path(__file__).resolve().parent
    for home in (here / "dashboard" / "Home.py", here.parent / "dashboard" / "Home.py"):
        if home.is_file():
            return home
    raise CNNLibError("the dashboard is not installed with this copy of cnnlib: reinstall it with "
                      "`pip install \"cnnlib[dashboard]\"`")


def streamlit_options(home: Path) -> list[str]:
    """The dashboard's Streamlit settings (config.toml beside Home.py, the one place they are written) as
    command-line flags, so that they hold from any working folder."""
    try:
        import tomllib
        with open(home.parent / "config.toml", "rb") as f:
            settings = tomllib.load(f)
    except ImportError:                          # Python 3.10: Streamlit's own dependency reads it
        import toml
        settings = toml.load(home.parent / "config.toml")
    flags = []
    for section, values in settings.items():
        flags += [f"--{section}.{key}={str(v).lower() if isinstance(v, bool) else v}" for key, v in values.items()]
    return flags


def dashboard_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib dashboard",
                                description="Open the CNN Lens dashboard in the browser, on a folder of checkpoints.")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder of .pt checkpoints (default: ./checkpoints when it exists, else this folder)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (http://localhost:PORT)")
    p.add_argument("--host", default="localhost", help="address to listen on (0.0.0.0: every interface)")
    args = p.parse_args(argv)
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise CNNLibError("the dashboard needs Streamlit and Plotly: `pip install \"cnnlib[dashboard]\"`") from None
    folder = Path(args.checkpoints or ("checkpoints" if Path("checkpoints").is_dir() else ".")).expanduser().resolve()
    if not folder.is_dir():
        raise CNNLibError(f"the checkpoint folder {folder} does not exist")
    home = dashboard_home()
    env = dict(os.environ, CNNLENS_CHECKPOINTS=str(folder))
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), *streamlit_options(home),
           f"--server.port={args.port}", f"--server.address={args.host}"]
    print(f"CNN Lens on http://{args.host}:{args.port} with the checkpoints in {folder} (Ctrl-C stops it)", flush=True)
    os.execve(sys.executable, cmd, env)       # this process becomes the server: a signal to it stops the server


def with_import_hint(argv, run) -> int:
    """Run a command that reads a checkpoint; when it is handed a bare weights file instead, replace the
    error by one sentence giving the `python -m cnnlib import` command."""
    from cnnlib.errors import CheckpointError
    try:
        return run(argv)
    except CheckpointError:
        path = next((a for a in argv if not a.startswith("-")), None)
        if path is not None:
            from cnnlib.io.importer import import_hint
            hint = import_hint(path)
            if hint:
                raise CheckpointError(hint) from None
        raise


# command -> (module, function, whether a weights file given as CKPT gets the `cnnlib import` hint)
COMMANDS = {
    "train": ("cnnlib.training.train", "main", False),
    "predict": ("cnnlib.__main__", "predict_main", True),
    "evaluate": ("cnnlib.diagnose.evaluate", "evaluate_main", False),
    "import": ("cnnlib.__main__", "import_main", False),
    "export": ("cnnlib.__main__", "export_main", False),
    "dashboard": ("cnnlib.__main__", "dashboard_main", False),
    "lesson": ("cnnlib.lesson.build", "lesson_main", True),
    "triage": ("cnnlib.diagnose.triage", "triage_main", True),
    "slices": ("cnnlib.diagnose.slices", "slices_main", True),
    "calibrate": ("cnnlib.diagnose.calibration", "calibrate_main", True),
    "robustness": ("cnnlib.diagnose.robustness", "robustness_main", True),
    "report": ("cnnlib.diagnose.report", "report_main", True),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    import importlib
    module, name, hint = COMMANDS[command]
    try:
        run = getattr(sys.modules[__name__] if module == "cnnlib.__main__" else importlib.import_module(module), name)
        return with_import_hint(rest, run) if hint else run(rest)
    except CNNLibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
