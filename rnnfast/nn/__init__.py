"""Layers and their losses: the RNN (torch.nn.RNN's semantics on rnnfast's kernels), an output
layer over time, a token embedding, softmax cross-entropy and the masked mean squared error, and
the base classes they share."""
from rnnfast.nn.embedding import Embedding
from rnnfast.nn.linear import Linear
from rnnfast.nn.losses import masked_mse, softmax_cross_entropy
from rnnfast.nn.module import Composite, Module
from rnnfast.nn.rnn import RNN, parameter_names

__all__ = ["RNN", "Linear", "Embedding", "softmax_cross_entropy", "masked_mse", "Module",
           "Composite", "parameter_names"]
