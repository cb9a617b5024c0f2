from __future__ import annotations

import errno

import pytest

from cnnlab.core.errors import SaveError
from cnnlab.core.files import atomic_write, write_json, write_text


def test_failure_half_way_leaves_old_file_byte_identical(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text(target, "old contents\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_disk_full_is_a_clear_error_naming_the_path(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    write_json(target, {"v": 1})

    import os

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SaveError) as err:
        write_json(target, {"v": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert str(target) in str(err.value) and "disk is full" in str(err.value)
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert len(list(tmp_path.iterdir())) == 1


def test_written_files_get_normal_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    target = tmp_path / "index.html"
    write_text(target, "<html></html>")
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
