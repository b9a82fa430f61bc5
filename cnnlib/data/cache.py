"""Decoded splits on disk: one memory-mapped uint8 .npy per split, written in chunks and atomically.

    <data root>/cnnlib-cache/<key>.x.npy   uint8 (N, C, H, W): the pixels, read with np.load(mmap_mode=...)
    <data root>/cnnlib-cache/<key>.y.npy   int64 (N,): the labels
    <data root>/cnnlib-cache/<key>.json    {"version", "n", "shape": [C, H, W], "classes", "crc": {file: checksum},
                                            "skipped": [unreadable files]}: written last, so a header means
                                           both arrays were complete

`key` names the content (a dataset split, or a hash of the files and the preprocessing), so two processes
that build the same key write the same bytes. Writing streams one chunk (about CHUNK_BYTES) at a time
through a plain file, so peak memory does not grow with N (a 50,000-image set at 224 x 224 is 7.5 GB on
disk and about 32 MB in memory); every file goes to a temporary name in the same folder, is fsynced and
then renamed. Reading checks the header against the arrays (dtype, shape, exact file length, label range)
and each file's checksum (CRC-32 of the whole file up to 4 MiB; of 64 evenly spaced 64 KiB blocks above,
so opening a 7.5 GB cache stays fast): a short or corrupt cache is reported on the "cnnlib" logger and
rebuilt, never used. A read-only data root decodes into memory instead.

Also here: ImageFolder trees (layout, scan in torchvision's order, decoding any image size through
cnnlib.data.images.load_image -> fit_image -> to_uint8_chw into the cache). A file that cannot be decoded
(not an image, truncated) is skipped, never fatal: the arrays hold the other files in order, the header
lists the skipped ones, `unreadable(paths)` says which of a list are skipped, and `skipped_sentence` says so
in one line (decode_files logs it on the "cnnlib" logger, which the CLI prints).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cnnlib.data import images
from cnnlib.errors import DatasetError, ImageError
from cnnlib.io.files import atomic_write
from cnnlib.data.images import IMAGE_EXTENSIONS

CACHE_VERSION = 3      # bump when the cached layout changes: older files are then ignored
CHUNK_BYTES = 32 * 2**20  # pixels decoded and written per step


log = logging.getLogger("cnnlib")
CRC_BLOCKS, CRC_BLOCK = 64, 64 * 1024      # checksum samples of large files (see the module docstring)


def sampled_crc(path: str) -> int:
    """CRC-32 of a file: whole up to CRC_BLOCKS * CRC_BLOCK bytes, else of CRC_BLOCKS spread blocks."""
    size, crc = os.path.getsize(path), 0
    with open(path, "rb") as f:
        if size <= CRC_BLOCKS * CRC_BLOCK:
            return zlib.crc32(f.read())
        for i in range(CRC_BLOCKS):
            f.seek((size - CRC_BLOCK) * i // (CRC_BLOCKS - 1))
            crc = zlib.crc32(f.read(CRC_BLOCK), crc)
    return crc


def cache_dir(root: str) -> str:
    return os.path.join(root, "cnnlib-cache")


def _base(root: str, key: str) -> str:
    return os.path.join(cache_dir(root), key)


def read_split(root: str, key: str, mode: str = "r") -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(x uint8 memmap (N, C, H, W), y int64 (N,), classes) of a valid cache entry, else None.

    mode "r": a read-only memmap; "c": copy-on-write (writable in memory, the file never changes; what
    torch tensors need, since writing into a read-only map would crash the process)."""
    base = _base(root, key)
    try:
        with open(base + ".json", encoding="utf-8") as f:
            head = json.load(f)
        if head.get("version") != CACHE_VERSION:
            return None
        for suffix, crc in head.get("crc", {}).items():
            if sampled_crc(base + suffix) != crc:
                log.warning("the decoded cache %s%s is damaged (checksum mismatch); rebuilding it", base, suffix)
                return None
        n, shape, classes = int(head["n"]), tuple(int(s) for s in head["shape"]), [str(c) for c in head["classes"]]
        y = np.load(base + ".y.npy", allow_pickle=False)
        if y.dtype != np.int64 or y.shape != (n,) or (n and (y.min() < 0 or y.max() >= len(classes))):
            raise ValueError("labels do not match the header")
        if n == 0:
            return np.empty((0, *shape), np.uint8), y, classes
        x = np.load(base + ".x.npy", mmap_mode=mode, allow_pickle=False)   # raises on a short file
        if (x.dtype != np.uint8 or x.shape != (n, *shape)
                or os.path.getsize(base + ".x.npy") != x.offset + x.nbytes):
            raise ValueError("pixels do not match the header")
        return x, y, classes
    except FileNotFoundError:
        if os.path.exists(base + ".json"):
            log.warning("the decoded cache %s is incomplete; rebuilding it", base)
        return None                                                        # not built yet
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:      # short or corrupt: rebuild
        log.warning("the decoded cache %s is damaged (%s); rebuilding it", base, str(e)[:80])
        return None


