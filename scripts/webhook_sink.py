#!/usr/bin/env python3
"""A webhook receiver for the tests: an independent check of the service's Standard Webhooks
signatures, with the `standardwebhooks` package from PyPI (not our code).

Listens on 127.0.0.1 (port printed on the first line of stdout). Every POST is recorded; the
first N (`--fail-first N`) are answered 503, then 204. `POST /redirect...` is answered 302.
`GET /_received` answers what was recorded; `POST /_verify` with {"secret": "whsec_..."} answers,
per recorded request, whether `standardwebhooks.Webhook(secret).verify` accepts it."""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

received = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_received":
            with lock:
                self.answer(200, json.dumps(received).encode())
        else:
            self.answer(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/_verify":
            secret = json.loads(body)["secret"]
            results = []
            with lock:
                for r in received:
                    try:
                        Webhook(secret).verify(r["body"], r["headers"])
                        results.append({"id": r["headers"].get("webhook-id"), "verified": True})
                    except Exception as e:  # the package's own verdict, whatever its type
                        results.append({"id": r["headers"].get("webhook-id"), "verified": False, "error": str(e)})
            self.answer(200, json.dumps(results).encode())
            return
        with lock:
            received.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode()})
            n = len(received)
        if self.path.startswith("/redirect"):
            self.answer(302, headers=[("location", "http://169.254.169.254/latest/meta-data")])
        elif n <= args.fail_first:
            self.answer(503)
        else:
            self.answer(204)


parser = argparse.ArgumentParser()
parser.add_argument("--fail-first", type=int, default=0)
args = parser.parse_args()
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
