#!/usr/bin/env python3
"""A fake OAuth 2.0 identity provider for mailhop's tests (stdlib only).

Simulates the Microsoft Entra ID v2.0 and Google endpoints mailhop uses:

  POST .../token          (any path ending in /token)
      grant_type=client_credentials   client_id + client_secret checked
      grant_type=refresh_token        the refresh token must be one this
                                      server issued (or --refresh-token);
                                      rotation: a new one is returned and
                                      the used one is revoked
      grant_type=urn:ietf:params:oauth:grant-type:device_code
                                      answers the --device-script steps
                                      (authorization_pending, slow_down, …)
                                      one per poll, then success
      grant_type=authorization_code   code from /authorize; PKCE S256 and
                                      redirect_uri are verified
  POST .../devicecode, .../device/code
      device_code, user_code, verification_uri, interval, expires_in
  GET  .../authorize, .../auth
      a "browser" sign-in that is granted at once: 302 to redirect_uri with
      code and state (or error=access_denied with --deny)

Access tokens are "<prefix>at-<n>" (n = 1, 2, … in order of issue) and
refresh tokens "<prefix>rt-<n>", so tests can predict them.

--expired-refresh TOKEN makes that refresh token fail the way Entra ID does
for one that expired through inactivity (invalid_grant, AADSTS70008).

Every request is appended to --log as one JSON object per line (path,
method, form fields, outcome) so that tests can count token requests.

Prints "READY <port>" once listening; exits when stdin closes.
"""

