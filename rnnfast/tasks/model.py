"""The network of the tasks: an RNN read out by a linear layer at every step, and its checkpoints.

    x (T, B, D) -> RNN -> h (T, B, H) -> Linear -> y (T, B, O)

trained with the masked mean squared error (rnnfast.nn.masked_mse) on a task's targets.
Parameters are named "<part>.<name>" ("rnn.weight_hh_l0", "readout.weight"), like the state dict
of the equivalent torch module with submodules rnn and readout.
"""
import numpy as np

from rnnfast.nn import RNN, Composite, Linear
from rnnfast.tasks.registry import make_task
from rnnfast.train import checkpoint
from rnnfast.utils.validation import check_choice, check_float_dtype, check_real, check_size

__all__ = ["TaskRNN", "task_checkpoint", "load_task_model", "RECURRENT_INITS"]

RECURRENT_INITS = ("torch", "identity")
# "identity": W_hh = IDENTITY_GAIN * I + IDENTITY_NOISE * N(0, 1/H) (Le, Jaitly & Hinton 2015).
IDENTITY_GAIN, IDENTITY_NOISE = 0.9, 0.1


class TaskRNN(Composite):
    """A one-layer RNN with a linear readout: the model neuroscience tasks are trained on.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        D, H and O.
    nonlinearity : {"tanh", "relu"}
    leak : float
        α = dt/τ in (0, 1] of the continuous-time network the task is usually trained on,
        h_t = (1 - α) h_{t-1} + α f(a_t) (PsychRNN, Yang et al. 2019); 1, the default, is the
        Elman RNN. One number here (a per-unit leak: build an ``rnnfast.RNN`` directly).
    noise_std : float
        σ of the recurrent noise on a_t during every pass, of standard deviation sqrt(2/α) σ
        per step (Yang et al.'s convention; see rnnfast.nn.leaky); 0, the default: none. The
        fixed points are those of the noise-free map.
    recurrent_init : {"torch", "identity"}
        W_hh as torch.nn.RNN draws it (uniform in ±1/sqrt(H): a network that forgets within a
        few steps), or 0.9 I + 0.1 N(0, 1/H): one that starts by holding its state, so that
        what a trial shows early survives its delays while the network learns (needed by
        delayed match-to-sample, faster on the decision tasks).
    dtype : float32 or float64
    seed : int or None
        Seeds the initialisation of both parts (independently of each other).
    n_threads : int or None
        Threads for the RNN kernels (None: every core).

    ``rnn`` is the rnnfast.RNN (torch.nn.RNN's parameters and initialisation) and ``readout``
    the rnnfast.Linear; ``rnnfast.dynamics.find_fixed_points`` takes the model itself.
    """

    PARTS = ("rnn", "readout")

    def __init__(self, input_size, hidden_size, output_size, *, nonlinearity="tanh", leak=1.0,
                 noise_std=0.0, recurrent_init="torch", dtype=np.float32, seed=None,
                 n_threads=None):
        self.config = {"input_size": check_size(input_size, "input_size"),
                       "hidden_size": check_size(hidden_size, "hidden_size"),
                       "output_size": check_size(output_size, "output_size"),
                       "nonlinearity": nonlinearity,
                       "leak": check_real(leak, "leak", low=0.0, high=1.0, include_low=False,
                                          include_high=True),
                       "noise_std": check_real(noise_std, "noise_std", low=0.0),
                       "recurrent_init": check_choice(recurrent_init, "recurrent_init",
                                                      RECURRENT_INITS),
                       "dtype": check_float_dtype(dtype).name}
        rnn_rng, readout_rng, recurrent_rng = (np.random.default_rng(s)
                                               for s in np.random.SeedSequence(seed).spawn(3))
        c = self.config
        self.rnn = RNN(c["input_size"], c["hidden_size"], nonlinearity=nonlinearity,
                       dtype=c["dtype"], seed=rnn_rng, n_threads=n_threads, leak=c["leak"],
                       noise_std=c["noise_std"])
        if recurrent_init == "identity":
            H = c["hidden_size"]
            self.rnn.parameters()["weight_hh_l0"][...] = IDENTITY_GAIN * np.eye(H) + (
                IDENTITY_NOISE / np.sqrt(H)) * recurrent_rng.standard_normal((H, H))
        self.readout = Linear(c["hidden_size"], c["output_size"], dtype=c["dtype"],
                              seed=readout_rng)

    def __repr__(self):
        settings = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"TaskRNN({settings})"

    @property
    def dtype(self):
        return np.dtype(self.config["dtype"])

    def forward(self, inputs, h0=None):
        """Outputs and hidden states for a batch of trials.

        Parameters
        ----------
        inputs : array_like, shape (T, B, D)
        h0 : array_like, shape (B, H), or None (zeros)

        Returns
        -------
        outputs : ndarray, shape (T, B, O)
        states : ndarray, shape (T, B, H)
        """
        states, _ = self.rnn.forward(inputs, None if h0 is None else np.asarray(h0)[None])
        return self.readout.forward(states), states

    __call__ = forward

    def backward(self, doutputs):
        """Gradients for the last forward, given dL/doutputs (T, B, O): name -> gradient, keyed
        like ``parameters()``."""
        self.rnn.backward(self.readout.backward(doutputs))
        return self.grads


def task_checkpoint(model, task, meta=None):
    """(meta, sections) for ``rnnfast.train.checkpoint.save``: the model's settings and the
    task's under meta["model"] and meta["task"] ({"name": ..., "settings": ...}), anything in
    ``meta`` besides, and the parameters in section "model"."""
    info = dict(meta or {})
    info.update({"kind": "task-rnn", "model": dict(model.config),
                 "task": {"name": task.name, "settings": task.settings()}})
    return info, {"model": model.state_dict()}


def load_task_model(source, n_threads=None):
    """The model and the task of a checkpoint written with ``task_checkpoint``.

    Parameters
    ----------
    source : str, path-like or rnnfast.train.checkpoint.Checkpoint

    Returns
    -------
    model : TaskRNN
    task : Task

    Raises
    ------
    rnnfast.train.checkpoint.CheckpointError
        Not a readable checkpoint, not one of a task model, or inconsistent.
    """
    ckpt = source if isinstance(source, checkpoint.Checkpoint) else checkpoint.load(source)
    if ckpt.meta.get("kind") != "task-rnn":
        raise checkpoint.CheckpointError(
            f"checkpoint {ckpt.path!r} does not hold a task model (it has no kind 'task-rnn'; "
            f"`rnnfast train` writes language models)")
    config, task_info = ckpt.require("model", "task")
    try:
        task = make_task(task_info["name"], **task_info["settings"])
        model = TaskRNN(**config, n_threads=n_threads)
        if (model.config["input_size"], model.config["output_size"]) != (
                task.input_size, task.output_size):
            raise ValueError(f"its model has {model.config['input_size']} inputs and "
                             f"{model.config['output_size']} outputs, its task "
                             f"{task.input_size} and {task.output_size}")
        model.load_state_dict(ckpt.section("model"))
    except (TypeError, ValueError, KeyError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint {ckpt.path!r} does not hold a consistent task model: {exc}") from None
    return model, task
