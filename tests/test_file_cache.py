"""radvqa.file_cache: keys of verified files, kept per copy outside it, never a name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radvqa import file_cache


def test_stat_keys_are_distinct_and_zero_only_for_no_file() -> None:
    rows = np.array([[0, 0, 0, 0, 0], [1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [2, 1, 3, 4, 5], [1, 2, 3, 5, 5]])
    keys = file_cache.stat_keys(rows)
    assert keys[0] == 0 and len(set(keys[1:].tolist())) == 4 and 0 not in keys[1:]


def test_saved_keys_come_back_sorted_without_zeros_and_per_copy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy, other = tmp_path / "copy", tmp_path / "other"
    file_cache.save_known(copy, np.array([9, 0, 3, 9], dtype=np.uint64))
    assert file_cache.load_known(copy).tolist() == [3, 9] and file_cache.load_known(other).size == 0
    path = file_cache.cache_path(copy)
    assert path.parent == tmp_path / "cache" / "radvqa" and "copy" not in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_a_damaged_cache_reads_as_empty(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = file_cache.cache_path(tmp_path / "copy")
    path.parent.mkdir(parents=True)
    for content in (b"", b"not numpy", None):
        if content is None:
            np.save(path, np.array([1.5, 2.5]))  # a valid file of the wrong kind
        else:
            path.write_bytes(content)
        assert file_cache.load_known(tmp_path / "copy").size == 0