import argparse
import base64
import hashlib
import json
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.access_n = 0
        self.refresh_n = 0
        self.valid_refresh = set(args.refresh_token or [])
        self.device = {}  # device_code -> remaining script steps
        self.codes = {}  # code -> (client_id, redirect_uri, challenge, scope)
        self.log_lock = threading.Lock()

    def log(self, entry):
        if not self.args.log:
            return
        with self.log_lock, open(self.args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()

    def new_access(self):
        with self.lock:
            self.access_n += 1
            return f"{self.args.prefix}at-{self.access_n}"

    def new_refresh(self):
        with self.lock:
            self.refresh_n += 1
            token = f"{self.args.prefix}rt-{self.refresh_n}"
            self.valid_refresh.add(token)
            return token


AADSTS70008 = (
    "AADSTS70008: The provided authorization code or refresh token has expired due "
    "to inactivity. Send a new interactive authorization request for this user and "
    "resource.\r\nTrace ID: 0a1b2c3d-0000-0000-0000-000000000000\r\nCorrelation ID: "
    "11111111-2222-3333-4444-555555555555\r\nTimestamp: 2026-01-01 00:00:00Z"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tokenserver/1"

    def log_message(self, fmt, *args):  # quiet: stderr is for tracebacks
        pass

    @property
    def st(self):
        return self.server.state

    # -- plumbing ---------------------------------------------------------

    def send_json(self, status, obj, extra_log=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def oauth_error(self, status, error, description=None, codes=None):
        obj = {"error": error}
        if description:
            obj["error_description"] = description
        if codes:
            obj["error_codes"] = codes
        return status, obj

    def read_form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def client_auth(self, form):
        """(client_id, client_secret) from the form or HTTP Basic."""
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            cid = urllib.parse.unquote_plus(user)
            secret = urllib.parse.unquote_plus(pw)
        return cid, secret

    def token_success(self, scope, with_refresh):
        if self.st.args.delay_ms:
            time.sleep(self.st.args.delay_ms / 1000)
        obj = {
            "token_type": "Bearer",
            "scope": scope or "",
            "expires_in": self.st.args.expires_in,
            "ext_expires_in": self.st.args.expires_in,
            "access_token": self.st.new_access(),
        }
        if with_refresh:
            obj["refresh_token"] = self.st.new_refresh()
        return 200, obj

    # -- endpoints --------------------------------------------------------

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path
        form = self.read_form()
        cid, secret = self.client_auth(form)
        entry = {"method": "POST", "path": path, "form": form, "client_id": cid,
                 "client_secret": secret}
        if path.endswith("/token"):
            status, obj = self.token(form, cid, secret)
        elif path.endswith("/devicecode") or path.endswith("/device/code"):
            status, obj = self.devicecode(form, cid)
        else:
            status, obj = 404, {"error": "not_found"}
        entry["status"] = status
        entry["outcome"] = obj.get("error", "ok")
        entry["issued"] = obj.get("access_token")
        self.st.log(entry)
        self.send_json(status, obj)

    def token(self, form, cid, secret):
        args = self.st.args
        grant = form.get("grant_type")
        if cid != args.client_id:
            return self.oauth_error(
                400, "unauthorized_client",
                f"AADSTS700016: Application with identifier '{cid}' was not found in the "
                "directory 'Contoso'.", [700016])
        if args.client_secret is not None and grant == "client_credentials" \
                and secret != args.client_secret:
            return self.oauth_error(
                401, "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                "in the request is the client secret value, not the client secret ID.",
                [7000215])
        scope = form.get("scope", "")
        if grant == "client_credentials":
            return self.token_success(scope, with_refresh=False)
        if grant == "refresh_token":
            rt = form.get("refresh_token", "")
            if rt in (args.expired_refresh or []):
                return self.oauth_error(400, "invalid_grant", AADSTS70008, [70008])
            with self.st.lock:
                known = rt in self.st.valid_refresh
                if known and not args.keep_refresh:
                    self.st.valid_refresh.discard(rt)
            if not known:
                return self.oauth_error(
                    400, "invalid_grant",
                    "AADSTS9002313: Invalid request. Request is malformed or invalid.",
                    [9002313])
            return self.token_success(scope, with_refresh=True)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            code = form.get("device_code", "")
            with self.st.lock:
                steps = self.st.device.get(code)
                if steps is None:
                    return self.oauth_error(400, "invalid_grant", "unknown device_code")
                if steps:
                    step = steps.pop(0)
                    return self.oauth_error(400, step, f"script step {step}")
                del self.st.device[code]
            return self.token_success(scope or args.device_scope, with_refresh=True)
        if grant == "authorization_code":
            code = form.get("code", "")
            with self.st.lock:
                saved = self.st.codes.pop(code, None)
            if saved is None:
                return self.oauth_error(400, "invalid_grant", "unknown or used code")
            s_cid, s_redirect, s_challenge, s_scope = saved
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.rstrip(b"=").decode() != s_challenge:
                return self.oauth_error(400, "invalid_grant", "code_verifier does not match")
            if form.get("redirect_uri") != s_redirect or cid != s_cid:
                return self.oauth_error(400, "invalid_grant", "redirect_uri mismatch")
            return self.token_success(s_scope, with_refresh=not self.st.args.no_refresh)
        return self.oauth_error(400, "unsupported_grant_type", f"grant {grant!r}")

    def devicecode(self, form, cid):
        if cid != self.st.args.client_id:
            return self.oauth_error(400, "unauthorized_client", "unknown client")
        code = secrets.token_urlsafe(24)
        script = [s for s in self.st.args.device_script.split(",") if s]
        with self.st.lock:
            self.st.device[code] = script
        host = self.headers.get("Host")
        return 200, {
            "device_code": code,
            "user_code": "ABCD-EFGH",
            "verification_uri": f"https://{host}/devicelogin",
            "expires_in": 900,
            "interval": self.st.args.interval,
            "message": "To sign in, use a web browser to open the page "
                       f"https://{host}/devicelogin and enter the code ABCD-EFGH.",
        }

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        entry = {"method": "GET", "path": url.path, "query": q}
        if not (url.path.endswith("/authorize") or url.path.endswith("/auth")):
            entry["status"] = 404
            self.st.log(entry)
            self.send_json(404, {"error": "not_found"})
            return
        redirect = q.get("redirect_uri", "")
        parsed = urllib.parse.urlparse(redirect)
        problems = []
        if q.get("client_id") != self.st.args.client_id:
            problems.append("client_id")
        if q.get("response_type") != "code":
            problems.append("response_type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problems.append("pkce")
        if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "::1", "localhost"):
            problems.append("redirect_uri")
        if not q.get("state"):
            problems.append("state")
        if problems:
            entry["status"] = 400
            entry["problems"] = problems
            self.st.log(entry)
            self.send_json(400, {"error": "invalid_request", "problems": problems})
            return
        if self.st.args.deny:
            params = {"error": "access_denied",
                      "error_description": "The user declined.", "state": q["state"]}
        else:
            code = secrets.token_urlsafe(16)
            with self.st.lock:
                self.st.codes[code] = (q["client_id"], redirect, q["code_challenge"],
                                       q.get("scope", ""))
            params = {"code": code, "state": q["state"]}
        location = redirect + ("&" if "?" in redirect else "?") + urllib.parse.urlencode(params)
        entry["status"] = 302
        self.st.log(entry)
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", help="PEM certificate: serve HTTPS")
    ap.add_argument("--key", help="PEM key for --cert")
    ap.add_argument("--log", help="append one JSON line per request here")
    ap.add_argument("--client-id", default="test-client")
    ap.add_argument("--client-secret", help="required for client_credentials")
    ap.add_argument("--refresh-token", action="append",
                    help="a refresh token accepted from the start (repeatable)")
    ap.add_argument("--expired-refresh", action="append",
                    help="this refresh token gets invalid_grant AADSTS70008 (repeatable)")
    ap.add_argument("--keep-refresh", action="store_true",
                    help="a used refresh token stays valid (as Google does)")
    ap.add_argument("--expires-in", type=int, default=3600)
    ap.add_argument("--interval", type=int, default=1, help="device flow poll interval")
    ap.add_argument("--device-script", default="authorization_pending,authorization_pending",
                    help="comma-separated errors answered to device polls before success")
    ap.add_argument("--device-scope", default="https://outlook.office.com/SMTP.Send")
    ap.add_argument("--no-refresh", action="store_true",
                    help="authorization_code grants return no refresh token")
    ap.add_argument("--deny", action="store_true", help="/authorize answers access_denied")
    ap.add_argument("--delay-ms", type=int, default=0,
                    help="wait this long before issuing a token")
    ap.add_argument("--prefix", default="", help="prefix for issued tokens")
    args = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
