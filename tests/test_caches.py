"""The L1 data and L2 sizes the switches compare W_hh with: read from sysfs, with a fallback."""
import pytest

from rnnfast.utils import caches


def _fake_cpu(root, cpu, entries):
    for index, (level, kind, size) in enumerate(entries):
        folder = root / f"cpu{cpu}" / "cache" / f"index{index}"
        folder.mkdir(parents=True)
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")


@pytest.mark.parametrize("text, expected", [("2048K", 2 << 20), ("1M", 1 << 20),
                                            ("512", 512), (" 48k\n", 48 << 10)])
def test_sizes_in_sysfs_units(text, expected):
    assert caches._size_bytes(text) == expected


def test_the_level_2_cache_of_the_core_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "SYSFS_CPUS", str(tmp_path))
    _fake_cpu(tmp_path, 3, [(1, "Data", "48K"), (1, "Instruction", "32K"),
                            (2, "Unified", "1280K"), (3, "Unified", "32768K")])
    _fake_cpu(tmp_path, 0, [(2, "Unified", "512K")])
    read = caches.l2_cache_bytes.__wrapped__
    assert read(3) == 1280 << 10
    assert read(0) == 512 << 10
    read_l1 = caches.l1_data_cache_bytes.__wrapped__
    assert read_l1(3) == 48 << 10  # the data cache, not the instruction cache
    assert read_l1(0) == caches.FALLBACK_L1_DATA_BYTES


def test_fallback_where_sysfs_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "SYSFS_CPUS", str(tmp_path))
    _fake_cpu(tmp_path, 0, [(1, "Data", "48K"), (3, "Unified", "32M")])
    read = caches.l2_cache_bytes.__wrapped__
    assert read(0) == caches.FALLBACK_L2_BYTES
    assert read(7) == caches.FALLBACK_L2_BYTES  # no such core
    _fake_cpu(tmp_path, 1, [(2, "Unified", "garbage"), (1, "Instruction", "64K")])
    assert read(1) == caches.FALLBACK_L2_BYTES
    assert caches.l1_data_cache_bytes.__wrapped__(1) == caches.FALLBACK_L1_DATA_BYTES


def test_the_switches_use_it():
    from rnnfast._kernels.backend import switches
    assert switches.l2_cache_bytes == caches.l2_cache_bytes()
    assert switches.l1_cache_bytes == caches.l1_data_cache_bytes()
