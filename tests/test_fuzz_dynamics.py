"""Fuzzing the public functions of rnnfast.dynamics and rnnfast.nn.masked_mse (the helpers and
the profile of test_fuzz.py): every layout of a valid input gives the result of the plain call,
and every spoiled argument raises a TypeError or ValueError that names it."""
import numpy as np
from hypothesis import given, note, strategies as st

from rnnfast.dynamics import StepMap, find_fixed_points, sample_states
from rnnfast.nn import masked_mse
from test_fuzz import (LAYOUTS, dims, fuzz, plain, present, raises_naming, spoil_one,
                       spoilers)

ARRAY_LAYOUTS = tuple(layout for layout in LAYOUTS if layout != "broadcast")


@fuzz(150)
@given(data=st.data())
def test_masked_mse(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    T, B, O = (data.draw(dims(), label=label) for label in "TBO")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    outputs = rng.standard_normal((T, B, O)).astype(dtype)
    targets = rng.standard_normal((T, B, O))
    mask = None
    if data.draw(st.booleans(), label="mask?"):
        mask = rng.random((T, B)) < 0.6
        mask.flat[0] = True
        mask = mask.astype(data.draw(st.sampled_from([bool, np.int8, np.float64])))
    layouts = st.sampled_from(ARRAY_LAYOUTS)
    args = {"outputs": present(outputs, data.draw(layouts, label="outputs")),
            "targets": present(targets, data.draw(layouts, label="targets")),
            "mask": None if mask is None else present(mask, data.draw(layouts, label="mask"))}
    candidates = [("outputs",) + s for s in spoilers(outputs, "outputs",
                                                      {0: ["targets"], 2: ["targets"]})]
    candidates += [("mask", "all masked", np.zeros((T, B), bool), ValueError, {"mask"}),
                   ("mask", "a 2", np.full((T, B), 2), ValueError, {"mask"}),
                   ("mask", "strings", np.full((T, B), "1"), TypeError, {"mask"}),
                   ("mask", "shape", np.ones((T, B + 1), bool), ValueError, {"mask"}),
                   ("targets", "complex", targets.astype(complex), TypeError, {"targets"}),
                   ("targets", "shape", targets[..., :0], ValueError, {"targets"})]
    fault = spoil_one(data, candidates)
    if fault is not None:
        name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        with raises_naming(error, named):
            masked_mse(**dict(args, **{name: bad}))
        return
    loss, grad = masked_mse(**args)
    expected, expected_grad = masked_mse(*(plain(v) for v in args.values()))
    assert loss == expected and grad.dtype == dtype
    np.testing.assert_array_equal(grad, expected_grad)


@fuzz(100)
@given(data=st.data())
def test_find_fixed_points(data):
    H, D, N = (data.draw(dims(), label=label) for label in "HDN")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    W_hh = (1.5 * rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    W_xh = rng.standard_normal((H, D)).astype(dtype)
    b = (0.1 * rng.standard_normal(H)).astype(dtype)
    starts = rng.uniform(-1, 1, (N, H)).astype(dtype)
    inputs = rng.standard_normal(D)
    layouts = st.sampled_from(ARRAY_LAYOUTS)
    maps = {name: present(value, data.draw(layouts, label=name))
            for name, value in (("W_hh", W_hh), ("W_xh", W_xh), ("b", b))}
    given_starts = present(starts, data.draw(layouts, label="initial_states"))
    candidates = [("W_hh",) + s for s in spoilers(W_hh, "W_hh", {0: ["W_xh", "b"]})]
    candidates += [("W_xh",) + s for s in spoilers(W_xh, "W_xh", {0: ["W_hh"]})]
    candidates += [("initial_states",) + s for s in spoilers(starts, "initial_states",
                                                              {1: []})]
    candidates += [("inputs", "one too long", np.zeros(D + 1), ValueError, {"inputs"}),
                   ("inputs", "NaN", np.full(D, np.nan), ValueError, {"inputs"}),
                   ("initial_states", "inf", np.full((N, H), np.inf), ValueError,
                    {"initial_states"})]
    fault = spoil_one(data, candidates)
    if fault is not None:
        name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        with raises_naming(error, named):
            if name in maps:
                StepMap(**dict(maps, **{name: bad}))
            else:
                find_fixed_points(StepMap(**maps), bad if name == "initial_states" else
                                  given_starts, bad if name == "inputs" else inputs)
        return
    found = find_fixed_points(StepMap(**maps), given_starts, inputs)
    expected = find_fixed_points(StepMap(plain(W_hh), plain(W_xh), plain(b)), plain(starts),
                                 inputs)
    np.testing.assert_array_equal(found.points, expected.points)
    np.testing.assert_array_equal(found.assignment, expected.assignment)
    assert len(found.unconverged) + found.counts.sum() == N


@fuzz(150)
@given(data=st.data())
def test_sample_states(data):
    T, B, H, n = (data.draw(dims(), label=label) for label in "TBHn")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    states = rng.standard_normal((T, B, H)).astype(
        data.draw(st.sampled_from([np.float32, np.float64]), label="dtype"))
    given_states = present(states, data.draw(st.sampled_from(ARRAY_LAYOUTS), label="layout"))
    candidates = [("trajectories",) + s for s in spoilers(states, "trajectories", {})]
    candidates += [("n", "zero", 0, ValueError, {"n"}), ("n", "a float", 2.5, TypeError, {"n"}),
                   ("noise", "negative", -1.0, ValueError, {"noise"}),
                   ("mask", "shape", np.ones((T + 1, B), bool), ValueError, {"mask"})]
    fault = spoil_one(data, candidates)
    args = {"trajectories": given_states, "n": n, "noise": 0.1, "mask": None}
    if fault is not None:
        name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        with raises_naming(error, named):
            sample_states(**dict(args, **{name: bad}), seed=0)
        return
    np.testing.assert_array_equal(sample_states(**args, seed=3),
                                  sample_states(plain(states), n, noise=0.1, seed=3))
