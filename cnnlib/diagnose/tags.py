"""Tags for single test images, kept in a JSON file beside the checkpoint, so a note on one image ("blurry", "the
label is wrong: it is a truck") outlives the browser session.

    entries = load_tags(ckpt_path, meta)                          # [] when there is no file yet
    shown = tags_for(entries, data_key, paths)                    # {test index: entry} for the open test split
    entries = set_tag(ckpt_path, meta, 12, "blurry", data_key, path=paths[12], label="cat")
    entries = set_tag(ckpt_path, meta, 12, "", data_key, path=paths[12])          # "" removes the tag

The file, `<checkpoint>.tags.json` (tags_path), written atomically (cnnlib.io.files.atomic_write):

    {"format": "cnnlens-tags", "version": 1,
     "checkpoint": {"identity": "<16 hex>", "file": "wrong.pt", "model": "simple_cnn", "created": "..."},
     "tags": [{"index": 12, "path": "/data/test/cat/00012.png" or null, "data": "<data key>", "label": "cat",
               "tag": "blurry", "updated": "2026-12-07T05:00:00+00:00"}, ...]}

An entry names its image by the test index within a data key (the dataset the index counts in) and, for folder
data, by the image's file: a file moved with its whole folder is still found by its last two path parts
(class/file). `identity` (checkpoint_identity) is read from the checkpoint's metadata without PyTorch: a tags file
written for another checkpoint (a copied file, a retrained run under the same name) is refused, never applied.

A file that is not JSON, has the wrong types, is over MAX_FILE_BYTES or holds over MAX_TAGS tags is one
sentence (CNNLibError) and is never overwritten; a read-only folder is WriteError's sentence. Tag text is plain
text: control characters dropped, white space collapsed, at most MAX_TAG_CHARS characters.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import threading
import unicodedata

from cnnlib.errors import CNNLibError
from cnnlib.io.files import atomic_write

__all__ = ["FORMAT", "VERSION", "MAX_TAG_CHARS", "MAX_TAGS", "MAX_FILE_BYTES", "tags_path", "checkpoint_identity",
           "clean_tag", "load_tags", "tags_for", "set_tag"]

FORMAT, VERSION = "cnnlens-tags", 1
MAX_TAG_CHARS = 200            # characters of one tag
MAX_TAGS = 20_000              # tags in one file
MAX_FILE_BYTES = 4 * 2**20     # a larger file is refused, not read
_LOCK = threading.Lock()       # one read-modify-write at a time in this process (dashboard sessions share it)


def tags_path(checkpoint: str) -> str:
    """The tags file of a checkpoint: `<checkpoint>.tags.json` beside it."""
    return f"{os.fspath(checkpoint)}.tags.json"


def checkpoint_identity(meta: dict) -> str:
    """16 hex digits naming a checkpoint by its metadata: model, classes, input shape, creation time and test
    accuracy (no weights: it is read without PyTorch). Two runs saved under one file name differ in it."""
    metrics = meta.get("metrics") or {}
    ident = {"model": meta.get("model"), "classes": list(meta.get("classes") or []),
             "input_shape": list(meta.get("input_shape") or []), "created": str(meta.get("created") or ""),
             "test_acc": metrics.get("test_acc")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def clean_tag(text) -> str:
    """Tag text as plain text: control and format characters dropped, white space collapsed to single spaces,
    trimmed, cut to MAX_TAG_CHARS characters."""
    if not isinstance(text, str):
        raise CNNLibError(f"a tag is text, not {type(text).__name__}")
    kept = "".join(" " if ch.isspace() else ch for ch in text
                   if ch.isspace() or not unicodedata.category(ch).startswith("C"))
    return " ".join(kept.split())[:MAX_TAG_CHARS].strip()


def _name(path: str) -> str:
    return os.path.basename(path)


def _damaged(path: str, why: str) -> CNNLibError:
    return CNNLibError(f"the tags file {_name(path)} is damaged ({why}): fix or remove it; nothing in it was "
                       "changed")


def _check_entry(path: str, n: int, e) -> dict:
    """One entry of the file, checked field by field (a hostile file raises, never slips through)."""
    where = f"tag {n + 1}"
    if not isinstance(e, dict):
        raise _damaged(path, f"{where} is not an object")
    index, tag = e.get("index"), e.get("tag")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _damaged(path, f"{where} has no valid test index")
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS or clean_tag(tag) != tag:
        raise _damaged(path, f"{where} has no valid tag text")
    for field in ("path", "data", "label", "updated"):
        value = e.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > 4096):
            raise _damaged(path, f"{where} has an invalid {field}")
    return {"index": index, "path": e.get("path"), "data": e.get("data") or "", "label": e.get("label"),
            "tag": tag, "updated": e.get("updated")}


def _read(path: str, meta: dict) -> list[dict]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CNNLibError(f"the tags file {_name(path)} cannot be read ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(info.st_mode):                   # a folder, a pipe, a device: never opened
        raise _damaged(path, "not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _damaged(path, f"{info.st_size / 2**20:.1f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB a tags file "
                             "may have")
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_FILE_BYTES + 1)          # bounded, should it grow meanwhile
        if len(blob) > MAX_FILE_BYTES:
            raise _damaged(path, f"over the {MAX_FILE_BYTES // 2**20} MiB a tags file may have")
        doc = json.loads(blob.decode("utf-8"))
    except OSError as e:
        raise CNNLibError(f"the tags file {_name(path)} cannot be read ({e.strerror or type(e).__name__})") from None
    except (ValueError, RecursionError):
        raise _damaged(path, "not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _damaged(path, "not a CNN Lens tags file")
    if doc.get("version") != VERSION:
        raise CNNLibError(f"the tags file {_name(path)} has version {str(doc.get('version'))[:20]}, and this CNN "
                          f"Lens reads version {VERSION}: update CNN Lens, or remove the file")
    owner, entries = doc.get("checkpoint"), doc.get("tags")
    if not isinstance(owner, dict) or not isinstance(entries, list):
        raise _damaged(path, "no checkpoint or tags list")
    if len(entries) > MAX_TAGS:
        raise _damaged(path, f"{len(entries):,} tags, over the {MAX_TAGS:,} a tags file may hold")
    if owner.get("identity") != checkpoint_identity(meta):
        made = str(owner.get("created") or "an unknown time")[:40]
        raise CNNLibError(f"the tags file {_name(path)} belongs to another checkpoint (one created {made}), so "
                          "its tags are not shown here: move it away to start a new one")
    return [_check_entry(path, n, e) for n, e in enumerate(entries)]


def load_tags(checkpoint: str, meta: dict) -> list[dict]:
    """The tags saved for this checkpoint (entries: index, path, data, label, tag, updated); [] when there is
    no file yet. CNNLibError (one sentence) for a damaged, hostile or foreign file."""
    return _read(tags_path(checkpoint), meta)


def _tail(path: str) -> str:
    return "/".join(path.replace("\\", "/").split("/")[-2:])


def tags_for(entries: list[dict], data_key: str, paths: list[str] | None = None) -> dict[int, dict]:
    """{test index: entry} for the test split named by `data_key` (and `paths`, its image files, for folder
    data): an entry with a path is found by its file (or, after the folder moved, by its class/file tail when that
    is unique), an entry without one by its index in the same data."""
    out: dict[int, dict] = {}
    where = {p: i for i, p in enumerate(paths)} if paths else {}
    tails: dict[str, int] = {}
    if paths:
        for i, p in enumerate(paths):
            t = _tail(p)
            tails[t] = -1 if t in tails else i           # -1: not unique
    for e in entries:
        i = None
        if e.get("path") and paths:
            i = where.get(e["path"])
            if i is None and tails.get(_tail(e["path"]), -1) >= 0:
                i = tails[_tail(e["path"])]
        elif not e.get("path") and e.get("data") == data_key and (paths is None or e["index"] < len(paths)):
            i = e["index"]
        if i is not None:
            out[int(i)] = e
    return out


def set_tag(checkpoint: str, meta: dict, index: int, tag: str, data_key: str, path: str | None = None,
            label: str | None = None) -> list[dict]:
    """Tag test image `index` (of the data `data_key`; `path`: its file, for folder data) with `tag`, replacing
    its tag; an empty tag removes it. Returns the file's entries after the change. CNNLibError when the file is
    damaged or another checkpoint's (nothing is written), WriteError when the folder is read-only."""
    text = clean_tag(tag)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise CNNLibError(f"a test image's index is a whole number from 0, not {str(index)[:20]!r}")
    file = tags_path(checkpoint)
    with _LOCK:
        entries = _read(file, meta)
        paths = [path] if path else None
        keep = [e for e in entries if not (tags_for([e], data_key, paths) and (path or e["index"] == index))]
        if not text and len(keep) == len(entries):
            return entries                                   # nothing to remove: the file stays as it is
        if text:
            if len(keep) >= MAX_TAGS:
                raise CNNLibError(f"this checkpoint already has {MAX_TAGS:,} tagged images, the most a tags file "
                                  "holds: remove some first")
            keep.append({"index": int(index), "path": path, "data": data_key, "label": label, "tag": text,
                         "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        model = meta.get("model")
        doc = {"format": FORMAT, "version": VERSION,
               "checkpoint": {"identity": checkpoint_identity(meta), "file": _name(os.fspath(checkpoint)),
                              "model": str(model.get("name", "")) if isinstance(model, dict) else str(model or ""),
                              "created": str(meta.get("created") or "")},
               "tags": keep}
        blob = json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")
        atomic_write(file, lambda f: f.write(blob))
    return keep
