#!/usr/bin/env python3
"""The seed flow through the real Lambda binaries, under `cargo lambda watch`.

Usage: lambda_watch_seed_flow.py CARGO_LAMBDA ENDPOINT_URL [--admin PATH] [--port N]
                                 [--build-timeout SECONDS]

CARGO_LAMBDA is a cargo-lambda executable (`pip install cargo-lambda` puts one in the venv's
bin/); ENDPOINT_URL is a DynamoDB- and Secrets-Manager-compatible server (moto), e.g.
http://127.0.0.1:5000.

What it proves: each `iam-functions` binary, built by cargo-lambda and driven by its Lambda
runtime emulator with payload-format-2.0 function-URL events, boots against DynamoDB and Secrets
Manager (the same cold start as in AWS: IAM_STORE=dynamodb, tables and secrets by name) and
serves its one route, and the README's curl walkthrough holds end to end across six separate
functions: the bootstrap key (from `iam-admin bootstrap`) is exchanged for a management token,
an API-key principal is created, given iam-viewer, and issued a key; the key is exchanged with
client credentials (HTTP Basic), the token is accepted by whoami; after the revocation the key's
exchange answers 400 invalid_grant and its token 401. It also proves that no API key, key secret
or token appears in anything the emulator, cargo or the functions printed.

Each function is reached at http://127.0.0.1:PORT/lambda-url/<binary>/<route>; the emulator
strips the `/lambda-url/<binary>` prefix, so the function sees its own route as rawPath. The
tables and secrets are new and uniquely named on every run (nothing is deleted afterwards: the
server is expected to be throwaway). No key or token is ever printed; the emulator's output is
kept, redacted, in target/lambda-watch-seed-flow.log.

cargo-lambda compiles a function (`cargo run --package iam-functions --bin NAME`, dev profile,
target/) on its first invocation, so every function is first "warmed" with a request to a path
it does not serve (its own 404 proves it booted), within --build-timeout seconds in all.
"""

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from dynamodb_deployment import dynamodb_deployment

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "iam-functions"
# The binaries the flow calls, in the order it first calls them.
FUNCTIONS = ["exchange-token", "create-principal", "assign-role", "issue-credential", "whoami", "revoke-credential"]
ORG = "lambda-watch"
ROLE = "iam-viewer"
READ_PERMISSION = "iam:api-keys:read"
REQUEST_TIMEOUT = 60
LOG_PATH = ROOT / "target" / "lambda-watch-seed-flow.log"

