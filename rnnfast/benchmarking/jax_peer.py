"""The JAX peer: ``jax.lax.scan`` over the steps after one einsum, under ``jax.jit``, as a
capable user writes it.

Forward: P = einsum(x, W_xh) + b for all steps, then scan h_t = tanh(P_t + h_{t-1} @ W_hh.T).
Forward + backward: ``jax.vjp`` of the same function, applied to G, all in one jitted call.
The inputs live on the device (``jax.device_put``) before the timing, and every call waits for
its results (``block_until_ready``), so what is timed is the computation.

XLA's CPU back end runs its own thread pool on every core whatever the flags say: one-thread
figures need the process pinned to one core (rnnfast.benchmarking.timing). float64 needs
``jax_enable_x64``, which this module turns on when it is imported. Imported only when the
JAX peer is used.
"""
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

__all__ = ["forward", "forward_backward", "make"]


def _states(x, h0, W_xh, W_hh, b):
    """Hidden states (T, B, H) of h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)."""
    projected = jnp.einsum("tbd,hd->tbh", x, W_xh) + b  # W_xh x_t + b for every t

    def step(h, p_t):
        h = jnp.tanh(p_t + h @ W_hh.T)
        return h, h

    return jax.lax.scan(step, h0, projected)[1]


forward = jax.jit(_states)


@jax.jit
def forward_backward(x, h0, W_xh, W_hh, b, G):
    """(out, (dx, dh0, dW_xh, dW_hh, db)) of the loss sum(out * G), by jax.vjp."""
    out, pullback = jax.vjp(_states, x, h0, W_xh, W_hh, b)
    return out, pullback(G)


def make(problem, with_backward, n_threads):
    """A runner of the JAX peer on ``problem`` (n_threads is not JAX's to choose: see the top
    of this module), compiled for its shapes and dtype before it is returned."""
    args = [jax.device_put(array) for array in problem.args]
    G = jax.device_put(problem.G)

    def run():
        if with_backward:
            return jax.block_until_ready(forward_backward(*args, G))
        return jax.block_until_ready(forward(*args)), None

    run()  # compiles
    return run
