"""moto_server, one request at a time.

moto's server is threaded and its DynamoDB backend takes no locks, so two concurrent
TransactWriteItems can both pass their conditions: it is not linearizable, and race tests
against it would test moto rather than this service. Real DynamoDB evaluates each conditional
write and each transaction atomically; serving requests one by one gives moto that property.

Usage: moto_serial.py HOST PORT
"""

import io
import json
import sys
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

class TransactionTokens:
    """DynamoDB makes TransactWriteItems idempotent by ClientRequestToken for 10 minutes (the
    AWS SDK sets one per operation and reuses it on every retry); moto ignores it. Without
    this, an SDK retry after an attempt timeout re-runs a transaction that already committed
    and fails its own conditions, which real DynamoDB never does."""

    WINDOW_SECONDS = 600

    def __init__(self, app):
        self.app = app
        self.answered = {}

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").endswith(".TransactWriteItems"):
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            token = json.loads(body).get("ClientRequestToken")
        except ValueError:
            token = None
        now = time.monotonic()
        earlier = self.answered.get(token)
        if token and earlier and now - earlier[0] < self.WINDOW_SECONDS:
            _, status, headers, payload = earlier
            start_response(status, headers)
            return [payload]
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return start_response(status, headers, exc_info)

        payload = b"".join(self.app(environ, capture))
        if token and captured.get("status", "").startswith("200"):
            self.answered[token] = (now, captured["status"], captured["headers"], payload)
        return [payload]


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    app = TransactionTokens(DomainDispatcherApplication(create_backend_app))
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)