def _remove_stale(base: str, age_s: float = 600.0) -> None:
    """Delete temporary files of `base` left by a killed writer (untouched for `age_s`; a live one writes)."""
    folder, stem = os.path.split(base)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(stem + ".") and name.endswith(".tmp"):
            try:
                if time.time() - os.path.getmtime(path) > age_s:
                    os.remove(path)
            except OSError:
                pass


def release_rows(x, start: int, stop: int) -> None:
    """Drop rows [start, stop) of a read-only memory-mapped cache array (read_split's mode "r", or a slice of
    consecutive rows of one) from this process's resident memory once they have been used: the pages stay in
    the OS file cache, so reading them again is cheap, but a pass over a 7.5 GB cache no longer leaves 7.5 GB
    resident. Anything else (an in-memory array, a tensor, a copy-on-write memmap whose changed pages must
    survive): no-op."""
    import mmap
    root = x
    while isinstance(root, np.ndarray) and isinstance(root.base, np.ndarray):
        root = root.base                                # a slice's memmap, up to the one that owns the mmap
    mm = getattr(root, "base", None)
    if not (isinstance(x, np.ndarray) and isinstance(root, np.memmap) and root.mode == "r" and stop > start
            and isinstance(mm, mmap.mmap) and hasattr(mm, "madvise") and x.flags.c_contiguous):
        return
    row = int(np.prod(x.shape[1:])) * x.itemsize
    into = x.__array_interface__["data"][0] - root.__array_interface__["data"][0]   # bytes into root's data
    first = root.offset % mmap.ALLOCATIONGRANULARITY + into + start * row  # np.memmap maps from an aligned offset
    begin = first - first % mmap.PAGESIZE
    length = min(first + (min(stop, len(x)) - start) * row, len(mm)) - begin
    if length > 0:
        try:
            mm.madvise(mmap.MADV_DONTNEED, begin, length)
        except (OSError, ValueError):
            pass                                        # an advice, never an error


def chunks(n: int, shape) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n), each about CHUNK_BYTES of uint8 images of `shape`."""
    step = max(1, CHUNK_BYTES // max(1, int(np.prod(shape))))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _block(out, a: int, b: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """fill's answer as (pixels, keep): fill returns uint8 (b - a, C, H, W), or (pixels of the kept rows,
    keep bool (b - a,)) when some rows could not be decoded."""
    block, keep = out if isinstance(out, tuple) else (out, np.ones(b - a, bool))
    keep = np.asarray(keep, bool)
    if keep.shape != (b - a,) or block.shape != (int(keep.sum()), *shape) or block.dtype != np.uint8:
        raise ValueError(f"decoded block {block.shape} {block.dtype}, expected {(int(keep.sum()), *shape)} uint8")
    return block, keep


def _npy_header(f, n: int, shape) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                             "fortran_order": False, "shape": (n, *shape)})


def write_split(root: str, key: str, shape, fill, y: np.ndarray, classes: list[str], extra=None) -> None:
    """Stream `fill(start, stop)` (see _block: all rows, or the decodable ones and a keep mask) into the
    cache entry `key`; `extra()` -> dict adds keys to the header once every block is written.

    Raises OSError when the data root is not writable (the caller then decodes into memory)."""
    shape, n = tuple(int(s) for s in shape), len(y)
    os.makedirs(cache_dir(root), exist_ok=True)
    base = _base(root, key)
    _remove_stale(base)
    keep = np.ones(n, bool)

    def pixels(f):
        _npy_header(f, n, shape)
        end = f.tell()
        for a, b in chunks(n, shape):
            block, keep[a:b] = _block(fill(a, b), a, b, shape)
            f.write(np.ascontiguousarray(block).data)
        if not keep.all():              # rows were skipped: the header says how many were written
            f.seek(0)
            _npy_header(f, int(keep.sum()), shape)   # same length: numpy pads the header for a growing axis
            if f.tell() != end:
                raise ValueError("the .npy header changed length")
            f.seek(0, os.SEEK_END)

    if n:
        atomic_write(base + ".x.npy", pixels)
    y = np.asarray(y, np.int64)[keep]
    atomic_write(base + ".y.npy", lambda f: np.save(f, y))
    crc = {suffix: sampled_crc(base + suffix) for suffix in ((".x.npy", ".y.npy") if n else (".y.npy",))}
    head = {"version": CACHE_VERSION, "n": len(y), "shape": list(shape), "classes": list(classes), "crc": crc,
            **(extra() if extra else {})}
    atomic_write(base + ".json", lambda f: f.write(json.dumps(head).encode()))


def read_header(root: str, key: str) -> dict:
    """The JSON header of cache entry `key` ({} when missing or unreadable)."""
    try:
        with open(_base(root, key) + ".json", encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return {}


def cached_split(root: str, key: str, shape, fill, y: np.ndarray, classes: list[str],
                 mode: str = "r", extra=None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of cache entry `key`, building it with `fill` (and `extra`, see write_split) first when it
    is missing or invalid; rows that fill skips are in neither.

    x is a memmap (mode as in read_split), or an in-memory array when the data root is read-only."""
    hit = read_split(root, key, mode)
    if hit is not None:
        return hit[0], hit[1]
    try:
        write_split(root, key, shape, fill, y, classes, extra)
        hit = read_split(root, key, mode)
        if hit is not None:
            return hit[0], hit[1]
    except OSError:
        pass  # read-only or full data root: go on without the cache
    shape = tuple(int(s) for s in shape)
    x, keep, done = np.empty((len(y), *shape), np.uint8), np.ones(len(y), bool), 0   # (N, C, H, W) in memory
    for a, b in chunks(len(y), shape):
        block, keep[a:b] = _block(fill(a, b), a, b, shape)
        x[done:done + len(block)] = block
        done += len(block)
    return (x if done == len(y) else x[:done].copy()), np.asarray(y, np.int64)[keep]


