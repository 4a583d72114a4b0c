"""The character-level language model: embedding -> RNN -> linear output, and text generation.

    ids (T, B) -> Embedding -> x (T, B, E) -> RNN -> h (T, B, H) -> Linear -> logits (T, B, V)

trained with softmax cross-entropy against the next character (rnnfast.train). Parameters are
named "<part>.<name>" ("embedding.weight", "rnn.weight_hh_l0", "output.bias"), like the state
dict of the equivalent torch module with submodules embedding, rnn and output.
"""
import numpy as np

from rnnfast.charlm.text import Vocabulary
from rnnfast.nn import RNN, Composite, Embedding, Linear
from rnnfast.train import checkpoint
from rnnfast.utils.validation import (as_float_array, check_float_dtype, check_real, check_size,
                                      random_generator)

__all__ = ["CharRNN", "generate", "model_checkpoint", "load_model"]


class CharRNN(Composite):
    """A character-level (or any token-level) RNN language model.

    Parameters
    ----------
    vocab_size : int
        V, the number of distinct tokens.
    hidden_size : int
        H of every RNN layer.
    num_layers : int
        Stacked RNN layers.
    embedding_dim : int
        E, the size of the token vectors fed to the RNN.
    nonlinearity : {"tanh", "relu"}
    dropout : float
        Dropout between RNN layers, in training mode (as torch.nn.RNN).
    dtype : float32 or float64
    seed : int, numpy Generator or None
        Seeds the initialisation of every part and the dropout masks.
    n_threads : int or None
        Threads for the RNN kernels and the output layer's GEMMs (None: every core). On more
        than one, the output layer runs on the kernels' team (``Linear(n_threads=...)``), so
        that no second pool of threads (NumPy's BLAS's) spins on the cores the RNN's team
        needs next; on one, its GEMMs are NumPy's.
    """

    PARTS = ("embedding", "rnn", "output")

    def __init__(self, vocab_size, hidden_size=256, num_layers=1, embedding_dim=64,
                 nonlinearity="tanh", dropout=0.0, dtype=np.float32, seed=None, n_threads=None):
        self.config = {
            "vocab_size": check_size(vocab_size, "vocab_size"),
            "hidden_size": check_size(hidden_size, "hidden_size"),
            "num_layers": check_size(num_layers, "num_layers"),
            "embedding_dim": check_size(embedding_dim, "embedding_dim"),
            "nonlinearity": nonlinearity,
            "dropout": dropout,
            "dtype": check_float_dtype(dtype).name,
        }
        # One independent generator per part, so each part's draws do not depend on the others'.
        embedding_rng, rnn_rng, output_rng = random_generator(seed).spawn(3)
        c = self.config
        self.embedding = Embedding(c["vocab_size"], c["embedding_dim"], dtype=c["dtype"],
                                   seed=embedding_rng)
        self.rnn = RNN(c["embedding_dim"], c["hidden_size"], c["num_layers"],
                       nonlinearity=nonlinearity, dropout=dropout, dtype=c["dtype"],
                       seed=rnn_rng, n_threads=n_threads)
        self.output = Linear(c["hidden_size"], c["vocab_size"], dtype=c["dtype"], seed=output_rng,
                             n_threads=n_threads)

    def __repr__(self):
        settings = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"CharRNN({settings})"

    @property
    def dtype(self):
        return np.dtype(self.config["dtype"])

    @property
    def n_threads(self):
        """The threads of the model's kernels (its RNN's), as given (None: every core)."""
        return self.rnn.n_threads

    @property
    def state_shape(self):
        """The shape of the hidden state for one sequence: (num_layers, H)."""
        return (self.config["num_layers"], self.config["hidden_size"])

    # -- passes ------------------------------------------------------------------------------

    def forward(self, ids, h0=None):
        """Next-token logits for every position.

        Parameters
        ----------
        ids : array_like of int, shape (T, B)
        h0 : array_like, shape (num_layers, B, H), or None (zeros)
            The state carried from the previous chunk of the same streams.

        Returns
        -------
        logits : ndarray, shape (T, B, V)
        h_n : ndarray, shape (num_layers, B, H)
        """
        x = self.embedding.forward(ids)
        h, h_n = self.rnn.forward(x, h0)
        return self.output.forward(h), h_n

    __call__ = forward

    def backward(self, dlogits):
        """Gradients of the loss for the last forward, given dL/dlogits (T, B, V).

        Returns name -> gradient, keyed like ``parameters()``. The gradient stops at h0 (the
        boundary of truncated BPTT).
        """
        dh = self.output.backward(dlogits)
        dx, _ = self.rnn.backward(dh)
        self.embedding.backward(dx)
        return self.grads

    def initial_state(self, batch_size):
        """Zeros of shape (num_layers, B, H)."""
        return np.zeros((self.config["num_layers"], batch_size, self.config["hidden_size"]),
                        dtype=self.dtype)


