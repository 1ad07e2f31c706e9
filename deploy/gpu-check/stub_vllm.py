#!/usr/bin/env python3
"""A stand-in vLLM server for the pool check on a GPU host that has PyTorch but no vLLM.

Started by the pool manager exactly as it starts ``vllm serve MODEL --port P ...`` (options it
does not know are ignored). Before it serves it prints ``REPORT {json}``: its argv, the GPU
variables it was given and the devices PyTorch sees (count, names, UUIDs, each touched once).
Then it answers /health, /v1/completions (one token) and /metrics (idle gauges) with the
standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def uuid_text(value: Any) -> str:
    text = str(value)
    if re.fullmatch(r"(GPU-)?[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", text):
        return text
    try:
        return str(uuid.UUID(bytes=bytes(b & 0xFF for b in value.bytes)))
    except Exception:
        return text


def report(argv: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "argv": argv,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
    }
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        return seen | {"torch": None, "problem": str(exc), "device_count": 0, "devices": []}
    count = torch.cuda.device_count()
    devices = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        raw = getattr(props, "uuid", None)
        devices.append({"index": i, "name": props.name, "uuid": raw and uuid_text(raw)})
        torch.ones(1024, device=f"cuda:{i}").sum().item()  # usable, not just listed
    return seen | {"torch": torch.__version__, "device_count": count, "devices": devices}


class Handler(BaseHTTPRequestHandler):
    served_name = "stub"

    def _send(self, status: int, body: str, kind: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "")
        elif self.path == "/metrics":
            lines = []
            for name, value in (
                ("vllm:num_requests_running", 0),
                ("vllm:num_requests_waiting", 0),
                ("vllm:kv_cache_usage_perc", 0.0),
            ):
                lines += [f"# TYPE {name} gauge", f'{name}{{engine="0"}} {value}']
            self._send(200, "\n".join(lines) + "\n", "text/plain")
        else:
            self._send(404, "{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/completions" or body.get("model") != self.served_name:
            self._send(404, json.dumps({"error": "not found"}))
            return
        choice = {"index": 0, "text": "x", "finish_reason": "length"}
        self._send(200, json.dumps({"choices": [choice], "model": self.served_name}))

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    print("REPORT " + json.dumps(report(sys.argv[1:])), flush=True)
    Handler.served_name = args.served_model_name
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"serving {args.served_model_name} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
