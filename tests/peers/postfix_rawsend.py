#!/usr/bin/env python3
"""Sends DATA bytes exactly as given (no line-ending repair, unlike
smtplib.sendmail) over STARTTLS + AUTH PLAIN, and prints the server's reply
to the end of DATA as `REPLY <code> <text>`.

Used to show that the test Postfix really refuses what mailhop must repair
(bare LF line endings): the message is read from stdin, already
dot-stuffed, and the terminating `.` line is sent as CRLF `.` CRLF.
The password comes from MAILHOP_TEST_POSTFIX_PASSWORD. Only the standard
library is used; the certificate is not checked, since
this is a probe of the server's policy, not of TLS.
"""

import argparse
import os
import smtplib
import ssl
import sys


# The test user's password (kept off argv, where `ps` would show it).
PASSWORD_ENV = "MAILHOP_TEST_POSTFIX_PASSWORD"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--rcpt", required=True)
    args = ap.parse_args()
    data = sys.stdin.buffer.read()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", args.port, timeout=30) as s:
        s.starttls(context=ctx)
        s.login(args.user, os.environ[PASSWORD_ENV])
        for code, text in (s.mail(args.user), s.rcpt(args.rcpt), s.docmd("DATA")):
            if code >= 400:
                print(f"REPLY {code} {text.decode(errors='replace')}", flush=True)
                return
        s.send(data + b"\r\n.\r\n")
        code, text = s.getreply()
        print(f"REPLY {code} {text.decode(errors='replace')}", flush=True)


if __name__ == "__main__":
    main()
