"""`rnnfast train` and `rnnfast sample`: the character-level language model on the command line.

train: resolve the options against a resumed checkpoint's settings, refuse to overwrite another
run's checkpoint, build an rnnfast.charlm.TrainingRun and train it for a time and/or step
budget, showing a progress bar, validation losses and samples; save every N steps, at the end
and on Ctrl-C. sample: print text generated from a checkpoint.
"""
import os
import signal
import sys
import threading
import time

import numpy as np

from rnnfast.charlm import TrainingRun, generate, load_corpus, load_model
from rnnfast.charlm.run import ADJUSTABLE_DEFAULTS, DEFAULT_LR, MAX_HELD_OUT, RUN_DEFAULTS
from rnnfast.cli.arguments import (non_negative_float, non_negative_int, positive_float,
                                   positive_int, unit_interval)
from rnnfast.cli.output import format_duration
from rnnfast.cli.progress import Progress, budget_line
from rnnfast.train import CheckpointError, NonFiniteError, checkpoint

DEFAULT_CHECKPOINT = "rnnfast-charlm.npz"
DEFAULT_MINUTES = 2.0
INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C: 128 + SIGINT

TRAIN_DESCRIPTION = (
    "Train a character-level RNN language model with truncated BPTT on a text file (or, without "
    "one, on the source of Python's standard library), for two minutes by default. Shows the "
    "loss, validation loss and samples; saves a checkpoint every N steps, at the end and on "
    "Ctrl-C.")
TRAIN_EPILOG = f"""\
checkpoints:
  A fresh run does not overwrite an existing checkpoint ({DEFAULT_CHECKPOINT}
  in the current folder by default): it stops with an error before any work.
  Continue that run with --resume FILE, save the new one elsewhere with
  --checkpoint NEW.npz, or replace the file with --overwrite.

Ctrl-C and exit status:
  The first Ctrl-C finishes the current step, saves and stops; a second one
  aborts at once (the checkpoint keeps its last save). Exit status: 0 when the
  budget was used up, 130 after Ctrl-C, 1 when training stopped on NaN or inf,
  2 for bad options or files."""


# -- argument parsing ------------------------------------------------------------------------

def configure_train_parser(parser):
    parser.add_argument("text_file", nargs="?", metavar="TEXT_FILE",
                        help=f"UTF-8 text to train on (default: the source of Python's standard "
                             f"library, up to 4 million characters). Its last 5%% (at most "
                             f"{MAX_HELD_OUT:,} characters) is held out for validation.")
    parser.add_argument("--replace-invalid-utf8", action="store_true",
                        help="read bytes of TEXT_FILE that are not valid UTF-8 as U+FFFD "
                             "instead of refusing the file")
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
    model.add_argument("--dropout", type=unit_interval,
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
    data.add_argument("--threads", type=positive_int, default=None,
                      help="threads for the recurrence and the output layer (default: every "
                           "core of the process; the softmax, the embedding and the optimizer "
                           "stay on one; see the README)")
    output = parser.add_argument_group("output")
    output.add_argument("--checkpoint", default=None,
                        help=f"where to save (default {DEFAULT_CHECKPOINT}, or the --resume "
                             f"file); written atomically; an existing file is not overwritten "
                             f"without --overwrite")
    output.add_argument("--overwrite", action="store_true",
                        help="let a fresh run replace an existing checkpoint file")
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
                        help="characters to generate after the prime (default 500)")
    parser.add_argument("--temperature", type=non_negative_float, default=0.8,
                        help="below 1: safer and more repetitive; above 1: more varied; "
                             "0: always the most likely character (default 0.8)")
    parser.add_argument("--prime", default="",
                        help="text the model reads before generating; the output starts with "
                             "it (default: none)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of the sampling (default: a different sample each time)")


# -- the run's settings ----------------------------------------------------------------------

def _option(key):
    return "--" + {"num_layers": "layers", "embedding_dim": "embedding-size"}.get(
        key, key.replace("_", "-"))


