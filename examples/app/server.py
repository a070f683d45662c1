"""A small HTTP inference service that embeds the edgesdk runtime (stdlib + numpy; no torch).

On the device: ``pip install "edgesdk[onnx]"`` and copy the artifact directory written by
``edgesdk compress``; then::

    python examples/app/server.py digits-out --port 8000
    curl -s localhost:8000/v1/predict -H 'Content-Type: application/json' \\
         -d '{"inputs": {"x": [[[[0.0, 0.1, ...]]]]}}'

Endpoints: ``GET /health``, ``GET /v1/model`` (inputs, outputs, artifact, sha256, backend) and
``POST /v1/predict``. Every malformed request gets a 4xx JSON ``{"error": ...}`` that says what
was expected and what was found; the server keeps serving.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.errors import EdgeSDKError, FeedError
from edgesdk.runtimes import Session, load

log = logging.getLogger("edgesdk.app")
MAX_BODY = 1 << 20  # 1 MiB


class RequestError(Exception):
    """A client mistake: HTTP status and a message for the JSON body."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Model:
    """The loaded session plus what the API reports about it."""

    def __init__(self, artifact_dir: str | Path, max_batch: int = 64, **load_kwargs: Any) -> None:
        root = Path(artifact_dir)
        self.session: Session = load(root, **load_kwargs)  # checks every file's sha256 against the manifest
        self.max_batch = max_batch
        self.sha256 = None
        if root.is_dir():
            from edgesdk.manifest import read_manifest

            entries = [e for e in read_manifest(root)["artifacts"] if isinstance(e, dict)]
            mine = [e for e in entries if self.session.path and root / e.get("path", "") == self.session.path]
            self.sha256 = mine[0].get("sha256") if mine else None
        if self.sha256 is None and self.session.path is not None:
            from edgesdk.atomic import sha256_file

            self.sha256 = sha256_file(self.session.path)
        self.inputs = self.session.inputs
        self.outputs = self.session.outputs

    def describe(self) -> dict[str, Any]:
        return {"artifact": self.session.path.name if self.session.path else None, "sha256": self.sha256,
                "backend": self.session.backend, "max_batch": self.max_batch,
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    def feeds(self, body: Any) -> dict[str, np.ndarray]:
        """JSON -> validated arrays: names, numbers only, shapes (any batch up to max_batch), dtypes."""
        if isinstance(body, list) and len(self.inputs) == 1:
            body = {"inputs": {self.inputs[0].name: body}}
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'expected a JSON object {"inputs": {name: nested list}}, '
                               f"found {type(body).__name__}" + (f" with keys {sorted(body)}"
                                                                 if isinstance(body, dict) else ""))
        given = body["inputs"]
        names = {s.name for s in self.inputs}
        problems = [f"{n}: missing" for n in sorted(names - set(given))]
        problems += [f"{n}: not an input of this model" for n in sorted(set(given) - names)]
        if problems:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"inputs do not match the model: {'; '.join(problems)} "
                               f"(expected {self._expected()})")
        feeds = {}
        for spec in self.inputs:
            value = given[spec.name]
            try:
                arr = np.asarray(value)
            except ValueError as e:  # ragged nesting
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: not a rectangular array ({e}); "
                                   f"expected {spec.describe()}") from e
            if arr.dtype.kind not in "biuf" or arr.dtype == object:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: expected numbers ({spec.dtype}), found "
                                   f"{'strings' if arr.dtype.kind in 'US' else arr.dtype}")
            if arr.ndim != len(spec.shape):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: rank {arr.ndim} {list(arr.shape)}, "
                                   f"expected rank {len(spec.shape)} {spec.describe()}")
            if arr.shape[0] > self.max_batch:
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"{spec.name}: batch {arr.shape[0]} is over the limit of {self.max_batch}")
            if arr.shape[0] == 0:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: empty batch; send at least one sample")
            target = np.dtype(spec.dtype)
            if arr.dtype.kind == "b":
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: expected numbers ({spec.dtype}), "
                                   "found true/false")
            if target.kind in "iu" and arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: expected integers ({spec.dtype}), "
                                   "found fractional numbers")
            if target.kind in "iu":
                info = np.iinfo(target)
                if arr.size and (arr.min() < info.min or arr.max() > info.max):  # would wrap around silently
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: values must fit {spec.dtype} "
                                       f"({info.min}..{info.max})")
            elif target.kind == "f":
                with np.errstate(over="ignore", invalid="ignore"):
                    finite = np.isfinite(arr.astype(target)).all() if arr.size else True
                if not finite:  # NaN, or a number too large for the input's type
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"{spec.name}: values must be finite numbers "
                                       f"that fit {spec.dtype}")
            feeds[spec.name] = np.ascontiguousarray(arr, dtype=target)
        return feeds

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            outputs = self.session.run(feeds)
        except FeedError as e:  # shapes the session refuses (a wrong non-batch dim ...)
            raise RequestError(HTTPStatus.BAD_REQUEST, e.one_line()) from e
        ms = (time.perf_counter() - t0) * 1000
        preds = {k: v.reshape(len(v), -1).argmax(-1).tolist() for k, v in outputs.items()
                 if v.ndim == 2 and v.dtype.kind == "f"}
        first = next(iter(preds.values()), None)
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}, "predictions": first,
                "model_sha256": self.sha256, "latency_ms": round(ms, 3)}

    def _expected(self) -> str:
        return ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number this service accepts")


