"""The wavefront: the layers of a stacked RNN side by side on several cores.

Layer l at step t and layer l + 1 at step t - 1 are independent. Time is cut into K chunks;
layer l runs chunk k (one pass of the kernels, with h0 its state at the end of chunk k - 1)
while layer l + 1 runs chunk k - 1. Each thread owns a block of layers (their weights stay in
its core's caches) and runs their chunks in order, waiting only for the chunk of the layer
below (forward) or above (backward) that its chunk reads. The backward pass runs the same way
in reverse: dh_n chains from chunk k + 1 to chunk k, dx of layer l + 1 is the gradient on the
outputs of layer l, and each layer's weight gradients are summed over its chunks, in a fixed
order (so a run repeats itself exactly).

A pass pays only when each chunk's kernels take long next to the Python around them and the
hand-over between threads (tens of microseconds), and when there are enough chunks to keep
both cores busy: ``plan`` decides from T, B, H and D (the thresholds are below, measured) and
returns None where it does not pay, or for one thread: the layer then runs its sequential
path, unchanged. Chunked passes round differently from whole ones (the input projection and the
weight gradients are GEMMs over fewer rows): results agree with the sequential path as thread
counts do elsewhere (DESIGN.md), not bit for bit.

With ``lengths``, chunk boundaries stay before the end of the shortest sequence (the kernels
run every sequence at least one step per pass): the last chunk takes the rest, with each
sequence's remaining length. Bidirectional layers need a whole layer below before their
reverse direction starts: there, the two directions of each layer run side by side instead
(each direction's pass as the sequential path runs it, on one thread: the same results as
``n_threads=1``). A busy machine (another process on the second core) can make either slower
than the sequential pass: ``run_forward`` times each kind of call both ways and runs the
faster, trying the other again now and then.
"""
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rnnfast._kernels.entry import switches
from rnnfast.nn.rnn_calls import MEMORY_ADVICE, Steps, pass_draws
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.threads import available_cores, blas_threads_at_most

__all__ = ["Plan", "WavefrontPass", "plan", "run_forward", "forward", "backward",
           "each_direction", "THRESHOLDS", "EXPLORE_EVERY", "LEARNING_CALLS", "ADAPT"]

# Set from the costs measured here (2-core AMD EPYC Zen 4): a hand-over between threads (a
# condition's wake-up and the Python around a chunk's pass) costs 10-50 us, so a chunk gets at
# least min_chunk_macs multiply-adds (forward, B * H * (H + D) per step: about 0.2 ms); fewer
# than min_chunks chunks leave the pipeline's fill and drain uncovered; beyond max_chunks the
# Python per chunk shows; from max_batch rows on, or from shared_step_macs (B * H * H), the
# kernels' own threads share each step instead (below that the team's step-by-step hand-overs
# gave 1.02-1.06x at 1000,8,128,128 and 200,8,256,256, the wavefront 1.5x and more). min_speedup is
# the pipeline's bound (see plan) below which it is not tried. Not yet tuned with the second
# core free: the machine was shared while this was written (see the README).
THRESHOLDS = {"min_chunk_macs": 1 << 22, "min_chunks": 6, "max_chunks": 32,
              "max_batch": 16, "min_speedup": 1.3, "shared_step_macs": 1 << 20}

_pool = None  # the worker threads, made on first use and kept
_pool_lock = threading.Lock()


