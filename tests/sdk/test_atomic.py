from __future__ import annotations

import pytest

from edgesdk.atomic import clean_stale, staged_output_dir, write_bytes


def test_write_bytes_leaves_no_temp(tmp_path):
    write_bytes(tmp_path / "a.bin", b"123")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_failure_inside_stage_leaves_old_set(tmp_path):
    out = tmp_path / "o"
    with staged_output_dir(out) as st:
        write_bytes(st / "manifest.json", b"{}")
        write_bytes(st / "f", b"old")
    with pytest.raises(RuntimeError):
        with staged_output_dir(out) as st:
            write_bytes(st / "f", b"new")
            raise RuntimeError("boom")
    assert (out / "f").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_stale_dirs_cleaned_and_lost_set_restored(tmp_path):
    # a run killed between moving the old set aside and moving the new one in
    (tmp_path / ".edgesdk-old-o-1234").mkdir()
    (tmp_path / ".edgesdk-old-o-1234" / "manifest.json").write_text("{}")
    (tmp_path / ".edgesdk-stage-o-5678").mkdir()
    removed = clean_stale(tmp_path, "o")
    assert (tmp_path / "o" / "manifest.json").is_file()
    assert [p.name for p in removed] == [".edgesdk-stage-o-5678"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
