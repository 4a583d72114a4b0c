"""A training run of the character model, as `rnnfast train` makes one: the text and its
held-out tail, the model, the optimizer, the TBPTT trainer, the history of validation losses,
and the checkpoint that saves all of it so that a resumed run continues exactly where it stopped
(the same weights as a run that was never stopped).

The command line adds the budget, the progress bar, Ctrl-C and the printing around it.
"""
import os

from rnnfast.charlm.model import CharRNN, load_model, model_checkpoint
from rnnfast.charlm.text import (Vocabulary, default_corpus, fingerprint, read_text, split_tail,
                                 unigram_cross_entropy)
from rnnfast.train import TBPTTTrainer, TokenStreams, checkpoint, evaluate, optim

__all__ = ["RUN_DEFAULTS", "ADJUSTABLE_DEFAULTS", "DEFAULT_LR", "MAX_HELD_OUT", "load_corpus",
           "build_optimizer", "TrainingRun"]

# The settings that define a run (model, data, optimisation); a resumed run keeps its
# checkpoint's.
RUN_DEFAULTS = {
    "hidden_size": 256, "num_layers": 1, "embedding_dim": 64, "nonlinearity": "tanh",
    "dropout": 0.0, "dtype": "float32", "seq_len": 64, "batch_size": 32, "optimizer": "adam",
    "momentum": 0.9, "seed": 0,
}
# Settings that may change when a run resumes: new values apply from then on.
ADJUSTABLE_DEFAULTS = {"clip_norm": 5.0, "clip_value": 0.0}
DEFAULT_LR = {"adam": 3e-3, "adagrad": 0.1, "sgd": 0.5}
MAX_HELD_OUT = 50_000  # characters of the text's tail held out for validation, at most


def load_corpus(path=None, saved_corpus=None, replace_invalid=False):
    """(text, corpus record) of a run: the file at ``path``, or the text of the run whose
    checkpoint recorded ``saved_corpus``, or (neither) the default corpus.

    The record holds the absolute path (None for the default corpus), a fingerprint of the
    text, a description for messages and whether invalid UTF-8 was replaced.

    Raises
    ------
    ValueError
        The file cannot be read, is not valid UTF-8 (unless ``replace_invalid``) or is too
        short; or it is not the text of ``saved_corpus``'s run.
    """
    if path is None and saved_corpus is not None:
        path = saved_corpus["path"]
        replace_invalid = replace_invalid or saved_corpus.get("replace_invalid", False)
    if path is None:
        text, description = default_corpus()
    else:
        text = read_text(path, replace_invalid=replace_invalid)
        description = f"{len(text):,} characters of {path}"
        path = os.path.abspath(path)
    corpus = {"path": path, "fingerprint": fingerprint(text), "description": description,
              "replace_invalid": bool(replace_invalid)}
    if saved_corpus is not None and corpus["fingerprint"] != saved_corpus["fingerprint"]:
        raise ValueError(f"the text ({description}) is not the text the checkpoint was "
                         f"trained on ({saved_corpus['description']}); give that text to "
                         f"continue the run")
    return text, corpus


def build_optimizer(settings, params):
    """The optimizer that ``settings`` ("optimizer", "lr", "momentum") name, on ``params``."""
    name, lr = settings["optimizer"], settings["lr"]
    if name == "adam":
        return optim.Adam(params, lr=lr)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr)
    return optim.SGD(params, lr=lr, momentum=settings["momentum"])


class TrainingRun:
    """One run: the model trained on the head of a text with truncated BPTT.

    Parameters
    ----------
    settings : dict
        The keys of RUN_DEFAULTS and ADJUSTABLE_DEFAULTS, and "lr".
    text : str
    corpus : dict
        Its record (``load_corpus``).
    n_threads : int or None
        Threads of the model's kernels.
    saved : rnnfast.train.checkpoint.Checkpoint or None
        Continue the run of this checkpoint (its model, optimizer, trainer and history).

    Raises
    ------
    rnnfast.train.CheckpointError
        ``saved`` does not hold a usable run.
    ValueError
        The text is too short for the held-out tail and the batch.
    """

    def __init__(self, settings, text, corpus, *, n_threads=None, saved=None):
        s = self.settings = dict(settings)
        self.corpus = corpus
        if saved is not None:
            self.history, self.seconds_before = saved.require("history", "seconds")
            self.model, self.vocab = load_model(saved, n_threads=n_threads)
        else:
            self.history, self.seconds_before = [], 0.0
            self.vocab = Vocabulary.from_text(text)
            self.model = CharRNN(len(self.vocab), s["hidden_size"], s["num_layers"],
                                 s["embedding_dim"], s["nonlinearity"], s["dropout"],
                                 s["dtype"], seed=s["seed"], n_threads=n_threads)
        self.train_ids, self.val_ids = split_tail(self.vocab.encode(text), max_tail=MAX_HELD_OUT)
        self.baseline = unigram_cross_entropy(self.train_ids, self.val_ids, len(self.vocab))
        self.optimizer = build_optimizer(s, self.model.parameters())
        streams = TokenStreams(self.train_ids, s["batch_size"], s["seq_len"])
        self.trainer = TBPTTTrainer(self.model, self.optimizer, streams,
                                    clip_norm=s["clip_norm"] or None,
                                    clip_value=s["clip_value"] or None)
        if saved is not None:
            try:
                self.optimizer.load_state_dict(saved.section("optimizer"))
                self.trainer.load_state_dict(saved.section("trainer"))
            except (TypeError, ValueError, KeyError) as exc:
                raise checkpoint.CheckpointError(
                    f"checkpoint {saved.path!r} has an unusable training state: {exc}") from None
            self.optimizer.lr = s["lr"]
        self.saved_steps = self.trainer.steps if saved is not None else None

    @property
    def steps(self):
        """Steps (chunks) trained, counting those before a resume."""
        return self.trainer.steps

    def step(self):
        """Train on the next chunk; its mean loss (nats per character). NonFiniteError on NaN or
        inf (see ``TBPTTTrainer.step``)."""
        return self.trainer.step()

    def evaluate(self, train_loss, seconds):
        """The validation loss now; recorded in the history with the step, the time trained
        (``seconds`` in this session, plus the sessions before) and ``train_loss``."""
        val = evaluate(self.model, self.val_ids)
        self.history.append({"step": self.steps,
                             "seconds": round(self.seconds_before + seconds, 1),
                             "train_loss": round(train_loss, 4), "val_loss": round(val, 4)})
        return val

    def save(self, path, seconds):
        """Write the run to the checkpoint ``path`` atomically (``seconds``: trained in this
        session); ``saved_steps`` records the step it holds."""
        meta, sections = model_checkpoint(self.model, self.vocab)
        meta.update({"training": self.settings, "corpus": self.corpus, "history": self.history,
                     "seconds": self.seconds_before + seconds})
        sections["optimizer"] = self.optimizer.state_dict()
        sections["trainer"] = self.trainer.state_dict()
        checkpoint.save(path, meta, sections)
        self.saved_steps = self.steps
