"""Checkpoints: ``.npz`` files written atomically, read with checks that say what is wrong.

A checkpoint is a NumPy ``.npz`` archive (loadable with ``np.load``, no pickle) holding

    format           "rnnfast-checkpoint", and format_version
    meta             JSON: the model's configuration, the vocabulary, the training settings,
                     where the run is (steps, seconds, random generator states)
    model/<name>     the model's parameters ("model/rnn.weight_hh_l0", ...)
    optimizer/<key>  the optimizer's state dict, when saved during training
    trainer/<key>    what truncated BPTT carries between steps (hidden state, stream position)

Writing goes to a temporary file in the same directory, flushed to disk, then renamed over the
target: a reader (or a crash, or Ctrl-C) sees the old checkpoint or the new one, never half of
one.
"""
import json
import os
import pathlib
import zipfile

import numpy as np

__all__ = ["CheckpointError", "save", "load", "Checkpoint"]

FORMAT = "rnnfast-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not what it should be."""


class Checkpoint:
    """A loaded checkpoint: ``meta`` (dict) and the arrays of each section.

    ``section("model")`` is {"rnn.weight_hh_l0": array, ...} for the keys "model/...".
    """

    def __init__(self, path, meta, arrays):
        self.path = path
        self.meta = meta
        self._arrays = arrays

    def section(self, name):
        prefix = name + "/"
        return {key[len(prefix):]: value for key, value in self._arrays.items()
                if key.startswith(prefix)}

    def require(self, *keys):
        """meta[key] for each key, or CheckpointError naming the missing ones."""
        missing = [key for key in keys if key not in self.meta]
        if missing:
            raise CheckpointError(f"checkpoint {self.path}: its metadata lacks {missing}; it was "
                                  f"not written by this version of rnnfast's training")
        return [self.meta[key] for key in keys]


def save(path, meta, sections):
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write (replaced if it exists). Its directory must exist.
    meta : dict
        JSON-serialisable metadata.
    sections : dict of str to dict of str to array_like
        {"model": {...}, "optimizer": {...}, ...}; stored as "<section>/<key>".
    """
    path = pathlib.Path(path)
    arrays = {"format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
              "meta": np.array(json.dumps(meta))}
    for section, entries in sections.items():
        for key, value in entries.items():
            arrays[f"{section}/{key}"] = np.asarray(value)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            _write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the rename makes it visible
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _write_npz(file, arrays):
    """np.savez's format (one .npy entry per array, ZIP64, stored), with the archive closed
    before the file also when an exception (a second Ctrl-C) interrupts the writing: a
    np.savez interrupted there leaves its ZipFile to be closed at exit, on a closed file,
    which prints a traceback."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, value, allow_pickle=False)


def _sync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load(path):
    """Read and check a checkpoint written by ``save``.

    Raises
    ------
    CheckpointError
        The file does not exist, cannot be read, is not an .npz archive, is truncated or
        corrupted (a CRC or decompression error), is not an rnnfast checkpoint, or has an
        unsupported format version or unreadable metadata.
    """
    path = pathlib.Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist (or is not a file)")
    # np.load would try to unpickle a file that is not a zip archive; say what it is instead.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{where} is truncated or corrupted, or not an .npz file at all "
                              f"(it is not a complete zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}  # reads (and CRC-checks) all
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{where} is truncated or corrupted ({exc}); it is not a readable "
                              f".npz archive") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{where} cannot be read as an .npz archive: {exc}") from None
    if "format" not in arrays or str(arrays["format"]) != FORMAT:
        raise CheckpointError(f"{where} is an .npz archive but not an rnnfast checkpoint (it has "
                              f"no 'format' entry equal to {FORMAT!r})")
    version = arrays.get("format_version")
    if version is None or version.shape != () or int(version) != FORMAT_VERSION:
        raise CheckpointError(f"{where} has format version {version}; this rnnfast reads "
                              f"version {FORMAT_VERSION}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where} has no readable metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: its metadata is not a JSON object")
    return Checkpoint(str(path), meta, arrays)
