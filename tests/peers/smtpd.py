#!/usr/bin/env python3
"""The real SMTP server (aiosmtpd 1.4.6) the integration tests submit to.

    python smtpd.py --port 0 --mode {plain,starttls,implicit}
        [--cert FILE --key FILE] [--auth-users user:pass,...] [--require-auth]
        [--xoauth2-token TOKEN --xoauth2-user USER] [--spool DIR]
        [--no-starttls-offer] [--max-connections N]

Protocol with the test harness (tests/integration/smtpd.rs), on stdout:
  READY <port>     once the listening socket accepts connections
  MESSAGE <n>      after message n was accepted and DIR/<n>.json written
The server exits on SIGTERM and when its stdin reaches EOF, so it never
outlives the test process that holds the other end of the pipe.

Fault injection is keyed on addresses, so tests need no extra flags:
  RCPT local part reject550*  -> 550 5.1.1 ... User unknown
                  temp450*    -> 450 4.2.0 ... try later
  MAIL local part mailfail5*  -> 553 5.7.1 Sender rejected
                  mailfail4*  -> 451 4.3.0 Try again later
  any recipient   datafail5*  -> final DATA reply 554 5.6.0
                  datafail4*  -> final DATA reply 451 4.3.0
                  slowdata*   -> never replies to the end of DATA
                  dropdata*   -> closes the connection instead of replying

--max-connections N: as Office 365, a connection beyond N at once is
greeted "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"
and closed; the transcript gets "* refused 432". A session stops counting
at its QUIT (before the 221), so a client that waits for the 221 before
its next connection is never counted twice.

Spool (--spool DIR): <n>.eml holds envelope.original_content, i.e. the
exact bytes after dot-unstuffing (CRLF line ends as sent, including the
CRLF before the final "."); <n>.json the envelope, written last through a
rename. transcript.log gets every line the client sent ("C: ") and every
reply ("S: "), secrets included: tests check the client, not the server.
"""

import argparse
import asyncio
import base64
import binascii
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, MISSING

# RFC 4954 section 4: AUTH command lines (with initial response) may be up
# to 12288 octets; real OAuth bearer tokens easily exceed aiosmtpd's 512.
AUTH_LINE_LIMIT = 12288

XOAUTH2_ERROR = json.dumps(  # compact, as Microsoft 365 sends it
    {
        "status": "401",
        "schemes": "bearer",
        "scope": "https://outlook.office.com/SMTP.Send",
    },
    separators=(",", ":"),
)


def local_part(addr):
    return addr.rpartition("@")[0] if "@" in addr else addr


def is_xtext(value):
    """RFC 3461 xtext: printable ASCII except '+' and '=', or '+XX' hex."""
    i = 0
    while i < len(value):
        c = value[i]
        if c == "+":
            hx = value[i + 1 : i + 3]
            if len(hx) != 2 or any(ch not in "0123456789ABCDEF" for ch in hx):
                return False
            i += 3
            continue
        if not (33 <= ord(c) <= 126) or c == "=":
            return False
        i += 1
    return True


def check_dsn_params(command, params):
    """Validates the DSN parameters (RFC 3461) in `params` (a list of raw
    "KEY=value" strings). Returns an error reply, or None if all is fine."""
    seen = set()
    for p in params:
        key, eq, value = p.partition("=")
        key = key.upper()
        if key in seen:
            return f"501 5.5.4 Duplicate {key} parameter"
        seen.add(key)
        if command == "MAIL" and key == "RET":
            if value.upper() not in ("FULL", "HDRS"):
                return "501 5.5.4 Bad RET parameter"
        elif command == "MAIL" and key == "ENVID":
            if not value or not is_xtext(value) or len(value) > 100:
                return "501 5.5.4 Bad ENVID parameter"
        elif command == "RCPT" and key == "NOTIFY":
            words = value.upper().split(",")
            if words == ["NEVER"]:
                continue
            if not value or any(w not in ("SUCCESS", "FAILURE", "DELAY") for w in words):
                return "501 5.5.4 Bad NOTIFY parameter"
            if len(set(words)) != len(words):
                return "501 5.5.4 Bad NOTIFY parameter"
        elif command == "RCPT" and key == "ORCPT":
            addr_type, semi, addr = value.partition(";")
            if not semi or not addr_type or not addr or not is_xtext(addr):
                return "501 5.5.4 Bad ORCPT parameter"
    return None