def model_checkpoint(model, vocab):
    """What a checkpoint holds of a model: (meta, sections) for ``checkpoint.save``.

    meta has "model" (the constructor's settings), "vocab" (the characters, in id order) and
    "rng" (the state of the dropout generator); sections has "model" (the parameters).
    """
    meta = {"model": dict(model.config), "vocab": vocab.chars,
            "rng": model.rnn.rng.bit_generator.state}
    return meta, {"model": model.state_dict()}


def load_model(source, n_threads=None):
    """The model and vocabulary of a checkpoint.

    Parameters
    ----------
    source : str, path-like or rnnfast.train.checkpoint.Checkpoint
    n_threads : int or None
        Threads for the model's kernels.

    Returns
    -------
    model : CharRNN
        With the saved parameters and dropout generator state, in training mode.
    vocab : Vocabulary

    Raises
    ------
    rnnfast.train.CheckpointError
        The file is not a readable checkpoint, or its parameters do not fit its own settings.
    """
    ckpt = source if isinstance(source, checkpoint.Checkpoint) else checkpoint.load(source)
    config, chars, rng_state = ckpt.require("model", "vocab", "rng")
    try:
        model = CharRNN(**config, n_threads=n_threads)
        vocab = Vocabulary(chars)
        if len(vocab) != model.config["vocab_size"]:
            raise ValueError(f"its vocabulary has {len(vocab)} characters but its model "
                             f"vocab_size is {model.config['vocab_size']}")
        model.load_state_dict(ckpt.section("model"))
        model.rnn.rng.bit_generator.state = rng_state
    except (TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint {ckpt.path!r} does not hold a consistent model: {exc}") from None
    return model, vocab


def generate(model, vocab, length, *, prime="", temperature=1.0, seed=None, h0=None):
    """Sample text from a language model, one character at a time: the prime, then ``length``
    characters drawn from the model after it (``rnnfast sample`` prints the same).

    Parameters
    ----------
    model : CharRNN
    vocab : Vocabulary
        The vocabulary the model was trained with.
    length : int
        Characters to generate (after the prime).
    prime : str
        Text the model reads first (its characters must be in the vocabulary); the result
        starts with it. Empty: the first character is drawn from the model's prediction after
        a zero state and a random character of the vocabulary (which is not part of the
        result).
    temperature : float
        Divides the logits before the softmax: below 1 sharper (more likely, more repetitive),
        above 1 flatter (more varied, more errors). 0 takes the most likely character.
    seed : int, numpy Generator or None
    h0 : array_like, shape (num_layers, 1, H), or None

    Returns
    -------
    str
        ``prime`` followed by the ``length`` generated characters.
    """
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a Vocabulary; got {type(vocab).__name__}")
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"vocab has {len(vocab)} characters but the model was built for "
                         f"vocab_size = {model.config['vocab_size']}")
    length = check_size(length, "length")
    temperature = check_real(temperature, "temperature", 0.0)
    if not isinstance(prime, str):
        raise TypeError(f"prime must be a str; got {type(prime).__name__}")
    rng = random_generator(seed)
    state = model.initial_state(1) if h0 is None else as_float_array(h0, "h0", ("L", "B", "H"))
    ids = vocab.encode(prime, "prime") if prime else rng.integers(len(vocab), size=1)

    was_training = model.training
    model.eval()
    try:
        logits, state = model.forward(ids.reshape(-1, 1), state)
        generated = np.empty(length, dtype=np.int64)
        for i in range(length):
            generated[i] = _draw(logits[-1, 0].astype(np.float64), temperature, rng)
            logits, state = model.forward(generated[i:i + 1].reshape(1, 1), state)
    finally:
        model.train(was_training)
    return prime + vocab.decode(generated)


def _draw(logits, temperature, rng):
    """One id from softmax(logits / temperature) (argmax at temperature 0)."""
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits / temperature
    p = np.exp(scaled - scaled.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))
