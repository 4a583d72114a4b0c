"""The folders show the layers (DESIGN.md, "Layers of the house"): every module of the package
imports only modules of its own layer or of the layers below it, and only the command line
prints. Read from the source with ast, so lazy imports inside functions count too."""
import ast
import pathlib

import pytest

import rnnfast

PACKAGE = pathlib.Path(rnnfast.__file__).parent

# From the bottom up. A module may import its own layer and the layers before it.
LAYERS = [
    "rnnfast.utils",  # input checks, thread counts
    "rnnfast.grads",  # the gradients both backends return
    "rnnfast.reference",  # the NumPy reference
    "rnnfast._kernels",  # the compiled kernels and the backend that allocates around them
    "rnnfast.functional",  # rnn_forward / rnn_backward
    "rnnfast.nn",  # layers and losses
    "rnnfast.train",  # optimizers, clipping, streams, the trainer, checkpoints
    "rnnfast",  # the package's public names (rnnfast/__init__.py)
    "rnnfast.charlm",  # the character model, its text and its training run
    "rnnfast.diagnostics",  # gradient flow, the adding problem, a trained model's diagnosis
    "rnnfast.dynamics",  # fixed points and their linearisation
    "rnnfast.tasks",  # the classic tasks, their network and trainer
    "rnnfast.reservoir",  # echo state networks: the reservoir, its sparse step, the readout
    "rnnfast.torch",  # the PyTorch front end
    "rnnfast.benchmarking",  # problems, peers, the timer, machine information
    "rnnfast.cli",  # the commands: the only modules that print
    "rnnfast.__main__",
]


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module):
    """The index in LAYERS of the longest entry that is module or a package holding it."""
    matches = [i for i, name in enumerate(LAYERS)
               if module == name or (name != "rnnfast" and module.startswith(name + "."))]
    return max(matches, key=lambda i: len(LAYERS[i])) if matches else None


def _imports(path):
    """The rnnfast modules a file imports (``from rnnfast import x`` is rnnfast.x when that is
    a module, else the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rnnfast"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.startswith("rnnfast"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if _layer(name) is None]
    assert not unplaced, f"add these to LAYERS in tests/test_layers.py, where they belong: " \
                         f"{unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_the_layers_below(module):
    own = _layer(module)
    above = sorted(f"{imported} ({LAYERS[_layer(imported)]})"
                   for imported in _imports(MODULES[module])
                   if _layer(imported) is not None and _layer(imported) > own)
    assert not above, f"{module} ({LAYERS[own]}) imports layers above it: {above}"


@pytest.mark.parametrize("module", sorted(name for name in MODULES
                                          if not name.startswith("rnnfast.cli")))
def test_only_the_command_line_prints(module):
    calls = [node.lineno for node in ast.walk(ast.parse(MODULES[module].read_text("utf-8")))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert not calls, f"{module} prints (lines {calls}); return the text to rnnfast.cli instead"


def test_the_checker_sees_a_violation(tmp_path):
    """The import reader itself: a lazy upward import inside a function is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from rnnfast.cli import main\n    import rnnfast.nn\n"
                      "from rnnfast import functional\n")
    assert _imports(source) == {"rnnfast.cli.main", "rnnfast.nn", "rnnfast.functional"}
    assert _layer("rnnfast.cli.main") > _layer("rnnfast.nn.rnn") > _layer("rnnfast.utils.threads")
    assert _layer("rnnfast") < _layer("rnnfast.charlm.model")
