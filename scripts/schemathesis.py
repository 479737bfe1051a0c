"""Schemathesis against openapi.yaml and a running iam-local (in memory), with an admin token.

Usage: scripts/schemathesis.py IAM_LOCAL_BINARY [extra schemathesis arguments]

Starts iam-local on a free port, exchanges its bootstrap key for a management token (scope:
every iam permission), and runs every schemathesis check on every operation; exits with schemathesis'
status. A 5xx, a status or header the spec does not document, or a body that does not match
its schema fails the run. schemathesis-hooks/iam_hooks.py keeps it from revoking its own administrator's
key (see there); the stand-in principal it redirects to is created here.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

EXAMPLES = os.environ.get("IAM_SCHEMATHESIS_EXAMPLES", "100")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, token, body=None):
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(request, timeout=10))


def main():
    binary, extra = sys.argv[1], sys.argv[2:]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Cheap argon2 so thousands of requests take seconds; the parameters are not under test here.
    env = dict(os.environ, IAM_ARGON2_MEMORY_KIB="64", IAM_ARGON2_ITERATIONS="1", RUST_LOG="warn")
    server = subprocess.Popen([binary, "--in-memory", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, env=env, text=True)
    try:
        key = None
        deadline = time.monotonic() + 30
        while key is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            match = re.search(r"Bootstrap API key for \S+: (\S+)", line)
            if match:
                key = match.group(1)
        if key is None:
            sys.exit("iam-local printed no bootstrap key")
        request = urllib.request.Request(
            f"{base}/iam/auth/token",
            # The management API accepts only tokens for its own audience (issuer + /management).
            data=json.dumps({"apiKey": key, "audience": f"{base}/iam/management"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = json.load(urllib.request.urlopen(request, timeout=10))["access_token"]
        whoami = call(base, "GET", "/iam/whoami", token)
        stand_in = call(base, "POST", "/iam/api-keys", token, {"displayName": "schemathesis stand-in"})
        call(base, "POST", f"/iam/api-keys/{stand_in['id']}/credentials", token, {"name": "stand-in"})
        hooks_env = dict(
            os.environ,
            # Its own directory: this script's name would shadow the schemathesis package.
            SCHEMATHESIS_HOOKS="iam_hooks",
            PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis-hooks"),
            IAM_SCHEMATHESIS_GUARDED_PRINCIPAL=whoami["sub"],
            IAM_SCHEMATHESIS_STAND_IN_PRINCIPAL=stand_in["id"],
        )
        command = [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"),
            "--config-file",
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis.toml"),
            "run",
            "openapi.yaml",
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--seed",
            "1",
            "--workers",
            "2",
            # The coverage phase crashes inside schemathesis 4.32.5 on this spec (a SystemError
            # from Python's AST constructor while it compiles a generated module).
            "--phases",
            "examples,fuzzing,stateful",
            *extra,
        ]
        status = subprocess.call(command, env=hooks_env)
        # Had it locked its own administrator out, everything after that point was fuzzing a
        # 401 and proved nothing: the run fails.
        try:
            call(base, "GET", "/iam/whoami", token)
        except urllib.error.HTTPError as e:
            sys.exit(f"schemathesis' administrator token stopped working during the run ({e.code}): the hooks failed")
        sys.exit(status)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
