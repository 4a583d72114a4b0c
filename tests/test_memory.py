"""Memory: beyond its outputs, a forward + backward pass allocates one (T, B, H) buffer (da) and
O(B*H + H*H) scratch, whatever the path. Measured with tracemalloc, which sees NumPy's buffers."""
import tracemalloc

import numpy as np
import pytest

import rnnfast
from rnn_helpers import PATHS, force_path, make_problem

SLACK_BYTES = 64 * 1024  # Python objects, NumPy array headers, tracemalloc's own records


def peak_allocation(call):
    """Bytes allocated at the peak of call(), above what was allocated before it; and its result."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, result


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(200, 4, 16, 96), (50, 33, 8, 64)], ids=["long", "wide"])
def test_forward_and_backward_allocate_only_outputs_one_buffer_and_scratch(path, shape,
                                                                           monkeypatch):
    force_path(monkeypatch, path)
    T, B, D, H = shape
    p = make_problem(0, T, B, D, H, np.float64, h0=False, dh_n=False)
    itemsize = 8
    scratch = (H * (H + 16) + 2 * B * H) * itemsize  # the step matrix, zero states
    # One warm-up pass: first calls create lasting objects (caches of the thread control).
    rnnfast.rnn_backward(p.dout, rnnfast.rnn_forward(*p.args, n_threads=1)[1], n_threads=1)

    peak, (out, cache) = peak_allocation(lambda: rnnfast.rnn_forward(*p.args, n_threads=1))
    assert peak <= out.nbytes + scratch + SLACK_BYTES

    peak, grads = peak_allocation(lambda: rnnfast.rnn_backward(p.dout, cache, n_threads=1))
    outputs = sum(g.nbytes for g in grads if g is not None)
    one_buffer = T * B * H * itemsize
    assert peak <= outputs + one_buffer + scratch + SLACK_BYTES
