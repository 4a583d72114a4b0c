"""`rnnfast reservoir`: fit an ESN on Mackey-Glass, print the one-step and free-running NRMSE
and the times, draw the picture; refuse what it cannot do, before any work."""
import re

import pytest

from rnnfast.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _nrmse(printed, what):
    """The NRMSE by the std and by the range on the line that starts with ``what``."""
    line = next(line for line in printed.splitlines() if line.strip().startswith(what))
    by_std, by_range = re.findall(r"NRMSE ([0-9.e+-]+) \(by the std\), ([0-9.e+-]+)", line)[0]
    return float(by_std), float(by_range)


@pytest.fixture(scope="module")
def quick_run():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["reservoir", "--quick"]) == 0
    return out.getvalue()


def test_the_quick_run_learns_mackey_glass(quick_run):
    assert "Mackey-Glass, tau = 17" in quick_run and "200 units" in quick_run
    one_step = _nrmse(quick_run, "one-step prediction")
    free = _nrmse(quick_run, "free-running")
    # A trained ESN predicts one step far better than the mean (NRMSE 1) and the free-running
    # forecast of 100 steps stays close; the range is ~4 standard deviations of the series.
    assert one_step[0] < 1e-2 and free[0] < 0.3
    assert 2 < one_step[0] / one_step[1] < 6
    assert re.search(r"fit on 1500 steps \(100 of warm-up\): [0-9.]+ s", quick_run)


def test_the_picture(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "mg.png"
    assert main(["reservoir", "--quick", "--units", "50", "--png", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("arguments, words", [
    (["--leak", "1.5"], "--leak must be in"),
    (["--connectivity", "2"], "--connectivity must be in"),
    (["--warmup", "2000"], "--warmup"),
    (["--png", "/no/such/folder/x.png"], "does not exist"),
    (["--tau", "17.05"], "tau"),
])
def test_bad_options_are_refused_before_any_work(arguments, words, capsys):
    if "--png" in arguments:  # without matplotlib, that is what the command says first
        pytest.importorskip("matplotlib")
    assert main(["reservoir", "--quick"] + arguments) == 2
    assert words in capsys.readouterr().err


def test_argparse_refuses_what_is_not_a_number(capsys):
    with pytest.raises(SystemExit):
        main(["reservoir", "--units", "many"])
    assert "--units" in capsys.readouterr().err
