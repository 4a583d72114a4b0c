"""Layers: the RNN (torch.nn.RNN's semantics on rnnfast's kernels), an output layer, an
embedding and the softmax cross-entropy loss."""
from rnnfast.nn.parts import Embedding, Linear, softmax_cross_entropy
from rnnfast.nn.rnn import RNN

__all__ = ["RNN", "Linear", "Embedding", "softmax_cross_entropy"]
