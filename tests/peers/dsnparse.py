"""Reads a bounce on stdin and prints, as JSON, what Python's email package
(an RFC 3464 reader independent of mailhop) makes of its
message/delivery-status part: the part's own header, the per-message
fields and each recipient's fields, and every defect it noticed."""

import email
import email.policy
import json
import sys


def fields(block):
    return {name: str(value) for name, value in block.items()}


def main():
    msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
    out = {"top": msg.get_content_type(), "defects": [repr(d) for d in msg.defects]}
    for part in msg.walk():
        out["defects"] += [repr(d) for d in part.defects]
        if part.get_content_type() != "message/delivery-status":
            continue
        out["content_type"] = part["Content-Type"]
        out["cte"] = part["Content-Transfer-Encoding"]
        out["params"] = dict(part.get_params()[1:]) if part.get_params() else {}
        blocks = part.get_payload()
        out["per_message"] = fields(blocks[0])
        out["per_recipient"] = [fields(b) for b in blocks[1:]]
    json.dump(out, sys.stdout)


main()
