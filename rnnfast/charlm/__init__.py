"""The character-level language model of `rnnfast train`: the text and its vocabulary (text),
the model, sampling and its checkpoints (model), and a whole training run that saves and
resumes exactly (run)."""
from rnnfast.charlm.model import CharRNN, generate, load_model, model_checkpoint
from rnnfast.charlm.run import TrainingRun, build_optimizer, load_corpus
from rnnfast.charlm.text import (Vocabulary, default_corpus, fingerprint, read_text, split_tail,
                                 unigram_cross_entropy)

__all__ = ["CharRNN", "generate", "load_model", "model_checkpoint", "Vocabulary",
           "default_corpus", "read_text", "split_tail", "fingerprint", "unigram_cross_entropy",
           "TrainingRun", "build_optimizer", "load_corpus"]
