"""Checks that openapi.yaml, template.yaml, the workspace and iam-local agree:

- every operation of openapi.yaml has a route in template.yaml, and every template route is in
  openapi.yaml;
- every function in the template is a workspace crate with a Lambda binary;
- iam-local serves every route of openapi.yaml (the router's own "no such route" and "method not
  allowed" answers never come back).

Usage: check_routes.py IAM_LOCAL_BINARY
"""

import json
import re
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


def workspace_crates():
    crates = {}
    for manifest in (ROOT / "functions").glob("*/Cargo.toml"):
        name = re.search(r'^name\s*=\s*"([^"]+)"', manifest.read_text(), re.M).group(1)
        crates[manifest.parent.relative_to(ROOT).as_posix()] = (name, (manifest.parent / "src/main.rs").exists())
    return crates


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
            path = path.replace("{principalId}", "akp_0000000000000000000000").replace("{keyId}", "0000000000000000000000").replace("{roleId}", "iam-viewer")
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

    crates = workspace_crates()
    members = (ROOT / "Cargo.toml").read_text()
    check('"functions/*"' in members, "functions/* is a workspace member glob")
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        code_uri = resource["Properties"]["CodeUri"]
        name, has_main = crates.get(code_uri, (None, False))
        check(name is not None and has_main, f"{logical}: {code_uri} is not a workspace crate with a Lambda main")
        check(resource.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda", f"{logical}: BuildMethod is not rust-cargolambda")
    for code_uri in crates:
        check(any(r["Type"] == "AWS::Serverless::Function" and r["Properties"]["CodeUri"] == code_uri for r in resources.values()), f"{code_uri} has no function in template.yaml")

    served_by_iam_local(sys.argv[1], spec_routes)
    print(f"route check: {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
