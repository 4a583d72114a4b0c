"""The README as a newcomer reads it: every ```python block runs as written, in a fresh
interpreter, and the module table names every module of the package (and nothing else)."""
import pathlib
import re
import subprocess
import sys

import pytest

import rnnfast

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PACKAGE = pathlib.Path(rnnfast.__file__).parent
SOURCE_SUFFIXES = (".py", ".pyx", ".pxd", ".pxi", ".h")

PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_python_blocks_and_marks_nothing_else_as_python():
    assert len(PYTHON_BLOCKS) >= 4
    fences = re.findall(r"^```(\w*)$", README, flags=re.MULTILINE)
    assert set(fences) <= {"python", "bash", "text", ""}  # an opening fence names its language


@pytest.mark.parametrize("block", PYTHON_BLOCKS,
                         ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_a_python_block_runs_as_written(block, tmp_path):
    for optional in ("torch", "matplotlib"):  # the README's optional extras
        if re.search(rf"^\s*(import|from) {optional}\b", block, re.MULTILINE):
            pytest.importorskip(optional)
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def _table_entries():
    """The files the module table names: a row's path, and the files named in backticks in its
    text, relative to the row's folder."""
    named = set()
    for first, job in re.findall(r"^\| `(rnnfast/[^`]*)` \| (.*) \|$", README, re.MULTILINE):
        folder = first if first.endswith("/") else first.rsplit("/", 1)[0] + "/"
        if not first.endswith("/"):
            named.add(first)
        for token in re.findall(r"`([\w./]+)`", job):
            if token.endswith(SOURCE_SUFFIXES) and "/" not in token:
                named.add(folder + token)
    return named


def test_the_module_table_names_every_module_of_the_package():
    tree = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*")
            if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts}
    public_names = {name for name in tree if name.endswith("/__init__.py")
                    and name != "rnnfast/__init__.py"}  # a subpackage's public names
    named = _table_entries()
    assert sorted(tree - public_names - named) == [], "modules the README's table lacks"
    assert sorted(named - tree) == [], "the README's table names modules that do not exist"


def test_ci_runs_the_set_up_commands_exactly_as_written():
    set_up = README[README.index("## Set up"):README.index("## Quickstart")]
    commands = re.findall(r"^```bash\n(.*?)\n```", set_up, flags=re.DOTALL | re.MULTILINE)
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert all(command in ci for command in commands)
