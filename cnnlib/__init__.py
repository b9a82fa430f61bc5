"""cnnlib: train, import, evaluate and look inside image-classification CNNs (the library behind CNN Lens).

One subpackage per job, from pixels up:

    modelops     the one path from pixels to logits (working copies, hooks, batched forward passes)
    data/        datasets, ImageFolder trees, decoded memory-mapped caches, safe image decoding
    models/      the model registry, torchvision/timm networks by name, foreign weights, layer anatomy
    training/    the training loop, optimisers, precision, background training jobs
    io/          checkpoints (format, validation, torch-free metadata), atomic writes, import, export
    explain/     attributions, saliency sanity checks, faithfulness, feature visualisation
    diagnose/    evaluation, label issues, nearest neighbours, projections, two-model comparison
    teach/       the forward pass with its numbers, the layer strip, the training batch, a toy convolution

Importing the package imports no PyTorch (the dashboard's first page reads checkpoints with
cnnlib.io.metadata); the model registry: `from cnnlib.models import get_model, list_models, register_model`."""
from cnnlib.errors import CheckpointError, CNNLibError, DatasetError, ImageError, TrainingError

__all__ = ["CNNLibError", "CheckpointError", "DatasetError", "ImageError", "TrainingError"]
__version__ = "0.3.0"
