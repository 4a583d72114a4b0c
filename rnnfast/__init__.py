"""rnnfast: fast vanilla (Elman) recurrent neural networks on the CPU.

The time loop, forward and backprop through time, runs in typed Cython without the GIL; a plain
NumPy reference (rnnfast.reference) follows the textbook equations and checks it.
"""
from rnnfast.functional import RNNCache, RNNGrads, rnn_backward, rnn_forward
from rnnfast.nn import RNN, Embedding, Linear, masked_mse, softmax_cross_entropy
from rnnfast.train import optim

__version__ = "0.1.0"

__all__ = ["rnn_forward", "rnn_backward", "RNNCache", "RNNGrads", "RNN", "Linear", "Embedding",
           "softmax_cross_entropy", "masked_mse", "optim", "__version__"]
