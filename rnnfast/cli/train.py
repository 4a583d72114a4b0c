"""`rnnfast train` and `rnnfast sample`: the character-level language model on the command line.

train: read a text (or the default corpus), hold out its tail, train a CharRNN with truncated
BPTT for a time and/or step budget, showing a progress bar, validation losses and samples;
write a checkpoint every N steps, at the end and on Ctrl-C; `--resume` continues a run exactly
where its checkpoint left it (same results as a run that was never stopped).
sample: generate text from a checkpoint.
"""
import os
import signal
import sys
import threading
import time

import numpy as np

from rnnfast.train import checkpoint
from rnnfast.train import optim
from rnnfast.cli.arguments import (non_negative_float, non_negative_int, positive_float,
                                positive_int)
from rnnfast.cli.progress import Progress, format_duration
from rnnfast.charlm.model import CharRNN, generate, load_model, model_checkpoint
from rnnfast.train.streams import TokenStreams
from rnnfast.charlm.text import (Vocabulary, default_corpus, fingerprint, read_text, split_tail,
                          unigram_cross_entropy)
from rnnfast.train import NonFiniteError, TBPTTTrainer, evaluate

DEFAULT_CHECKPOINT = "rnnfast-charlm.npz"
DEFAULT_MINUTES = 2.0

# The settings that define a run (model, data, optimisation). A resumed run keeps its
# checkpoint's; given again on the command line with another value, they are an error.
RUN_DEFAULTS = {
    "hidden_size": 256, "num_layers": 1, "embedding_dim": 64, "nonlinearity": "tanh",
    "dropout": 0.0, "dtype": "float32", "seq_len": 64, "batch_size": 32, "optimizer": "adam",
    "momentum": 0.9, "seed": 0,
}
# Settings that may change when a run resumes: new values apply from then on.
ADJUSTABLE_DEFAULTS = {"clip_norm": 5.0, "clip_value": 0.0}
DEFAULT_LR = {"adam": 3e-3, "adagrad": 0.1, "sgd": 0.5}


# -- argument parsing ------------------------------------------------------------------------


