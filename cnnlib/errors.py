"""One exception family for everything a user can get wrong.

The CLI prints these as a single message and exits 2; the dashboard shows
them with ``st.error``. Anything else escaping is a bug in cnnlib.
"""


class CNNLibError(Exception):
    """Base class: a clear, user-facing message; never a traceback."""


class CheckpointError(CNNLibError):
    """A file that is not a readable, safe CNN Lens checkpoint."""


class ImageError(CNNLibError):
    """An image that cannot be decoded safely (broken, hostile or absurd)."""


class DatasetError(CNNLibError):
    """A dataset that is missing, unreadable or inconsistent."""


class TrainingError(CNNLibError):
    """Training cannot go on (non-finite loss, incompatible resume state)."""
