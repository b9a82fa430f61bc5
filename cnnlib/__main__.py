"""python -m cnnlib {train,predict,evaluate} ...  — every cnnlib error is one message and exit code 2."""
from __future__ import annotations

import argparse
import json
import sys

from .errors import CNNLibError

USAGE = """usage: python -m cnnlib COMMAND [options]

commands:
  train     train a model and write a checkpoint      (python -m cnnlib train --help)
  predict   classify images with a checkpoint          (python -m cnnlib predict --help)
  evaluate  metrics of a checkpoint on a split         (python -m cnnlib evaluate --help)
"""


def predict_main(argv) -> int:
    from .images import load_image  # noqa: F401  (fail early if Pillow is missing)
    from .inference import load_model, predict

    p = argparse.ArgumentParser(prog="python -m cnnlib predict", description="Top-k classes for images.")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5, help="how many classes to list per image")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    model = load_model(args.checkpoint, args.device)
    results, failed = [], 0
    for path in args.images:
        try:
            results.append({"image": path, "top": predict(model, path, k=args.top)})
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            from .train import main as train_main
            return train_main(rest)
        if command == "predict":
            return predict_main(rest)
        if command == "evaluate":
            from .evaluate import evaluate_main
            return evaluate_main(rest)
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    except CNNLibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
