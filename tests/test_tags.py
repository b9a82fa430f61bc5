"""cnnlib.diagnose.tags: one tag per test image in <checkpoint>.tags.json, surviving a reload, a reordered folder
and a moved folder; a damaged, hostile or foreign file is one sentence and is never overwritten; a read-only
folder is one sentence."""
from __future__ import annotations

import errno
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlib.diagnose import tags
from cnnlib.errors import CNNLibError

META = {"model": {"name": "simple_cnn", "kwargs": {}}, "classes": ["cat", "dog"], "input_shape": [3, 32, 32],
        "created": "2026-12-01T10:00:00", "metrics": {"test_acc": 0.75}}
PATHS = ["/data/test/cat/0001.png", "/data/test/cat/0002.png", "/data/test/dog/0001.png"]


@pytest.fixture
def ckpt(tmp_path):
    p = tmp_path / "run.pt"
    p.write_bytes(b"not read by the tags module")
    return str(p)


def one_sentence(msg: str) -> bool:
    return "\n" not in msg and len(msg) < 300 and "Traceback" not in msg


def test_round_trip_by_path_and_by_index(ckpt):
    assert tags.load_tags(ckpt, META) == []
    tags.set_tag(ckpt, META, 1, "  blurry\n photo ", "folder-key", path=PATHS[1], label="cat")
    tags.set_tag(ckpt, META, 7, "wrong label", "cifar-key")                  # a named dataset: no path
    entries = tags.load_tags(ckpt, META)
    assert {e["tag"] for e in entries} == {"blurry photo", "wrong label"}
    assert tags.tags_for(entries, "folder-key", PATHS) == {1: entries[0]}
    assert tags.tags_for(entries, "cifar-key") == {7: entries[1]}
    assert tags.tags_for(entries, "other-key") == {}                          # another dataset's index 7
    doc = json.loads(open(tags.tags_path(ckpt)).read())
    assert doc["format"] == "cnnlens-tags" and doc["checkpoint"]["identity"] == tags.checkpoint_identity(META)
    assert doc["checkpoint"]["file"] == "run.pt" and doc["checkpoint"]["model"] == "simple_cnn"
    assert tags.tags_path(ckpt) == ckpt + ".tags.json"

    tags.set_tag(ckpt, META, 1, "sharp after all", "folder-key", path=PATHS[1])   # replaces, never duplicates
    entries = tags.load_tags(ckpt, META)
    assert [e["tag"] for e in entries] == ["wrong label", "sharp after all"]
    tags.set_tag(ckpt, META, 1, "", "folder-key", path=PATHS[1])             # "" removes
    assert [e["tag"] for e in tags.load_tags(ckpt, META)] == ["wrong label"]


def test_a_tag_follows_its_file_when_the_folder_is_reordered_or_moved(ckpt):
    tags.set_tag(ckpt, META, 2, "a dog", "k", path=PATHS[2])
    entries = tags.load_tags(ckpt, META)
    reordered = [PATHS[2], PATHS[0], PATHS[1]]
    assert list(tags.tags_for(entries, "k", reordered)) == [0]                # new files first: index 0 now
    moved = [p.replace("/data/", "/elsewhere/") for p in reordered]
    assert list(tags.tags_for(entries, "other", moved)) == [0]                # found by dog/0001.png
    assert tags.tags_for(entries, "k", ["/data/test/cat/0009.png"]) == {}       # the file is gone: not shown


def test_another_checkpoints_file_is_refused_and_kept(ckpt):
    tags.set_tag(ckpt, META, 0, "mine", "k")
    before = open(tags.tags_path(ckpt), "rb").read()
    retrained = {**META, "created": "2026-12-02T09:00:00", "metrics": {"test_acc": 0.8}}
    for call in (lambda: tags.load_tags(ckpt, retrained), lambda: tags.set_tag(ckpt, retrained, 0, "x", "k")):
        with pytest.raises(CNNLibError) as e:
            call()
        assert "belongs to another checkpoint" in str(e.value) and one_sentence(str(e.value))
    assert open(tags.tags_path(ckpt), "rb").read() == before