class Spool:
    def __init__(self, directory):
        self.dir = directory
        self.count = 0
        self.transcript = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            self.transcript = open(os.path.join(directory, "transcript.log"), "ab", buffering=0)

    def log(self, line):
        if self.transcript is not None:
            self.transcript.write(line + b"\n")

    def store(self, envelope, meta):
        # When the message was accepted, for tests of a sender's pace.
        meta = dict(meta, received_at=time.time())
        self.count += 1
        n = self.count
        if self.dir:
            with open(os.path.join(self.dir, f"{n}.eml"), "wb") as f:
                f.write(envelope.original_content)
            tmp = os.path.join(self.dir, f".{n}.json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
            os.rename(tmp, os.path.join(self.dir, f"{n}.json"))
        announce(f"MESSAGE {n}")
        return n


def announce(line):
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


# Sessions counted against --max-connections (one event loop: no lock).
OPEN_SESSIONS = {"n": 0, "max": None}

THREAD_LIMIT = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"


class TestSMTP(SMTP):
    """aiosmtpd's SMTP plus: DSN parameters, raw-case option capture, a
    transcript, long AUTH lines, and a connection limit."""

    def __init__(self, handler, spool, **kwargs):
        super().__init__(handler, **kwargs)
        self.spool = spool
        self._rx = b""
        # Raw (case-preserved) parameters of the MAIL/RCPT being handled;
        # aiosmtpd only hands hooks an upper-cased copy.
        self.raw_params = []
        self._dsn_command = None
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT
        # The stream limit is also aiosmtpd's line limit (1001); raise it so
        # long AUTH lines and challenge responses are read whole. DATA keeps
        # its own explicit 1001-octet line check.
        reader = getattr(self, "_stream_reader", None)
        if reader is not None and hasattr(reader, "_limit"):
            reader._limit = AUTH_LINE_LIMIT + 2

    # --- connection limit -----------------------------------------------
    def _count_in(self):
        self._counted = True
        OPEN_SESSIONS["n"] += 1
        limit = OPEN_SESSIONS["max"]
        self._over_limit = limit is not None and OPEN_SESSIONS["n"] > limit

    def _count_out(self):
        if getattr(self, "_counted", False):
            self._counted = False
            OPEN_SESSIONS["n"] -= 1

    async def _handle_client(self):
        if getattr(self, "_over_limit", False):
            self.spool.log(b"* refused 432")
            await self.push(THREAD_LIMIT)
            self._count_out()
            self.transport.close()
            return
        await super()._handle_client()

    async def smtp_QUIT(self, arg):
        if not arg:
            self._count_out()
        await super().smtp_QUIT(arg)

    # --- transcript -----------------------------------------------------
    def connection_made(self, transport):
        first = self.transport is None
        if first:
            self._count_in()
        super().connection_made(transport)
        if first:
            tls = transport.get_extra_info("ssl_object") is not None
            self.spool.log(b"* connect tls=" + (b"yes" if tls else b"no"))
        else:
            self._rx = b""  # plaintext after STARTTLS is discarded
            self.spool.log(b"* starttls done")

    def data_received(self, data):
        self._rx += data
        while True:
            i = self._rx.find(b"\n")
            if i < 0:
                break
            self.spool.log(b"C: " + self._rx[:i].rstrip(b"\r"))
            self._rx = self._rx[i + 1 :]
        super().data_received(data)

    def connection_lost(self, error):
        self._count_out()
        self.spool.log(b"* disconnect")
        super().connection_lost(error)

    async def push(self, status):
        line = status if isinstance(status, bytes) else status.encode("utf-8", "surrogateescape")
        self.spool.log(b"S: " + line)
        await super().push(status)

    def is_tls(self):
        t = self.transport
        return t is not None and t.get_extra_info("ssl_object") is not None

    # --- DSN parameters -------------------------------------------------
    def _capture_params(self, keyword, arg):
        self.raw_params = []
        if arg is None:
            return
        rest = self._strip_command_keyword(keyword, arg)
        if rest is None:
            return
        try:
            _, params = self._getaddr(rest)
        except Exception:
            params = None
        self.raw_params = (params or "").split()

    async def smtp_MAIL(self, arg):
        self._capture_params("FROM:", arg)
        self._dsn_command = "MAIL"
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._dsn_command = None

    async def smtp_RCPT(self, arg):
        self._capture_params("TO:", arg)
        self._dsn_command = "RCPT"
        try:
            await super().smtp_RCPT(arg)
        finally:
            self._dsn_command = None

    def _getparams(self, params):
        # aiosmtpd answers 555 to any parameter it does not know, before the
        # handle_MAIL/handle_RCPT hooks run; take the DSN ones out here (the
        # hooks validate them and still see them in mail/rcpt_options).
        result = super()._getparams(params)
        if result is None:
            return None
        known = {"MAIL": ("RET", "ENVID"), "RCPT": ("NOTIFY", "ORCPT")}
        for key in known.get(self._dsn_command, ()):
            result.pop(key, None)
        return result


class Handler:
    def __init__(self, args):
        self.users = {}
        for item in filter(None, (args.auth_users or "").split(",")):
            user, _, password = item.partition(":")
            self.users[user.encode()] = password.encode()
        self.xoauth2_user = args.xoauth2_user
        self.xoauth2_token = args.xoauth2_token

    # aiosmtpd calls this as authenticator(server, session, envelope,
    # mechanism, auth_data) for its built-in PLAIN and LOGIN.
    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login in self.users
            and self.users[auth_data.login] == auth_data.password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    # Called as method(server, args), args = ["XOAUTH2", <initial response>?]
    async def auth_XOAUTH2(self, server, args):
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        expected = (
            b"user=" + (self.xoauth2_user or "").encode()
            + b"\x01auth=Bearer " + (self.xoauth2_token or "").encode()
            + b"\x01\x01"
        )
        if self.xoauth2_token and blob == expected:
            return AuthResult(
                success=True, auth_data=LoginPassword(self.xoauth2_user.encode(), b"")
            )
        reply = await server.challenge_auth(XOAUTH2_ERROR)
        if reply is MISSING:  # client sent "*": aiosmtpd already said 501
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False, handled=False, message="535 5.7.3 Authentication unsuccessful"
        )

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # With this 5-argument hook aiosmtpd leaves host_name to us.
        session.host_name = hostname
        out = []
        for r in responses:
            if r.rstrip() == "250-AUTH":  # no mechanism configured
                continue
            if r.startswith("250 "):
                out.append("250-DSN")
            out.append(r)
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        err = check_dsn_params("MAIL", server.raw_params)
        if err:
            return err
        lp = local_part(address)
        if lp.startswith("mailfail5"):
            return "553 5.7.1 Sender rejected"
        if lp.startswith("mailfail4"):
            return "451 4.3.0 Try again later"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address needs SMTPUTF8"
        envelope.mail_from = address
        envelope.mail_options.extend(server.raw_params)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        err = check_dsn_params("RCPT", server.raw_params)
        if err:
            return err
        lp = local_part(address)
        if lp.startswith("reject550"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if lp.startswith("temp450"):
            return f"450 4.2.0 <{address}>: Recipient address rejected: try later"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address needs SMTPUTF8"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(server.raw_params)
        if not hasattr(envelope, "rcpt_params"):
            envelope.rcpt_params = []
        envelope.rcpt_params.append(list(server.raw_params))
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        lps = [local_part(a) for a in envelope.rcpt_tos]
        if any(lp.startswith("slowdata") for lp in lps):
            # A hung server: never answer; the wait ends when the client
            # goes away (aiosmtpd then cancels this coroutine).
            await asyncio.get_running_loop().create_future()
        if any(lp.startswith("dropdata") for lp in lps):
            server.spool.log(b"* dropping connection")
            server.transport.abort()
            await asyncio.get_running_loop().create_future()
        if any(lp.startswith("datafail5") for lp in lps):
            return "554 5.6.0 Message rejected"
        if any(lp.startswith("datafail4") for lp in lps):
            return "451 4.3.0 Temporary data failure"
        auth_user = None
        if session.authenticated and session.auth_data is not None:
            login = getattr(session.auth_data, "login", None)
            if isinstance(login, bytes):
                auth_user = login.decode("utf-8", "replace")
            elif login is not None:
                auth_user = str(login)
        meta = {
            # The null sender (bounces) is recorded as "", whatever form
            # aiosmtpd parsed it into.
            "mail_from": "" if envelope.mail_from in ("", "<>") else envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": getattr(envelope, "rcpt_params", [[] for _ in envelope.rcpt_tos]),
            "auth_user": auth_user,
            "tls": server.is_tls(),
        }
        n = server.spool.store(envelope, meta)
        return f"250 2.0.0 OK queued as {n}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=["plain", "starttls", "implicit"], default="plain")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--auth-users")
    ap.add_argument("--require-auth", action="store_true")
    ap.add_argument("--xoauth2-token")
    ap.add_argument("--xoauth2-user")
    ap.add_argument("--spool")
    ap.add_argument("--no-starttls-offer", action="store_true")
    ap.add_argument("--client-ca", help="require a client certificate signed by this CA")
    ap.add_argument("--max-connections", type=int, help="greet connection N+1 with 432")
    args = ap.parse_args()
    OPEN_SESSIONS["max"] = args.max_connections

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    # "Requiring AUTH while not requiring TLS": intended in plain mode.
    warnings.filterwarnings("ignore", message="Requiring AUTH", category=UserWarning)

    ctx = None
    if args.mode != "plain":
        if not (args.cert and args.key):
            ap.error(f"--mode {args.mode} needs --cert and --key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=args.client_ca)

    handler = Handler(args)
    spool = Spool(args.spool)
    exclude = []
    if not handler.users:
        exclude += ["PLAIN", "LOGIN"]
    if not args.xoauth2_token:
        exclude.append("XOAUTH2")

    kwargs = dict(
        data_size_limit=100 * 1024 * 1024,
        enable_SMTPUTF8=True,
        hostname="smtpd.test",
        ident="mailhop-test-smtpd",
        auth_required=args.require_auth,
        auth_exclude_mechanism=exclude,
        authenticator=handler.authenticate,
        timeout=120,
    )
    server_ssl = None
    if args.mode == "starttls" and not args.no_starttls_offer:
        kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
    elif args.mode == "implicit":
        # aiosmtpd only counts STARTTLS as TLS for AUTH; the whole
        # connection is TLS here.
        server_ssl = ctx
        kwargs.update(auth_require_tls=False)
    else:
        kwargs.update(auth_require_tls=False)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return TestSMTP(handler, spool, loop=loop, **kwargs)

    server = loop.run_until_complete(
        loop.create_server(factory, host="127.0.0.1", port=args.port, ssl=server_ssl)
    )
    port = server.sockets[0].getsockname()[1]

    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)

    def watch_stdin():
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered
        # reader makes interpreter shutdown abort.
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=watch_stdin, daemon=True).start()

    announce(f"READY {port}")
    loop.run_forever()

    server.close()
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