class Handler(BaseHTTPRequestHandler):
    server_version = "edgesdk-app/1"
    timeout = 30  # seconds a client may stall mid-request before its connection is dropped
    model: Model  # set on the subclass made by make_server

    def log_message(self, fmt: str, *args: Any) -> None:  # route the stdlib's access log to logging
        log.debug("%s - %s", self.address_string(), fmt % args)

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        try:
            data = json.dumps(body, allow_nan=False).encode()
        except ValueError:  # a model that produced NaN/Inf: say so rather than send invalid JSON
            status, body = HTTPStatus.UNPROCESSABLE_ENTITY, {"error": "the model produced NaN or infinite outputs"}
            data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guard(self, fn: Any) -> None:
        try:
            status, body = fn()
        except RequestError as e:
            status, body = e.status, {"error": e.message}
        except EdgeSDKError as e:
            status, body = HTTPStatus.UNPROCESSABLE_ENTITY, {"error": e.one_line()}
        except Exception as e:  # never a traceback to the client; the server keeps serving
            log.exception("request failed")
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(e).__name__}"}
        self._send(status, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        def route() -> tuple[HTTPStatus, dict[str, Any]]:
            if self.path == "/health":
                return HTTPStatus.OK, {"status": "ok"}
            if self.path == "/v1/model":
                return HTTPStatus.OK, self.model.describe()
            if self.path == "/v1/predict":
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use POST for /v1/predict")
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such path {self.path}; try /health, /v1/model, /v1/predict")

        self._guard(route)

    def do_POST(self) -> None:  # noqa: N802
        def route() -> tuple[HTTPStatus, dict[str, Any]]:
            if self.path != "/v1/predict":
                if self.path in ("/health", "/v1/model"):
                    raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"use GET for {self.path}")
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such path {self.path}; POST to /v1/predict")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                   f"expected Content-Type application/json, found {ctype or 'none'}")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
            if length < 0:
                self.close_connection = True
                raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length is negative")
            if length > MAX_BODY:
                self.close_connection = True  # do not read a body we refuse
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"request body of {length} bytes is over the limit of {MAX_BODY} bytes")
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw, parse_constant=_no_constants)
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {e}") from e
            except RecursionError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "body is nested too deeply") from None
            return HTTPStatus.OK, self.model.predict(self.model.feeds(body))

        self._guard(route)

    def do_PUT(self) -> None:  # noqa: N802
        def route() -> tuple[HTTPStatus, dict[str, Any]]:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use GET /v1/model or POST /v1/predict")

        self._guard(route)

    do_DELETE = do_PATCH = do_PUT  # noqa: N815


def make_server(artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *, max_batch: int = 64,
                **load_kwargs: Any) -> tuple[ThreadingHTTPServer, Model]:
    """Load the model and bind the server (port 0 picks a free port); call ``serve_forever()`` to serve."""
    model = Model(artifact_dir, max_batch=max_batch, **load_kwargs)
    handler = type("BoundHandler", (Handler,), {"model": model})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server, model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact_dir")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--max-batch", type=int, default=64)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server, model = make_server(args.artifact_dir, args.host, args.port, max_batch=args.max_batch,
                                    backend=args.backend, threads=args.threads)
    except EdgeSDKError as e:
        print(f"error: {e.format()}")
        return e.exit_code
    d = model.describe()
    print(f"serving {d['artifact']} ({d['backend']}, sha256 {str(d['sha256'])[:12]}) on "
          f"http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        model.session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
