"""Layers: the RNN (torch.nn.RNN's semantics on rnnfast's kernels), an output layer, an
embedding, and the losses: softmax cross-entropy and the masked mean squared error."""
from rnnfast.nn.losses import masked_mse
from rnnfast.nn.parts import Embedding, Linear, softmax_cross_entropy
from rnnfast.nn.rnn import RNN

__all__ = ["RNN", "Linear", "Embedding", "softmax_cross_entropy", "masked_mse"]
