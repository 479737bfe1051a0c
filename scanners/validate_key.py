#!/usr/bin/env python3
"""Checks candidate API keys' CRC32 checksums (see scanners/README.md): one candidate per line on
stdin, or as arguments. Prints each candidate's key id (never its secret) with `valid` or
`invalid`; exits 1 if any is invalid. Standard library only."""

import re
import sys
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHAPE = re.compile(r"ik_([0-9A-Za-z]{22})\.([0-9A-Za-z]{44})([0-9A-Za-z]{6})")
MAX_U128 = (1 << 128) - 1


def base62(number):
    digits = ""
    while True:
        number, digit = divmod(number, 62)
        digits = ALPHABET[digit] + digits
        if number == 0:
            return digits


def decodes_to_u128(chunk):
    value = 0
    for char in chunk:
        value = value * 62 + ALPHABET.index(char)
    return value <= MAX_U128


def is_valid(candidate):
    match = SHAPE.fullmatch(candidate)
    if not match:
        return False
    key_id, body, checksum = match.groups()
    if not all(decodes_to_u128(chunk) for chunk in (body[:22], body[22:])):
        return False
    crc = zlib.crc32(f"ik_{key_id}.{body}".encode("ascii"))
    return base62(crc).rjust(6, "0") == checksum


def key_id_of(candidate):
    match = re.match(r"ik_([0-9A-Za-z]{1,22})", candidate)
    return match.group(1) if match else "(not a key)"


def main():
    candidates = sys.argv[1:] or [line.strip() for line in sys.stdin if line.strip()]
    all_valid = True
    for candidate in candidates:
        valid = is_valid(candidate)
        all_valid = all_valid and valid
        print(f"{key_id_of(candidate)} {'valid' if valid else 'invalid'}")
    sys.exit(0 if all_valid else 1)


if __name__ == "__main__":
    main()
