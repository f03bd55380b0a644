#!/usr/bin/env python3
"""Independent DKIM verifier for the integration tests: dkimpy, not mailhop.

Usage: dkimverify.py --dns FILE MESSAGE_FILE

FILE is a JSON object mapping DNS names to TXT values, e.g.
  {"s1._domainkey.example.com.": "v=DKIM1; k=rsa; p=MIIB..."}
Lookups are answered from it (a missing name is an empty answer), so no
real DNS is ever queried.

Every DKIM-Signature in the message is verified, topmost first. One line is
printed per signature:
  OK <d> <s> <a>
  FAIL <d> <s> <reason>
The exit status is 0 only if there is at least one signature and all of
them verify; 1 otherwise; 2 for bad usage.
"""
import argparse
import json
import logging
import sys

import dkim


class Collect(logging.Handler):
    """Keeps what dkimpy logs, so a FAIL line can say why."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def one_line(message):
    return " ".join(text(message).split())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dns", required=True, help="JSON file: name -> TXT value")
    parser.add_argument("message", help="the message file (CRLF or LF)")
    args = parser.parse_args()

    with open(args.dns, encoding="utf-8") as f:
        records = {name.lower().rstrip(".") + ".": value for name, value in json.load(f).items()}
    with open(args.message, "rb") as f:
        message = f.read()

    def dnsfunc(name, timeout=5):
        key = text(name).lower().rstrip(".") + "."
        value = records.get(key)
        return value.encode("ascii") if value is not None else None

    count = len(
        [1 for name, _ in dkim.DKIM(message).headers if name.lower() == b"dkim-signature"]
    )
    if count == 0:
        print("FAIL - - no DKIM-Signature header field")
        return 1

    all_ok = True
    for idx in range(count):
        collector = Collect()
        logger = logging.getLogger(f"dkimverify.{idx}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(collector)
        # minkey=1024: the tests sign with 1024-bit keys on purpose too.
        verifier = dkim.DKIM(message, logger=logger, minkey=1024)
        d, s, a = "-", "-", "-"
        try:
            prep = verifier.verify_headerprep(idx)
            if prep:
                sig = prep[0]
                d = text(sig.get(b"d", b"-"))
                s = text(sig.get(b"s", b"-"))
                a = text(sig.get(b"a", b"-"))
            ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
            reason = collector.messages[-1] if collector.messages else "signature did not verify"
        except dkim.DKIMException as e:
            ok = False
            reason = f"{type(e).__name__}: {e}"
        if ok:
            print(f"OK {d} {s} {a}")
        else:
            all_ok = False
            print(f"FAIL {d} {s} {one_line(reason)}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
