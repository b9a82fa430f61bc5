"""cnnlib: train, evaluate and look inside image-classification CNNs (the library behind CNN Lens)."""
from .errors import CheckpointError, CNNLibError, DatasetError, ImageError, TrainingError
from .models import get_model, list_models, register_model

__all__ = ["CNNLibError", "CheckpointError", "DatasetError", "ImageError", "TrainingError",
           "get_model", "list_models", "register_model"]
__version__ = "0.2.0"
