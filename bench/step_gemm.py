"""The large steps alone, one core: rnnfast's packed GEMM against SciPy's BLAS and the GEMM peak.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step_gemm.py [--seconds S]

For each (B, H) and dtype, interleaved rounds (rnnfast.benchmarking.timing) of:
  gemm        rnnfast's forward pass with D = 1 (the input projection is negligible), every
              step on its own GEMM (switches.forced_step): T steps of h_t = tanh(P_t + h W^T)
  blas step   the same pass with the steps on SciPy's BLAS (one sgemm/dgemm call a step, then
              the activation)
  sgemm alone T calls of SciPy's GEMM on the step's sizes, (B, H) @ (H, H), Fortran order (no
              copies), nothing else
and the backward pass the same way (need_dx and weight gradients off: the time loop only).
GFLOP/s count 2 B H^2 per step; "% peak" is against the best n x n GEMM of NumPy and SciPy
(n = 1024, 2048) measured in the same run. A plain script, not a pytest-benchmark group: it
prints a table for the README (Performance).
"""
import argparse

import numpy as np
from scipy.linalg import blas as scipy_blas
from threadpoolctl import threadpool_limits

import rnnfast
from rnnfast._kernels import backend
from rnnfast._kernels.entry import backward_arrays
from rnnfast.benchmarking.timing import gemm_throughput, pinned_to_one_core, time_interleaved

SHAPES = [(32, 128), (32, 256), (64, 256), (64, 512), (256, 64), (128, 1024), (16, 256)]


def candidates(B, H, dtype, T):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, 1)).astype(dtype)
    W_xh = rng.standard_normal((H, 1)).astype(dtype)
    W_hh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    switches = backend.switches

    def forward(step):
        def run():
            switches.forced_step = step
            rnnfast.rnn_forward(x, h0, W_xh, W_hh, None, n_threads=1, need_grad=False)
        return run

    out, _ = rnnfast.rnn_forward(x, h0, W_xh, W_hh, None, n_threads=1)

    def backward(step):
        def run():
            switches.forced_step = step
            backward_arrays(dout, None, x, h0, W_xh, W_hh, False, out, None, "tanh", 1, None,
                            None, False, need_dx=False, need_weight_grads=False)
        return run

    gemm = scipy_blas.get_blas_funcs("gemm", dtype=dtype)
    a = np.asfortranarray(W_hh.T)  # C^T = W_hh @ X^T in Fortran order: C = X @ W_hh.T
    b = np.asfortranarray(h0.T)
    c = np.zeros((H, B), dtype=dtype, order="F")

    def sgemm_alone():
        for _ in range(T):
            gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1)

    return {"fwd gemm": forward("gemm"), "fwd blas step": forward("blas"),
            "bwd gemm": backward("gemm"), "bwd blas step": backward("blas"),
            "sgemm alone": sgemm_alone}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per shape and dtype")
    parser.add_argument("--T", type=int, default=20, help="steps per pass")
    args = parser.parse_args()
    with pinned_to_one_core(), threadpool_limits(1):
        peaks = {}
        for dtype in (np.float32, np.float64):
            peaks[dtype] = max(max(gemm_throughput(dtype, library).values())
                               for library in ("numpy", "scipy"))
            print(f"GEMM peak {np.dtype(dtype).name}: {peaks[dtype]:.1f} GFLOP/s")
        names = None
        for B, H in SHAPES:
            for dtype in (np.float32, np.float64):
                runners = candidates(B, H, dtype, args.T)
                samples, _ = time_interleaved(runners, args.seconds, min_windows=5)
                flops = 2 * args.T * B * H * H
                rate = {k: flops / np.median(v) / 1e9 for k, v in samples.items()}
                if names is None:
                    names = list(runners)
                    print(f"{'B,H':>9} {'dtype':7} " + " ".join(f"{n:>13}" for n in names)
                          + "   GFLOP/s, % of peak; gemm / sgemm alone")
                cells = " ".join(f"{rate[n]:6.1f} {100 * rate[n] / peaks[dtype]:5.1f}%"
                                 for n in names)
                print(f"{B:>4},{H:<4} {np.dtype(dtype).name:7} {cells}   "
                      f"fwd {rate['fwd gemm'] / rate['sgemm alone']:.2f}x "
                      f"bwd {rate['bwd gemm'] / rate['sgemm alone']:.2f}x", flush=True)
    backend.switches.forced_step = None


if __name__ == "__main__":
    main()
