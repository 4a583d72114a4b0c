"""Checkpoint files (rnnfast.train.checkpoint): round trips, atomic replacement (an interrupted save
leaves the old file whole and no debris), and a clear CheckpointError for every kind of broken
file."""
import json
import zipfile

import numpy as np
import pytest

from rnnfast.train import checkpoint
from rnnfast.train.checkpoint import CheckpointError

META = {"model": {"hidden_size": 4}, "vocab": "abc", "history": [{"step": 1, "val": 2.5}]}


def sections(seed=0):
    rng = np.random.default_rng(seed)
    return {"model": {"rnn.weight_hh_l0": rng.standard_normal((4, 4)).astype(np.float32)},
            "optimizer": {"optimizer": "Adam", "step": 3, "exp_avg/w": rng.random(5)}}


def test_round_trip(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, META, sections())
    loaded = checkpoint.load(path)
    assert loaded.meta == META
    model = loaded.section("model")
    assert list(model) == ["rnn.weight_hh_l0"] and model["rnn.weight_hh_l0"].dtype == np.float32
    assert np.array_equal(model["rnn.weight_hh_l0"], sections()["model"]["rnn.weight_hh_l0"])
    opt = loaded.section("optimizer")
    assert str(opt["optimizer"]) == "Adam" and int(opt["step"]) == 3
    assert loaded.require("vocab", "model") == ["abc", {"hidden_size": 4}]
    with pytest.raises(CheckpointError, match=r"lacks \['seconds'\]"):
        loaded.require("vocab", "seconds")
    # a plain np.load reads it too, without pickle
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["meta"])) == META


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "c.npz"
    checkpoint.save(path, META, sections(0))
    before = path.read_bytes()

    def failing_write(entry, array, **options):  # fails inside the archive, mid-entry
        entry.write(b"\x93NUMPY half an array")
        raise failure

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(type(failure)):
        checkpoint.save(path, {"other": 1}, sections(1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def write_broken(path, kind):
    checkpoint.save(path, META, sections())
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupted":  # flip bytes inside the stored arrays: the CRC check fails
        start = data.index(b"\x93NUMPY") + 200
        for i in range(start, start + 16):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint at all\n")


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated or corrupted"),
    ("corrupted", "truncated or corrupted"),
    ("empty", "truncated or corrupted"),
    ("text", "truncated or corrupted"),
])
def test_broken_files_give_a_clear_error(tmp_path, kind, message):
    path = tmp_path / "c.npz"
    write_broken(path, kind)
    with pytest.raises(CheckpointError, match=message) as excinfo:
        checkpoint.load(path)
    assert str(path) in str(excinfo.value)


def test_files_that_are_not_rnnfast_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an rnnfast checkpoint"):
        checkpoint.load(tmp_path / "other.npz")
    np.savez(tmp_path / "future.npz", format=np.array(checkpoint.FORMAT),
             format_version=np.array(99), meta=np.array("{}"))
    with pytest.raises(CheckpointError, match="format version 99"):
        checkpoint.load(tmp_path / "future.npz")
    np.savez(tmp_path / "meta.npz", format=np.array(checkpoint.FORMAT),
             format_version=np.array(checkpoint.FORMAT_VERSION), meta=np.array("{broken"))
    with pytest.raises(CheckpointError, match="no readable metadata"):
        checkpoint.load(tmp_path / "meta.npz")
    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as archive:
        archive.writestr("format.npy", b"\x93NUMPY garbage")
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "pickled.npz")
