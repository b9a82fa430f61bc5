"""cnnlib: train, evaluate and look inside image-classification CNNs (the library behind CNN Lens).

Importing the package imports no PyTorch (the dashboard's first page and cnnlib.ckptmeta stay light); the
model registry lives in cnnlib.models: `from cnnlib.models import get_model, list_models, register_model`."""
from .errors import CheckpointError, CNNLibError, DatasetError, ImageError, TrainingError

__all__ = ["CNNLibError", "CheckpointError", "DatasetError", "ImageError", "TrainingError"]
__version__ = "0.2.0"
