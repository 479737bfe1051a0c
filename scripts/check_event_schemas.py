#!/usr/bin/env python3
"""Every lifecycle event's schema and example (events/), and every event the publisher put on a
bus during `cargo test` (target/published-events.jsonl, written by the event publishing suite):
each example and each published event validates against the schema of its detail type, and
every detail type the service can publish has both files."""

import json
import pathlib
import re
import sys

from jsonschema import Draft202012Validator, FormatChecker

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []


def slug(detail_type):
    return detail_type.lower().replace(" ", "-")


def validator(detail_type):
    path = ROOT / "events" / "schemas" / f"{slug(detail_type)}.json"
    if not path.exists():
        failures.append(f"no schema for {detail_type!r} ({path.relative_to(ROOT)})")
        return None
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def check(event, where):
    if event.get("source") != "infuse.iam":
        failures.append(f"{where}: source {event.get('source')!r}")
    v = validator(event.get("detail-type", ""))
    if v is None:
        return
    for error in v.iter_errors(event.get("detail")):
        failures.append(f"{where}: {event.get('detail-type')}: {error.message} at {list(error.path)}")


# The detail types the code can publish (shared/src/events.rs), each with its files.
code = (ROOT / "shared" / "src" / "events.rs").read_text()
published_types = set(re.findall(r'\("([A-Z][A-Za-z ]+)", "[a-z_.]+"\)', code))
for detail_type in sorted(published_types):
    example = ROOT / "events" / "examples" / f"{slug(detail_type)}.json"
    if not example.exists():
        failures.append(f"no example for {detail_type!r}")
        continue
    event = json.loads(example.read_text())
    if event.get("detail-type") != detail_type:
        failures.append(f"{example.relative_to(ROOT)} is not a {detail_type!r} event")
    check(event, str(example.relative_to(ROOT)))

published = ROOT / "target" / "published-events.jsonl"
seen = set()
if published.exists():
    for n, line in enumerate(published.read_text().splitlines(), 1):
        event = json.loads(line)
        seen.add(event.get("detail-type"))
        check(event, f"published event {n}")
    missing = published_types - seen
    if missing:
        failures.append(f"the publishing suite published no {sorted(missing)}")
else:
    failures.append("target/published-events.jsonl is missing: run the event publishing suite (cargo test) first")

if failures:
    print("event schemas:", *failures, sep="\n  ")
    sys.exit(1)
print(f"event schemas: {len(published_types)} detail types, their examples and {len(seen)} kinds of published event validate")