def configure_train_parser(parser):
    parser.add_argument("text_file", nargs="?", metavar="TEXT_FILE",
                        help="UTF-8 text to train on (default: the source of Python's standard "
                             "library, up to 4 million characters). Its last 5%% (at most 50,000 "
                             "characters) is held out for validation.")
    budget = parser.add_argument_group("how long")
    budget.add_argument("--minutes", type=non_negative_float, default=None,
                        help=f"stop after this many minutes of training (default "
                             f"{DEFAULT_MINUTES:g}, unless --steps is given); 0 = no time limit")
    budget.add_argument("--steps", type=positive_int, default=None,
                        help="stop when this many steps (chunks) have been trained, counting "
                             "the steps before a --resume; a run limited by steps alone gives "
                             "the same result on every run with the same seed")
    model = parser.add_argument_group("model (fixed for a run; a resumed run keeps its own)")
    model.add_argument("--hidden-size", dest="hidden_size", type=positive_int,
                       help=f"hidden units per layer, H (default {RUN_DEFAULTS['hidden_size']})")
    model.add_argument("--layers", dest="num_layers", type=positive_int,
                       help=f"stacked RNN layers (default {RUN_DEFAULTS['num_layers']})")
    model.add_argument("--embedding-size", dest="embedding_dim", type=positive_int,
                       help=f"size of the character vectors fed to the RNN "
                            f"(default {RUN_DEFAULTS['embedding_dim']})")
    model.add_argument("--nonlinearity", choices=("tanh", "relu"),
                       help="the RNN's activation (default tanh)")
    model.add_argument("--dropout", type=non_negative_float,
                       help="dropout between stacked layers, in [0, 1) (default 0)")
    model.add_argument("--dtype", choices=("float32", "float64"),
                       help="precision of parameters and computation (default float32)")
    data = parser.add_argument_group("training")
    data.add_argument("--seq-len", dest="seq_len", type=positive_int,
                      help=f"steps per chunk: how far gradients flow back in truncated BPTT "
                           f"(default {RUN_DEFAULTS['seq_len']}); the hidden state carries on "
                           f"across chunks")
    data.add_argument("--batch-size", dest="batch_size", type=positive_int,
                      help=f"streams read in parallel, each from its own part of the text "
                           f"(default {RUN_DEFAULTS['batch_size']})")
    data.add_argument("--optimizer", choices=tuple(DEFAULT_LR),
                      help="update rule (default adam)")
    data.add_argument("--lr", type=positive_float,
                      help="learning rate (default: " + ", ".join(
                          f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + "); may be changed "
                           "on --resume")
    data.add_argument("--momentum", type=non_negative_float,
                      help="momentum of sgd (default 0.9)")
    data.add_argument("--clip-norm", dest="clip_norm", type=non_negative_float,
                      help=f"scale gradients to a global norm of at most this "
                           f"(default {ADJUSTABLE_DEFAULTS['clip_norm']:g}; 0 = off)")
    data.add_argument("--clip-value", dest="clip_value", type=non_negative_float,
                      help="clip every gradient entry to [-v, v] (default 0 = off)")
    data.add_argument("--seed", type=non_negative_int,
                      help="seeds the initialisation, dropout and samples (default 0); the same "
                           "seed, settings and --threads give the same run (other thread "
                           "counts round sums differently)")
    data.add_argument("--threads", type=positive_int, default=1,
                      help="threads for the kernels (default 1: on this project's 2-core "
                           "machine a training step ran ~12%% slower on 2 threads, whose "
                           "per-step barriers and NumPy's BLAS threads compete for the cores; "
                           "try more on a machine with more, idle, cores)")
    output = parser.add_argument_group("output")
    output.add_argument("--checkpoint", default=None,
                        help=f"where to save (default {DEFAULT_CHECKPOINT}, or the --resume "
                             f"file); written atomically")
    output.add_argument("--checkpoint-every", type=positive_int, default=1000, metavar="N",
                        help="also save every N steps (default 1000)")
    output.add_argument("--eval-every", type=positive_int, default=500, metavar="N",
                        help="validation loss every N steps (default 500)")
    output.add_argument("--sample-every", type=positive_int, default=1000, metavar="N",
                        help="print a sample every N steps (default 1000)")
    output.add_argument("--sample-length", type=positive_int, default=300, metavar="N",
                        help="characters per sample (default 300)")
    output.add_argument("--temperature", type=non_negative_float, default=0.8,
                        help="sampling temperature of the printed samples (default 0.8)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue the run saved in CHECKPOINT (model, optimizer, position "
                             "in the text, hidden state, step count)")


def configure_sample_parser(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of rnnfast train")
    parser.add_argument("--length", type=positive_int, default=500,
                        help="characters to generate (default 500)")
    parser.add_argument("--temperature", type=non_negative_float, default=0.8,
                        help="below 1: safer and more repetitive; above 1: more varied; "
                             "0: always the most likely character (default 0.8)")
    parser.add_argument("--prime", default="",
                        help="text the model reads before generating (default: none)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of the sampling (default: a different sample each time)")


# -- the run's settings ----------------------------------------------------------------------

def _settings(args, saved):
    """The run settings: the checkpoint's on resume (explicit conflicting options are an
    error), else the command line's with defaults filled in."""
    given = {key: getattr(args, key) for key in RUN_DEFAULTS if getattr(args, key) is not None}
    if saved is None:
        settings = {**RUN_DEFAULTS, **given}
        settings["lr"] = args.lr if args.lr is not None else DEFAULT_LR[settings["optimizer"]]
    else:
        settings = dict(saved)
        conflicts = [f"--{key.replace('_', '-')} {value} (the checkpoint has {saved[key]})"
                     for key, value in given.items() if key in saved and saved[key] != value]
        if conflicts:
            raise SystemExit(f"rnnfast train: error: a resumed run keeps its checkpoint's "
                             f"settings; drop or fix: {', '.join(conflicts)}")
        if args.lr is not None:
            settings["lr"] = args.lr
    for key, default in ADJUSTABLE_DEFAULTS.items():
        value = getattr(args, key)
        settings[key] = value if value is not None else settings.get(key, default)
    if not 0 <= settings["dropout"] < 1:
        raise SystemExit(f"rnnfast train: error: --dropout must be in [0, 1); got "
                         f"{settings['dropout']}")
    return settings


def _build_optimizer(settings, params):
    name, lr = settings["optimizer"], settings["lr"]
    if name == "adam":
        return optim.Adam(params, lr=lr)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr)
    return optim.SGD(params, lr=lr, momentum=settings["momentum"])


def _load_text(args, saved_corpus):
    """(text, corpus record) for a new run, or the same text as the checkpoint's run."""
    path = args.text_file
    if path is None and saved_corpus is not None:
        path = saved_corpus["path"]
    if path is None:
        text, description = default_corpus()
    else:
        text = read_text(path)
        description = f"{len(text):,} characters of {path}"
        path = os.path.abspath(path)
    corpus = {"path": path, "fingerprint": fingerprint(text), "description": description}
    if saved_corpus is not None and corpus["fingerprint"] != saved_corpus["fingerprint"]:
        raise SystemExit(f"rnnfast train: error: the text ({description}) is not the text the "
                         f"checkpoint was trained on ({saved_corpus['description']}); give "
                         f"that text to continue the run")
    return text, corpus


# -- Ctrl-C ------------------------------------------------------------------------------------

class _StopRequest:
    """While active, the first Ctrl-C asks the training loop to stop after its current step
    (which then saves); a second one interrupts at once."""

    def __init__(self, announce):
        self.requested = False
        self._announce = announce
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._announce()

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# -- train -----------------------------------------------------------------------------------

class _Run:
    """One invocation of `rnnfast train`: the objects, the budget and the printed output."""

    def __init__(self, args):
        self.args = args
        saved = checkpoint.load(args.resume) if args.resume else None
        if saved is not None:
            saved_settings, saved_corpus, self.history, self.seconds_before = saved.require(
                "training", "corpus", "history", "seconds")
        else:
            saved_settings = saved_corpus = None
            self.history, self.seconds_before = [], 0.0
        self.settings = s = _settings(args, saved_settings)
        self.text, self.corpus = _load_text(args, saved_corpus)

        if saved is not None:
            self.model, self.vocab = load_model(saved, n_threads=args.threads)
        else:
            self.vocab = Vocabulary.from_text(self.text)
            self.model = CharRNN(len(self.vocab), s["hidden_size"], s["num_layers"],
                                 s["embedding_dim"], s["nonlinearity"], s["dropout"],
                                 s["dtype"], seed=s["seed"], n_threads=args.threads)
        ids = self.vocab.encode(self.text)
        self.train_ids, self.val_ids = split_tail(ids, max_tail=50_000)
        self.baseline = unigram_cross_entropy(self.train_ids, self.val_ids, len(self.vocab))
        self.optimizer = _build_optimizer(s, self.model.parameters())
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
        self.checkpoint_path = args.checkpoint or args.resume or DEFAULT_CHECKPOINT

        minutes = args.minutes
        if minutes is None:
            minutes = 0.0 if args.steps is not None else DEFAULT_MINUTES
        self.seconds_budget = minutes * 60 or None
        self.steps_budget = args.steps

    # -- output --

    def print_header(self):
        s, model = self.settings, self.model
        n_params = sum(p.size for p in model.parameters().values())
        print(f"rnnfast train: {self.corpus['description']}")
        print(f"  {len(self.vocab)} distinct characters; training on {len(self.train_ids):,}, "
              f"validating on the last {len(self.val_ids):,}")
        print(f"  model: embedding {s['embedding_dim']} -> {s['num_layers']} x RNN("
              f"{s['hidden_size']}, {s['nonlinearity']}) -> {len(self.vocab)} logits; "
              f"{n_params:,} parameters, {s['dtype']}")
        print(f"  training: {s['batch_size']} streams x {s['seq_len']} steps per chunk, "
              f"{s['optimizer']} lr {self.optimizer.lr:g}, clip norm {s['clip_norm'] or 'off'}, "
              f"seed {s['seed']}")
        print(f"  unigram baseline (character frequencies only): {self.baseline:.3f} nats/char")
        if self.trainer.steps:
            print(f"  resuming at step {self.trainer.steps} "
                  f"({format_duration(self.seconds_before)} trained before)")
        sys.stdout.flush()

    def sample(self, label):
        prime = "\n" if "\n" in self.vocab.chars else ""  # start as at the start of a line
        text = generate(self.model, self.vocab, self.args.sample_length, prime=prime,
                        temperature=self.args.temperature,
                        seed=np.random.default_rng([self.settings["seed"], self.trainer.steps]))
        print(f"----- sample {label} (temperature {self.args.temperature:g}) -----")
        print(text[len(prime):])
        print("-----", flush=True)

    # -- state --

    def save(self):
        meta, sections = model_checkpoint(self.model, self.vocab)
        meta.update({"training": self.settings, "corpus": self.corpus, "history": self.history,
                     "seconds": self.seconds_before + self.elapsed()})
        sections["optimizer"] = self.optimizer.state_dict()
        sections["trainer"] = self.trainer.state_dict()
        checkpoint.save(self.checkpoint_path, meta, sections)

    def elapsed(self):
        return time.monotonic() - self.started

    def evaluate(self, train_loss):
        val = evaluate(self.model, self.val_ids)
        self.history.append({"step": self.trainer.steps,
                             "seconds": round(self.seconds_before + self.elapsed(), 1),
                             "train_loss": round(train_loss, 4), "val_loss": round(val, 4)})
        return val

    def budget_left(self):
        if self.steps_budget is not None and self.trainer.steps >= self.steps_budget:
            return False
        return self.seconds_budget is None or self.elapsed() < self.seconds_budget

    # -- the loop --

    def train(self):
        args = self.args
        progress = Progress(self.seconds_budget, self.steps_budget, self.trainer.steps)
        recent = []  # the last losses, for the bar's running mean
        chars = 0
        val = None
        fields = {}
        self.started = time.monotonic()

        def announce():
            progress.clear()
            print("\nCtrl-C: stopping after this step and saving (press again to abort)",
                  file=sys.stderr, flush=True)

        with _StopRequest(announce) as stop:
            while self.budget_left() and not stop.requested:
                try:
                    loss = self.trainer.step()
                except NonFiniteError as exc:
                    progress.clear()
                    print(f"rnnfast train: stopped: {exc}. The checkpoint was not "
                          f"overwritten; try a lower --lr or --clip-norm.", file=sys.stderr)
                    return 1
                step = self.trainer.steps
                recent = (recent + [loss])[-50:]
                chars += self.trainer.last_tokens
                if step % args.eval_every == 0:
                    val = self.evaluate(float(np.mean(recent)))
                fields = {"loss": f"{np.mean(recent):.3f}"}
                if val is not None:
                    fields["val"] = f"{val:.3f}"
                fields["chars/s"] = f"{chars / max(self.elapsed(), 1e-9) / 1e3:.1f}k"
                progress.update(self.elapsed(), step, fields, force=step % args.eval_every == 0)
                if step % args.sample_every == 0:
                    progress.clear()
                    self.sample(f"at step {step}")
                if step % args.checkpoint_every == 0:
                    self.save()
            interrupted = stop.requested
            progress.finish(self.elapsed(), self.trainer.steps, fields)
            # The final state's validation loss, unless the last step was just evaluated.
            evaluated = self.history and self.history[-1]["step"] == self.trainer.steps
            if recent and not evaluated:
                self.evaluate(float(np.mean(recent)))
            self.save()
        self.print_summary(chars, interrupted)
        return 0

    def print_summary(self, chars, interrupted):
        elapsed = self.elapsed()
        how = "interrupted" if interrupted else "done"
        print(f"{how}: step {self.trainer.steps}, {format_duration(elapsed)} this run, "
              f"{chars / max(elapsed, 1e-9) / 1e3:.1f}k chars/s")
        if self.history:
            print("  step   time   train    val  (nats/char)")
            for row in self.history[-12:]:
                print(f"  {row['step']:5d} {format_duration(row['seconds']):>6s} "
                      f"{row['train_loss']:7.3f} {row['val_loss']:6.3f}")
            print(f"  validation {self.history[-1]['val_loss']:.3f} nats/char against the "
                  f"unigram baseline {self.baseline:.3f}")
        self.sample("at the end")
        print(f"checkpoint: {self.checkpoint_path}  (continue: rnnfast train --resume "
              f"{self.checkpoint_path}; sample: rnnfast sample {self.checkpoint_path})")


def run_train(args):
    try:
        run = _Run(args)
    except (checkpoint.CheckpointError, ValueError) as exc:
        print(f"rnnfast train: error: {exc}", file=sys.stderr)
        return 2
    run.print_header()
    return run.train()


def run_sample(args):
    try:
        model, vocab = load_model(args.checkpoint)
        text = generate(model, vocab, args.length, prime=args.prime,
                        temperature=args.temperature, seed=args.seed)
    except (checkpoint.CheckpointError, ValueError) as exc:
        print(f"rnnfast sample: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0
