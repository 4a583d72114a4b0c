"""The model parts (rnnfast.nn): Linear over time, Embedding, softmax_cross_entropy.

Backward passes are checked against central finite differences of the forward pass in float64,
entry by entry on tiny shapes; forward passes against independent formulas (einsum, a loop over
rows, and PyTorch when it is installed); float32 against float64; every error path for its type
and message. Shapes use distinct sizes (T=3, B=2, H=4, O=5, V=7, E=3) so that a message naming a
size names one dimension only.
"""
import numpy as np
import pytest

from rnnfast.nn import Embedding, Linear, softmax_cross_entropy
from rnn_helpers import TOL, assert_close, numeric_gradient

T, B, H, O, V, E = 3, 2, 4, 5, 7, 3


def rng(seed):
    return np.random.default_rng(seed)


def check_message(excinfo, *fragments):
    """Every fragment (an argument name, a shape, a value) appears in the message."""
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def make_targets(seed, T=T, B=B, V=V):
    return rng(seed).integers(0, V, (T, B))


# A mask with both kinds of position, and at least one unmasked position per sequence.
MASK = np.array([[True, True], [False, True], [True, False]])


# ---------------------------------------------------------------------------------------------
# Linear.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n_threads", [1, 2], ids=["numpy", "team"])
def test_linear_forward_matches_einsum(bias, n_threads):
    layer = Linear(H, O, bias=bias, dtype=np.float64, seed=0, n_threads=n_threads)
    h = rng(1).standard_normal((T, B, H))
    expected = np.einsum("tbh,oh->tbo", h, layer.weight)
    if bias:
        expected = expected + layer.bias
    assert_close(layer.forward(h), expected, TOL["float64"])


