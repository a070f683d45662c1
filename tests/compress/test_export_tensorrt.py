"""TensorRT target: what runs without a GPU (profiles, settings, the compatibility rules, the skipped target)
and, behind markers, the real build and run on a machine with TensorRT and a GPU."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgesdk.runtimes.tensorrt_build import EngineSettings, compute_profiles, record_path
from edgesdk.errors import BackendUnavailableError, InputError
from edgesdk.runtimes.tensorrt import check_compatibility


def test_profile_from_dynamic_batch():
    p = compute_profiles([{"name": "x", "shape": ["batch", 3, 224, 224]}], batch=(1, 8, 32))
    assert p == {"x": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}


def test_profile_other_dynamic_dims_take_the_example_size_or_an_override():
    inputs = [{"name": "ids", "shape": ["batch", "seq"]}, {"name": "mask", "shape": [-1, -1]}]
    p = compute_profiles(inputs, batch=(1, 4, 16), example_shapes={"ids": (1, 128), "mask": (1, 128)},
                         overrides={"mask": ((1, 16), (4, 128), (16, 512))})
    assert p["ids"] == ((1, 128), (4, 128), (16, 128))
    assert p["mask"] == ((1, 16), (4, 128), (16, 512))


def test_profile_of_a_static_model_is_its_shape():
    assert compute_profiles([{"name": "x", "shape": [2, 3]}]) == {"x": ((2, 3), (2, 3), (2, 3))}


@pytest.mark.parametrize("kwargs, needle", [
    ({"batch": (4, 2, 8)}, "1 <= min <= opt <= max"),
    ({"batch": (0, 1, 1)}, "1 <= min <= opt <= max"),
    ({"overrides": {"x": ((1, 3), (1, 3))}}, "(min, opt, max)"),
    ({"overrides": {"x": ((1, 4), (1, 4), (1, 4))}}, "changes fixed dimension 1"),
    ({"overrides": {"x": ((1, 3, 1), (1, 3, 1), (1, 3, 1))}}, "wrong rank"),
    ({"overrides": {"x": ((8, 3), (4, 3), (16, 3))}}, "min <= opt <= max per dimension"),
    ({"overrides": {"y": ((1, 3), (1, 3), (1, 3))}}, "an input the model does not have"),
])
def test_profile_errors_say_what_is_wrong(kwargs, needle):
    with pytest.raises(InputError) as e:
        compute_profiles([{"name": "x", "shape": ["batch", 3]}], **kwargs)
    assert needle in str(e.value)


def test_profile_needs_sizes_for_non_batch_dynamic_dims():
    with pytest.raises(InputError, match="besides the batch") as e:
        compute_profiles([{"name": "ids", "shape": ["batch", "seq"]}], batch=(1, 1, 4))
    assert "trt_shapes" in e.value.hint


def test_settings_round_trip_and_validation():
    s = EngineSettings(precision="int8", profiles={"x": ((1, 3), (8, 3), (32, 3))}, dla_core=0,
                       version_compatible=True)
    d = json.loads(json.dumps(s.to_dict()))
    assert EngineSettings.from_dict(d) == s
    for bad in ({"precision": "int4"}, {"workspace_mb": 0}, {"dla_core": -1}, {"hardware_compatibility": "x"},
                {"optimization_level": 9}):
        with pytest.raises(InputError):
            EngineSettings(**bad)


HERE = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


@pytest.mark.parametrize("record, expect", [
    ({"tensorrt": "10.3.0.26", "gpu": "Orin", "compute_capability": "8.7"}, []),
    ({"tensorrt": "10.3.1", "gpu": "Orin", "compute_capability": "8.7"}, ["TensorRT 10.3.1"]),
    ({"tensorrt": "10.1.0", "gpu": "Orin", "compute_capability": "8.7",
      "settings": {"version_compatible": True}}, []),
    ({"tensorrt": "10.5.0", "gpu": "Orin", "compute_capability": "8.7",
      "settings": {"version_compatible": True}}, ["at or after 10.5.0"]),
    ({"tensorrt": "9.2.0", "gpu": "Orin", "compute_capability": "8.7",
      "settings": {"version_compatible": True}}, ["needs 9.x"]),
    ({"tensorrt": "10.3.0", "gpu": "NVIDIA A100", "compute_capability": "8.0"}, ["NVIDIA A100 (compute capability "
                                                                                  "8.0), this GPU is Orin (8.7)"]),
    ({"tensorrt": "10.3.0", "gpu": "NVIDIA A100", "compute_capability": "8.0",
      "settings": {"hardware_compatibility": "ampere_plus"}}, []),
    ({"tensorrt": "10.0.1", "gpu": "NVIDIA T4", "compute_capability": "7.5"}, ["TensorRT 10.0.1", "NVIDIA T4"]),
])
def test_engine_compatibility_rules(record, expect):
    reasons = check_compatibility(record, HERE)
    assert len(reasons) == len(expect), reasons
    for reason, needle in zip(reasons, expect):
        assert needle in reason


def test_ampere_plus_engine_refused_on_turing():
    record = {"tensorrt": "10.3.0", "compute_capability": "8.6", "settings": {"hardware_compatibility": "ampere_plus"}}
    (reason,) = check_compatibility(record, {"tensorrt": "10.3.0", "gpu": "T4", "compute_capability": "7.5"})
    assert "Ampere and newer" in reason


def test_engine_file_without_tensorrt_names_the_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    from edgesdk.runtimes import load

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00ftrt" + bytes(200))
    with pytest.raises(BackendUnavailableError) as e:
        load(engine)
    assert "edgesdk[tensorrt]" in e.value.format()


def test_compress_reports_missing_tensorrt_as_skipped_and_runs_openvino(digits_dir, tmp_path):
    """`--targets onnx,tensorrt,openvino` on a machine without TensorRT: exit 0, TensorRT skipped with the
    install command, every ONNX artifact also verified and timed on OpenVINO."""
    import importlib.util

    from click.testing import CliRunner

    from edgesdk.cli import main
    from tests.conftest import DIGITS_MODEL

    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "compress", f"{DIGITS_MODEL}:build", "--weights", str(digits_dir / "weights.safetensors"), "--input",
        "x:1x1x8x8", "--calib", str(digits_dir / "calib.npz"), "--eval-data", str(digits_dir / "eval.npz"),
        "--targets", "onnx,tensorrt,openvino", "--quantize", "int8", "--iterations", "5", "--warmup", "1",
        "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    targets = manifest["targets"]
    has_trt = importlib.util.find_spec("tensorrt") is not None
    if not has_trt:
        for t in ("tensorrt", "tensorrt-int8"):
            assert targets[t]["status"] == "skipped" and "edgesdk[tensorrt]" in targets[t]["install"]
        assert "tensorrt: skipped" in (out / "report.md").read_text()
        assert not list(out.glob("*.engine"))
    assert targets["openvino"]["status"] == "ok"
    report = json.loads((out / "report.json").read_text())
    backends = {(r["artifact"], r["backend"]) for r in report["results"]}
    for name in ("model.onnx", "model.int8.onnx"):
        assert {(name, "onnxruntime"), (name, "openvino")} <= backends
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    assert by_name["model.onnx"]["meta"]["parity_by_backend"]["openvino"]["passed"] is True


def test_recipe_tensorrt_section_and_flags():
    from edgesdk.recipe import Recipe

    r = Recipe.from_dict({"targets": ["tensorrt"], "quantize": {"mode": "fp16"},
                          "tensorrt": {"batch": [1, 8, 32], "workspace_mb": 2048, "dla_core": 0}})
    assert r.stages == ["export_onnx", "quantize_onnx", "export_tensorrt", "quantize_tensorrt"]
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(InputError, match="MIN:OPT:MAX"):
        Recipe.from_dict({"tensorrt": {"batch": [8, 1, 32]}})


# -- on a machine with TensorRT and an NVIDIA GPU ----------------------------------------------

@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_build_run_and_parity(digits_artifacts, tmp_path, precision):
    from edgesdk.runtimes.tensorrt_build import build_engine
    from edgesdk.runtimes import load

    onnx_path = digits_artifacts / "model.onnx"
    engine = tmp_path / f"model.{precision}.engine"
    shutil.copy(onnx_path, tmp_path / "model.onnx")
    settings = EngineSettings(precision=precision, profiles=compute_profiles(
        [{"name": "x", "shape": ["batch", 1, 8, 8]}], batch=(1, 8, 64)))
    info = build_engine(tmp_path / "model.onnx", engine, settings)
    assert record_path(engine).is_file() and info.record["compute_capability"]
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    with load(tmp_path / "model.onnx", backend="onnxruntime", device="cpu") as ref, load(engine) as sess:
        want, got = ref.run({"x": x}), sess.run({"x": x})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-3 if precision == "fp32" else 3e-2)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_incompatible_engine_is_refused_then_rebuilt(digits_artifacts, tmp_path):
    from edgesdk.runtimes.tensorrt_build import build_engine
    from edgesdk.errors import ArtifactError
    from edgesdk.runtimes import load

    shutil.copy(digits_artifacts / "model.onnx", tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    build_engine(tmp_path / "model.onnx", engine, EngineSettings(profiles=compute_profiles(
        [{"name": "x", "shape": ["batch", 1, 8, 8]}], batch=(1, 4, 16))))
    rec = json.loads(record_path(engine).read_text())
    rec["tensorrt"] = "9.0.0"
    record_path(engine).write_text(json.dumps(rec))
    with pytest.raises(ArtifactError, match="another machine"):
        load(engine)
    with load(engine, rebuild=True) as sess:
        assert sess.run({"x": np.zeros((2, 1, 8, 8), np.float32)})


@pytest.mark.gpu
def test_torch_backend_on_cuda_fp16_and_graphs():
    import torch

    from edgesdk.runtimes.torch import TorchSession
    from tests.models import ConvBnRelu

    model = ConvBnRelu().eval()
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    ref = model(torch.from_numpy(x)).detach().numpy()
    for kwargs in ({}, {"precision": "fp16"}, {"cuda_graph": True}, {"precision": "fp16", "cuda_graph": True}):
        sess = TorchSession.from_module(model, ["x"], example_inputs={"x": x[:1]}, device="cuda", **kwargs).load()
        got = sess.run({"x": x})["output"]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-2 if "precision" in kwargs else 1e-4)
        again = sess.run({"x": x[::-1].copy()})["output"]  # a replay with new data gives new results
        np.testing.assert_allclose(again, ref[::-1], atol=2e-2 if "precision" in kwargs else 1e-4)


# -- the TensorRT / cuda-python call sequence, against small fakes (no GPU needed) -------------

def test_engine_from_another_platform_is_refused():
    record = {"tensorrt": "10.3.0", "compute_capability": "8.7", "platform": "Linux-x86_64",
              "settings": {"hardware_compatibility": "ampere_plus"}}
    (reason,) = check_compatibility(record, {**HERE, "platform": "Linux-aarch64"})
    assert "not portable across platforms" in reason
    assert check_compatibility(record, {**HERE, "platform": "Linux-x86_64"}) == []


class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


class FakeCudart:
    """The slice of cuda.bindings.runtime the backend uses: (err, value) tuples, int-convertible handles.

    Device memory is host memory here, so copies and the fake engine work with ctypes.memmove."""

    cudaError_t = _Enum(cudaSuccess=0, cudaErrorMemoryAllocation=2, cudaErrorStreamCaptureInvalidated=901)
    cudaMemcpyKind = _Enum(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = _Enum(cudaStreamCaptureModeGlobal=0, cudaStreamCaptureModeThreadLocal=1)

    class Stream:
        def __init__(self, n):
            self.n = n

        def __int__(self):
            return self.n

    def __init__(self):
        self.memory, self.capturing, self.graphs, self.calls = {}, {}, {}, []

    def cudaGetErrorString(self, err):
        return 0, b"out of memory"

    def cudaGetDevice(self):
        return 0, 0

    def cudaGetDeviceProperties(self, device):
        return 0, _Enum(name=b"Fake GPU\x00\x00", major=8, minor=7)

    def cudaStreamCreate(self):
        return 0, self.Stream(1000 + len(self.calls))

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaMalloc(self, n):
        import ctypes

        buf = ctypes.create_string_buffer(n)
        self.memory[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        self.memory.pop(int(ptr))
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        import ctypes

        self.run(int(stream), lambda: ctypes.memmove(dst, src, n))
        return (0,)

    def run(self, stream, fn):
        """Work on a capturing stream is recorded, not run (as CUDA does)."""
        if stream in self.capturing:
            self.capturing[stream].append(fn)
        else:
            fn()

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append(("capture", mode))
        self.capturing[int(stream)] = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        work = self.capturing.pop(int(stream))
        if work is None:
            return self.cudaError_t.cudaErrorStreamCaptureInvalidated, None
        self.graphs[id(work)] = work
        return 0, id(work)

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        self.calls.append(("instantiate", flags))
        return 0, ("exec", graph)

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append(("launch",))
        for fn in self.graphs[graph_exec[1]]:
            fn()
        return (0,)

    def cudaGraphDestroy(self, graph):
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.graphs.pop(graph_exec[1], None)
        return (0,)


def _fake_trt(cudart, *, capturable=True):
    """A TensorRT 10 engine y = 2 * x with x float32[batch, 3] and a profile of batch 1..8."""
    import ctypes
    import types

    trt = types.SimpleNamespace(__version__="10.3.0")
    trt.float32 = "FLOAT"
    trt.TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.TensorLocation = _Enum(DEVICE="DEVICE", HOST="HOST")

    def nptype(t):
        if t != "FLOAT":
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.float32

    trt.nptype = nptype

    class Logger:
        ERROR = 1

        def __init__(self, severity):
            pass

    class Context:
        active_optimization_profile = 0

        def __init__(self):
            self.shapes, self.addresses = {}, {}

        def set_input_shape(self, name, shape):
            if not 1 <= shape[0] <= 8:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            assert isinstance(ptr, int)
            self.addresses[name] = ptr
            return True

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int), "TensorRT takes the stream handle as an int"
            if stream_handle in cudart.capturing and not capturable:
                cudart.capturing[stream_handle] = None  # TensorRT broke the capture
                return False
            n, xa, ya = int(np.prod(self.shapes["x"])), self.addresses["x"], self.addresses["y"]

            def kernel():
                x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(xa))
                np.ctypeslib.as_array((ctypes.c_float * n).from_address(ya))[:] = 2 * x

            cudart.run(stream_handle, kernel)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return "xy"[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "x" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def get_tensor_shape(self, name):
            return (-1, 3)

        def get_tensor_location(self, name):
            return trt.TensorLocation.DEVICE

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 3), (4, 3), (8, 3)]

        def create_execution_context(self):
            return Context()

    class Runtime:
        engine_host_code_allowed = False  # TensorRT's default: plans with host code are refused
        DLA_core = -1

        def __init__(self, logger):
            trt.runtime = self

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"engine" else None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    from edgesdk.runtimes import tensorrt as backend
    from edgesdk.runtimes import tensorrt_env

    cudart = FakeCudart()
    fakes = {"cudart": cudart, "trt": _fake_trt(cudart)}
    for module in (backend, tensorrt_env):  # the session and the GPU/platform helpers it calls
        monkeypatch.setattr(module, "import_cudart", lambda: fakes["cudart"])
        monkeypatch.setattr(module, "import_tensorrt", lambda: fakes["trt"])
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    return fakes, engine


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_session_runs_through_streams_buffers_and_graphs(fake_gpu, cuda_graph):
    from edgesdk.runtimes.tensorrt import TensorRTSession

    fakes, engine = fake_gpu
    cudart = fakes["cudart"]
    with TensorRTSession(engine, cuda_graph=cuda_graph) as sess:
        assert [(s.name, s.dtype, s.shape) for s in sess.inputs] == [("x", "float32", ("batch", 3))]
        for batch in (2, 2, 5, 2):
            x = np.random.default_rng(batch).random((batch, 3), dtype=np.float32)
            np.testing.assert_allclose(sess.run({"x": x})["y"], 2 * x)
    if cuda_graph:
        # thread-local capture (other slots may allocate meanwhile), instantiated with flags, replayed
        assert ("capture", cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal) in cudart.calls
        assert ("instantiate", 0) in cudart.calls and ("launch",) in cudart.calls
    else:
        assert not cudart.calls
    assert not cudart.memory and not cudart.graphs, "close() frees every buffer and graph"


def test_session_runs_an_engine_cuda_graphs_cannot_capture(fake_gpu):
    from edgesdk.runtimes.tensorrt import TensorRTSession

    fakes, engine = fake_gpu
    fakes["trt"] = _fake_trt(fakes["cudart"], capturable=False)
    with TensorRTSession(engine, cuda_graph=True) as sess:
        for _ in range(3):
            x = np.ones((2, 3), np.float32)
            np.testing.assert_allclose(sess.run({"x": x})["y"], 2 * x)
    assert ("launch",) not in fakes["cudart"].calls


def test_session_names_the_profile_range_and_frees_the_slot(fake_gpu):
    from edgesdk.errors import FeedError
    from edgesdk.runtimes.tensorrt import TensorRTSession

    fakes, engine = fake_gpu
    with TensorRTSession(engine) as sess:
        sess.run({"x": np.ones((1, 3), np.float32)})
        with pytest.raises(FeedError, match="outside what model.engine was built for") as e:
            sess.run({"x": np.ones((9, 3), np.float32)})
        assert "(1, 3) to (8, 3)" in e.value.expected
        assert not fakes["cudart"].memory, "the failed slot's buffers are freed"
        np.testing.assert_allclose(sess.run({"x": np.ones((3, 3), np.float32)})["y"], 2)


def test_version_compatible_engine_is_trusted_and_dla_core_set(fake_gpu):
    from edgesdk.runtimes.tensorrt import TensorRTSession

    fakes, engine = fake_gpu
    record_path(engine).write_text(json.dumps({"tensorrt": "10.3.0", "compute_capability": "8.7",
                                               "settings": {"version_compatible": True, "dla_core": 1}}))
    with TensorRTSession(engine):
        assert fakes["trt"].runtime.engine_host_code_allowed is True
        assert fakes["trt"].runtime.DLA_core == 1


def test_numpy_less_tensor_types_are_a_clear_error():
    from edgesdk.errors import ArtifactError
    from edgesdk.runtimes.tensorrt import _numpy_dtype

    trt = _fake_trt(FakeCudart())
    assert _numpy_dtype(trt, "FLOAT", "x", "m.engine") == "float32"
    with pytest.raises(ArtifactError, match="BF16"):
        _numpy_dtype(trt, "BF16", "x", "m.engine")


def test_check_cuda_compares_with_cudaSuccess_and_quotes_the_error():
    from edgesdk.runtimes.tensorrt import check_cuda

    cudart = FakeCudart()
    check_cuda(cudart, cudart.cudaError_t.cudaSuccess, "cudaMalloc")
    with pytest.raises(BackendUnavailableError, match="cudaMalloc failed") as e:
        check_cuda(cudart, cudart.cudaError_t.cudaErrorMemoryAllocation, "cudaMalloc")
    assert "out of memory" in e.value.found


def test_graph_instantiate_works_with_both_cuda_python_signatures():
    import types

    from edgesdk.runtimes.tensorrt import _graph_instantiate

    with_flags = types.SimpleNamespace(cudaGraphInstantiateWithFlags=lambda g, f: (0, ("exec", g, f)))
    assert _graph_instantiate(with_flags, "g") == (0, ("exec", "g", 0))
    only_12 = types.SimpleNamespace(cudaGraphInstantiate=lambda g, f: (0, ("exec", g, f)))
    assert _graph_instantiate(only_12, "g") == (0, ("exec", "g", 0))


def test_network_flags_follow_the_tensorrt_major_version():
    import types

    from edgesdk.runtimes.tensorrt_build import _network_flags

    flags = types.SimpleNamespace(EXPLICIT_BATCH=0)
    assert _network_flags(types.SimpleNamespace(__version__="10.3.0.26", NetworkDefinitionCreationFlag=flags)) == 0
    assert _network_flags(types.SimpleNamespace(__version__="8.6.1", NetworkDefinitionCreationFlag=flags)) == 1


class _FakeConfig:
    """create_timing_cache / set_timing_cache as TensorRT documents them: set returns False on a mismatch."""

    def __init__(self, refuse):
        self.refuse, self.attached = refuse, None

    def create_timing_cache(self, blob):
        if blob == b"truncated":
            raise RuntimeError("invalid timing cache")
        return ("cache", bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache[1] in self.refuse:
            return False
        self.attached = cache
        return True


@pytest.mark.parametrize("blob, refuse, attached", [
    (None, (), b""),
    (b"same gpu", (), b"same gpu"),
    (b"other gpu", (b"other gpu",), b""),
    (b"truncated", (), b""),
])
def test_timing_cache_from_another_gpu_is_replaced_by_a_fresh_one(tmp_path, blob, refuse, attached):
    from edgesdk.runtimes.tensorrt_build import _attach_timing_cache

    path = tmp_path / "model.timing.cache"
    if blob is not None:
        path.write_bytes(blob)
    config = _FakeConfig(refuse)
    _attach_timing_cache(config, path)
    assert config.attached == ("cache", attached)