def preprocessing_for(resize: int, image_size: int) -> dict:
    """images.fit_image's preprocessing for ImageFolder images (torchvision's Resize(r) + CenterCrop(c)).

    resize > 0: shorter side to `resize`, then the centre image_size (or resize) square; resize == 0 and
    image_size > 0: shorter side to image_size, then its centre square; both 0: {} (every image is resized
    straight to the first image's size). Training stores this dict as the checkpoint's `preprocessing`."""
    resize, image_size = int(resize or 0), int(image_size or 0)
    return {"resize": resize or image_size, "crop": image_size or resize} if resize or image_size else {}


# ----------------------------------------------------------------------------- ImageFolder trees

def folder_layout(path: str) -> dict:
    """{"train": dir | None, "test": dir | None} of an ImageFolder tree; a folder with class sub-folders
    directly inside (no train/ or test/) is all test. Raises DatasetError saying what is wrong."""
    if not os.path.exists(path):
        raise DatasetError(f"{path} does not exist")
    if not os.path.isdir(path):
        raise DatasetError(f"{path} is a file, not a folder of images")
    train, test = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train) or os.path.isdir(test):
        return {"train": train if os.path.isdir(train) else None, "test": test if os.path.isdir(test) else None}
    if classes_of(path):
        return {"train": None, "test": path}
    raise DatasetError(f"{path} is not an ImageFolder tree: it has no class sub-folders (expected "
                       f"train/<class>/*.jpg with optional test/<class>/*, or <class>/*.jpg directly inside)")


def classes_of(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())   # torchvision's find_classes


def _files(folder: str, classes: list[str] | None = None):
    """(file, label) of `folder`'s images in scan's order, lazily (the first class is read before the others)."""
    for k, cls in enumerate(classes_of(folder) if classes is None else classes):
        for top, _, names in sorted(os.walk(os.path.join(folder, cls), followlinks=True)):
            yield from ((os.path.join(top, n), k) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS))


def first_file(folder: str) -> str:
    """The first image of scan(folder), without walking the other classes."""
    for path, _ in _files(folder):
        return path
    raise DatasetError(f"{folder} holds no images (file types: {' '.join(IMAGE_EXTENSIONS)})")


def first_size(folder: str) -> tuple[int, int]:
    """(width, height) of the first file of scan(folder) that Pillow can identify (read from its header, not
    decoded); files that are not images are passed over. Raises DatasetError when there is none."""
    from PIL import Image
    for path, _ in _files(folder):
        try:
            with Image.open(path) as im:
                return im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    return first_image(folder).size          # raises the DatasetError that says why


def first_image(folder: str):
    """The first decodable image of scan(folder) (a PIL image in RGB or L); unreadable files are passed over.
    Raises DatasetError when the folder holds no image that can be decoded."""
    seen = 0
    for path, _ in _files(folder):
        seen += 1
        try:
            return images.load_image(path)
        except ImageError:
            continue
    if not seen:
        raise DatasetError(f"{folder} holds no images (file types: {' '.join(IMAGE_EXTENSIONS)})")
    raise DatasetError(f"none of the {seen} image files in {folder} can be decoded (all are damaged or not images)")