def _settings(args, saved):
    """The run settings: the checkpoint's on resume (explicit conflicting options are an
    error), else the command line's with defaults filled in."""
    given = {key: getattr(args, key) for key in RUN_DEFAULTS if getattr(args, key) is not None}
    if saved is None:
        settings = {**RUN_DEFAULTS, **given}
        settings["lr"] = args.lr if args.lr is not None else DEFAULT_LR[settings["optimizer"]]
    else:
        settings = dict(saved)
        conflicts = [f"{_option(key)} {value} (the checkpoint has {saved[key]})"
                     for key, value in given.items() if key in saved and saved[key] != value]
        if conflicts:
            raise ValueError(f"a resumed run keeps its checkpoint's settings; drop or fix: "
                             f"{', '.join(conflicts)}")
        if args.lr is not None:
            settings["lr"] = args.lr
    for key, default in ADJUSTABLE_DEFAULTS.items():
        value = getattr(args, key)
        settings[key] = value if value is not None else settings.get(key, default)
    return settings


def _overwrite_problem(args, target):
    """Why this run may not write ``target``, or None: a fresh run (or a resumed one saving
    elsewhere) would replace another run's checkpoint."""
    if args.overwrite or not os.path.exists(target):
        return None
    if args.resume and os.path.exists(args.resume) and os.path.samefile(args.resume, target):
        return None
    what = "a fresh run" if not args.resume else f"the run resumed from {args.resume}"
    return (f"{target} already exists and {what} would overwrite it. Continue that run with "
            f"--resume {target}, save this one elsewhere with --checkpoint NEW.npz, or replace "
            f"the file with --overwrite")


# -- Ctrl-C ------------------------------------------------------------------------------------

class _StopRequest:
    """While active, the first Ctrl-C asks the training loop to stop after its current step
    (which then saves); a second one raises KeyboardInterrupt at once."""

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

class _Session:
    """One invocation of `rnnfast train`: the run, the budget and the printed output."""

    def __init__(self, args, run, path):
        self.args, self.run, self.path = args, run, path
        minutes = args.minutes
        if minutes is None:
            minutes = 0.0 if args.steps is not None else DEFAULT_MINUTES
        self.seconds_budget = minutes * 60 or None
        self.steps_budget = args.steps
        self.started = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.started

    def budget_left(self):
        if self.steps_budget is not None and self.run.steps >= self.steps_budget:
            return False
        return self.seconds_budget is None or self.elapsed() < self.seconds_budget

    def print_header(self):
        run, s = self.run, self.run.settings
        n_params = sum(p.size for p in run.model.parameters().values())
        print(f"rnnfast train: {run.corpus['description']}")
        print(f"  {len(run.vocab)} distinct characters; training on {len(run.train_ids):,}, "
              f"validating on the last {len(run.val_ids):,}")
        print(f"  model: embedding {s['embedding_dim']} -> {s['num_layers']} x RNN("
              f"{s['hidden_size']}, {s['nonlinearity']}) -> {len(run.vocab)} logits; "
              f"{n_params:,} parameters, {s['dtype']}")
        print(f"  training: {s['batch_size']} streams x {s['seq_len']} steps per chunk, "
              f"{s['optimizer']} lr {run.optimizer.lr:g}, clip norm {s['clip_norm'] or 'off'}, "
              f"seed {s['seed']}")
        print(f"  unigram baseline (character frequencies only): {run.baseline:.3f} nats/char")
        if run.steps:
            print(f"  resuming at step {run.steps} "
                  f"({format_duration(run.seconds_before)} trained before)")
        sys.stdout.flush()

    def sample(self, label):
        run = self.run
        prime = "\n" if "\n" in run.vocab.chars else ""  # start as at the start of a line
        text = generate(run.model, run.vocab, self.args.sample_length, prime=prime,
                        temperature=self.args.temperature,
                        seed=np.random.default_rng([run.settings["seed"], run.steps]))
        print(f"----- sample {label} (temperature {self.args.temperature:g}) -----")
        print(text[len(prime):])
        print("-----", flush=True)

    def train(self):
        """The loop; returns the exit status."""
        args, run = self.args, self.run
        first_step = run.steps
        progress = Progress()
        recent = []  # the last losses, for the bar's running mean
        chars = 0
        val = None
        fields = {}
        self.started = time.monotonic()

        def line():
            return budget_line(self.elapsed(), run.steps, fields, self.seconds_budget,
                               self.steps_budget, first_step)

        def announce():
            progress.clear()
            print("\nCtrl-C: stopping after this step and saving (press again to abort)",
                  file=sys.stderr, flush=True)

        with _StopRequest(announce) as stop:
            while self.budget_left() and not stop.requested:
                try:
                    loss = run.step()
                except NonFiniteError as exc:
                    progress.clear()
                    print(f"rnnfast train: stopped: {exc}. The checkpoint was not "
                          f"overwritten; try a lower --lr or --clip-norm.", file=sys.stderr)
                    return 1
                step = run.steps
                recent = (recent + [loss])[-50:]
                chars += run.trainer.last_tokens
                if step % args.eval_every == 0:
                    val = run.evaluate(float(np.mean(recent)), self.elapsed())
                fields = {"loss": f"{np.mean(recent):.3f}"}
                if val is not None:
                    fields["val"] = f"{val:.3f}"
                fields["chars/s"] = f"{chars / max(self.elapsed(), 1e-9) / 1e3:.1f}k"
                progress.show(line(), force=step % args.eval_every == 0)
                if step % args.sample_every == 0:
                    progress.clear()
                    self.sample(f"at step {step}")
                if step % args.checkpoint_every == 0:
                    run.save(self.path, self.elapsed())
            interrupted = stop.requested
            progress.finish(line())
            # The final state's validation loss, unless the last step was just evaluated.
            evaluated = run.history and run.history[-1]["step"] == run.steps
            if recent and not evaluated:
                run.evaluate(float(np.mean(recent)), self.elapsed())
            run.save(self.path, self.elapsed())
        self.print_summary(chars, interrupted)
        return INTERRUPTED if interrupted else 0

    def print_summary(self, chars, interrupted):
        run, elapsed = self.run, self.elapsed()
        how = "interrupted" if interrupted else "done"
        print(f"{how}: step {run.steps}, {format_duration(elapsed)} this run, "
              f"{chars / max(elapsed, 1e-9) / 1e3:.1f}k chars/s")
        if run.history:
            print("  step   time   train    val  (nats/char)")
            for row in run.history[-12:]:
                print(f"  {row['step']:5d} {format_duration(row['seconds']):>6s} "
                      f"{row['train_loss']:7.3f} {row['val_loss']:6.3f}")
            print(f"  validation {run.history[-1]['val_loss']:.3f} nats/char against the "
                  f"unigram baseline {run.baseline:.3f}")
        self.sample("at the end")
        print(f"checkpoint: {self.path}  (continue: rnnfast train --resume {self.path}; "
              f"sample: rnnfast sample {self.path})")


