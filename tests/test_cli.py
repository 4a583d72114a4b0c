"""The command line: `rnnfast` / `python -m rnnfast` (demo, the default) and `rnnfast bench`, and
the RNNFAST_KERNEL override of the kernel build."""
import json
import os
import subprocess
import sys

import pytest

from rnnfast._kernels import backend as _cython_backend
from rnnfast.cli.main import main

TINY_DEMO = ["-T", "3", "-B", "2", "-D", "2", "-H", "5", "--repeat", "1"]


@pytest.mark.parametrize("argv", [TINY_DEMO, ["demo"] + TINY_DEMO,
                                  TINY_DEMO + ["--dtype", "float64", "--nonlinearity", "relu"]])
def test_demo_reports_agreement_and_speed(argv, capsys):
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "T=3 B=2 D=2 H=5" in printed
    for name in ("out", "dx", "dh0", "dW_xh", "dW_hh", "db"):
        assert f"  {name} " in printed
    assert "speed-up of cython over numpy" in printed


@pytest.mark.parametrize("argv", [["-B", "0"], ["--dtype", "float16"], ["--nonlinearity", "x"],
                                  ["no-such-command"]])
def test_demo_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bench_runs_a_tiny_grid_and_writes_json(tmp_path, capsys):
    report = tmp_path / "bench.json"
    code = main(["bench", "--shapes", "3,1,2,5", "--dtype", "float32", "--pass", "forward",
                 "--no-torch", "--budget", "0.05", "--json", str(report)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "3,1,2,5" in printed and "float32" in printed
    data = json.loads(report.read_text())
    assert data  # the measurements and the machine, as JSON


def _import_kernel_with(env_value):
    env = dict(os.environ, RNNFAST_KERNEL=env_value)
    code = "import rnnfast._kernels.backend as c; print(c.KERNEL)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("build", list(_cython_backend.KERNEL_BUILDS))
def test_kernel_build_can_be_forced(build):
    result = _import_kernel_with(build)
    assert result.returncode == 0 and result.stdout.strip() == build


def test_unknown_kernel_build_is_an_import_error_naming_the_choices():
    result = _import_kernel_with("avx1024")
    assert result.returncode != 0
    assert "RNNFAST_KERNEL='avx1024'" in result.stderr and "baseline" in result.stderr


def _typed_options():
    """(command, option) for every option of every command whose value argparse converts."""
    import argparse

    from rnnfast.cli.main import build_parser

    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    return [(name, action.option_strings[-1]) for name, sub in commands.choices.items()
            for action in sub._actions if action.type is not None and action.option_strings]


def test_every_typed_option_is_covered():
    options = _typed_options()
    assert ("train", "--minutes") in options and ("bench", "--shapes") in options
    assert ("demo", "-B") in options and ("diagnose", "--radii") in options


@pytest.mark.parametrize("command, option", _typed_options())
def test_a_bad_option_value_says_in_words_what_was_expected(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, option, "abc"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # below the usage lines
    assert error.startswith(f"rnnfast {command}: error: argument ") and option in error
    assert ": expected " in error  # the value expected, in words
    assert "invalid" not in error and "'abc'" in error


def test_a_picture_that_cannot_be_written_is_an_error_naming_the_file(tmp_path):
    pytest.importorskip("matplotlib")
    from rnnfast.cli import figures

    Figure = figures.figure_class()
    assert figures.write_png(Figure(figsize=(1, 1)), str(tmp_path / "ok.png")) is None
    assert (tmp_path / "ok.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = tmp_path / "a folder.png"
    folder.mkdir()
    problem = figures.write_png(Figure(figsize=(1, 1)), str(folder))
    assert problem.startswith(f"cannot write {folder}")


def test_reservoir_png_onto_a_folder_is_refused(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "a folder.png"
    folder.mkdir()
    assert main(["reservoir", "--quick", "--png", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "--png: cannot write" in err and str(folder) in err
