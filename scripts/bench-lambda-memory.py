"""Peak memory of the exchange Lambda alone, without AWS: the release `exchange-token` binary
runs on the embedded store against a minimal Runtime API that hands it API Gateway payload v2
events for `POST /iam/auth/token` one at a time, as Lambda does, with production argon2
parameters. Reports VmHWM (peak RSS) after init, after the first (cold, argon2) exchange and
after the rest (warm), and fails if any exchange did not answer 200.

Usage: python3 scripts/bench-lambda-memory.py [EXCHANGES]
       (after `cargo build --release -p exchange-token -p iam-local`)
"""

import http.server
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lambda_bench_env import lambda_env

ROOT = Path(__file__).resolve().parent.parent
EXCHANGES = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
TEMPLATE = json.loads((ROOT / "tests/fixtures/apigw-http-v2.json").read_text())


def event(api_key):
    e = json.loads(json.dumps(TEMPLATE))
    body = json.dumps({"apiKey": api_key})
    e["rawPath"] = e["requestContext"]["http"]["path"] = "/iam/auth/token"
    e["requestContext"]["http"]["method"] = "POST"
    e["headers"]["content-type"] = "application/json"
    e["headers"]["content-length"] = str(len(body))
    e["body"] = body
    return json.dumps(e).encode()


def peak_rss_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


class Runtime:
    def __init__(self, payload, total):
        self.payload, self.total = payload, total
        self.served, self.answered, self.statuses = 0, 0, []
        self.cond = threading.Condition()


def handler_for(runtime):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            with runtime.cond:
                # One invocation at a time, and none past the total (the process is then killed).
                runtime.cond.wait_for(lambda: runtime.answered == runtime.served and runtime.served < runtime.total)
                runtime.served += 1
                request_id = f"req-{runtime.served}"
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:bench")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(runtime.payload)))
            self.end_headers()
            self.wfile.write(runtime.payload)

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                status = json.loads(body).get("statusCode")
            except ValueError:
                status = None
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with runtime.cond:
                runtime.statuses.append(status)
                runtime.answered += 1
                runtime.cond.notify_all()

        def log_message(self, *args):
            pass

    return Handler


def main():
    data_dir = tempfile.mkdtemp()
    local = subprocess.Popen(
        [ROOT / "target/release/iam-local", "--data-dir", data_dir, "--org", "bench", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    api_key = re.search(r"Bootstrap API key for bench: (\S+)", local.stdout.readline()).group(1)
    local.terminate()
    local.wait()

    runtime = Runtime(event(api_key), EXCHANGES)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(runtime))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = lambda_env(server.server_address[1], data_dir)
    # Hold the first invocation back until init is measured.
    with runtime.cond:
        runtime.total = 0
    proc = subprocess.Popen([ROOT / "target/release/exchange-token"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    after_init = peak_rss_kib(proc.pid)
    marks = {}
    for label, total in (("after the cold exchange", 1), (f"after {EXCHANGES} exchanges", EXCHANGES)):
        with runtime.cond:
            runtime.total = total
            runtime.cond.notify_all()
            runtime.cond.wait_for(lambda: runtime.answered >= total, timeout=600)
        marks[label] = peak_rss_kib(proc.pid)
    proc.kill()
    proc.wait()
    server.shutdown()
    bad = [s for s in runtime.statuses if s != 200]
    print(f"exchange-token (x86_64 release, embedded store, argon2 m=19456 KiB t=2 p=1), {len(runtime.statuses)} exchanges")
    print(f"  peak RSS after init: {after_init / 1024:.1f} MB")
    for label, kib in marks.items():
        print(f"  peak RSS {label}: {kib / 1024:.1f} MB")
    if bad or len(runtime.statuses) != EXCHANGES:
        sys.exit(f"{len(bad)} exchanges did not answer 200: {bad[:5]}")


if __name__ == "__main__":
    main()
