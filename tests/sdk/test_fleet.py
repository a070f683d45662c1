"""The device fleet on a real two-node Ray cluster on 127.0.0.1: the benchmark runs on the node holding the
device resource, re-checks parity there, and the CLI prints the devices side by side."""
from __future__ import annotations

import io
import json
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from edgesdk.cluster import pack_dir, unpack_dir
from edgesdk.errors import InputError
from tests.ray_cluster import RayCluster, ray_cluster  # noqa: F401

pytest.importorskip("ray")


def _compress(out: Path, drifting: bool = False) -> Path:
    """A small artifact directory from a real compress run (ONNX fp32, reference set stored); ``drifting``: a
    model whose export differs from eager PyTorch, kept with allow_mismatch, so parity fails on every device."""
    import torch
    from torch import nn

    import edgesdk
    from tests.models import Small

    class Drifting(nn.Module):  # the exported graph freezes the call count it saw while tracing
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.calls = nn.Linear(4, 3), 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.lin(x) + float(self.calls)

    torch.manual_seed(0)
    edgesdk.compress(Drifting() if drifting else Small().eval(), {"x": torch.rand(2, 4)}, out_dir=out,
                     benchmark=False, parity_batches=2, parity_batch_size=2, allow_mismatch=drifting)
    return out


def _both(root: Path) -> tuple[Path, Path]:
    return _compress(root / "out"), _compress(root / "drifting", drifting=True)


@pytest.fixture(scope="session", autouse=True)
def _compressing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future]:
    """Compress in a thread while the Ray cluster starts: autouse and session-scoped so it is set up before
    ``ray_cluster`` (the two mostly wait on different things)."""
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(_both, tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def artifacts(_compressing: Future) -> Path:
    return _compressing.result()[0]


@pytest.fixture(scope="module")
def drifting(_compressing: Future) -> Path:
    return _compressing.result()[1]


def _cli(*args: str):
    from click.testing import CliRunner

    from edgesdk.cli import main

    return CliRunner().invoke(main, ["-q", "benchmark", *args])


def test_benchmark_runs_on_the_device_node_and_rechecks_parity_there(ray_cluster: RayCluster,  # noqa: F811
                                                                     artifacts: Path):
    from edgesdk.cluster import device_nodes, device_resources
    from edgesdk.fleet import benchmark_on, merged

    assert device_resources() == {ray_cluster.device: 1.0}
    (report,) = benchmark_on(artifacts, [ray_cluster.device], warmup=1, iterations=3)
    dev = report["device"]
    assert dev["fleet_resource"] == ray_cluster.device
    assert dev["fleet_node_id"] == device_nodes()[ray_cluster.device]  # the node with the resource, not the head
    assert dev["cpu_model"] and dev["cores"]
    assert report["results"] and all(r["device_check"]["parity"]["passed"] for r in report["results"])
    assert all(str(artifacts) in r["path"] for r in report["results"] if r.get("path"))  # not the device's tmp dir
    table = merged([report])
    assert [d["source"] for d in table["devices"]] == [ray_cluster.device]
    assert table["rows"] and all(c["p50_ms"] > 0 for row in table["rows"] for c in row["cells"].values())


def test_cli_on_devices_prints_one_report_per_device(ray_cluster: RayCluster, artifacts: Path,  # noqa: F811
                                                     tmp_path: Path):
    out = tmp_path / "fleet.json"
    res = _cli(str(artifacts), "--on", ray_cluster.device, "--ray-address", ray_cluster.address, "--warmup", "1",
               "--iterations", "2", "--json", "-o", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["device"]["fleet_resource"] for r in data["reports"]] == [ray_cluster.device]
    assert data["merged"]["kind"] == "edgesdk-merged-report"
    assert json.loads(out.read_text())["devices"][0]["source"] == ray_cluster.device
    assert json.loads((tmp_path / "fleet.test-01.json").read_text())["results"]

    res = _cli(str(artifacts), "--on", "test-01", "--ray-address", ray_cluster.address, "--iterations", "1")
    assert res.exit_code == 0, res.output
    assert f"**{ray_cluster.device} (" in res.stdout and " ms" in res.stdout  # the merged Markdown table


def test_cli_parity_failure_on_a_device_exits_3(ray_cluster: RayCluster, drifting: Path):  # noqa: F811
    res = _cli(str(drifting), "--on", ray_cluster.device, "--ray-address", ray_cluster.address, "--iterations", "1")
    assert res.exit_code == 3, res.output
    assert f"parity failed on {ray_cluster.device} for model.onnx" in res.stderr


def test_cli_unknown_device_lists_the_devices_there(ray_cluster: RayCluster, artifacts: Path):  # noqa: F811
    res = _cli(str(artifacts), "--on", "device:nope", "--ray-address", ray_cluster.address)
    assert res.exit_code == 2
    assert "device:nope" in res.output and ray_cluster.device in res.output


def test_nothing_runnable_on_the_device_is_an_error_naming_it(ray_cluster: RayCluster,  # noqa: F811
                                                               artifacts: Path):
    from edgesdk.errors import BackendUnavailableError
    from edgesdk.fleet import benchmark_on

    with pytest.raises(BackendUnavailableError, match="nothing was benchmarked on device:test-01") as err:
        benchmark_on(artifacts, [ray_cluster.device], backend="litert", iterations=1)
    assert "litert backend cannot run onnx" in str(err.value) and "edgesdk[onnx]" in str(err.value)


def test_cli_unreachable_ray_address_fails_with_the_address(artifacts: Path):
    res = _cli(str(artifacts), "--on", "device:test-01", "--ray-address", "127.0.0.1:1")
    assert res.exit_code == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in res.output


def test_pack_and_unpack_round_trip(artifacts: Path, tmp_path: Path):
    out = unpack_dir(pack_dir(artifacts), tmp_path / "copy")
    names = sorted(p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == names
    assert all((out / n).read_bytes() == (artifacts / n).read_bytes() for n in names)


@pytest.mark.parametrize("name, kind", [("../evil", tarfile.REGTYPE), ("/abs", tarfile.REGTYPE),
                                        ("link", tarfile.SYMTYPE)])
def test_unpack_refuses_unsafe_entries(tmp_path: Path, name: str, kind: bytes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, "/etc/passwd"
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InputError, match="unsafe"):
        unpack_dir(buf.getvalue(), tmp_path / "x")
    assert not (tmp_path / "evil").exists() and list((tmp_path / "x").iterdir()) == []


def test_pack_refuses_links_out_of_the_directory(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "secret").write_text("x")
    (tmp_path / "d" / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(InputError, match="links outside"):
        pack_dir(tmp_path / "d")
