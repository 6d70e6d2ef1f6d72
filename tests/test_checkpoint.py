"""Atomic checkpoint writing and the errors for foreign or damaged directories."""

import json

import pytest
import torch

from flow_omni.checkpoint import WEIGHTS_NAME, atomic_write_text, load_checkpoint, save_checkpoint
from flow_omni.errors import CheckpointError


def test_roundtrip_and_tied_weights(tmp_path):
    w = torch.randn(4, 3)
    state = {"a.weight": w, "b.weight": w, "c": torch.arange(5)}  # a and b share storage
    save_checkpoint(tmp_path / "ck", "Thing", {"x": 1}, state)
    meta, loaded = load_checkpoint(tmp_path / "ck", "Thing")
    assert meta["config"] == {"x": 1}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_foreign_truncated_and_missing(tmp_path):
    save_checkpoint(tmp_path / "ck", "Thing", {}, {"w": torch.randn(100, 100)})
    with pytest.raises(CheckpointError, match="holds a Thing checkpoint, not a Other"):
        load_checkpoint(tmp_path / "ck", "Other")
    weights = tmp_path / "ck" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "ck", "Thing")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not written by flow_omni"):
        load_checkpoint(tmp_path / "hf", "Thing")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path, "Thing")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    from flow_omni.checkpoint import atomic_write

    def broken(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_atomic_write_follows_the_umask(tmp_path):
    """Files written atomically get the mode of any new file (0666 less the umask), not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