API_KEY_RE = re.compile(r"ik_[0-9A-Za-z]{22}\.[0-9A-Za-z]+")
JWT_RE = re.compile(r"eyJ[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Lines of the emulator's output worth echoing while it builds (cargo's progress, cargo-lambda's own).
PROGRESS_RE = re.compile(r"^\s*(Compiling|Finished|Running|Blocking|error)\b|starting Runtime server|spawning function instance")
# Lines that mean a function will never answer: fail at once instead of waiting out a timeout.
FATAL_RE = re.compile(r"command exited|command killed|command ended by exception|failed to obtain the watchexec task|could not compile")


class Failure(Exception):
    pass


class Secrets:
    """Every secret this run has seen, to keep them out of what it prints and to look for them
    in what the emulator printed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values = {}

    def add(self, label, value):
        if value:
            with self._lock:
                self._values[label] = value

    def add_api_key(self, label, key):
        self.add(label, key)
        if "." in key:
            self.add(f"{label} secret", key.split(".", 1)[1])

    def redact(self, text):
        with self._lock:
            values = sorted(self._values.items(), key=lambda item: -len(item[1]))
        for label, value in values:
            text = text.replace(value, f"<{label}>")
        return JWT_RE.sub("<jwt>", API_KEY_RE.sub("<api key>", text))

    def leaked_in(self, text):
        with self._lock:
            return sorted(label for label, value in self._values.items() if value in text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(message):
    print(message, flush=True)


def check(condition, what):
    if not condition:
        raise Failure(what)


# --- iam-admin -------------------------------------------------------------------------------


def run_admin(admin, env, args, secrets):
    out = subprocess.run([admin, *args], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise Failure(f"iam-admin {' '.join(args)} exited {out.returncode}: {secrets.redact(out.stderr.strip())}")
    return out.stdout


# --- the emulator ----------------------------------------------------------------------------


class Emulator:
    def __init__(self, command, env, secrets):
        self.secrets = secrets
        self.lines = []  # raw, only ever written to disk redacted
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            # Its own process group, so that stopping it can reach what it started.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = ANSI_RE.sub("", raw.rstrip("\n"))
            with self._lock:
                self.lines.append(line)
            if PROGRESS_RE.search(line):
                say(f"    [watch] {self.secrets.redact(line.strip())}")

    def line_count(self):
        with self._lock:
            return len(self.lines)

    def fatal_since(self, start):
        with self._lock:
            return next((line for line in self.lines[start:] if FATAL_RE.search(line)), None)

    def tail(self, n=40):
        with self._lock:
            return [self.secrets.redact(line) for line in self.lines[-n:]]

    def text(self):
        with self._lock:
            return "\n".join(self.lines)

    def descendants(self):
        """The pids below the emulator (cargo, the functions), from /proc; empty elsewhere."""
        children = {}
        try:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat") as f:
                            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    except (OSError, IndexError, ValueError):
                        continue
                    children.setdefault(ppid, []).append(int(entry))
        except OSError:
            return []
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def stop(self):
        """SIGINT (cargo-lambda's graceful shutdown, as Ctrl-C), then SIGKILL to whatever of the
        emulator, its process group and its descendants is still there after 15 s."""
        below = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait(timeout=10)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._reader.join(timeout=5)


class Client:
    """Function-URL requests through the emulator, waiting in the foreground so that a dead
    emulator or a function that exited fails the run at once."""

    def __init__(self, base, emulator):
        self.base = base
        self.emulator = emulator
        self.pool = ThreadPoolExecutor(max_workers=1)

    def call(self, function, method, path, *, bearer=None, json_body=None, form=None, basic=None, timeout=REQUEST_TIMEOUT, heartbeat=None):
        headers = {"Accept": "application/json"}
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        if basic is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        request = urllib.request.Request(f"{self.base}/lambda-url/{function}{path}", data=data, method=method, headers=headers)

        def send():
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.status, response.headers, response.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()

        mark = self.emulator.line_count()
        started = time.monotonic()
        next_beat = started + 30
        future = self.pool.submit(send)
        while True:
            if wait([future], timeout=1).done:
                try:
                    status, response_headers, raw = future.result()
                except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
                    raise Failure(f"{method} /lambda-url/{function}{path}: {e}") from None
                break
            if self.emulator.proc.poll() is not None:
                raise Failure(f"cargo lambda watch exited ({self.emulator.proc.returncode}) while {function} was being called")
            fatal = self.emulator.fatal_since(mark)
            if fatal:
                raise Failure(f"{function}: the emulator reported {self.emulator.secrets.redact(fatal.strip())!r}")
            if heartbeat and time.monotonic() >= next_beat:
                say(f"    ... {heartbeat} ({time.monotonic() - started:.0f} s)")
                next_beat += 30
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return status, response_headers, body, time.monotonic() - started


def show(body, secrets):
    return secrets.redact(json.dumps(body) if not isinstance(body, str) else body)[:400]


def step(number, function, summary, elapsed):
    say(f"ok {number} {function:<17} {summary} ({elapsed:.2f} s)")


# --- the flow --------------------------------------------------------------------------------


def warm_up(client, secrets, budget):
    """Each function's first invocation compiles it (the first one everything it depends on):
    a GET of a path no function serves answers the function's own 404 once it has booted."""
    deadline = time.monotonic() + budget
    for function in FUNCTIONS:
        remaining = deadline - time.monotonic()
        check(remaining > 0, f"the build and cold starts took longer than --build-timeout ({budget} s)")
        say(f"-- warming {function}: cargo lambda builds and starts it on this first request")
        try:
            status, _, body, elapsed = client.call(
                function, "GET", "/lambda-watch-warm-up", timeout=remaining, heartbeat=f"still building or starting {function}"
            )
        except Failure as e:
            if "timed out" in str(e):
                raise Failure(f"{function} did not answer within the --build-timeout budget ({budget} s)") from None
            raise
        check(
            status == 404 and isinstance(body, dict) and body.get("detail") == "no such route",
            f"{function} warm-up: expected the function's own 404 'no such route', got {status} {show(body, secrets)}",
        )
        say(f"ok   {function} is up ({elapsed:.1f} s)")


def seed_flow(client, secrets, bootstrap_key, issuer):
    management = f"{issuer}/management"

    # 1. The bootstrap key for a management token (JSON form).
    status, headers, body, t = client.call("exchange-token", "POST", "/iam/auth/token", json_body={"apiKey": bootstrap_key, "audience": management})
    check(status == 200 and isinstance(body, dict) and "access_token" in body, f"1 bootstrap exchange: {status} {show(body, secrets)}")
    admin_token = body["access_token"]
    secrets.add("admin token", admin_token)
    check(body.get("token_type") == "Bearer", f"1 token_type: {body.get('token_type')!r}")
    check("no-store" in (headers.get("Cache-Control") or ""), "1 the token response is not Cache-Control: no-store")
    step(1, "exchange-token", f"POST /iam/auth/token (JSON, bootstrap key, management audience) -> 200, expires_in={body.get('expires_in')}", t)

    # 2. An API-key principal.
    status, headers, body, t = client.call("create-principal", "POST", "/iam/api-keys", bearer=admin_token, json_body={"displayName": "billing-job"})
    check(status == 201 and isinstance(body, dict), f"2 create principal: {status} {show(body, secrets)}")
    principal = body.get("id", "")
    check(re.fullmatch(r"akp_[0-9A-Za-z]{22}", principal) is not None, f"2 principal id {principal!r}")
    check(body.get("type") == "ApiKey" and body.get("status") == "Active" and body.get("orgId") == ORG, f"2 principal: {show(body, secrets)}")
    step(2, "create-principal", f"POST /iam/api-keys -> 201 {principal}", t)

    # 3. iam-viewer for it.
    status, _, body, t = client.call("assign-role", "PUT", f"/iam/api-keys/{principal}/role-assignments/{ROLE}", bearer=admin_token)
    check(status == 201 and isinstance(body, dict), f"3 assign role: {status} {show(body, secrets)}")
    check(body.get("roleId") == ROLE and body.get("principalId") == principal, f"3 assignment: {show(body, secrets)}")
    step(3, "assign-role", f"PUT /iam/api-keys/{principal}/role-assignments/{ROLE} -> 201", t)

    # 4. A key for it, shown in this response only.
    status, headers, body, t = client.call("issue-credential", "POST", f"/iam/api-keys/{principal}/credentials", bearer=admin_token, json_body={"name": "production"})
    check(status == 201 and isinstance(body, dict) and isinstance(body.get("credential"), dict), f"4 issue credential: {status} {show(body, secrets)}")
    api_key = body.get("apiKey") or ""
    secrets.add_api_key("issued API key", api_key)
    credential = body["credential"]
    key_id = credential.get("keyId", "")
    client_id = credential.get("clientId", "")
    check(re.fullmatch(r"ik_[0-9A-Za-z]{22}\.[0-9A-Za-z]{50}", api_key) is not None, "4 apiKey does not have the documented form")
    check(client_id == f"ik_{key_id}" and api_key.startswith(client_id + "."), f"4 keyId/clientId/apiKey disagree: {show(credential, secrets)}")
    check(credential.get("status") == "Active" and credential.get("principalId") == principal, f"4 credential: {show(credential, secrets)}")
    check("no-store" in (headers.get("Cache-Control") or ""), "4 the issued key's response is not Cache-Control: no-store")
    step(4, "issue-credential", f"POST /iam/api-keys/{principal}/credentials -> 201 key id {key_id}", t)

    # 5. The integration's exchange: client credentials, HTTP Basic ik_<keyId>:<secret>.
    basic = (client_id, api_key.split(".", 1)[1])
    form = {"grant_type": "client_credentials", "audience": management}
    status, _, body, t = client.call("exchange-token", "POST", "/iam/auth/token", form=form, basic=basic)
    check(status == 200 and isinstance(body, dict) and "access_token" in body, f"5 client-credentials exchange: {status} {show(body, secrets)}")
    token = body["access_token"]
    secrets.add("access token", token)
    scope = (body.get("scope") or "").split()
    check(READ_PERMISSION in scope, f"5 scope {body.get('scope')!r} lacks {READ_PERMISSION}")
    step(5, "exchange-token", f"POST /iam/auth/token (client_credentials, Basic) -> 200, scope={' '.join(scope)}", t)

    # 6. whoami with that token.
    status, _, body, t = client.call("whoami", "GET", "/iam/whoami", bearer=token)
    check(status == 200 and isinstance(body, dict), f"6 whoami: {status} {show(body, secrets)}")
    check(body.get("sub") == principal and body.get("client_id") == client_id, f"6 claims name another caller: {show(body, secrets)}")
    check(body.get("iss") == issuer and body.get("aud") == management and body.get("org_id") == ORG, f"6 iss/aud/org_id: {show(body, secrets)}")
    check(ROLE in (body.get("roles") or []), f"6 roles {body.get('roles')!r} lack {ROLE}")
    step(6, "whoami", f"GET /iam/whoami -> 200 sub={principal} roles={','.join(body['roles'])}", t)

    # 7. The admin revokes the key.
    status, _, body, t = client.call("revoke-credential", "POST", f"/iam/api-keys/{principal}/credentials/{key_id}/revoke", bearer=admin_token)
    check(status == 200 and isinstance(body, dict), f"7 revoke: {status} {show(body, secrets)}")
    check(body.get("keyId") == key_id and body.get("status") == "Revoked", f"7 revoked credential: {show(body, secrets)}")
    step(7, "revoke-credential", f"POST /iam/api-keys/{principal}/credentials/{key_id}/revoke -> 200 Revoked", t)

    # 8. The key no longer exchanges ...
    status, _, body, t = client.call("exchange-token", "POST", "/iam/auth/token", form=form, basic=basic)
    check(status == 400 and isinstance(body, dict) and body.get("error") == "invalid_grant", f"8 exchange after revocation: {status} {show(body, secrets)}")
    step(8, "exchange-token", "POST /iam/auth/token with the revoked key -> 400 invalid_grant", t)

    # 9. ... and the token it got is refused at once.
    status, _, body, t = client.call("whoami", "GET", "/iam/whoami", bearer=token)
    check(status == 401, f"9 whoami with the revoked key's token: {status} {show(body, secrets)}")
    step(9, "whoami", "GET /iam/whoami with the revoked key's token -> 401", t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("cargo_lambda", help="a cargo-lambda executable")
    parser.add_argument("endpoint", help="DynamoDB/Secrets Manager endpoint URL (moto)")
    parser.add_argument("--admin", default=str(ROOT / "target" / "debug" / "iam-admin"), help="the iam-admin binary (default target/debug/iam-admin)")
    parser.add_argument("--port", type=int, default=0, help="the emulator's port (default: a free one)")
    parser.add_argument("--build-timeout", type=int, default=1200, help="seconds for building and starting every function (default 1200)")
    args = parser.parse_args()

    secrets = Secrets()
    port = args.port or free_port()
    issuer = f"http://127.0.0.1:{port}/iam"
    deployment = dynamodb_deployment("lw", args.endpoint)
    function_env = dict(deployment, IAM_STORE="dynamodb", IAM_ISSUER=issuer, RUST_LOG="info")

    emulator = None
    try:
        say(f"== iam-admin: tables {deployment['IAM_PRINCIPALS_TABLE']}, {deployment['IAM_CREDENTIALS_TABLE']} and the signing key at {args.endpoint}")
        admin_env = dict(os.environ, **deployment, RUST_LOG="warn")
        say("   " + run_admin(args.admin, admin_env, ["create-tables"], secrets).strip())
        say("   " + run_admin(args.admin, admin_env, ["init-signing-key"], secrets).strip())
        printed = run_admin(args.admin, admin_env, ["bootstrap", "--org", ORG], secrets)
        match = re.search(rf"^Bootstrap API key for {ORG}: (ik_\S+)$", printed, re.MULTILINE)
        check(match is not None, "iam-admin bootstrap printed no key line")
        bootstrap_key = match.group(1)
        secrets.add_api_key("bootstrap key", bootstrap_key)
        say(f"   bootstrapped organisation {ORG} (key not shown)")

        command = [
            args.cargo_lambda, "lambda", "watch",
            "--invoke-address", "127.0.0.1",
            "--invoke-port", str(port),
            "--package", PACKAGE,
            "--ignore-changes",
            "--locked",
        ]
        for name, value in function_env.items():
            command += ["--env-var", f"{name}={value}"]
        # cargo-lambda's own log filter comes from RUST_LOG: keep it at its default (its info lines).
        emulator_env = dict(os.environ, RUST_LOG="cargo_lambda=info", CARGO_LAMBDA_COLOR="never", CARGO_TERM_COLOR="never")
        say(f"== cargo lambda watch on 127.0.0.1:{port} (package {PACKAGE}, issuer {issuer})")
        emulator = Emulator(command, emulator_env, secrets)

        deadline = time.monotonic() + 60
        while True:
            if emulator.proc.poll() is not None:
                raise Failure(f"cargo lambda watch exited ({emulator.proc.returncode}) before listening")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                check(time.monotonic() < deadline, f"cargo lambda watch did not listen on 127.0.0.1:{port} within 60 s")
                time.sleep(0.2)
        say("ok   the emulator is listening")

        client = Client(f"http://127.0.0.1:{port}", emulator)
        warm_up(client, secrets, args.build_timeout)
        say("== the seed flow, one function per route")
        seed_flow(client, secrets, bootstrap_key, issuer)

        leaked = secrets.leaked_in(emulator.text())
        check(not leaked, f"secrets reached the emulator's output: {', '.join(leaked)}")
        say("ok   no key, key secret or token appears in the emulator's output")
        say("== passed: the function binaries serve the seed flow under cargo lambda watch")
        return 0
    except Failure as e:
        say(f"FAILED: {secrets.redact(str(e))}")
        if emulator is not None:
            say("-- the emulator's last lines (redacted):")
            for line in emulator.tail():
                say(f"    {line}")
        return 1
    finally:
        if emulator is not None:
            emulator.stop()
            LOG_PATH.parent.mkdir(parents=True, exist_ok=True)
            LOG_PATH.write_text(secrets.redact(emulator.text()) + "\n")
            say(f"-- emulator stopped; its output, redacted: {LOG_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