@pytest.mark.parametrize("n_threads", [1, 2], ids=["numpy", "team"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_match_finite_differences(bias, n_threads):
    layer = Linear(H, O, bias=bias, dtype=np.float64, seed=2, n_threads=n_threads)
    h = rng(3).standard_normal((T, B, H))
    G = rng(4).standard_normal((T, B, O))  # L = sum(y * G), so dL/dy = G

    def loss():
        return np.sum(layer.forward(h) * G)

    layer.forward(h)
    dh = layer.backward(G)
    assert set(layer.grads) == ({"weight", "bias"} if bias else {"weight"})
    assert set(layer.grads) == set(layer.parameters())
    assert_close(dh, numeric_gradient(loss, h), TOL["finite_difference"], "dh")
    for name, param in layer.parameters().items():
        analytic = layer.grads[name]
        assert analytic.shape == param.shape
        assert_close(analytic, numeric_gradient(loss, param), TOL["finite_difference"], name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_on_the_team_agrees_with_numpy(dtype):
    """n_threads=2 (the kernels' team) against 1 (NumPy's GEMMs) at a size the team splits,
    from a non-contiguous input: forward, dh and the gradients within rounding."""
    layers = [Linear(70, 33, dtype=dtype, seed=5, n_threads=n) for n in (1, 2)]
    h = rng(6).standard_normal((40, 9, 140)).astype(dtype)[:, :, ::2]
    dy = rng(7).standard_normal((40, 9, 33)).astype(dtype)
    results = [(layer.forward(h), layer.backward(dy), layer.grads) for layer in layers]
    tol = TOL["float32_grad" if dtype == np.float32 else "float64"]
    (y1, dh1, g1), (y2, dh2, g2) = results
    assert_close(y2, y1, tol, "y")
    assert_close(dh2, dh1, tol, "dh")
    for name in g1:
        assert_close(g2[name], g1[name], tol, name)


def test_linear_rejects_a_bad_thread_count():
    with pytest.raises(ValueError, match="n_threads"):
        Linear(H, O, n_threads=0)


def test_linear_backward_replaces_grads():
    layer = Linear(H, O, dtype=np.float64, seed=5)
    h = rng(6).standard_normal((T, B, H))
    G = rng(7).standard_normal((T, B, O))
    layer.forward(h)
    layer.backward(G)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(G)
    for name in first:
        np.testing.assert_array_equal(layer.grads[name], first[name])


def test_linear_accepts_non_contiguous_and_read_only_input():
    layer = Linear(H, O, dtype=np.float64, seed=8)
    h_batch_first = rng(9).standard_normal((B, T, H))
    h = h_batch_first.transpose(1, 0, 2)  # (T, B, H), not C-contiguous
    h.flags.writeable = False
    y = layer.forward(h)
    assert_close(y, layer.forward(np.ascontiguousarray(h)), TOL["float64"])
    dy = rng(10).standard_normal((T, B, O))
    dy.flags.writeable = False
    assert layer.backward(dy).shape == (T, B, H)


def test_linear_init_like_torch():
    """Uniform on (-1/sqrt(H), 1/sqrt(H)) for weight and bias; reproducible from a seed."""
    in_features, out_features = 64, 300
    layer = Linear(in_features, out_features, dtype=np.float64, seed=11)
    bound = 1 / np.sqrt(in_features)
    for name, param in layer.parameters().items():
        assert np.all(np.abs(param) < bound), name
    w = layer.weight
    assert np.abs(w).max() > 0.99 * bound  # fills the interval (19200 draws)
    assert abs(w.mean()) < 0.02 * bound
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.05  # variance of U(-a, a) is a^2 / 3
    again = Linear(in_features, out_features, dtype=np.float64, seed=11)
    np.testing.assert_array_equal(again.weight, w)
    np.testing.assert_array_equal(again.bias, layer.bias)
    other = Linear(in_features, out_features, dtype=np.float64, seed=12)
    assert not np.array_equal(other.weight, w)


def test_seed_accepts_a_generator_and_float32_is_float64_rounded():
    a = Linear(H, O, dtype=np.float64, seed=np.random.default_rng(13))
    b = Linear(H, O, dtype=np.float32, seed=13)
    np.testing.assert_array_equal(b.weight, a.weight.astype(np.float32))
    np.testing.assert_array_equal(b.bias, a.bias.astype(np.float32))
    gen = np.random.default_rng(14)
    first, second = Embedding(V, E, seed=gen), Embedding(V, E, seed=gen)
    assert not np.array_equal(first.weight, second.weight)  # the generator advanced


# ---------------------------------------------------------------------------------------------
# Embedding.
# ---------------------------------------------------------------------------------------------
# Repeated ids (3 three times, 0 twice) and an unused row (every id but 0, 2, 3, 6 is unused).
IDS = np.array([[3, 0], [3, 6], [2, 3]])
IDS_SINGLE = np.array([[0, 0], [0, 0], [0, 0]])  # one row gathers every gradient


def test_embedding_forward_is_the_row_gather():
    emb = Embedding(V, E, dtype=np.float64, seed=15)
    out = emb.forward(IDS)
    assert out.shape == (T, B, E)
    for t, b in np.ndindex(T, B):
        np.testing.assert_array_equal(out[t, b], emb.weight[IDS[t, b]])
    out[0, 0] = 99.0  # a new array, not a view of the table
    assert not np.any(emb.weight == 99.0)


@pytest.mark.parametrize("ids", [IDS, IDS_SINGLE], ids=["repeated", "all-same"])
def test_embedding_gradient_matches_finite_differences(ids):
    emb = Embedding(V, E, dtype=np.float64, seed=16)
    G = rng(17).standard_normal((T, B, E))

    def loss():
        return np.sum(emb.forward(ids) * G)

    emb.forward(ids)
    assert emb.backward(G) is None
    assert set(emb.grads) == {"weight"}
    assert_close(emb.grads["weight"], numeric_gradient(loss, emb.weight),
                 TOL["finite_difference"], "weight")


def test_embedding_gradient_accumulates_repeated_ids_exactly():
    emb = Embedding(V, E, dtype=np.float64, seed=18)
    G = rng(19).standard_normal((T, B, E))
    emb.forward(IDS)
    emb.backward(G)
    expected = np.zeros((V, E))
    for t, b in np.ndindex(T, B):  # the scatter-add, one row at a time
        expected[IDS[t, b]] += G[t, b]
    np.testing.assert_array_equal(emb.grads["weight"], expected)
    unused = np.setdiff1d(np.arange(V), IDS)
    assert unused.size and np.all(emb.grads["weight"][unused] == 0)
    emb.backward(G)  # replaced, not accumulated over calls
    np.testing.assert_array_equal(emb.grads["weight"], expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (64, 32, 163, 64), (7, 5, 3, 13), (9, 4, 500, 70)])
def test_embedding_gradient_is_np_add_at_bit_for_bit(shape, dtype):
    """The compiled scatter-add sums each row in the order of the positions, as np.add.at:
    the same bits, with ids repeated many times (few rows) or rarely (many rows), widths that
    are not a whole number of vectors."""
    T_, B_, V_, E_ = shape
    emb = Embedding(V_, E_, dtype=dtype, seed=21)
    gen = rng(22)
    ids = gen.integers(0, V_, (T_, B_))
    G = (gen.standard_normal((T_, B_, E_)) * 10.0 ** gen.uniform(-3, 3, (T_, B_, 1))).astype(dtype)
    emb.forward(ids)
    emb.backward(G)
    expected = np.zeros((V_, E_), dtype)
    np.add.at(expected, ids.reshape(-1), G.reshape(-1, E_))
    assert emb.grads["weight"].dtype == dtype
    np.testing.assert_array_equal(emb.grads["weight"], expected)


def test_embedding_keeps_its_own_copy_of_ids():
    emb = Embedding(V, E, dtype=np.float64, seed=20)
    ids = IDS.copy()
    emb.forward(ids)
    ids[:] = 0  # the caller reuses its buffer before backward
    G = rng(21).standard_normal((T, B, E))
    emb.backward(G)
    assert np.any(emb.grads["weight"][3] != 0)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
def test_embedding_accepts_every_integer_dtype(dtype):
    emb = Embedding(V, E, dtype=np.float64, seed=22)
    np.testing.assert_array_equal(emb.forward(IDS.astype(dtype)), emb.weight[IDS])


def test_embedding_init_like_torch():
    """Standard normal."""
    emb = Embedding(200, 50, dtype=np.float64, seed=23)
    w = emb.weight
    assert abs(w.mean()) < 0.04  # 10000 draws: standard error 0.01
    assert abs(w.std() - 1) < 0.03  # standard error ~0.007


# ---------------------------------------------------------------------------------------------
# softmax_cross_entropy.
# ---------------------------------------------------------------------------------------------
def reference_loss(logits, targets, mask):
    """The loss from its definition, one position at a time, in float64."""
    total, count = 0.0, 0
    for t, b in np.ndindex(targets.shape):
        if mask is None or mask[t, b]:
            row = logits[t, b].astype(np.float64)
            total -= np.log(np.exp(row[targets[t, b]]) / np.exp(row).sum())
            count += 1
    return total / count


@pytest.mark.parametrize("mask", [None, MASK], ids=["no-mask", "mask"])
def test_cross_entropy_matches_its_definition(mask):
    logits = rng(24).standard_normal((T, B, V))
    targets = make_targets(25)
    loss, _ = softmax_cross_entropy(logits, targets, mask)
    assert isinstance(loss, float)
    assert_close(loss, reference_loss(logits, targets, mask), TOL["float64"])


@pytest.mark.parametrize("mask", [None, MASK], ids=["no-mask", "mask"])
def test_cross_entropy_gradient_matches_finite_differences(mask):
    logits = 2 * rng(26).standard_normal((T, B, V))
    targets = make_targets(27)
    _, dlogits = softmax_cross_entropy(logits, targets, mask)
    numeric = numeric_gradient(lambda: softmax_cross_entropy(logits, targets, mask)[0], logits)
    assert_close(dlogits, numeric, TOL["finite_difference"], "dlogits")
    # The gradient entries are O(1/N): check them against their own scale too, not only 1.
    assert_close(dlogits * T * B, numeric * T * B, 10 * TOL["finite_difference"], "scaled")
    if mask is not None:
        assert np.all(dlogits[~mask] == 0)  # exactly, not approximately
        assert np.any(dlogits[mask] != 0)


def test_cross_entropy_gradient_formula():
    """(softmax - onehot) / N on unmasked rows; each unmasked row sums to 0."""
    logits = rng(28).standard_normal((T, B, V))
    targets = make_targets(29)
    _, dlogits = softmax_cross_entropy(logits, targets, MASK)
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    onehot = np.eye(V)[targets]
    expected = np.where(MASK[..., None], (p - onehot) / MASK.sum(), 0.0)
    assert_close(dlogits, expected, TOL["float64"])
    assert_close(dlogits.sum(axis=-1), np.zeros((T, B)), TOL["float64"])


def test_uniform_logits_give_log_v():
    for V_ in (1, 2, 7, 1000):
        logits = np.full((T, B, V_), 3.25)
        loss, dlogits = softmax_cross_entropy(logits, make_targets(30, V=V_))
        assert loss == pytest.approx(np.log(V_), rel=1e-12, abs=1e-15)
        if V_ == 1:
            assert np.all(dlogits == 0)


def test_cross_entropy_is_stable_for_large_logits():
    logits = rng(31).standard_normal((T, B, V))
    targets = make_targets(32)
    loss, dlogits = softmax_cross_entropy(logits, targets)
    for dtype in (np.float64, np.float32):
        shifted = (logits + 1e4).astype(dtype)  # exp would overflow without the max shift
        big_loss, big_dlogits = softmax_cross_entropy(shifted, targets)
        assert np.isfinite(big_loss) and np.all(np.isfinite(big_dlogits))
        # float32 rounds 1e4 + x to a multiple of 2^-10: that much error in the logits.
        tol = TOL["float64"] if dtype == np.float64 else 1e-3
        assert_close(big_loss, loss, tol)
        assert_close(big_dlogits, dlogits, tol)
    # A target with a very negative logit: the loss is large but exact, not inf.
    logits = np.zeros((1, 1, 3))
    logits[0, 0, 0] = -1e4
    loss, _ = softmax_cross_entropy(logits, np.array([[0]]))
    assert loss == pytest.approx(1e4 + np.log(2), rel=1e-12)


def test_cross_entropy_mask_forms_agree_and_ignore_padding_targets():
    logits = rng(33).standard_normal((T, B, V))
    targets = make_targets(34)
    expected = softmax_cross_entropy(logits, targets, MASK)
    padded = np.where(MASK, targets, -100)  # padding value at masked positions, any value
    padded[2, 1] = V + 5
    for mask in (MASK, MASK.astype(np.int64), MASK.astype(np.float32), MASK.tolist()):
        loss, dlogits = softmax_cross_entropy(logits, padded, mask)
        assert loss == expected[0]
        np.testing.assert_array_equal(dlogits, expected[1])
    all_on = softmax_cross_entropy(logits, targets, np.ones((T, B), dtype=bool))
    no_mask = softmax_cross_entropy(logits, targets)
    assert all_on[0] == no_mask[0]
    np.testing.assert_array_equal(all_on[1], no_mask[1])


def test_cross_entropy_masked_non_finite_logits_do_not_leak():
    logits = rng(35).standard_normal((T, B, V))
    targets = make_targets(36)
    expected = softmax_cross_entropy(logits, targets, MASK)
    logits[~MASK] = np.nan
    loss, dlogits = softmax_cross_entropy(logits, targets, MASK)
    assert loss == expected[0]
    np.testing.assert_array_equal(dlogits, expected[1])


def test_cross_entropy_does_not_modify_its_inputs():
    logits = rng(37).standard_normal((T, B, V))
    logits.flags.writeable = False
    targets = make_targets(38)
    targets.flags.writeable = False
    copy = logits.copy()
    _, dlogits = softmax_cross_entropy(logits, targets)
    np.testing.assert_array_equal(logits, copy)
    assert not np.shares_memory(dlogits, logits)


# ---------------------------------------------------------------------------------------------
# float32 against float64, and the dtype of every result.
# ---------------------------------------------------------------------------------------------
def test_float32_agrees_with_float64():
    h = rng(39).standard_normal((T, B, H))
    dy = rng(40).standard_normal((T, B, O))
    results = {}
    for dtype in (np.float64, np.float32):
        layer = Linear(H, O, dtype=dtype, seed=41)
        y = layer.forward(h.astype(dtype))
        dh = layer.backward(dy.astype(dtype))
        emb = Embedding(V, E, dtype=dtype, seed=42)
        out = emb.forward(IDS)
        emb.backward(dy[..., :E].astype(dtype))
        logits = rng(43).standard_normal((T, B, V)).astype(dtype)
        loss, dlogits = softmax_cross_entropy(logits, make_targets(44), MASK)
        arrays = {"y": y, "dh": dh, "dW": layer.grads["weight"], "db": layer.grads["bias"],
                  "emb_out": out, "emb_dW": emb.grads["weight"], "dlogits": dlogits}
        for name, array in arrays.items():
            assert array.dtype == dtype, name
        results[dtype] = (arrays, loss)
    (a64, loss64), (a32, loss32) = results[np.float64], results[np.float32]
    for name in ("y", "emb_out"):
        assert_close(a32[name], a64[name], TOL["float32_forward"], name)
    for name in ("dh", "dW", "db", "emb_dW", "dlogits"):
        assert_close(a32[name], a64[name], TOL["float32_grad"], name)
    assert_close(loss32, loss64, TOL["float32_forward"], "loss")


# ---------------------------------------------------------------------------------------------
# parameters, state_dict, load_state_dict.
# ---------------------------------------------------------------------------------------------
def layers(dtype=np.float64):
    return {
        "linear": lambda seed: Linear(H, O, dtype=dtype, seed=seed),
        "linear-no-bias": lambda seed: Linear(H, O, bias=False, dtype=dtype, seed=seed),
        "embedding": lambda seed: Embedding(V, E, dtype=dtype, seed=seed),
    }


@pytest.mark.parametrize("kind", list(layers()))
def test_state_dict_round_trip(kind):
    make = layers()[kind]
    source, target = make(45), make(46)
    params = target.parameters()
    state = source.state_dict()
    assert set(state) == set(source.parameters())
    for name, array in state.items():
        assert not np.shares_memory(array, source.parameters()[name]), "a copy"
    target.load_state_dict(state)
    for name, array in target.parameters().items():
        assert array is params[name], "loaded in place"
        np.testing.assert_array_equal(array, source.parameters()[name])
    state[next(iter(state))][...] = 0  # the copy is independent of both layers
    assert np.any(target.parameters()[next(iter(state))] != 0)


def test_parameters_are_the_live_arrays():
    layer = Linear(H, O, dtype=np.float64, seed=47)
    params = layer.parameters()
    assert params["weight"] is layer.weight and params["bias"] is layer.bias
    params["weight"] -= 1.0  # an optimizer step, in place
    h = rng(48).standard_normal((T, B, H))
    assert_close(layer.forward(h), np.einsum("tbh,oh->tbo", h, params["weight"]) + layer.bias,
                 TOL["float64"])
    assert set(Linear(H, O, bias=False).parameters()) == {"weight"}


# (layer kind, how the state dict is spoiled, fragments of the message)
BAD_STATE = [
    ("linear", lambda d: d.pop("bias"), ["'bias'", "missing"]),
    ("linear-no-bias", lambda d: d.update(bias=np.zeros(O)), ["'bias'", "unexpected"]),
    ("linear", lambda d: d.update(weight=np.zeros((H, O))), ["weight", f"{(O, H)}", f"{(H, O)}"]),
    ("linear", lambda d: d.update(bias=np.zeros(O + 1)), ["bias", f"{(O,)}", f"{(O + 1,)}"]),
    ("embedding", lambda d: d.update(weight=np.zeros((V, E + 1))), ["weight", f"{(V, E + 1)}"]),
]


@pytest.mark.parametrize("kind, spoil, fragments", BAD_STATE)
def test_load_state_dict_rejects_mismatches_and_loads_nothing(kind, spoil, fragments):
    make = layers()[kind]
    target = make(49)
    before = target.state_dict()
    state = make(50).state_dict()
    spoil(state)
    with pytest.raises(ValueError, match="state_dict") as excinfo:
        target.load_state_dict(state)
    check_message(excinfo, *fragments)
    for name, array in target.parameters().items():
        np.testing.assert_array_equal(array, before[name])


@pytest.mark.parametrize("kind", ["linear", "embedding"])
def test_load_state_dict_casts_other_float_precisions(kind):
    """As torch's load_state_dict (and RNN's): float values are cast to the layer's dtype."""
    make = layers()[kind]
    target = make(49)
    state = {name: array.astype(np.float32) for name, array in make(50).state_dict().items()}
    target.load_state_dict(state)
    for name, array in target.parameters().items():
        assert array.dtype == np.float64
        np.testing.assert_array_equal(array, state[name].astype(np.float64))


@pytest.mark.parametrize("dtype", [np.complex128, np.bool_, object, "U3"])
def test_load_state_dict_rejects_values_that_are_not_real_numbers(dtype):
    target = Embedding(V, E, dtype=np.float64, seed=49)
    before = target.state_dict()
    with pytest.raises(TypeError, match=r"state_dict\['weight'\] must hold real numbers"):
        target.load_state_dict({"weight": np.zeros((V, E), dtype=dtype)})
    np.testing.assert_array_equal(target.weight, before["weight"])


def test_load_state_dict_rejects_a_non_mapping():
    with pytest.raises(TypeError, match="state_dict"):
        Linear(H, O).load_state_dict([np.zeros((O, H))])


# ---------------------------------------------------------------------------------------------
# Error paths: (what is called, exception, fragments of the message: the argument name first).
# ---------------------------------------------------------------------------------------------
def linear64(bias=True):
    return Linear(H, O, bias=bias, dtype=np.float64, seed=51)


def linear_after_forward():
    layer = linear64()
    layer.forward(np.zeros((T, B, H)))
    return layer


def embedding_after_forward():
    emb = Embedding(V, E, dtype=np.float64, seed=52)
    emb.forward(IDS)
    return emb


LOGITS = np.zeros((T, B, V))
TARGETS = np.zeros((T, B), dtype=np.int64)

ERRORS = {
    # constructors
    "linear-in_features-0": (lambda: Linear(0, O), ValueError, ["in_features", "0"]),
    "linear-in_features-float": (lambda: Linear(2.5, O), TypeError, ["in_features", "2.5"]),
    "linear-out_features-bool": (lambda: Linear(H, True), TypeError, ["out_features"]),
    "linear-bias-str": (lambda: Linear(H, O, bias="yes"), TypeError, ["bias", "'yes'"]),
    "linear-dtype-int": (lambda: Linear(H, O, dtype=np.int32), TypeError, ["dtype", "int32"]),
    "linear-dtype-float16": (lambda: Linear(H, O, dtype=np.float16), TypeError,
                             ["dtype", "float16"]),
    "linear-seed-str": (lambda: Linear(H, O, seed="x"), TypeError, ["seed", "'x'"]),
    "embedding-num_embeddings-0": (lambda: Embedding(0, E), ValueError, ["num_embeddings", "0"]),
    "embedding-embedding_dim-neg": (lambda: Embedding(V, -1), ValueError,
                                    ["embedding_dim", "-1"]),
    "embedding-dtype-str": (lambda: Embedding(V, E, dtype="int64"), TypeError,
                            ["dtype", "int64"]),
    # Linear.forward
    "linear-h-2D": (lambda: linear64().forward(np.zeros((B, H))), ValueError,
                    ["h", "3-D", "2-D", f"{(B, H)}"]),
    "linear-h-4D": (lambda: linear64().forward(np.zeros((T, B, H, 1))), ValueError,
                    ["h", "3-D", "4-D"]),
    "linear-h-wrong-H": (lambda: linear64().forward(np.zeros((T, B, H + 2))), ValueError,
                         ["h", "H", str(H), str(H + 2)]),
    "linear-h-empty": (lambda: linear64().forward(np.zeros((0, B, H))), ValueError,
                       ["h", "T = 0"]),
    "linear-h-int": (lambda: linear64().forward(np.zeros((T, B, H), dtype=np.int64)), TypeError,
                     ["h", "int64"]),
    "linear-h-float32": (lambda: linear64().forward(np.zeros((T, B, H), dtype=np.float32)),
                         TypeError, ["h", "float64", "float32"]),
    # Linear.backward
    "linear-backward-first": (lambda: linear64().backward(np.zeros((T, B, O))), RuntimeError,
                              ["forward"]),
    "linear-dy-2D": (lambda: linear_after_forward().backward(np.zeros((B, O))), ValueError,
                     ["dy", "3-D", "2-D"]),
    "linear-dy-wrong-T": (lambda: linear_after_forward().backward(np.zeros((T + 1, B, O))),
                          ValueError, ["dy", "T", str(T), str(T + 1)]),
    "linear-dy-wrong-O": (lambda: linear_after_forward().backward(np.zeros((T, B, O + 1))),
                          ValueError, ["dy", "O", str(O), str(O + 1)]),
    "linear-dy-float32": (lambda: linear_after_forward().backward(
        np.zeros((T, B, O), dtype=np.float32)), TypeError, ["dy", "float64", "float32"]),
    # Embedding.forward
    "ids-float": (lambda: Embedding(V, E).forward(IDS.astype(float)), TypeError,
                  ["ids", "integer", "float64"]),
    "ids-bool": (lambda: Embedding(V, E).forward(IDS > 2), TypeError, ["ids", "bool"]),
    "ids-1D": (lambda: Embedding(V, E).forward(np.arange(3)), ValueError,
               ["ids", "2-D", "1-D"]),
    "ids-3D": (lambda: Embedding(V, E).forward(IDS[..., None]), ValueError,
               ["ids", "2-D", "3-D"]),
    "ids-empty": (lambda: Embedding(V, E).forward(np.zeros((T, 0), dtype=int)), ValueError,
                  ["ids", "B = 0"]),
    "ids-negative": (lambda: Embedding(V, E).forward(np.array([[0, 1], [-1, 2]])), ValueError,
                     ["ids", "-1", "(1, 0)", str(V)]),
    "ids-too-large": (lambda: Embedding(V, E).forward(np.array([[0, V]])), ValueError,
                      ["ids", f"got {V}", "(0, 1)", "num_embeddings"]),
    # Embedding.backward
    "embedding-backward-first": (lambda: Embedding(V, E).backward(np.zeros((T, B, E))),
                                 RuntimeError, ["forward"]),
    "embedding-dout-wrong-B": (lambda: embedding_after_forward().backward(
        np.zeros((T, B + 1, E))), ValueError, ["dout", "B", str(B), str(B + 1)]),
    "embedding-dout-wrong-E": (lambda: embedding_after_forward().backward(
        np.zeros((T, B, E + 2))), ValueError, ["dout", "E", str(E), str(E + 2)]),
    "embedding-dout-2D": (lambda: embedding_after_forward().backward(np.zeros((T, B))),
                          ValueError, ["dout", "3-D", "2-D"]),
    "embedding-dout-float32": (lambda: embedding_after_forward().backward(
        np.zeros((T, B, E), dtype=np.float32)), TypeError, ["dout", "float64", "float32"]),
    # softmax_cross_entropy
    "logits-2D": (lambda: softmax_cross_entropy(np.zeros((T, V)), TARGETS), ValueError,
                  ["logits", "3-D", "2-D"]),
    "logits-int": (lambda: softmax_cross_entropy(LOGITS.astype(int), TARGETS), TypeError,
                   ["logits", "int64"]),
    "logits-empty": (lambda: softmax_cross_entropy(np.zeros((T, B, 0)), TARGETS[:, :]),
                     ValueError, ["logits", "V = 0"]),
    "targets-float": (lambda: softmax_cross_entropy(LOGITS, TARGETS.astype(float)), TypeError,
                      ["targets", "integer", "float64"]),
    "targets-3D": (lambda: softmax_cross_entropy(LOGITS, TARGETS[..., None]), ValueError,
                   ["targets", "2-D", "3-D"]),
    "targets-wrong-T": (lambda: softmax_cross_entropy(LOGITS, np.zeros((T + 1, B), dtype=int)),
                        ValueError, ["targets", "T", str(T), str(T + 1)]),
    "targets-wrong-B": (lambda: softmax_cross_entropy(LOGITS, np.zeros((T, B + 2), dtype=int)),
                        ValueError, ["targets", "B", str(B), str(B + 2)]),
    "targets-too-large": (lambda: softmax_cross_entropy(LOGITS, np.full((T, B), V)), ValueError,
                          ["targets", f"got {V}", "V"]),
    "targets-negative": (lambda: softmax_cross_entropy(LOGITS, np.full((T, B), -1)), ValueError,
                         ["targets", "-1"]),
    "targets-bad-unmasked": (lambda: softmax_cross_entropy(
        LOGITS, np.where(MASK, V, 0), MASK), ValueError, ["targets", f"got {V}", "(0, 0)"]),
    "mask-wrong-shape": (lambda: softmax_cross_entropy(LOGITS, TARGETS, np.ones((B, T), bool)),
                         ValueError, ["mask", f"{(T, B)}", f"{(B, T)}"]),
    "mask-3D": (lambda: softmax_cross_entropy(LOGITS, TARGETS, np.ones((T, B, 1), bool)),
                ValueError, ["mask", "2-D", "3-D"]),
    "mask-value-2": (lambda: softmax_cross_entropy(LOGITS, TARGETS, np.full((T, B), 2)),
                     ValueError, ["mask", "0 and 1", "2"]),
    "mask-str": (lambda: softmax_cross_entropy(LOGITS, TARGETS, np.full((T, B), "y")),
                 TypeError, ["mask", "bool"]),
    "mask-all-masked": (lambda: softmax_cross_entropy(LOGITS, TARGETS, np.zeros((T, B), bool)),
                        ValueError, ["mask", "unmasked", str(T * B)]),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_error_paths(name):
    call, exception, fragments = ERRORS[name]
    with pytest.raises(exception) as excinfo:
        call()
    assert type(excinfo.value) is exception
    check_message(excinfo, *fragments)
    if exception is not RuntimeError:  # validation errors start with the argument's name
        assert str(excinfo.value).startswith(fragments[0]), str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# PyTorch as an outside oracle.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(bias):
    torch = pytest.importorskip("torch")
    ref = torch.nn.Linear(H, O, bias=bias, dtype=torch.float64)
    layer = Linear(H, O, bias=bias, dtype=np.float64, seed=53)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    h = rng(54).standard_normal((T, B, H))
    G = rng(55).standard_normal((T, B, O))
    h_t = torch.tensor(h, requires_grad=True)
    y_t = ref(h_t)
    y_t.backward(torch.tensor(G))
    assert_close(layer.forward(h), y_t.detach().numpy(), TOL["torch_float64"], "y")
    assert_close(layer.backward(G), h_t.grad.numpy(), TOL["torch_float64"], "dh")
    for name, param in ref.named_parameters():
        assert_close(layer.grads[name], param.grad.numpy(), TOL["torch_float64"], name)


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    ref = torch.nn.Embedding(V, E, dtype=torch.float64)
    emb = Embedding(V, E, dtype=np.float64, seed=56)
    emb.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    G = rng(57).standard_normal((T, B, E))
    out_t = ref(torch.tensor(IDS))
    out_t.backward(torch.tensor(G))
    assert_close(emb.forward(IDS), out_t.detach().numpy(), TOL["torch_float64"], "out")
    emb.backward(G)
    assert_close(emb.grads["weight"], ref.weight.grad.numpy(), TOL["torch_float64"], "weight")


@pytest.mark.parametrize("mask", [None, MASK], ids=["no-mask", "mask"])
def test_cross_entropy_matches_torch(mask):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    logits = 3 * rng(58).standard_normal((T, B, V))
    targets = make_targets(59)
    loss, dlogits = softmax_cross_entropy(logits, targets, mask)
    logits_t = torch.tensor(logits, requires_grad=True)
    # ignore_index plays the role of the mask in torch.
    ignored = targets if mask is None else np.where(mask, targets, -100)
    loss_t = F.cross_entropy(logits_t.reshape(T * B, V), torch.tensor(ignored.reshape(T * B)),
                             ignore_index=-100, reduction="mean")
    loss_t.backward()
    assert_close(loss, loss_t.item(), TOL["torch_float64"], "loss")
    assert_close(dlogits, logits_t.grad.numpy(), TOL["torch_float64"], "dlogits")