def _workers(n):
    """A pool of at least n threads, kept for the life of the process."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < n:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="rnnfast-wavefront")
        return _pool


class Plan:
    """How a pass runs on the wavefront: chunk boundaries (K + 1 step indices, the last T),
    which thread owns each layer, and the key its timings are kept under. For bidirectional
    layers (bounds and owner None), the two directions of each layer side by side."""

    __slots__ = ("bounds", "owner", "threads", "key")

    def __init__(self, bounds, owner, threads, key):
        self.bounds, self.owner, self.threads, self.key = bounds, owner, threads, key


def each_direction(run, directions, side_by_side):
    """[run(0), run(1), ...] for each direction of a layer; side_by_side: the two at once,
    run(1) on a worker thread (and BLAS on one thread in each)."""
    if not side_by_side or directions < 2:
        return [run(direction) for direction in range(directions)]
    with blas_threads_at_most(1):
        other = _workers(1).submit(run, 1)
        try:
            first = run(0)
        finally:
            second = other.result()  # waited for (and its error raised) whatever run(0) did
    return [first, second]


# A busy machine (another process on the second core) makes the wavefront slower than the
# sequential pass: each kind of call is timed both ways, the faster runs, and every
# EXPLORE_EVERY-th call runs the other way to see whether that has changed.
EXPLORE_EVERY = 16
LEARNING_CALLS = 4  # the first calls of a kind, both ways in turn (one timing can be unlucky)
_KEPT_TIMINGS = 64
ADAPT = True  # False: the wavefront wherever plan says it pays (benchmarks measure it so)


def run_forward(rnn, x, h0, steps, plan):
    """The forward pass of rnn on the wavefront or sequentially, whichever has been faster for
    this kind of call (both ways in turn for its first LEARNING_CALLS calls, then the faster,
    and the other every EXPLORE_EVERY-th call): (out, h_n), what backward needs in
    ``rnn._saved``."""
    timings = rnn._wavefront_timings
    record = timings.get(plan.key)
    if record is None:
        if len(timings) >= _KEPT_TIMINGS:
            timings.clear()
        record = timings[plan.key] = [None, None, 0]  # seconds sequential, wavefront; calls
    sequential, wave, calls = record
    record[2] = calls + 1
    if not ADAPT or calls < LEARNING_CALLS:  # both ways in turn at first
        on_wavefront = not ADAPT or calls % 2 == 0
    else:
        on_wavefront = (wave <= sequential) != (calls % EXPLORE_EVERY == EXPLORE_EVERY - 1)
    start = time.perf_counter()
    if on_wavefront and plan.bounds is None:
        out, h_n = rnn._sequential_forward(x, h0, steps, side_by_side=True)
    elif on_wavefront:
        out, h_n, rnn._saved = forward(rnn, x, h0, steps, plan)
    else:
        out, h_n = rnn._sequential_forward(x, h0, steps)
    seconds = time.perf_counter() - start
    previous = record[on_wavefront]
    record[on_wavefront] = seconds if previous is None else 0.5 * (previous + seconds)
    return out, h_n


def _layer_owners(num_layers, threads):
    """Thread j owns a contiguous block of layers, the blocks as even as they can be."""
    return [layer * threads // num_layers for layer in range(num_layers)]


def plan(rnn, T, B, steps):
    """A Plan for a forward pass of rnn on (T, B) with these steps, or None: run it
    sequentially (one thread, one layer, bidirectional, or a shape where it does not pay)."""
    L, H = rnn.num_layers, rnn.hidden_size
    if rnn._sequential_only or B > THRESHOLDS["max_batch"]:
        return None
    if B * H * H >= THRESHOLDS["shared_step_macs"]:  # the kernels share each step instead
        return None
    cores = available_cores()
    threads = min(cores if rnn.n_threads is None else rnn.n_threads, cores)
    if rnn.bidirectional:  # each layer's two directions side by side, if a pass is long
        if threads < 2 or T * B * H * (H + rnn.input_size) < THRESHOLDS["min_chunk_macs"]:
            return None
        return Plan(None, None, 2, (T, B, "directions", rnn.training))
    threads = min(threads, L)
    if L < 2 or threads < 2:
        return None
    D = max(rnn.input_size, H)
    step_macs = B * H * (H + D)
    chunk = max(1, math.ceil(THRESHOLDS["min_chunk_macs"] / step_macs))
    # The steps every sequence runs are cut evenly; the last chunk also takes the rest, with
    # each sequence's remaining length (at least one step: its start is before the shortest
    # sequence's end).
    span = T if steps.lengths is None else int(steps.lengths.min())
    chunks = min(THRESHOLDS["max_chunks"], span // chunk)
    if chunks < THRESHOLDS["min_chunks"]:
        return None
    bounds = [k * span // chunks for k in range(chunks)] + [T]
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    owner = _layer_owners(L, threads)
    per_thread = max(owner.count(j) for j in range(threads))
    # The makespan: the busiest thread's layers, plus a chunk of wait per hand-over.
    speedup = L * T / (per_thread * T + (threads - 1) * longest)
    if speedup < THRESHOLDS["min_speedup"]:
        return None
    noises = (rnn._noise_std > 0) + (rnn._state_noise_std > 0)
    key = ("wavefront", T, B, noises)
    if key not in rnn._fitted:  # beyond the sequential pass's: every layer's noise at once
        check_allocation("RNN.forward", [
            ("the noise of every layer (L * noises, T, B, H)", (L * noises, T, B, H), rnn.dtype),
            ("the last layer's chunks joined (T, B, H)", (T, B, H), rnn.dtype)], MEMORY_ADVICE)
        rnn._fitted[key] = True
    return Plan(bounds, owner, threads, (T, B, len(bounds), bounds[-2], noises, rnn.training))


class _Progress:
    """How many chunks each layer has finished, shared by the threads of a pass; a failure in
    one thread releases the others."""

    def __init__(self, num_layers):
        self.done = [0] * num_layers
        self.condition = threading.Condition()
        self.failed = False

    def wait(self, layer, count):
        """Until layer has finished count chunks (at once when it has)."""
        if self.done[layer] >= count:
            return
        with self.condition:
            while self.done[layer] < count and not self.failed:
                self.condition.wait()
            if self.failed:
                raise _Abandoned

    def finish(self, layer):
        with self.condition:
            self.done[layer] += 1
            self.condition.notify_all()

    def fail(self):
        with self.condition:
            self.failed = True
            self.condition.notify_all()


class _Abandoned(Exception):
    """Another thread of the pass failed: this one stops (its error is the one raised)."""


def _run(plan, tasks, depends_on, run):
    """Run tasks ((layer, chunk), in an order consistent with their dependencies) on the plan's
    threads, each thread its own layers' in that order: run(layer, chunk) once the task
    depends_on(layer, chunk) = (layer', count) names has count chunks done."""
    progress = _Progress(len(plan.owner))

    def job(thread):
        try:
            for layer, chunk in tasks:
                if plan.owner[layer] == thread:
                    needed = depends_on(layer, chunk)
                    if needed is not None:
                        progress.wait(*needed)
                    run(layer, chunk)
                    progress.finish(layer)
        except BaseException:
            progress.fail()
            raise

    futures = [_workers(plan.threads - 1).submit(job, j) for j in range(1, plan.threads)]
    errors = []
    with blas_threads_at_most(1):  # every chunk's GEMMs on its own core
        try:
            job(0)
        except BaseException as exc:  # noqa: B902 (re-raised below, after the others stop)
            errors.append(exc)
        for future in futures:
            exc = future.exception()
            if exc is not None:
                errors.append(exc)
    real = [exc for exc in errors if not isinstance(exc, _Abandoned)]
    if real:
        raise real[0]


class WavefrontPass:
    """What the backward pass needs from a forward pass on the wavefront."""

    __slots__ = ("plan", "caches", "masks", "steps", "shape")

    def __init__(self, plan, caches, masks, steps, shape):
        self.plan, self.caches, self.masks, self.steps, self.shape = (plan, caches, masks,
                                                                      steps, shape)


def forward(rnn, x, h0, steps, plan):
    """The forward pass of rnn on the plan: (out (T, B, H), h_n (L, B, H), WavefrontPass).

    x (T, B, D) and h0 (L, B, H) or None as rnn_calls.forward_inputs gives them."""
    T, B, _ = x.shape
    L, H, bounds = rnn.num_layers, rnn.hidden_size, plan.bounds
    K = len(bounds) - 1
    noises, masks = pass_draws(rnn, T, B)  # drawn as the sequential pass draws them
    weights = [rnn._pass_weights(layer, 0) for layer in range(L)]
    outs = [[None] * K for _ in range(L)]
    inputs = [[x[bounds[k]:bounds[k + 1]] for k in range(K)]] + [[None] * K for _ in range(L - 1)]
    caches = [[None] * K for _ in range(L)]

    def run(layer, k):
        t0, t1 = bounds[k], bounds[k + 1]
        if k:
            start = outs[layer][k - 1][-1]  # every sequence runs to the chunk's end
        else:
            start = None if h0 is None else h0[layer]
        lengths = steps.lengths - t0 if k == K - 1 and steps.lengths is not None else None
        noise, state_noise = (None if draw is None else draw[t0:t1] for draw in noises[layer])
        out, caches[layer][k] = rnn._forward_pass(inputs[layer][k], start, weights[layer],
                                                  layer, lengths, noise, state_noise, 1)
        outs[layer][k] = out
        if layer < L - 1:
            mask = masks[layer]
            inputs[layer + 1][k] = out if mask is None else out * mask[t0:t1]

    tasks = sorted(((layer, k) for layer in range(L) for k in range(K)),
                   key=lambda task: (task[0] + task[1], task[0]))
    _run(plan, tasks, lambda layer, k: (layer - 1, k + 1) if layer else None, run)
    h_n = np.empty((L, B, H), rnn.dtype)
    last_steps = Steps(T - bounds[-2], B, None if steps.lengths is None
                       else steps.lengths - bounds[-2])
    for layer in range(L):
        h_n[layer] = last_steps.last_states(outs[layer][-1])
    out = np.concatenate(outs[-1], axis=0)
    return out, h_n, WavefrontPass(plan, caches, masks, steps, x.shape)


def backward(rnn, saved, dout, dh_n, return_norms):
    """The backward pass of a WavefrontPass: (dx (T, B, D), dh0 (L, B, H), grads, norms or
    None); dout (T, B, H) and dh_n (L, B, H) or None as rnn_calls.backward_inputs gives them."""
    plan, caches, masks = saved.plan, saved.caches, saved.masks
    T, B, D = saved.shape
    L, H, bounds = rnn.num_layers, rnn.hidden_size, plan.bounds
    K = len(bounds) - 1
    dx = np.empty((T, B, D), rnn.dtype)
    dh0 = np.empty((L, B, H), rnn.dtype)
    norms = np.empty((L, 1, T, B), rnn.dtype) if return_norms else None
    sums = [None] * L  # each layer's [dW_xh, dW_hh, db], summed over its chunks
    carried = [None if dh_n is None else dh_n[layer] for layer in range(L)]
    d_outputs = [[None] * K for _ in range(L - 1)] + [
        [dout[bounds[k]:bounds[k + 1]] for k in range(K)]]

    def run(layer, k):
        t0, t1 = bounds[k], bounds[k + 1]
        grads = rnn._backward_pass(d_outputs[layer][k], caches[layer][k], carried[layer],
                                   return_norms, 1)
        if return_norms:
            grads, norms[layer, 0, t0:t1] = grads
        carried[layer] = grads.dh0
        if sums[layer] is None:
            sums[layer] = [grads.dW_xh, grads.dW_hh, grads.db]
        else:
            for total, part in zip(sums[layer], grads[2:]):
                if part is not None:
                    total += part
        if layer:
            mask = masks[layer - 1]
            d_outputs[layer - 1][k] = grads.dx if mask is None else grads.dx * mask[t0:t1]
        else:
            dx[t0:t1] = grads.dx

    tasks = sorted(((layer, k) for layer in range(L) for k in range(K)),
                   key=lambda task: ((L - 1 - task[0]) + (K - 1 - task[1]), -task[0]))
    _run(plan, tasks, lambda layer, k: (layer + 1, K - k) if layer < L - 1 else None, run)
    for layer in range(L):
        dh0[layer] = carried[layer]
    grads = {}
    for layer in reversed(range(L)):  # the order of the sequential pass's keys
        names = rnn._names[layer][0]
        dW_xh, dW_hh, db = sums[layer]
        grads[names["weight_ih"]] = dW_xh
        grads[names["weight_hh"]] = dW_hh
        if rnn.bias:
            grads[names["bias_ih"]] = db
            grads[names["bias_hh"]] = db.copy()
    return dx, dh0, grads, norms
