"""Helpers of the rnnfast.torch tests: one configuration run through rnnfast.torch.RNN and
through torch.nn.RNN on the same weights and inputs, and the comparison of everything.

The oracle is torch.nn.RNN in float64. An rnnfast float32 run is compared with the float64
oracle on the same values (inputs and weights rounded to float32 first), to the suite's
float32-against-float64 tolerances; a float64 run to TOL["torch_float64"].
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnfast.torch as rt
from rnn_helpers import FLOAT32_VS_FLOAT64, TOL, assert_close

TORCH_TOL = {torch.float64: {"forward": TOL["torch_float64"], "grad": TOL["torch_float64"]},
             torch.float32: FLOAT32_VS_FLOAT64}


@dataclass(frozen=True)
class Config:
    """One way to call the module: its options and the shape of the input."""

    T: int = 4
    B: int = 3
    D: int = 5
    H: int = 6
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    dropout: float = 0.0
    dtype: torch.dtype = torch.float64
    with_hx: bool = True
    unbatched: bool = False
    lengths: Optional[tuple] = None  # a PackedSequence input with these lengths
    enforce_sorted: bool = True
    train: bool = False
    seed: int = 0
    module_options: dict = field(default_factory=dict)

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    def module_args(self):
        return dict(input_size=self.D, hidden_size=self.H, num_layers=self.num_layers,
                    nonlinearity=self.nonlinearity, bias=self.bias,
                    batch_first=self.batch_first, dropout=self.dropout,
                    bidirectional=self.bidirectional)


def make_inputs(config):
    """x (in the module's layout), hx or None, and the upstream gradients G (of output) and
    G_n (of h_n), float64 values already rounded to the config's dtype."""
    c = config
    gen = torch.Generator().manual_seed(1000 + c.seed)

    def draw(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(c.dtype).double()

    if c.unbatched:
        x_shape, hx_shape = (c.T, c.D), (c.num_layers * c.directions, c.H)
        out_shape, h_n_shape = (c.T, c.directions * c.H), hx_shape
    else:
        x_shape = (c.B, c.T, c.D) if c.batch_first else (c.T, c.B, c.D)
        hx_shape = (c.num_layers * c.directions, c.B, c.H)
        out_shape = x_shape[:2] + (c.directions * c.H,)
        h_n_shape = hx_shape
    x = draw(*x_shape)
    hx = 0.5 * draw(*hx_shape) if c.with_hx else None
    G, G_n = draw(*out_shape), draw(*h_n_shape)
    if c.lengths is not None:  # gradients only on the real steps, as packing keeps them
        mask = _length_mask(c)
        G = G * mask
    return x, hx, G, G_n


def _length_mask(c):
    steps = torch.arange(c.T)[:, None] < torch.tensor(c.lengths)[None, :]  # (T, B)
    mask = steps.t() if c.batch_first else steps
    return mask[..., None].double()


def reference_module(config):
    """torch.nn.RNN in float64 with weights drawn by torch (seeded), rounded to the dtype."""
    torch.manual_seed(config.seed)
    ref = torch.nn.RNN(**config.module_args(), dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(config.dtype))
    return ref.train(config.train)


def run(module, config, x, hx, G, G_n, dtype):
    """Forward + backward of loss = sum(output * G) + sum(h_n * G_n) in dtype.

    Returns (output, h_n, grads): output padded (T, B, ...) in the module's layout, grads a
    dict: x, hx (when given) and every parameter by name, all as float64 tensors.
    """
    x = x.to(dtype).requires_grad_(True)
    hx = None if hx is None else hx.to(dtype).requires_grad_(True)
    c = config
    if c.lengths is not None:
        inp = pack_padded_sequence(x, torch.tensor(c.lengths), batch_first=c.batch_first,
                                   enforce_sorted=c.enforce_sorted)
    else:
        inp = x
    torch.manual_seed(77)  # the dropout masks, when training with dropout
    output, h_n = module(inp, hx)
    if isinstance(output, PackedSequence):
        output, _ = torch.nn.utils.rnn.pad_packed_sequence(output, batch_first=c.batch_first,
                                                           total_length=c.T)
    loss = (output * G.to(dtype)).sum() + (h_n * G_n.to(dtype)).sum()
    names = ["x"] + (["hx"] if hx is not None else []) + [n for n, _ in module.named_parameters()]
    inputs = [x] + ([hx] if hx is not None else []) + list(module.parameters())
    grads = torch.autograd.grad(loss, inputs)
    return output.detach().double(), h_n.detach().double(), {
        n: g.double() for n, g in zip(names, grads)}


def check_against_torch(config):
    """rnnfast.torch.RNN of config agrees with torch.nn.RNN: output, h_n, every gradient."""
    ref = reference_module(config)
    ours = rt.RNN.from_torch(ref).to(config.dtype)
    ours.train(config.train)
    x, hx, G, G_n = make_inputs(config)
    expected = run(ref, config, x, hx, G, G_n, torch.float64)
    got = run(ours, config, x, hx, G, G_n, config.dtype)
    compare(got, expected, config.dtype)
    return ours, got


def compare(got, expected, dtype):
    tol = TORCH_TOL[dtype]
    assert_close(got[0].numpy(), expected[0].numpy(), tol["forward"], "output")
    assert_close(got[1].numpy(), expected[1].numpy(), tol["forward"], "h_n")
    assert got[2].keys() == expected[2].keys()
    for name in expected[2]:
        assert_close(got[2][name].numpy(), expected[2][name].numpy(), tol["grad"], name)


def lengths_for(T, B, seed):
    """Random lengths in 1..T (one of them T, so that T is the padded length), unsorted."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    return tuple(int(v) for v in lengths)
