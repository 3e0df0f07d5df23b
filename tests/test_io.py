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


# --- output paths checked before the work (check_output_dir / check_output_file) ------------------

def test_check_output_dir_makes_nothing_and_accepts_a_new_nested_folder(tmp_path):
    from groundkit._io import check_output_dir

    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # the probe and the folders it made are gone
    check_output_dir(tmp_path, "--out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, message", [
    ("file", "afile: --out: expected a folder here, and this is a file"),
    ("under_file", "afile/sub: --out: cannot make this folder: {tmp}/afile is a file"),
    ("proc", "/proc/groundkit-test/x: --out: cannot make this folder: "),
])
def test_check_output_dir_refuses_what_cannot_be_a_writable_folder(tmp_path, where, message):
    from groundkit._io import check_output_dir

    (tmp_path / "afile").write_text("x")
    path = {"file": tmp_path / "afile", "under_file": tmp_path / "afile" / "sub",
            "proc": "/proc/groundkit-test/x"}[where]
    with pytest.raises(WriteError) as e:
        check_output_dir(path, "--out")
    assert message.format(tmp=tmp_path) in str(e.value)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders; /proc covers it")
def test_check_output_dir_refuses_a_read_only_folder(tmp_path):
    from groundkit._io import check_output_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(WriteError, match="cannot write in this folder: permission denied"):
            check_output_dir(ro, "--out")
    finally:
        ro.chmod(0o700)


def test_check_output_file_refuses_a_folder_and_an_unmakeable_parent(tmp_path):
    from groundkit._io import check_output_file

    with pytest.raises(WriteError, match="--json: expected a file here, and this is a folder"):
        check_output_file(tmp_path, "--json")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError, match=f"--json: its folder {tmp_path}/afile is a file"):
        check_output_file(tmp_path / "afile" / "s.json", "--json")
    with pytest.raises(WriteError, match="/proc/groundkit-test/s.json: --json: cannot make"):
        check_output_file("/proc/groundkit-test/s.json", "--json")
    assert check_output_file(tmp_path / "new" / "s.json", "--json") == tmp_path / "new" / "s.json"
    assert not (tmp_path / "new").exists()
    assert str(check_output_file(os.devnull, "--json")) == os.devnull


def test_atomic_path_onto_a_folder_is_a_write_error(tmp_path):
    with pytest.raises(WriteError, match="this is a folder, and a file was expected"):
        write_json(tmp_path, {"a": 1})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError):
        write_json(tmp_path / "afile" / "s.json", {"a": 1})


def test_devices_are_written_into_never_replaced(dev_full):
    write_json(os.devnull, {"a": 1})  # written through, the device stays a device
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    with pytest.raises(WriteError) as e:
        write_json(dev_full, {"a": 1})
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == f"{dev_full}: could not write it: no space left on device"
    assert stat.S_ISCHR(os.stat(dev_full).st_mode)
