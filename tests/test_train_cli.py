"""`rnnfast train` and `rnnfast sample` as a user runs them: output, checkpoints, resuming to the
same state as an uninterrupted run, reproducibility, Ctrl-C, and clear errors."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnfast.train import checkpoint
from rnnfast import cli

SMALL = ["--hidden-size", "12", "--embedding-size", "5", "--batch-size", "4", "--seq-len", "8",
         "--eval-every", "3", "--sample-every", "4", "--sample-length", "20"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    lines = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(120)]
    path.write_text("".join(lines))
    return path


@pytest.fixture(autouse=True)
def in_a_fresh_folder(tmp_path, monkeypatch):
    """Every test runs where no rnnfast-charlm.npz lies (the main job leaves one in the clone's
    root, which a fresh run rightly refuses to overwrite)."""
    monkeypatch.chdir(tmp_path)


def train(capsys, *args):
    code = cli.main(["train", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def arrays(path, section):
    return checkpoint.load(path).section(section)


def assert_same_run(a, b):
    for section in ("model", "optimizer", "trainer"):
        sa, sb = arrays(a, section), arrays(b, section)
        assert sa.keys() == sb.keys()
        for key in sa:
            assert np.array_equal(sa[key], sb[key]), f"{section}/{key}"


def test_train_prints_progress_samples_and_saves(tmp_path, text_file, capsys):
    ckpt = tmp_path / "run.npz"
    code, out, err = train(capsys, text_file, "--steps", 8, "--checkpoint", ckpt, *SMALL)
    assert code == 0
    assert "unigram baseline" in out and "----- sample at step 4" in out
    assert "step 8/8" in err and "loss" in err and "chars/s" in err
    assert "validation" in out and f"checkpoint: {ckpt}" in out
    saved = checkpoint.load(ckpt)
    assert saved.meta["training"]["hidden_size"] == 12
    assert [row["step"] for row in saved.meta["history"]] == [3, 6, 8]
    assert int(saved.section("trainer")["steps"]) == 8
    assert int(saved.section("optimizer")["step"]) == 8

    code = cli.main(["sample", str(ckpt), "--length", "30", "--prime", "def ", "--seed", "3"])
    first = capsys.readouterr().out
    assert code == 0 and first.startswith("def ") and len(first) == len("def ") + 30 + 1
    cli.main(["sample", str(ckpt), "--length", "30", "--prime", "def ", "--seed", "3"])
    assert capsys.readouterr().out == first


def test_same_seed_same_run_other_seed_other_run(tmp_path, text_file, capsys):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train(capsys, text_file, "--steps", 5, "--seed", seed, "--checkpoint",
              tmp_path / f"{name}.npz", *SMALL)
    assert_same_run(tmp_path / "a.npz", tmp_path / "b.npz")
    a, c = arrays(tmp_path / "a.npz", "model"), arrays(tmp_path / "c.npz", "model")
    assert not np.array_equal(a["rnn.weight_hh_l0"], c["rnn.weight_hh_l0"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adagrad"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, text_file, capsys, optimizer):
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    common = [text_file, "--optimizer", optimizer, "--dropout", "0.2", "--layers", "2", *SMALL]
    train(capsys, *common, "--steps", 11, "--checkpoint", whole)
    train(capsys, *common, "--steps", 6, "--checkpoint", part)
    code, out, _ = train(capsys, text_file, "--resume", part, "--steps", 11)
    assert code == 0 and "resuming at step 6" in out
    assert_same_run(whole, part)


def test_resume_finds_the_text_and_checks_it(tmp_path, text_file, capsys):
    ckpt = tmp_path / "run.npz"
    train(capsys, text_file, "--steps", 2, "--checkpoint", ckpt, *SMALL)
    code, _, _ = train(capsys, "--resume", ckpt, "--steps", 3)  # the saved path is used
    assert code == 0
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text() + "more")
    code, _, err = train(capsys, other, "--resume", ckpt, "--steps", 4)
    assert code == 2 and "not the text the checkpoint was trained on" in err
    code, _, err = train(capsys, "--resume", ckpt, "--steps", 4, "--hidden-size", 64)
    assert code == 2 and "--hidden-size 64 (the checkpoint has 12)" in err


def test_lr_and_clipping_may_change_on_resume(tmp_path, text_file, capsys):
    ckpt = tmp_path / "run.npz"
    train(capsys, text_file, "--steps", 2, "--checkpoint", ckpt, *SMALL)
    train(capsys, "--resume", ckpt, "--steps", 3, "--lr", "0.0001", "--clip-norm", "1")
    saved = checkpoint.load(ckpt)
    assert saved.meta["training"]["lr"] == 0.0001 and saved.meta["training"]["clip_norm"] == 1
    assert float(saved.section("optimizer")["lr"]) == 0.0001


def test_default_corpus_runs(tmp_path, capsys):
    code, out, _ = train(capsys, "--steps", 1, "--checkpoint", tmp_path / "d.npz", *SMALL)
    assert code == 0 and "Python standard library" in out


def test_bad_input_gives_clear_errors(tmp_path, text_file, capsys):
    code, _, err = train(capsys, tmp_path / "missing.txt", "--steps", 1)
    assert code == 2 and "cannot read the text file" in err
    short = tmp_path / "short.txt"
    short.write_text("abcdef")
    code, _, err = train(capsys, short, "--steps", 1, "--batch-size", "8")
    assert code == 2 and "batch_size + 1" in err
    code, _, err = train(capsys, "--resume", tmp_path / "missing.npz")
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit):
        train(capsys, text_file, "--lr", "-1")
    assert "--lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(capsys, text_file, "--seed", "-1")
    assert "--seed: expected an integer >= 0; got '-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(capsys, text_file, "--dropout", "1.5")
    assert "--dropout: expected a number in [0, 1); got '1.5'" in capsys.readouterr().err
    ckpt = tmp_path / "run.npz"
    train(capsys, text_file, "--steps", 1, "--checkpoint", ckpt, *SMALL)
    assert cli.main(["sample", str(ckpt), "--prime", "☃"]) == 2
    assert "vocabulary does not know: '☃'" in capsys.readouterr().err
    (tmp_path / "broken.npz").write_bytes(ckpt.read_bytes()[:100])
    assert cli.main(["sample", str(tmp_path / "broken.npz")]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err


def test_non_finite_training_stops_without_overwriting(tmp_path, text_file, capsys):
    ckpt = tmp_path / "run.npz"
    train(capsys, text_file, "--steps", 2, "--checkpoint", ckpt, *SMALL)
    before = ckpt.read_bytes()
    code, _, err = train(capsys, "--resume", ckpt, "--steps", 5, "--lr", "1e38")
    assert code == 1 and "step 3: the optimizer's update overflowed" in err
    assert ckpt.read_bytes() == before


def test_ctrl_c_saves_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path, text_file,
                                                                        capsys):
    ckpt = tmp_path / "run.npz"
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnfast", "train", str(text_file), "--minutes", "5",
         "--checkpoint", str(ckpt), *SMALL, "--eval-every", "100000", "--layers", "2",
         "--dropout", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        # The progress line goes to stderr once training runs (non-terminal: a line at once).
        line = process.stderr.readline()
        while line and not line.startswith("step"):
            line = process.stderr.readline()
        assert line.startswith("step"), "training never started"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err  # a script can tell it from a finished run
    assert "Ctrl-C: stopping" in err and "interrupted: step" in out
    steps = int(checkpoint.load(ckpt).section("trainer")["steps"])
    assert steps >= 1
    resumed = subprocess.run(
        [sys.executable, "-m", "rnnfast", "train", "--resume", str(ckpt), "--steps",
         str(steps + 2)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error"})
    assert resumed.returncode == 0, resumed.stderr
    assert int(checkpoint.load(ckpt).section("trainer")["steps"]) == steps + 2
    whole = tmp_path / "whole.npz"
    train(capsys, text_file, "--steps", steps + 2, "--checkpoint", whole, *SMALL,
          "--eval-every", "100000", "--layers", "2", "--dropout", "0.1")
    assert_same_run(whole, ckpt)


# -- what a new user hit -----------------------------------------------------------------------

def test_a_fresh_run_does_not_overwrite_an_existing_checkpoint(tmp_path, text_file, capsys,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default checkpoint, rnnfast-charlm.npz, is written here
    code, _, _ = train(capsys, text_file, "--steps", 2, *SMALL)
    assert code == 0
    default = tmp_path / "rnnfast-charlm.npz"
    before = default.read_bytes()
    other = tmp_path / "other.txt"
    other.write_text("another text, another run\n" * 50)
    code, out, err = train(capsys, other, "--steps", 2, *SMALL)  # a fresh run, same file
    assert code == 2 and out == ""  # refused before any work
    assert "rnnfast-charlm.npz already exists" in err
    assert "--resume rnnfast-charlm.npz" in err and "--overwrite" in err
    assert "--checkpoint NEW.npz" in err
    assert default.read_bytes() == before
    # A resumed run may write its own file, but not another run's.
    mine = tmp_path / "mine.npz"
    train(capsys, other, "--steps", 2, "--checkpoint", mine, *SMALL)
    code, _, err = train(capsys, "--resume", mine, "--steps", 3, "--checkpoint", default)
    assert code == 2 and "already exists" in err and default.read_bytes() == before
    code, _, _ = train(capsys, "--resume", mine, "--steps", 3)
    assert code == 0 and int(checkpoint.load(mine).section("trainer")["steps"]) == 3
    # Asked for explicitly, a fresh run replaces the file.
    code, _, _ = train(capsys, other, "--steps", 2, "--overwrite", *SMALL)
    assert code == 0 and default.read_bytes() != before
    assert checkpoint.load(default).meta["corpus"]["path"] == str(other)


def test_train_help_says_how_checkpoints_are_kept_and_what_the_exit_status_means(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "A fresh run does not overwrite an existing checkpoint" in help_text
    assert "--overwrite" in help_text and "--resume FILE" in help_text
    assert "130 after Ctrl-C" in help_text


def test_invalid_utf8_is_an_error_naming_the_file_and_the_byte_unless_replacement_is_asked(
        tmp_path, capsys):
    binary = tmp_path / "data.bin"
    head = ("def f(x):\n    return x\n" * 30).encode()
    binary.write_bytes(head + b"\x00\xff\xfe" + b"ab" * 50)  # NUL is UTF-8; 0xff is not
    code, out, err = train(capsys, binary, "--steps", 1, "--checkpoint", tmp_path / "b.npz",
                           *SMALL)
    assert code == 2 and out == "" and not (tmp_path / "b.npz").exists()
    assert str(binary) in err and "not valid UTF-8" in err
    assert f"byte 0xff at offset {len(head) + 1}" in err and "--replace-invalid-utf8" in err
    code, out, _ = train(capsys, binary, "--steps", 1, "--checkpoint", tmp_path / "b.npz",
                         "--replace-invalid-utf8", *SMALL)
    assert code == 0
    corpus = checkpoint.load(tmp_path / "b.npz").meta["corpus"]
    assert corpus["replace_invalid"] is True
    code, _, _ = train(capsys, "--resume", tmp_path / "b.npz", "--steps", 2)  # read the same way
    assert code == 0


def test_sample_prints_what_generate_returns(tmp_path, text_file, capsys):
    from rnnfast.charlm import generate, load_model

    ckpt = tmp_path / "run.npz"
    train(capsys, text_file, "--steps", 2, "--checkpoint", ckpt, *SMALL)
    assert cli.main(["sample", str(ckpt), "--length", "25", "--prime", "def", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    model, vocab = load_model(ckpt)
    assert printed == generate(model, vocab, 25, prime="def", temperature=0.8, seed=4) + "\n"
    assert printed.startswith("def")


def _start_training(tmp_path, text_file, *extra):
    """A training run in a child process, returned once its progress line shows."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnfast", "train", str(text_file), "--minutes", "5",
         "--checkpoint", str(tmp_path / "run.npz"), *SMALL, "--eval-every", "100000", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    line = process.stderr.readline()
    while line and not line.startswith("step"):
        line = process.stderr.readline()
    assert line.startswith("step"), "training never started"
    return process


def test_a_second_ctrl_c_aborts_with_one_line_and_status_130(tmp_path, text_file):
    # A long final sample keeps the run busy after the first Ctrl-C, so that the second one
    # arrives while it still works.
    process = _start_training(tmp_path, text_file, "--sample-every", "100000",
                              "--sample-length", "100000")
    try:
        process.send_signal(signal.SIGINT)
        line = process.stderr.readline()
        while line and not line.startswith("Ctrl-C: stopping"):
            line = process.stderr.readline()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1].startswith("rnnfast train: aborted by a second Ctrl-C")
    assert len([line for line in err.splitlines() if "aborted" in line]) == 1
    if (tmp_path / "run.npz").exists():  # saved before the second Ctrl-C: a whole checkpoint
        checkpoint.load(tmp_path / "run.npz")