def scan(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(file, label), ...]) in torchvision ImageFolder's order (classes, then walk, sorted)."""
    classes = classes_of(folder)
    samples = list(_files(folder, classes))
    if not samples:
        raise DatasetError(f"{folder} holds no images (file types: {' '.join(IMAGE_EXTENSIONS)})")
    return classes, samples


_READABLE: dict[str, tuple[int, int, bool]] = {}   # path -> (size, mtime_ns, decodable), as decoding found it


def _learn(samples, stats, bad) -> None:
    for (p, _), s in zip(samples, stats):
        _READABLE[p] = (s.st_size, s.st_mtime_ns, p not in bad)


def unreadable(paths) -> list[str]:
    """Those of `paths` (in order) that decode_files skips because they cannot be decoded: as decoding found
    them in this process (or the cache header said), else by decoding them now."""
    out = []
    for p in paths:
        try:
            s = os.stat(p)
        except OSError:
            out.append(p)
            continue
        known = _READABLE.get(p)
        if known is None or known[:2] != (s.st_size, s.st_mtime_ns):
            try:
                images.load_image(p)
                known = (s.st_size, s.st_mtime_ns, True)
            except ImageError:
                known = (s.st_size, s.st_mtime_ns, False)
            _READABLE[p] = known
        if not known[2]:
            out.append(p)
    return out


def skipped_sentence(paths, first: int = 3) -> str:
    """'Skipped 2 unreadable images: cat/notes.jpg, dog/bad.jpg.' (the first few, as <class>/<file>)."""
    paths = list(paths)
    names = [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for p in paths[:first]]
    more = f" and {len(paths) - first} more" if len(paths) > first else ""
    return (f"Skipped {len(paths)} unreadable image{'s' if len(paths) != 1 else ''} (damaged or not images): "
            f"{', '.join(names)}{more}.")


def decode_files(samples, shape, pre: dict, root: str, classes: list[str], mode: str = "r"):
    """Decode the files of `samples` to (x uint8 (N, C, H, W), y int64 (N,)) through the cache.

    Files that cannot be decoded are skipped (N counts the others, in order): the cache header lists them,
    unreadable() knows them, and one line says so on the "cnnlib" logger."""
    stats = [os.stat(p) for p, _ in samples]
    h = hashlib.sha1(repr((CACHE_VERSION, tuple(shape), sorted(pre.items()), classes)).encode())
    h.update(repr([(p, s.st_size, s.st_mtime_ns, k) for (p, k), s in zip(samples, stats)]).encode())
    y = np.array([k for _, k in samples], np.int64)
    # small files (CIFAR's 1 kB JPEGs) decode faster in one thread; large ones release the GIL in Pillow
    workers = min(4, os.cpu_count() or 1) if sum(s.st_size for s in stats) > 20_000 * len(stats) else 1

    bad: set[str] = set()

    def one(path):
        try:
            return images.to_uint8_chw(images.fit_image(images.load_image(path), shape, pre))   # (C, H, W)
        except ImageError:
            bad.add(path)
            return None

    def fill(a, b):
        files = [p for p, _ in samples[a:b]]
        if workers == 1:
            arrays = [one(p) for p in files]
        else:
            with ThreadPoolExecutor(workers) as pool:
                arrays = list(pool.map(one, files, chunksize=16))
        good = [a for a in arrays if a is not None]
        return (np.stack(good) if good else np.empty((0, *shape), np.uint8)), np.array([a is not None for a in arrays])

    key = f"folder-{h.hexdigest()[:20]}"
    skipped = lambda: {"skipped": [p for p, _ in samples if p in bad]}   # noqa: E731 - in the scan's order
    x, y = cached_split(root, key, shape, fill, y, classes, mode, skipped)
    if not bad:                                                          # a cache hit: the header knows
        bad = set(read_header(root, key).get("skipped") or [])
    _learn(samples, stats, bad)
    if samples and len(bad) == len(samples):
        raise DatasetError(f"none of the {len(samples)} image files in "
                           f"{os.path.commonpath([p for p, _ in samples])} can be decoded (all are damaged or not images)")
    if bad:
        log.warning(skipped_sentence([p for p, _ in samples if p in bad]))
    return x, y


def first_shape(folder: str, resize: int, image_size: int) -> tuple[int, int, int]:
    """[C, H, W] of a folder's data: channels of its first decodable image, size from the settings or that image."""
    im = first_image(folder)
    c = 1 if im.mode == "L" else 3
    side = image_size or resize
    return (c, side, side) if side else (c, im.size[1], im.size[0])
