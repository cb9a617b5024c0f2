"""cnnlab.runtime: process-wide settings."""
from __future__ import annotations


def test_tune_malloc_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    import platform

    from cnnlab.accel.malloc import tune_malloc

    monkeypatch.setenv("CNNLAB_NO_MALLOC_TUNING", "1")
    assert tune_malloc() is False
    monkeypatch.delenv("CNNLAB_NO_MALLOC_TUNING")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert tune_malloc() is True
        assert tune_malloc() is True  # idempotent: every entry point may call it