def _error(command, message):
    print(f"rnnfast {command}: error: {message}", file=sys.stderr)
    return 2


def run_train(args):
    """Run `rnnfast train`; returns its exit status (see TRAIN_EPILOG)."""
    path = args.checkpoint or args.resume or DEFAULT_CHECKPOINT
    problem = _overwrite_problem(args, path)
    if problem:
        return _error("train", problem)
    try:
        saved = checkpoint.load(args.resume) if args.resume else None
        saved_settings, saved_corpus = (saved.require("training", "corpus") if saved
                                        else (None, None))
        settings = _settings(args, saved_settings)
        text, corpus = load_corpus(args.text_file, saved_corpus, args.replace_invalid_utf8)
        run = TrainingRun(settings, text, corpus, n_threads=args.threads, saved=saved)
    except (CheckpointError, ValueError) as exc:
        return _error("train", exc)
    session = _Session(args, run, path)
    session.print_header()
    try:
        return session.train()
    except KeyboardInterrupt:
        kept = ("nothing was saved" if run.saved_steps is None else
                f"{path} holds step {run.saved_steps}")
        end_line = "\n" if sys.stderr.isatty() else ""  # below the progress bar
        print(f"{end_line}rnnfast train: aborted by a second Ctrl-C at step {run.steps}; {kept}",
              file=sys.stderr)
        return INTERRUPTED


def run_sample(args):
    """Run `rnnfast sample`: print the prime and the text generated after it."""
    try:
        model, vocab = load_model(args.checkpoint)
        text = generate(model, vocab, args.length, prime=args.prime,
                        temperature=args.temperature, seed=args.seed)
    except (CheckpointError, ValueError) as exc:
        return _error("sample", exc)
    print(text)
    return 0
