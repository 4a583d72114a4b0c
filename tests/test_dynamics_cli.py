"""`rnnfast dynamics`: train on the 3-bit flip-flop, find the fixed points, print them; load the
saved network again; draw the picture; refuse what it cannot do, before any work."""
import re
import sys

import numpy as np
import pytest

from rnnfast.charlm import CharRNN, Vocabulary, model_checkpoint
from rnnfast.cli import main
from rnnfast.tasks import load_task_model
from rnnfast.train import checkpoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`rnnfast dynamics --quick` once: (its output, the checkpoint it saved)."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("dynamics") / "flipflop.npz"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["dynamics", "--quick", "--save", str(path)]) == 0
    return out.getvalue(), path


def _counts(printed):
    match = re.search(r"(\d+) stable, (\d+) saddles", printed)
    return int(match.group(1)), int(match.group(2))


def test_the_quick_run_trains_a_flip_flop_with_8_stable_points_and_saddles(quick_run):
    printed, path = quick_run
    assert "3-bit flip-flop" in printed and "accuracy 100.0%" in printed
    stable, saddles = _counts(printed)
    assert stable == 8 and saddles >= 6
    assert f"saved {path}" in printed and path.exists()
    # One table row per point; the stable ones read out the 8 corners (+-1, +-1, +-1).
    rows = [line.split() for line in printed.splitlines()
            if re.match(r"\s+\d+\s+stable\s+0\s", line)]
    readouts = {tuple(np.sign(float(v.strip("(),"))) for v in row[-3:]) for row in rows}
    assert len(rows) == 8 and len(readouts) == 8


def test_a_saved_network_is_analysed_again(quick_run, capsys):
    printed, path = quick_run
    assert main(["dynamics", "--checkpoint", str(path), "--inits", "256"]) == 0
    again = capsys.readouterr().out
    assert "training" not in again and f"{path}: 3-bit flip-flop" in again
    assert _counts(again) == _counts(printed)


def test_the_picture(quick_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, path = quick_run
    png = tmp_path / "points.png"
    assert main(["dynamics", "--checkpoint", str(path), "--inits", "128", "--png",
                 str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {png}" in capsys.readouterr().out


def test_png_without_matplotlib_is_an_error_before_any_work(monkeypatch, capsys, tmp_path):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["dynamics", "--quick", "--save", str(tmp_path / "x.npz"), "--png",
                 str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert "--png needs matplotlib" in captured.err and captured.out == ""
    assert not (tmp_path / "x.npz").exists()


def test_another_task_is_searched_under_its_delay_input(tmp_path, capsys):
    assert main(["dynamics", "--task", "decision", "--quick", "--steps", "50", "--save",
                 str(tmp_path / "decision.npz")]) == 0
    printed = capsys.readouterr().out
    assert "perceptual decision making" in printed and "identity initial W_hh" in printed
    assert "lr 0.001" in printed and "constant input x = (1, 0)" in printed


def test_a_leaky_noisy_network_is_trained_saved_and_analysed_again(tmp_path, capsys):
    path = tmp_path / "leaky.npz"
    assert main(["dynamics", "--quick", "--leak", "0.5", "--noise-std", "0.01", "--save",
                 str(path)]) == 0
    printed = capsys.readouterr().out
    assert "leak α = 0.5, recurrent noise σ = 0.01" in printed and "stable" in printed
    model, _ = load_task_model(path)
    assert model.config["leak"] == 0.5 and np.all(model.rnn.leak == 0.5)
    assert main(["dynamics", "--checkpoint", str(path), "--inits", "64"]) == 0
    assert "leak α = 0.5" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan"])
def test_a_leak_outside_0_1_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        main(["dynamics", "--quick", "--leak", value])
    assert "--leak: expected a number in (0, 1]" in capsys.readouterr().err


def test_bad_checkpoints_and_inputs_are_clear_errors(quick_run, tmp_path, capsys):
    _, path = quick_run
    assert main(["dynamics", "--checkpoint", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    model = CharRNN(5, hidden_size=4, embedding_dim=3, seed=0)
    language = tmp_path / "charlm.npz"
    checkpoint.save(language, *model_checkpoint(model, Vocabulary("abcde")))
    assert main(["dynamics", "--checkpoint", str(language)]) == 2
    assert "does not hold a task model" in capsys.readouterr().err
    assert main(["dynamics", "--checkpoint", str(path), "--input", "1,2"]) == 2
    assert "--input must have 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dynamics", "--task", "stroop"])
