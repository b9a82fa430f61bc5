"""Writing files so that nothing is ever lost: every checkpoint, decoded cache and index goes through here.

    atomic_write(path, lambda f: ...)   write to a temporary file beside `path`, fsync, rename over `path`

Killing the process at any moment leaves the old file or the new one, never half of one. A full disk, a
read-only folder or a missing permission ends in `WriteError` — one sentence, and the previous file
untouched. WriteError is both a CNNLibError (the CLI and the dashboard show its message) and an OSError
(callers that can carry on without the file, like the decoded-data cache, catch that).
"""
from __future__ import annotations

import errno
import os
import threading
from cnnlib.errors import CNNLibError


class WriteError(CNNLibError, OSError):
    """A file could not be written; the previous version (if any) is intact."""


_WHY = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the folder is on a read-only file system", errno.EACCES: "permission denied",
        errno.EPERM: "permission denied"}


def atomic_write(path: str, write, mode: int | None = 0o666) -> None:
    """write(f) into `path.<pid>-<thread>.tmp` (binary), flush, fsync, then os.replace over `path`.

    mode: permission bits before the umask (None: leave the default). The temporary file is removed on
    any failure, and OSErrors become WriteError with a sentence that names the file and the cause."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, mode & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        why = _WHY.get(e.errno, e.strerror or type(e).__name__)
        kept = " (the previous version is kept)" if os.path.exists(path) else ""
        raise WriteError(e.errno or 0, f"cannot write {path}: {why}{kept}") from None
    finally:
        if os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
