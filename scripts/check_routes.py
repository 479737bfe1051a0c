"""Checks that openapi.yaml, template.yaml, the workspace and iam-local agree:

- every operation of openapi.yaml has a route in template.yaml, and every template route is in
  openapi.yaml;
- every function in the template is a binary of the functions crate, and every binary has a
  function (the operations table against both is tests/tests/e2e/operations.rs);
- iam-local serves every route of openapi.yaml (the router's own "no such route" and "method not
  allowed" answers never come back).

Usage: check_routes.py IAM_LOCAL_BINARY
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"get", "put", "post", "delete", "patch"}
results = {"passed": 0, "failed": 0}


def check(ok, what):
    if ok:
        results["passed"] += 1
    else:
        results["failed"] += 1
        print(f"FAILED: {what}")


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as plain values."""


def _any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node)}
    return {suffix: loader.construct_mapping(node)}


CfnLoader.add_multi_constructor("!", _any_tag)


def openapi_routes():
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return {f"{m.upper()} {path}" for path, ops in spec["paths"].items() for m in ops if m in METHODS}


def template():
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


def function_binaries():
    return {path.stem for path in (ROOT / "functions/src/bin").glob("*.rs")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_by_iam_local(binary, routes):
    port = free_port()
    proc = subprocess.Popen([binary, "--in-memory", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while "listening on" not in proc.stdout.readline().decode():
            if proc.poll() is not None:
                raise SystemExit("iam-local exited before listening")
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for route in sorted(routes):
            method, path = route.split(" ", 1)
            path = path.replace("{principalId}", "akp_0000000000000000000000").replace("{keyId}", "0000000000000000000000").replace("{roleId}", "iam-viewer").replace("{asset}", "index.html")
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method in {"POST", "PUT", "PATCH"} else None)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    body, status = response.read().decode(), response.status
            except urllib.error.HTTPError as e:
                body, status = e.read().decode(), e.code
            detail = ""
            try:
                detail = json.loads(body).get("detail", "") if body else ""
            except ValueError:
                pass
            routed = not (status in (404, 405) and detail in ("no such route", "this route does not accept that method"))
            check(routed, f"iam-local does not serve {route} (got {status} {detail!r})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    from openapi_spec_validator import validate

    try:
        validate(yaml.safe_load((ROOT / "openapi.yaml").read_text()))
        check(True, "")
    except Exception as e:  # the validator raises several exception types
        check(False, f"openapi.yaml is not valid OpenAPI: {e}")
    spec_routes = openapi_routes()
    resources = template()["Resources"]
    template_routes = {r["Properties"]["RouteKey"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    for route in sorted(spec_routes):
        check(route in template_routes, f"{route} is in openapi.yaml but not in template.yaml")
    for route in sorted(template_routes):
        check(route in spec_routes, f"{route} is in template.yaml but not in openapi.yaml")

    binaries = function_binaries()
    members = (ROOT / "Cargo.toml").read_text()
    check('"functions"' in members, "functions is a workspace member")
    built = set()
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        metadata = resource.get("Metadata", {})
        binary = metadata.get("BuildProperties", {}).get("Binary")
        check(resource["Properties"]["CodeUri"] == "functions", f"{logical}: CodeUri is not the functions crate")
        check(binary in binaries, f"{logical}: {binary!r} is not a binary in functions/src/bin")
        check(metadata.get("BuildMethod") == "rust-cargolambda", f"{logical}: BuildMethod is not rust-cargolambda")
        built.add(binary)
    for binary in sorted(binaries - built):
        check(False, f"functions/src/bin/{binary}.rs has no function in template.yaml")

    served_by_iam_local(sys.argv[1], spec_routes)
    print(f"route check: {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