@pytest.mark.parametrize("content, says", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[1, 2, 3]", "not a CNN Lens tags file"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),                          # nesting that breaks a naive reader
    (json.dumps({"format": "cnnlens-tags", "version": 1, "checkpoint": "x", "tags": []}).encode(), "no checkpoint"),
    ("ENTRY", "no valid test index"),
    ("TEXT", "no valid tag text"),
    ("HUGE", "over the 4 MiB"),
    ("MANY", "over the 20,000"),
    (json.dumps({"format": "cnnlens-tags", "version": 99, "checkpoint": {}, "tags": []}).encode(), "version 99"),
])
def test_a_damaged_or_hostile_file_is_one_sentence_and_is_never_overwritten(ckpt, content, says):
    good = {"format": "cnnlens-tags", "version": 1, "checkpoint": {"identity": tags.checkpoint_identity(META)}}
    if content == "ENTRY":
        content = json.dumps({**good, "tags": [{"index": "7", "tag": "x"}]}).encode()
    elif content == "TEXT":
        content = json.dumps({**good, "tags": [{"index": 7, "tag": "a\x00b"}]}).encode()
    elif content == "HUGE":
        content = b" " * (tags.MAX_FILE_BYTES + 1)
    elif content == "MANY":
        content = json.dumps({**good, "tags": [{"index": i, "tag": "t"} for i in range(tags.MAX_TAGS + 1)]}).encode()
    with open(tags.tags_path(ckpt), "wb") as f:
        f.write(content)
    for call in (lambda: tags.load_tags(ckpt, META), lambda: tags.set_tag(ckpt, META, 0, "new", "k")):
        with pytest.raises(CNNLibError) as e:
            call()
        assert says in str(e.value) and one_sentence(str(e.value)), str(e.value)
    assert open(tags.tags_path(ckpt), "rb").read() == content                  # nothing lost


def test_a_folder_or_a_pipe_in_place_of_the_file_is_never_opened(ckpt):
    os.mkdir(tags.tags_path(ckpt))
    with pytest.raises(CNNLibError, match="not a regular file"):
        tags.load_tags(ckpt, META)
    os.rmdir(tags.tags_path(ckpt))
    os.mkfifo(tags.tags_path(ckpt))                   # opening a pipe would wait for a writer forever
    with pytest.raises(CNNLibError, match="not a regular file"):
        tags.set_tag(ckpt, META, 0, "x", "k")


def test_a_read_only_folder_is_one_sentence(ckpt, monkeypatch):
    tags.set_tag(ckpt, META, 0, "kept", "k")
    folder = os.path.dirname(ckpt)
    if os.geteuid() == 0:                   # root writes anyway: the file system says no instead
        def refuse(*a, **kw):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr("cnnlib.io.files.os.replace", refuse)
    else:
        os.chmod(folder, 0o555)
    try:
        with pytest.raises(CNNLibError) as e:
            tags.set_tag(ckpt, META, 1, "new", "k")
    finally:
        os.chmod(folder, 0o755)
    assert one_sentence(str(e.value)) and "cannot write" in str(e.value), str(e.value)
    monkeypatch.undo()
    assert [x["tag"] for x in tags.load_tags(ckpt, META)] == ["kept"]           # the previous file stays


def test_bad_arguments_are_one_sentence(ckpt):
    for index in (-1, "3", True):
        with pytest.raises(CNNLibError):
            tags.set_tag(ckpt, META, index, "x", "k")
    with pytest.raises(CNNLibError):
        tags.clean_tag(None)
    assert not os.path.exists(tags.tags_path(ckpt))
    tags.set_tag(ckpt, META, 3, "", "k")                                        # removing nothing writes nothing
    assert not os.path.exists(tags.tags_path(ckpt))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_stored_as_plain_capped_text_and_read_back(tmp_path_factory, text):
    ckpt = str(tmp_path_factory.mktemp("fuzz") / "f.pt")
    clean = tags.clean_tag(text)
    assert len(clean) <= tags.MAX_TAG_CHARS and clean == clean.strip()
    assert not any(ch in clean for ch in "\n\r\t\x00\x1b")
    tags.set_tag(ckpt, META, 5, text, "k")
    got = tags.tags_for(tags.load_tags(ckpt, META), "k")
    assert (got[5]["tag"] == clean) if clean else got == {}
