"""Lambda init time per function, without AWS: a minimal Runtime API endpoint records when
each function binary (release build) first asks for an invocation, measured from its spawn.
Functions run on the embedded store (no network), so this is the process's own init: config,
store, signing key, router.

Usage: python3 scripts/bench-lambda-init.py [RUNS]   (after `cargo build --release --workspace`)
"""

import http.server
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lambda_bench_env import lambda_env

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
first_next = {}
lock = threading.Lock()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the Runtime API's verb
        if self.path.endswith("/runtime/invocation/next"):
            with lock:
                first_next.setdefault("t", time.perf_counter())
            time.sleep(5)  # never answer: the process is killed first
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    data_dir = tempfile.mkdtemp()
    functions = sorted(p.stem for p in (ROOT / "functions/src/bin").glob("*.rs"))
    env = lambda_env(port, data_dir)
    print(f"{'function':<24} {'p50 ms':>8} {'min ms':>8} {'max ms':>8}  size")
    for name in functions:
        binary = ROOT / "target/release" / name
        samples = []
        for run in range(RUNS + 1):
            with lock:
                first_next.clear()
            start = time.perf_counter()
            proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = start + 10
            while time.perf_counter() < deadline:
                with lock:
                    if "t" in first_next:
                        break
                time.sleep(0.0005)
            proc.kill()
            proc.wait()
            with lock:
                t = first_next.get("t")
            if t is None:
                print(f"{name}: never reached the Runtime API")
                break
            if run > 0:  # the first run creates the local signing key
                samples.append((t - start) * 1000)
        if samples:
            size = binary.stat().st_size / 1e6
            print(f"{name:<24} {statistics.median(samples):8.1f} {min(samples):8.1f} {max(samples):8.1f}  {size:.1f} MB (x86_64)")
    server.shutdown()


if __name__ == "__main__":
    main()
