"""The command line, `rnnfast COMMAND` (or `python -m rnnfast`): one module per command; the only
modules of the package that print."""
from rnnfast.cli.main import main

__all__ = ["main"]
