"""`rnnfast bench --plot`: the batch sweep (rnnfast.benchmarking.sweep_batches) and its picture,
on a tiny grid with one timing window per candidate (a second or two)."""
import numpy as np
import pytest

from rnnfast import benchmarking
from rnnfast.cli import figures
from rnnfast.cli.main import main
from rnnfast.utils.threads import available_cores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMPLS = ["cython", "numpy", "numpy-batched"]
BATCHES = (1, 3)
TINY = dict(T=2, D=3, H=5, timing=benchmarking.timing_settings(rounds=1), gemm_sizes=(32,))
THREADS = (1, 2) if available_cores() >= 2 else (1,)


@pytest.fixture(scope="module")
def sweep():
    pytest.importorskip("threadpoolctl")
    return benchmarking.sweep_batches(IMPLS, BATCHES, **TINY)


def test_the_sweep_measures_every_batch_on_one_and_two_threads(sweep):
    assert tuple(sweep.runs) == THREADS
    for n_threads, run in sweep.runs.items():
        assert run.threads == n_threads
        assert [row.shape for row in run.rows] == [(2, B, 3, 5) for B in BATCHES]
        assert all(row.pass_name == "forward+backward" and row.dtype == "float32"
                   for row in run.rows)
        for impl in IMPLS:
            assert all(np.isfinite(g) and g > 0 for g in sweep.gflops(impl, n_threads))
        assert sweep.gemm_peak(n_threads) > 0


def test_the_figure_draws_every_candidate_but_the_reference(sweep):
    Figure = figures.figure_class()
    if Figure is None:
        pytest.skip("matplotlib is not installed")
    labels = {"cython": "rnnfast", "numpy": "numpy ref", "numpy-batched": "np batched"}
    ax = figures.batch_sweep_figure(Figure, sweep, labels).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    expected = set()
    for n in THREADS:
        word = "thread" if n == 1 else "threads"
        expected |= {f"rnnfast, {n} {word}", f"np batched, {n} {word}", f"GEMM peak, {n} {word}"}
        for impl in ("cython", "numpy-batched"):
            line = lines[f"{labels[impl]}, {n} {word}"]
            np.testing.assert_array_equal(line.get_xdata(), BATCHES)
            np.testing.assert_allclose(line.get_ydata(), sweep.gflops(impl, n))
        peak = lines[f"GEMM peak, {n} {word}"].get_ydata()
        np.testing.assert_allclose(peak, sweep.gemm_peak(n))
    assert set(lines) == expected


def test_the_command_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("threadpoolctl")
    png = tmp_path / "bench.png"
    assert main(["bench", "--plot", str(png), "--plot-batches", "1", "3", "--plot-shape",
                 "2,3,5", "--rounds", "1", "--gemm-sizes", "32", "--exclude", "numba", "jax",
                 "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {png}" in out and "B=3" in out
    assert png.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("problem, words", [("no folder", "no folder"),
                                            ("no matplotlib", "--plot needs matplotlib")])
def test_the_command_refuses_before_any_work(problem, words, tmp_path, monkeypatch, capsys):
    pytest.importorskip("threadpoolctl")
    png = tmp_path / "bench.png"
    if problem == "no folder":
        pytest.importorskip("matplotlib")  # without it, that is what the command says first
        png = tmp_path / "missing" / "bench.png"
    else:
        monkeypatch.setattr(figures, "matplotlib_installed", lambda: False)
    assert main(["bench", "--plot", str(png)]) == 2
    assert words in capsys.readouterr().err
    assert not png.exists()
