"""Process set-up helpers: the XLA CPU flags and the one switch for the CPU tuning."""

from __future__ import annotations

import jax

from ciagan_jax import platform


def test_cpu_flags_are_appended_once_and_not_at_all_when_opted_out(monkeypatch):
    monkeypatch.delenv("CIAGAN_KEEP_XLA_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    platform.configure_xla_cpu_flags()
    platform.configure_xla_cpu_flags()
    import os  # pylint: disable=g-import-not-at-top
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_dump_to=/tmp/x", "--xla_cpu_experimental_ynn_fusion_type="]
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert platform.configure_xla_cpu_flags() is False
    assert os.environ["XLA_FLAGS"] == ""


def test_cpu_tuning_switch_follows_the_jax_backend_and_the_opt_out(monkeypatch):
    monkeypatch.delenv("CIAGAN_KEEP_XLA_FLAGS", raising=False)
    assert platform.cpu_tuning_enabled() == (jax.default_backend() == "cpu")
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert not platform.cpu_tuning_enabled()
