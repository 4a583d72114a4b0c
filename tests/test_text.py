"""Text for the language model (rnnfast.charlm.text) and the streams of truncated BPTT
(rnnfast.train.streams): vocabularies, the default corpus, the held-out tail, the unigram baseline,
and which tokens each chunk holds."""
import collections
import math

import numpy as np
import pytest

from rnnfast.train.streams import TokenStreams
from rnnfast.charlm.text import (Vocabulary, default_corpus, read_text, split_tail,
                          unigram_cross_entropy)


# -- vocabulary ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["hello world", "déjà vu ∑ 😀\n\t", "a"])
def test_encode_decode_round_trip(text):
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    # ids index the sorted characters
    assert [vocab.chars[i] for i in ids] == list(text)
    assert list(vocab.chars) == sorted(set(text))


def test_encode_names_unknown_characters():
    vocab = Vocabulary("abc")
    with pytest.raises(ValueError, match=r"prime has 2 character\(s\).*'xz'.*knows 3"):
        vocab.encode("axzb", "prime")


def test_vocabulary_errors():
    with pytest.raises(ValueError, match="at least one"):
        Vocabulary("")
    with pytest.raises(ValueError, match="repeat"):
        Vocabulary("aba")
    with pytest.raises(TypeError, match="str"):
        Vocabulary(["a", "b"])


# -- corpus and split ------------------------------------------------------------------------

def test_default_corpus_is_python_source():
    text, description = default_corpus(max_chars=20_000)
    assert len(text) == 20_000
    assert "def " in text and "import " in text and "\n    " in text
    assert "standard library" in description


def test_read_text_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read the text file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "one.txt").write_text("x")
    with pytest.raises(ValueError, match="at least 2 characters"):
        read_text(tmp_path / "one.txt")


def test_read_text_refuses_invalid_utf8_naming_the_first_bad_byte(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes("héllo wörld\n".encode() + b"\xc3(" + b"rest")
    with pytest.raises(ValueError) as excinfo:
        read_text(path)
    message = str(excinfo.value)
    assert str(path) in message and "not valid UTF-8" in message
    assert "byte 0xc3 at offset 14" in message and "replace_invalid=True" in message
    text = read_text(path, replace_invalid=True)
    assert text == "héllo wörld\n\ufffd(rest"
    with pytest.raises(TypeError, match="replace_invalid must be a bool"):
        read_text(path, replace_invalid="yes")


def test_read_text_reads_newlines_as_open_does(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\rc\n")
    assert read_text(path) == "a\nb\nc\n"


def test_split_tail():
    ids = np.arange(1000)
    head, tail = split_tail(ids, fraction=0.1, max_tail=50)
    assert np.array_equal(np.concatenate([head, tail]), ids)
    assert len(tail) == 50
    head, tail = split_tail(ids, fraction=0.01)
    assert len(tail) == 10
    with pytest.raises(ValueError, match="too short"):
        split_tail(np.arange(3))


def test_unigram_cross_entropy_matches_counting():
    train, test = "aaabbc", "abcaa"
    vocab = Vocabulary("abcd")
    counts = collections.Counter(train)
    total = len(train) + 4  # add-one over 4 characters
    expected = -sum(math.log((counts[c] + 1) / total) for c in test) / len(test)
    got = unigram_cross_entropy(vocab.encode(train), vocab.encode(test), len(vocab))
    assert got == pytest.approx(expected, rel=1e-12)


# -- streams ---------------------------------------------------------------------------------

def read_epoch(streams):
    chunks = []
    while True:
        inputs, targets, starts = streams.next_chunk()
        chunks.append((inputs, targets, starts))
        if streams.position == 0:
            return chunks


@pytest.mark.parametrize("n, batch, seq_len", [(101, 4, 7), (50, 1, 49), (50, 1, 100),
                                               (9, 8, 3), (1000, 7, 16)])
def test_each_row_reads_its_segment_in_order(n, batch, seq_len):
    tokens = np.arange(n) * 3 + 1  # distinct values, so positions can be recovered
    streams = TokenStreams(tokens, batch, seq_len)
    segment = (n - 1) // batch
    chunks = read_epoch(streams)
    assert [starts for _, _, starts in chunks] == [True] + [False] * (len(chunks) - 1)
    assert all(inputs.shape[0] == min(seq_len, segment - k * seq_len)
               for k, (inputs, _, _) in enumerate(chunks))
    inputs = np.concatenate([c[0] for c in chunks])
    targets = np.concatenate([c[1] for c in chunks])
    for b in range(batch):
        start = b * segment
        assert np.array_equal(inputs[:, b], tokens[start:start + segment])
        assert np.array_equal(targets[:, b], tokens[start + 1:start + segment + 1])
    assert streams.epoch == 1
    # the next epoch reads the same again
    again = read_epoch(streams)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(chunks, again))


def test_streams_state_round_trip():
    tokens = np.arange(500)
    a = TokenStreams(tokens, 3, 10)
    for _ in range(5):
        a.next_chunk()
    b = TokenStreams(tokens, 3, 10)
    b.load_state_dict(a.state_dict())
    for _ in range(30):  # across an epoch boundary
        (ia, ta, sa), (ib, tb, sb) = a.next_chunk(), b.next_chunk()
        assert np.array_equal(ia, ib) and np.array_equal(ta, tb) and sa == sb


def test_streams_errors():
    with pytest.raises(ValueError, match="at least batch_size \\+ 1 = 5"):
        TokenStreams(np.arange(4), 4, 3)
    with pytest.raises(TypeError, match="tokens must have an integer dtype"):
        TokenStreams(np.zeros(10), 2, 3)
    with pytest.raises(ValueError, match="seq_len"):
        TokenStreams(np.arange(10), 2, 0)
    streams = TokenStreams(np.arange(100), 3, 5)
    with pytest.raises(ValueError, match=r"position.*\[0, 33\)"):
        streams.load_state_dict({"position": 33, "epoch": 0})
    with pytest.raises(ValueError, match="missing the key 'epoch'"):
        streams.load_state_dict({"position": 3})
    with pytest.raises(TypeError, match="'position'.*int"):
        streams.load_state_dict({"position": 1.5, "epoch": 0})
