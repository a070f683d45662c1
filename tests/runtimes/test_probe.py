"""Safe-mode probing: a file that kills or hangs the native parser is reported by name and the probe
goes on with the next file; native chatter on stdout does not confuse the protocol.

No file we could craft crashes onnxruntime today (see test_malformed.py: 0 crashes in 408), so the
child is made to crash for real: a ``sitecustomize`` on the child's PYTHONPATH wraps the loader so
that files named ``*crash*`` raise SIGSEGV in the child, ``*hang*`` sleep forever and ``*noisy*``
print to fd 1 the way native libraries do. Nothing in edgesdk knows about this hook.
"""
from __future__ import annotations

import os
import shutil
import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.errors import ArtifactError
from edgesdk.runtimes import load
from edgesdk.runtimes.safety import probe

HOOK = textwrap.dedent("""
    import os, signal, time
    import edgesdk.runtimes.registry as registry

    _load = registry.load

    def load(path, *a, **k):
        name = os.path.basename(str(path))
        if "crash" in name:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hang" in name:
            time.sleep(10_000)
        if "noisy" in name:
            os.write(1, b"native library says hello\\n{not json}\\n")
        return _load(path, *a, **k)

    registry.load = load
""")


@pytest.fixture
def files(digits_artifacts, tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    src = digits_artifacts / "model.onnx"
    out = {}
    for name in ["a_ok", "b_crash", "c_ok", "d_hang", "e_noisy", "f_ok"]:
        out[name] = tmp_path / f"{name}.onnx"
        shutil.copy(src, out[name])
    return out


def test_crash_and_hang_are_named_and_the_probe_goes_on(files):
    results = probe(list(files.values()), timeout_s=45)  # the hang must outlast it; ok files never come close
    got = {Path(r.path).stem: r for r in results}
    assert [Path(r.path).stem for r in results] == list(files)  # one result per file, in order
    assert {k: r.outcome for k, r in got.items()} == {
        "a_ok": "ok", "b_crash": "crashed", "c_ok": "ok", "d_hang": "hung", "e_noisy": "ok", "f_ok": "ok"}
    assert got["b_crash"].signal == signal.SIGSEGV
    assert got["a_ok"].detail == {"backend": "onnxruntime", "ran": True, "finite": True}
    crash = got["b_crash"].to_error().format()
    assert "b_crash.onnx" in crash and "SIGSEGV" in crash and "not loaded into this process" in crash
    hang = got["d_hang"].to_error().format()
    assert "d_hang.onnx" in hang and "did not finish" in hang


def test_load_isolate_raises_instead_of_dying(files):
    with pytest.raises(ArtifactError, match="SIGSEGV"):
        load(files["b_crash"], isolate=True)
    with load(files["e_noisy"], isolate=True) as sess:  # still usable here after a clean probe
        (out,) = sess.run({"x": np.zeros((1, 1, 8, 8), np.float32)}).values()
        assert out.shape == (1, 10)


def test_cli_reports_the_crash_without_a_traceback(files, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 1, 8, 8), np.float32))
    res = CliRunner().invoke(main, ["run", str(files["b_crash"]), "--inputs", str(tmp_path / "x.npz")])
    assert res.exit_code != 0
    assert "b_crash.onnx" in res.output and "SIGSEGV" in res.output and "Traceback" not in res.output


def test_the_child_never_imports_modules_from_the_current_folder(digits_artifacts, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "onnxruntime.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nraise ImportError('stray')\n")
    monkeypatch.chdir(tmp_path)
    (result,) = probe([digits_artifacts / "model.onnx"], timeout_s=60)
    assert result.outcome == "ok" and not marker.exists()


def test_paths_with_spaces_and_newlines_and_many_files(digits_artifacts, tmp_path):
    odd = [tmp_path / "model with space .onnx", tmp_path / "new\nline.onnx"]
    for p in odd:
        shutil.copy(digits_artifacts / "model.onnx", p)
    results = probe([*odd, *[digits_artifacts / "model.onnx"] * 200], timeout_s=60, run=False)
    assert [r.path for r in results[:2]] == [str(p) for p in odd] and {r.outcome for r in results} == {"ok"}
