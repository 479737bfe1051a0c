"""moto_server, one request at a time.

moto's server is threaded and its DynamoDB backend takes no locks, so two concurrent
TransactWriteItems can both pass their conditions: it is not linearizable, and race tests
against it would test moto rather than this service. Real DynamoDB evaluates each conditional
write and each transaction atomically; serving requests one by one gives moto that property.

Usage: moto_serial.py HOST PORT
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)
