from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesdk.atomic import _write_error, clean_stale, staged_output_dir, write_bytes
from edgesdk.errors import InputError, OutputWriteError


def _dead_pid() -> int:
    """PID of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _stage(parent: Path, name: str, pid: int | None = None) -> Path:
    """A staging dir as staged_output_dir makes it, owned by ``pid`` (no owner file if None)."""
    stage = parent / f".edgesdk-stage-{name}-{os.urandom(4).hex()}"
    stage.mkdir()
    (stage / "model.onnx").write_bytes(b"x")
    if pid is not None:
        (stage / ".edgesdk-owner").write_text(f"{pid} {socket.gethostname()}\n")
    return stage


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_write_bytes_leaves_no_temp(tmp_path):
    write_bytes(tmp_path / "a.bin", b"123")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_write_bytes_gets_the_usual_file_mode(tmp_path):
    # mkstemp creates 0600; outputs should get 0666 & ~umask like any other written file
    with open(tmp_path / "plain", "wb"):
        pass
    write_bytes(tmp_path / "a.bin", b"123")
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


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
    assert _names(tmp_path) == ["o"]


def test_owner_file_is_not_part_of_the_set(tmp_path):
    with staged_output_dir(tmp_path / "o") as st:
        assert (st / ".edgesdk-owner").read_text().split() == [str(os.getpid()), socket.gethostname()]
        write_bytes(st / "manifest.json", b"{}")
    assert _names(tmp_path / "o") == ["manifest.json"]


def test_stale_dirs_cleaned_and_lost_set_restored(tmp_path):
    # a run killed (kill -9) between moving the old set aside and moving the new one in
    (tmp_path / ".edgesdk-old-o-12345678").mkdir()
    (tmp_path / ".edgesdk-old-o-12345678" / "manifest.json").write_text("{}")
    stage = _stage(tmp_path, "o", pid=_dead_pid())
    removed = clean_stale(tmp_path, "o")
    assert (tmp_path / "o" / "manifest.json").is_file()
    assert removed == [stage]
    assert _names(tmp_path) == ["o"]


def test_clean_stale_leaves_a_sibling_outputs_dirs_alone(tmp_path):
    # out-2's leftovers are not out's: no restore of out from out-2's saved set, nothing of out-2's removed
    old2 = tmp_path / ".edgesdk-old-out-2-deadbeef"
    old2.mkdir()
    (old2 / "manifest.json").write_text("{}")
    stage2 = _stage(tmp_path, "out-2", pid=_dead_pid())
    assert clean_stale(tmp_path, "out") == []
    assert _names(tmp_path) == sorted([old2.name, stage2.name])
    clean_stale(tmp_path, "out-2")
    assert _names(tmp_path) == ["out-2"]


def test_run_to_out_does_not_break_a_live_run_to_out_2(tmp_path):
    with staged_output_dir(tmp_path / "out-2") as st2:
        write_bytes(st2 / "model.onnx", b"2")
        with staged_output_dir(tmp_path / "out") as st:
            write_bytes(st / "manifest.json", b"{}")
        assert (st2 / "model.onnx").read_bytes() == b"2"
        write_bytes(st2 / "manifest.json", b"{}")
    assert _names(tmp_path) == ["out", "out-2"]
    assert _names(tmp_path / "out-2") == ["manifest.json", "model.onnx"]


def test_live_staging_dir_of_the_same_output_is_kept(tmp_path):
    child = subprocess.Popen(["sleep", "30"])
    try:
        stage = _stage(tmp_path, "o", pid=child.pid)
        assert clean_stale(tmp_path, "o") == []
        with staged_output_dir(tmp_path / "o") as st:
            write_bytes(st / "manifest.json", b"{}")
        assert (stage / "model.onnx").is_file()
    finally:
        child.kill()
        child.wait()
    assert clean_stale(tmp_path, "o") == [stage]
    assert _names(tmp_path) == ["o"]


def test_staging_dir_without_owner_is_removed_only_when_old(tmp_path):
    stage = _stage(tmp_path, "o")
    assert clean_stale(tmp_path, "o") == []
    hours_ago = time.time() - 2 * 3600
    os.utime(stage, (hours_ago, hours_ago))
    assert clean_stale(tmp_path, "o") == [stage]


def test_symlinked_output_dir_is_followed(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    with staged_output_dir(real) as st:
        write_bytes(st / "manifest.json", b"{}")
        write_bytes(st / "f", b"old")
    link.symlink_to(real)
    with staged_output_dir(link) as st:
        assert st.parent == tmp_path
        write_bytes(st / "manifest.json", b"{}")
        write_bytes(st / "f", b"new")
    assert link.is_symlink() and link.resolve() == real
    assert (real / "f").read_bytes() == b"new"
    assert _names(tmp_path) == ["link", "real"]


def test_dangling_symlink_output_creates_its_target(tmp_path):
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "sub" / "real")
    with staged_output_dir(link) as st:
        write_bytes(st / "manifest.json", b"{}")
    assert link.is_symlink() and (link / "manifest.json").is_file()
    assert _names(tmp_path / "sub") == ["real"]


def test_symlink_loop_output_is_an_input_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(InputError, match="cannot resolve the output path"):
        with staged_output_dir(tmp_path / "a"):
            pass


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_location_names_the_real_cause():
    with pytest.raises(OutputWriteError) as info:
        with staged_output_dir("/proc/edgesdk-out"):
            pass
    msg = str(info.value)
    assert "the parent folder does not exist or is not a folder" in msg
    assert "permission denied" not in msg
    assert "No such file or directory" in msg


def _real_oserror(tmp_path: Path, code: int) -> OSError:
    try:
        if code == errno.ENOENT:
            os.mkdir(tmp_path / "missing" / "x")
        elif code == errno.ENOTDIR:
            (tmp_path / "file").write_text("")
            os.mkdir(tmp_path / "file" / "x")
        elif code == errno.ENOTEMPTY:
            (tmp_path / "a").mkdir()
            (tmp_path / "b" / "c").mkdir(parents=True)
            os.replace(tmp_path / "a", tmp_path / "b")
    except OSError as e:
        return e
    raise AssertionError("no error")


@pytest.mark.parametrize(("code", "what"), [
    (errno.ENOENT, "the parent folder does not exist or is not a folder"),
    (errno.ENOTDIR, "the parent folder does not exist or is not a folder"),
    (errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY)),
])
def test_write_error_message_follows_errno(tmp_path, code, what):
    e = _real_oserror(tmp_path, code)
    assert e.errno == code
    msg = str(_write_error(e, tmp_path / "out"))
    assert f"cannot write the output directory {tmp_path / 'out'}: {what}" in msg
    assert "permission denied" not in msg
    assert "free some space" not in msg


def test_write_error_permission_and_space():
    assert "permission denied" in str(_write_error(PermissionError(errno.EACCES, "Permission denied"), Path("o")))
    msg = str(_write_error(OSError(errno.ENOSPC, "No space left on device"), Path("o")))
    assert "the disk is full" in msg and "free some space" in msg


def test_disk_full_while_writing_the_set_is_an_output_error(tmp_path):
    with pytest.raises(OutputWriteError, match="the disk is full"):
        with staged_output_dir(tmp_path / "o"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _names(tmp_path) == []


def test_unreadable_input_inside_the_block_is_not_an_output_error(tmp_path):
    # an EACCES naming a file outside the staging dir is about an input, not about -o
    with pytest.raises(PermissionError):
        with staged_output_dir(tmp_path / "o"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "calib.npz"))
    with pytest.raises(OutputWriteError, match="permission denied"):
        with staged_output_dir(tmp_path / "o") as st:
            raise PermissionError(errno.EACCES, "Permission denied", str(st / "model.onnx"))
    assert _names(tmp_path) == []
