"""examples/app: the HTTP service that embeds the runtime. 8 clients x 100 requests against a direct
Session.run, every malformed request a clear 4xx, and the server keeps serving."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "app"))
import server as app  # noqa: E402  (examples/app/server.py)

sys.path.pop(0)


@pytest.fixture(scope="module")
def served(digits_artifacts):
    server, model = app.make_server(digits_artifacts, "127.0.0.1", 0, max_batch=16)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1], model
    server.shutdown()
    server.server_close()


def call(port: int, method: str, path: str, body: bytes | None = None,
         ctype: str | None = "application/json") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": ctype} if ctype else {}
    if body is not None and len(body) > app.MAX_BODY:
        # The server answers 413 from the headers alone and closes without reading the body (as it
        # should); streaming the body first would race that close into a BrokenPipeError here.
        conn.putrequest(method, path)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders()
    else:
        conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, data


def test_model_endpoint_names_the_artifact_and_sha256(served, digits_artifacts):
    port, model = served
    status, d = call(port, "GET", "/v1/model")
    manifest = json.loads((digits_artifacts / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["name"] == d["artifact"])
    assert status == 200 and d["sha256"] == entry["sha256"] and d["backend"] == "onnxruntime"
    assert d["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert call(port, "GET", "/health") == (200, {"status": "ok"})


def test_8_clients_x_100_requests_match_session_run(served):
    port, model = served
    errors: list[str] = []
    checked = [0]
    lock = threading.Lock()

    def client(tid: int) -> None:
        rng = np.random.default_rng(tid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(100):
            x = rng.random((1 + i % 4, 1, 8, 8), dtype=np.float32)
            body = json.dumps({"inputs": {"x": x.tolist()}}).encode()
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            d = json.loads(r.read())
            want = model.session.run({"x": x})
            try:
                assert r.status == 200, d
                for k, v in want.items():
                    np.testing.assert_allclose(np.asarray(d["outputs"][k], np.float32), v, rtol=1e-6, atol=1e-7)
                assert d["predictions"] == v.argmax(-1).tolist()
                assert d["model_sha256"] == model.sha256
            except AssertionError as e:
                with lock:
                    errors.append(f"client {tid} request {i}: {e}")
            with lock:
                checked[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"\napp: 8 clients x 100 requests: {checked[0]} answers checked against Session.run, {len(errors)} errors")
    assert checked[0] == 800 and errors == []


GOOD = np.zeros((1, 1, 8, 8)).tolist()


@pytest.mark.parametrize("method, path, body, ctype, status, needle", [
    ("POST", "/v1/predict", b"{not json", "application/json", 400, "not valid JSON"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": np.zeros((1, 8, 8)).tolist()}}).encode(),
     "application/json", 400, "rank 3"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": np.zeros((1, 1, 8, 9)).tolist()}}).encode(),
     "application/json", 400, "dim 3 is 9, expected 8"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": [[[["a"] * 8] * 8]]}}).encode(),
     "application/json", 400, "expected numbers (float32), found strings"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": [[[[1.0, 2.0], [3.0]]]]}}).encode(),
     "application/json", 400, "not a rectangular array"),
    ("POST", "/v1/predict", json.dumps({"inputs": {}}).encode(), "application/json", 400, "x: missing"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": GOOD, "y": GOOD}}).encode(), "application/json", 400,
     "y: not an input"),
    ("POST", "/v1/predict", json.dumps({"x": GOOD}).encode(), "application/json", 400, '{"inputs"'),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": np.zeros((17, 1, 8, 8)).tolist()}}).encode(),
     "application/json", 413, "batch 17 is over the limit of 16"),
    ("POST", "/v1/predict", b" " * (app.MAX_BODY + 1), "application/json", 413, "over the limit"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": GOOD}}).encode(), "text/plain", 415, "application/json"),
    ("POST", "/v1/predict", b'{"inputs": {"x": [[[[NaN]]]]}}', "application/json", 400, "NaN is not a number"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": np.full((1, 1, 8, 8), 1e300).tolist()}}).encode(),
     "application/json", 400, "finite numbers that fit float32"),
    ("POST", "/v1/predict", json.dumps({"inputs": {"x": np.full((1, 1, 8, 8), True).tolist()}}).encode(),
     "application/json", 400, "found true/false"),
    ("POST", "/v1/predict", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested too deeply"),
    ("GET", "/nope", None, None, 404, "no such path"),
    ("GET", "/v1/predict", None, None, 405, "use POST"),
    ("DELETE", "/v1/model", None, None, 405, "use GET"),
])
def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(served, method, path, body, ctype,
                                                                         status, needle):
    port, _ = served
    got, d = call(port, method, path, body, ctype)
    assert got == status, d
    assert needle in d["error"], d
    ok, d = call(port, "POST", "/v1/predict", json.dumps({"inputs": {"x": GOOD}}).encode())
    assert ok == 200 and len(d["predictions"]) == 1


def test_bare_list_for_a_single_input_model(served):
    port, _ = served
    status, d = call(port, "POST", "/v1/predict", json.dumps(GOOD).encode())
    assert status == 200 and len(d["predictions"]) == 1


def test_server_module_does_not_import_torch():
    code = ("import sys; sys.path.insert(0, 'examples/app'); import server; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_negative_content_length_is_refused(served):
    import socket

    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: -1\r\n\r\n{}")
        reply = b""
        while chunk := sock.recv(4096):  # the server closes after answering
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.0 400") and "Content-Length is negative" in reply
    assert call(port, "GET", "/health") == (200, {"status": "ok"})
