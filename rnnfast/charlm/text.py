"""Text for the character-level language model: the vocabulary, the default corpus, the split.

A character model reads text as a sequence of integer ids, one per Unicode character. The
vocabulary is the sorted set of characters of the training text; ids are positions in it.
"""
import hashlib
import pathlib
import sysconfig

import numpy as np

from rnnfast.utils.validation import check_bool

__all__ = ["Vocabulary", "default_corpus", "read_text", "split_tail", "unigram_cross_entropy"]

# The default corpus: Python's standard library, which every Python installation carries as
# source. About 4 million characters is more than a default run reads in its two minutes, so the
# model sees fresh text all run long and the held-out tail measures generalisation.
DEFAULT_CORPUS_CHARS = 4_000_000


class Vocabulary:
    """The characters a model knows, and the maps between characters and ids.

    Parameters
    ----------
    chars : str
        Every character once, in id order.
    """

    def __init__(self, chars):
        if not isinstance(chars, str):
            raise TypeError(f"chars must be a str; got {type(chars).__name__}")
        if not chars:
            raise ValueError("chars must hold at least one character; got an empty string")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat a character")
        self.chars = chars
        self._codes = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)
        self._order = np.argsort(self._codes)

    @classmethod
    def from_text(cls, text):
        """The sorted set of the characters of ``text``."""
        return cls("".join(sorted(set(text))))

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __repr__(self):
        return f"Vocabulary({len(self)} characters)"

    def encode(self, text, name="text"):
        """The ids of ``text``'s characters, shape (len(text),), int64.

        Raises
        ------
        ValueError
            A character of ``text`` is not in the vocabulary (the message lists them).
        """
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        sorted_codes = self._codes[self._order]
        slots = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
        found = sorted_codes[slots] == codes
        if not found.all():
            unknown = sorted({chr(c) for c in codes[~found]})
            shown = "".join(unknown[:20]) + ("..." if len(unknown) > 20 else "")
            raise ValueError(f"{name} has {len(unknown)} character(s) the vocabulary does not "
                             f"know: {shown!r}; it knows {len(self)} characters")
        return self._order[slots].astype(np.int64)

    def decode(self, ids):
        """The text of a sequence of ids."""
        ids = np.asarray(ids, dtype=np.int64)
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")


def read_text(path, replace_invalid=False):
    """The text of a UTF-8 file.

    Parameters
    ----------
    path : str or path-like
    replace_invalid : bool
        Read bytes that are not valid UTF-8 as U+FFFD (the replacement character) instead of
        refusing the file: a binary file read so would train a model on noise.

    Raises
    ------
    ValueError
        The file cannot be read, is not valid UTF-8 (naming the first bad byte and its offset;
        unless ``replace_invalid``), or holds fewer than two characters.
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the text file {str(path)!r}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not check_bool(replace_invalid, "replace_invalid"):
            raise ValueError(
                f"the text file {str(path)!r} is not valid UTF-8: byte 0x{data[exc.start]:02x} at "
                f"offset {exc.start} ({exc.reason}); give a UTF-8 text, or read such bytes as "
                f"U+FFFD with replace_invalid=True (rnnfast train --replace-invalid-utf8)"
            ) from None
        text = data.decode("utf-8", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as open()'s
    if len(text) < 2:
        raise ValueError(f"the text file {str(path)!r} must hold at least 2 characters; it "
                         f"holds {len(text)}")
    return text


def default_corpus(max_chars=DEFAULT_CORPUS_CHARS):
    """Source code of Python's standard library: its top-level modules in name order,
    concatenated up to ``max_chars`` characters. Present wherever Python is, no download.

    Returns
    -------
    text : str
    description : str
        Where the text came from, for messages.
    """
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    pieces, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        piece = path.read_text(encoding="utf-8", errors="replace")
        pieces.append(piece[: max_chars - total])
        total += len(pieces[-1])
        if total >= max_chars:
            break
    if total < 2:
        raise ValueError(f"no Python standard library sources were found in {str(stdlib)!r}; "
                         f"pass a text file to train on")
    return "".join(pieces), f"{total:,} characters of the Python standard library ({stdlib})"


def fingerprint(text):
    """A short hash of a text, to tell on resume whether it is the text a run started on."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def split_tail(ids, fraction=0.05, max_tail=100_000):
    """The training head and the held-out tail of a token sequence.

    The tail is the last ``fraction`` of the ids, at most ``max_tail`` of them (validation reads
    it in full, so it is kept small), and at least 2 (one input, one target).
    """
    n_tail = int(min(max(len(ids) * fraction, 2), max_tail))
    if len(ids) - n_tail < 2:
        raise ValueError(f"the text has {len(ids)} characters: too short to hold out "
                         f"{n_tail} for validation and still train; give at least "
                         f"{n_tail + 2} characters")
    return ids[:-n_tail], ids[-n_tail:]


def unigram_cross_entropy(train_ids, eval_ids, vocab_size):
    """Nats per character of the best model that ignores context: character frequencies of the
    training ids (add-one smoothed, so unseen characters have a finite cost), scored on
    ``eval_ids``. The baseline a sequence model must beat."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[eval_ids].mean())
