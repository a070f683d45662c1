"""The PyTorch backend: wraps an ``nn.Module`` as a Session. It is the parity reference and the eager baseline.

torch is imported only when a TorchSession is built, never by ``import edgesdk.runtimes``.
On ``device="cuda"``: ``precision="fp16"`` runs under autocast (outputs returned as float32),
``cuda_graph=True`` captures one CUDA graph per input-shape signature and replays it (inputs are
copied into the graph's static tensors; one lock per graph keeps concurrent callers apart).

Example::

    sess = TorchSession.from_module(model, ["x"], example_inputs={"x": x})
    out = sess.run({"x": x})
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np

from edgesdk.errors import BackendUnavailableError, InputError

from .base import Option, Session, TensorSpec


class TorchSession(Session):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode``; outputs become numpy arrays."""

    backend = "torch"
    option_specs = {"precision": Option(str, "fp32", "fp32, or fp16/bf16 autocast on CUDA"),
                    "cuda_graph": Option(bool, False, "capture and replay a CUDA graph per input shape (CUDA)")}

    def __init__(self, path: Any = None, **kwargs: Any) -> None:
        if path is not None:
            raise InputError("the torch backend wraps an nn.Module, not a file",
                             expected="TorchSession.from_module(model, input_names, ...)",
                             found=str(path), hint="load files with backend='auto' (onnxruntime, ...)")
        super().__init__(None, **kwargs)
        self.module: Any = None
        self._in: list[TensorSpec] = []
        self._out: list[TensorSpec] = []
        self._out_names: list[str] | None = None

    @classmethod
    def from_module(cls, module: Any, input_names: list[str], output_names: list[str] | None = None, *,
                    example_inputs: Mapping[str, np.ndarray] | None = None, device: str = "cpu",
                    threads: int | None = None, precision: str = "fp32", cuda_graph: bool = False,
                    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> "TorchSession":
        """Wrap ``module``; input specs come from ``example_inputs`` (dim 0 is the dynamic batch, and the axes
        in ``dynamic_axes`` (input -> axis -> symbol) take any size too)."""
        if precision not in ("fp32", "fp16", "bf16"):
            raise InputError(f"unknown precision {precision!r} for the torch backend", expected="fp32 | fp16 | bf16")
        sess = cls(device=device, threads=threads, precision=precision, cuda_graph=cuda_graph)
        sess.module = module
        sess._input_names = list(input_names)
        sess._out_names = list(output_names) if output_names else None
        if example_inputs is not None:
            sess._examples = {n: np.asarray(example_inputs[n])[:1] for n in input_names}
            axes = dynamic_axes or {}
            sess._in = [TensorSpec(n, str(np.asarray(example_inputs[n]).dtype),
                                   ("batch", *(axes.get(n, {}).get(i, d) for i, d in
                                               enumerate(np.asarray(example_inputs[n]).shape) if i)))
                        for n in input_names]
        return sess

    def _load_impl(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("device='cuda' asked for, but torch sees no CUDA GPU",
                                          found=f"torch {torch.__version__}", hint="use device='cpu'")
        self._torch_device = torch.device("cuda" if self.device == "cuda" else "cpu")
        if self.options.get("cuda_graph") and self._torch_device.type != "cuda":
            raise InputError("cuda_graph=True needs device='cuda'", found=f"device={self.device!r}")
        precision = self.options.get("precision", "fp32")
        self._autocast = None if precision == "fp32" else {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self._graphs: dict[tuple, Any] = {}
        self._graph_lock = threading.Lock()
        if self.threads:
            torch.set_num_threads(int(self.threads))  # process-wide in PyTorch
        self.module = self.module.eval().to(self._torch_device)
        if not self._in:
            raise InputError("TorchSession needs example_inputs to know its input specs",
                             hint="pass example_inputs={name: array} to from_module")
        if self._out_names is None or not self._out:
            example = getattr(self, "_examples", None) or {s.name: np.zeros((1, *s.shape[1:]), s.dtype)
                                                           for s in self._in}
            outs = self._forward(example, name_outputs=False)
            if self._out_names is None:
                keys = getattr(self, "_dict_keys", None)
                self._out_names = (list(keys) if keys and len(set(keys)) == len(outs) else
                                   ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])
            if len(self._out_names) != len(outs):
                raise InputError("output_names does not match the model's outputs",
                                 expected=f"{len(outs)} names", found=f"{len(self._out_names)}: {self._out_names}")
            self._out = [TensorSpec(n, str(o.dtype), ("batch", *o.shape[1:])) for n, o in zip(self._out_names, outs)]

    def _call(self, args: list[Any]) -> Any:
        import torch

        if self._autocast is None:
            return self.module(*args)
        with torch.autocast(self._torch_device.type, dtype=self._autocast):
            return self.module(*args)

    def _graph_call(self, args: list[Any]) -> Any:
        """Replay (capturing on first use) the CUDA graph for these input shapes."""
        import torch

        key = tuple((tuple(a.shape), a.dtype) for a in args)
        with self._graph_lock:
            entry = self._graphs.get(key)
            if entry is None:
                static = [a.clone() for a in args]
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):  # warm-up outside capture: cuDNN picks kernels, allocator settles
                        self._call(static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = self._call(static)
                entry = self._graphs[key] = (graph, static, out, threading.Lock())
        graph, static, out, lock = entry
        with lock:
            for dst, src in zip(static, args):
                dst.copy_(src)
            graph.replay()
            return _clone(out)

    def _forward(self, feeds: Mapping[str, np.ndarray], name_outputs: bool = True) -> Any:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])).to(self._torch_device) for s in self._in]
            out = self._graph_call(args) if self.options.get("cuda_graph") else self._call(args)
            if isinstance(out, torch.Tensor):
                outs = [out]
            elif isinstance(out, Mapping):
                outs = list(out.values())
                self._dict_keys = [str(k) for k in out]  # a dict's keys name the outputs
            elif isinstance(out, (tuple, list)):
                outs = list(out)
            else:
                raise InputError("the model returned an unsupported type",
                                 expected="a tensor, a tuple/list of tensors or a dict of tensors",
                                 found=type(out).__name__)
            # bf16 has no numpy dtype; autocast's half outputs go back as float32 like the fp32 model's
            widen = (torch.bfloat16, torch.float16) if self._autocast is not None else (torch.bfloat16,)
            arrays = [(o.detach().float() if o.dtype in widen else o.detach()).cpu().numpy() for o in outs]
        if not name_outputs:
            return arrays
        return dict(zip(self._out_names or [], arrays))

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._forward(feeds)

    def synchronize(self) -> None:
        if getattr(self, "_torch_device", None) is not None and self._torch_device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._in)

    @property
    def outputs(self) -> list[TensorSpec]:
        if not self._out:
            self.load()
        return list(self._out)


def _clone(out: Any) -> Any:
    """Copy graph outputs out of the graph's static memory before the next replay overwrites them."""
    if hasattr(out, "clone"):
        return out.clone()
    if isinstance(out, Mapping):
        return {k: _clone(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_clone(v) for v in out)
    return out
