"""The data folder: what is fsync'd for a durable write, and folders removed under the store."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import threading

import pytest

import storage.files as files_module
from storage.files import FileStore, UnsafePath


@pytest.fixture
def store(tmp_path, monkeypatch):
    store = FileStore(tmp_path / "data")
    synced: list[str] = []
    original = FileStore._fsync_dir

    def record(path):  # noqa: ANN001, ANN202
        synced.append(str(path.relative_to(store.root.resolve())) if path != store.root.resolve()
                      else ".")
        original(path)

    monkeypatch.setattr(FileStore, "_fsync_dir", staticmethod(record))
    store.synced = synced  # type: ignore[attr-defined]
    return store


def test_a_new_folder_entry_is_fsynced_once_and_every_file_entry_each_time(store):
    first = store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    store.write_stream(first, lambda sink: sink.write(b"one"))
    # each new folder's entry (in its parent), then the file's rename (in its folder)
    assert store.synced == ["studies/1.2.3", "studies", ".", "studies/1.2.3/1.2.3.4"]
    store.synced.clear()
    store.write_stream(store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.6"),
                       lambda sink: sink.write(b"two"))
    assert store.synced == ["studies/1.2.3/1.2.3.4"]
    store.synced.clear()
    store.write(store.instance_path("1.2.3", "1.2.3.7", "1.2.3.7.1"), b"three")
    assert store.synced == ["studies/1.2.3", "studies/1.2.3/1.2.3.7"]  # a new series folder
    assert store.read(first) == b"one"


def test_folders_removed_by_retention_or_another_process_are_made_again(store):
    relative = store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    store.write_stream(relative, lambda sink: sink.write(b"one"))
    store.delete(relative)
    store.remove_empty_folder("studies/1.2.3/1.2.3.4")
    store.remove_empty_folder("studies/1.2.3")
    store.synced.clear()
    sha, size = store.write_stream(relative, lambda sink: sink.write(b"again"))
    assert (store.read(relative), size) == (b"again", 5)
    assert store.synced == ["studies/1.2.3", "studies", ".", "studies/1.2.3/1.2.3.4"]

    shutil.rmtree(store.root / "studies")  # e.g. `dicom-node purge` in another process
    store.synced.clear()
    store.write(relative, b"third")
    assert store.read(relative) == b"third"
    assert store.synced == ["studies/1.2.3", "studies", ".", "studies/1.2.3/1.2.3.4"]


def test_a_path_leaving_the_data_folder_is_refused(store):
    with pytest.raises(UnsafePath):
        store.write("../outside.dcm", b"x")
    with pytest.raises(UnsafePath):
        store.instance_path("1.2.3", "../..", "1.2.3.4")


def test_a_link_out_of_the_data_folder_is_refused_in_a_folder_resolved_before(store, tmp_path):
    store.write(store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5"), b"one")  # folder known
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"not the node's")
    (store.root / "studies/1.2.3/1.2.3.4/1.2.3.4.6.dcm").symlink_to(outside)
    with pytest.raises(UnsafePath):
        store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.6")
    # a folder swapped for a link is caught once retention has removed the folder it knew
    store.delete("studies/1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    (store.root / "studies/1.2.3/1.2.3.4/1.2.3.4.6.dcm").unlink()
    store.remove_empty_folder("studies/1.2.3/1.2.3.4")
    (store.root / "studies/1.2.3/1.2.3.4").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5")


def test_in_memory_and_streamed_writes_store_the_same_bytes(store):
    content = bytes(range(256)) * 4099  # over a megabyte: several chunks when read back
    streamed = store.start_write_stream("a/streamed.bin", lambda sink: sink.write(content))
    buffered = store.start_write_stream("a/buffered.bin", lambda sink: sink.write(content),
                                        in_memory=True)
    streamed.wait()
    buffered.wait()
    assert (buffered.sha256, buffered.size) == (streamed.sha256, streamed.size) == (
        hashlib.sha256(content).hexdigest(), len(content))
    assert store.read("a/buffered.bin") == store.read("a/streamed.bin") == content


@pytest.mark.parametrize("how", ["write", "stream", "in_memory"])
def test_every_written_file_is_the_node_users_alone_whatever_the_umask(store, how):
    old = os.umask(0o002)  # a umask that would leave files group- and world-readable
    try:
        if how == "write":
            store.write("a/file.dcm", b"x" * 100)
        else:
            store.start_write_stream("a/file.dcm", lambda sink: sink.write(b"x" * 100),
                                     in_memory=how == "in_memory").wait()
    finally:
        os.umask(old)
    assert stat.S_IMODE((store.root / "a/file.dcm").stat().st_mode) == 0o600


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_file_is_in_place_only_once_durable_and_a_failed_sync_keeps_the_old_one(
        store, monkeypatch, in_memory):
    relative = store.instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    store.write_stream(relative, lambda sink: sink.write(b"first"))
    release = threading.Event()
    real_fsync = files_module.os.fsync

    def held_fsync(fd):  # noqa: ANN001, ANN202
        release.wait(10)  # the disk is slow: the new content is not durable yet
        real_fsync(fd)

    monkeypatch.setattr(files_module.os, "fsync", held_fsync)
    pending = store.start_write_stream(relative, lambda sink: sink.write(b"second"),
                                       in_memory=in_memory)
    assert (pending.sha256, pending.size) == (hashlib.sha256(b"second").hexdigest(), 6)
    assert store.read(relative) == b"first"  # not replaced before its fsync
    release.set()
    pending.wait()
    assert store.read(relative) == b"second"

    def failing_fsync(fd):  # noqa: ANN001, ANN202
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(files_module.os, "fsync", failing_fsync)
    pending = store.start_write_stream(relative, lambda sink: sink.write(b"third"),
                                       in_memory=in_memory)
    with pytest.raises(OSError):
        pending.wait()
    assert store.read(relative) == b"second"
    folder = store.root / "studies/1.2.3/1.2.3.4"
    assert sorted(p.name for p in folder.iterdir()) == ["1.2.3.4.5.dcm"]  # no temporary left


def test_a_dead_writers_half_written_files_are_swept_and_no_one_elses(store):
    folder = store.folder("studies/1.2.3/1.2.3.4")
    dead = folder / ".1.2.840.5048.7.dcm.5048.140.tmp"  # pid 5048, also inside the UID
    uid_only = folder / ".1.2.840.5048.8.dcm.6001.140.tmp"  # 5048 in the UID, pid 6001
    other = folder / ".1.2.840.9.dcm.6002.141.tmp"
    stored = folder / "1.2.840.10.dcm"
    for path in (dead, uid_only, other, stored):
        path.write_bytes(b"x")
    assert store.sweep_temporary(5048) == 1
    assert not dead.exists() and uid_only.exists() and other.exists() and stored.exists()
    assert store.sweep_temporary() == 2  # at start: every writer is gone
    assert stored.exists() and list(folder.iterdir()) == [stored]
