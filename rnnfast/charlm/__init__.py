"""The character-level language model of `rnnfast train`: the text and its vocabulary (text),
the model, sampling and its checkpoints (model)."""
from rnnfast.charlm.model import CharRNN, generate, load_model, model_checkpoint
from rnnfast.charlm.text import Vocabulary, default_corpus, read_text, split_tail

__all__ = ["CharRNN", "generate", "load_model", "model_checkpoint", "Vocabulary",
           "default_corpus", "read_text", "split_tail"]
