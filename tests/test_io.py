from __future__ import annotations

import errno
import os
import pickle
import stat

import pytest

from groundkit import _io
from groundkit._io import atomic_path, remove_stale_temps, write_json
from groundkit.errors import GroundkitError, WriteError


def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path,
                                                                           monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else info.st_size,
                       os.path.exists(tmp_path / "a.json")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json(tmp_path / "a.json", {"x": 1})
    # the written temporary file before a.json exists, then the folder once it does
    assert synced == [(len('{"x": 1}'), False), ("folder", True)]
    synced.clear()
    with atomic_path(tmp_path / "b.png", durable=False) as tmp:
        tmp.write_bytes(b"png")
    assert synced == [] and (tmp_path / "b.png").read_bytes() == b"png"


def test_full_disk_is_a_write_error_naming_the_file_and_keeping_the_old_one(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"step": 5})
    with pytest.raises(WriteError) as caught:
        with atomic_path(path) as tmp:
            tmp.write_text('{"st')
            raise OSError(errno.ENOSPC, "No space left on device")
    err = caught.value
    assert str(err) == (f"{path}: could not write it: no space left on device; the previous "
                        "state.json is intact")
    assert isinstance(err, OSError) and isinstance(err, GroundkitError)
    assert err.errno == errno.ENOSPC and err.file == str(path)
    assert path.read_text() == '{"step": 5}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.errno) == (str(err), errno.ENOSPC)

    with pytest.raises(WriteError, match="new.json: could not write it: no space left on device; "
                                         "nothing was written there"):
        with atomic_path(tmp_path / "new.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="other") as caught:  # other errors pass through unchanged
        with atomic_path(path):
            raise OSError(errno.EACCES, "other")
    assert not isinstance(caught.value, WriteError)


def test_a_failed_rename_is_a_write_error(tmp_path, monkeypatch):
    def replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_io.os, "replace", replace)
    with pytest.raises(WriteError, match="a.json: could not write it: input/output error"):
        write_json(tmp_path / "a.json", {})
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps_touches_only_its_own_temporary_files(tmp_path):
    names = ["model.safetensors", "metrics.jsonl"]
    stale = [".model.safetensors.k2_x9abq.tmp.safetensors", ".metrics.jsonl.a1b2c3d4.tmp.jsonl"]
    kept = ["model.safetensors", "metrics.jsonl", ".model.safetensors.k2_x9abq.tmp.json",
            "model.safetensors.k2_x9abq.tmp.safetensors", ".other.safetensors.k2_x9abq.tmp.safetensors",
            ".model.safetensors.k2 x9abq.tmp.safetensors", "notes.txt"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".model.safetensors.dir12345.tmp.safetensors").mkdir()
    (tmp_path / ".model.safetensors.link1234.tmp.safetensors").symlink_to(tmp_path / "notes.txt")

    removed = remove_stale_temps(tmp_path, names)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        kept + [".model.safetensors.dir12345.tmp.safetensors",
                ".model.safetensors.link1234.tmp.safetensors"])
    assert remove_stale_temps(tmp_path / "missing", names) == []

    # the pattern is the one atomic_path really uses
    with atomic_path(tmp_path / "model.safetensors") as tmp:
        assert remove_stale_temps(tmp_path, names) == [tmp]
        tmp.write_text("y")  # the block may recreate it: the rename still succeeds
    assert (tmp_path / "model.safetensors").read_text() == "y"
