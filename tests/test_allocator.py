"""rnnfast.utils.allocator: freed blocks come back without page faults (glibc only).

Each case runs in a fresh interpreter, whose heap nothing else has shaped: the same five large
arrays (0.7-2.4 MB) allocated, touched and freed 20 times over, as a training step does, and the
process's minor page faults counted. Counts, not times: glibc's default policy hands the pages
back after each round (about 1300 faults a round here), the raised thresholds keep them.
"""
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import numpy as np
if sys.argv[1] == "reuse":
    from rnnfast.utils.allocator import reuse_freed_memory
    assert reuse_freed_memory() and reuse_freed_memory()  # a second call changes nothing
def step():
    arrays = [np.ones(n) for n in (300_000, 260_000, 200_000, 150_000, 90_000)]
    del arrays
for _ in range(3):
    step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode):
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    return int(done.stdout.strip())


def _glibc():
    import ctypes

    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    default, reused = _faults("default"), _faults("reuse")
    pages = 20 * (300_000 + 260_000 + 200_000 + 150_000 + 90_000) * 8 // 4096
    if default < pages // 4:  # e.g. transparent huge pages for every mapping: nothing to gain
        pytest.skip(f"the default policy faulted only {default} of {pages} pages in again")
    assert reused < default // 20


def test_elsewhere_it_changes_nothing_and_says_so(monkeypatch):
    from rnnfast.utils import allocator

    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.reuse_freed_memory() is False


def test_the_trainer_asks_for_it_unless_told_not_to(monkeypatch):
    import numpy as np

    from rnnfast.charlm import CharRNN
    from rnnfast.train import TBPTTTrainer, TokenStreams, optim
    from rnnfast.train import trainer

    calls = []
    monkeypatch.setattr(trainer, "reuse_freed_memory", lambda: calls.append(1))
    model = CharRNN(5, 4, 1, 3, seed=0)
    streams = TokenStreams(np.arange(40) % 5, 2, 4)
    TBPTTTrainer(model, optim.Adam(model.parameters()), streams)
    TBPTTTrainer(model, optim.Adam(model.parameters()), streams, reuse_memory=False)
    assert calls == [1]
    with pytest.raises(TypeError, match="reuse_memory must be a bool"):
        TBPTTTrainer(model, optim.Adam(model.parameters()), streams, reuse_memory="yes")
