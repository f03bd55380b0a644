#!/usr/bin/env python3
"""A private Postfix + Dovecot SASL submission server for the tests.

Everything lives under --dir: Postfix's config_directory, queue_directory
and data_directory, Dovecot's config, base_dir and passwd-file, and both
logs. The machine's own MTA setup (/etc/postfix, /etc/dovecot, the system
Postfix instance) is never read or changed, apart from Postfix's meta files
(postfix-files) which `postfix start` only reads.

The submission port (a free one on 127.0.0.1, see READY) is set up the way
many company relays are: TLS required (smtpd_tls_security_level = encrypt), AUTH through
Dovecot, smtpd_sender_login_maps + reject_sender_login_mismatch,
smtpd_forbid_bare_newline = reject, a message_size_limit, and one refused
recipient (check_recipient_access). Accepted mail is relayed to a sink on
127.0.0.1:--relay-port (tests/peers/smtpd.py), where the test reads it.

Prints `READY <port>` once Postfix answers with its 220 greeting and the
Dovecot auth socket exists; on a failure prints `FAILED <why>` and exits 1.
Then waits for EOF on stdin (the test process ended or dropped its handle)
and stops both servers, so they never outlive the test.

The one Dovecot user is --user, with the password from the environment
variable MAILHOP_TEST_POSTFIX_PASSWORD; it may send only as itself
(smtpd_sender_login_maps), anything else gets `553 5.7.1 ... Sender address
rejected: not owned by user`.

Only the standard library is used.
"""

import argparse
import os
import pwd
import grp
import signal
import socket
import subprocess
import sys
import tempfile
import time

# How long to wait for the servers to come up or go down.
TIMEOUT = 30.0
POLL = 0.05

# Refused at RCPT (check_recipient_access) with 550 5.1.1, for bounces.
REFUSED_RCPT = "refused@example.net"

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {data}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
local_recipient_maps =
local_transport = error:no local delivery here
relay_domains =
relayhost = [127.0.0.1]:{relay_port}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Nothing is trusted by address: 127.0.0.1 must log in like anyone else,
# and is not exempt from smtpd_forbid_bare_newline.
mynetworks = 192.0.2.1/32
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
message_size_limit = {size_limit}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
maillog_file = {log}
maillog_file_prefixes = {dir}
# The greeting names this instance, so the start-up probe cannot mistake
# another server that took the port for ours.
smtpd_banner = $myhostname ESMTP {banner}
# No penalty sleeps between errors: the tests provoke errors on purpose.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
# The Received: header names the login, for the tests to check.
smtpd_sasl_authenticated_header = yes
smtpd_sender_login_maps = inline:{{ {{ {user} = {user} }} }}
smtpd_sender_restrictions = reject_sender_login_mismatch
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions =
    check_recipient_access inline:{{ {{ {refused} = 550 5.1.1 no such user here }} }},
    permit_sasl_authenticated, reject
"""

# No chroot anywhere: the queue is in a temporary directory that has none
# of the files a chroot would need.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

DOVECOT_CONF = """\
base_dir = {base}
state_dir = {state}
instance_name = mailhop-test-{tag}
protocols =
log_path = {log}
ssl = no
auth_mechanisms = plain login
# Postfix has already required TLS; Dovecot only checks the password.
disable_plaintext_auth = no
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


# The test user's password (kept off argv, where `ps` would show it).
PASSWORD_ENV = "MAILHOP_TEST_POSTFIX_PASSWORD"


def fail(why):
    print(f"FAILED {why}", flush=True)
    sys.exit(1)


def run(argv, may_fail=False):
    """Runs a command; on failure reports its output and exits, or with
    `may_fail` returns False."""
    # Output goes to a file, not a pipe: a daemon that forks keeps the
    # pipe open, and reading it would never end.
    with tempfile.TemporaryFile() as out:
        try:
            code = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=TIMEOUT
            ).returncode
        except subprocess.TimeoutExpired:
            fail(f"{' '.join(argv)} did not finish within {TIMEOUT}s")
        if code != 0:
            if may_fail:
                return False
            out.seek(0)
            text = out.read(4096).decode(errors="replace")
            fail(f"{' '.join(argv)} exited {code}: {text!r}")
    return True


def write(path, text, mode=0o644):
    # Created with its final mode: the passwd-file is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)


def layout(args):
    """Writes both configurations and the passwd-file; returns the paths."""
    d = os.path.abspath(args.dir)
    p = {
        "dir": d,
        "etc": os.path.join(d, "postfix-etc"),
        "spool": os.path.join(d, "postfix-spool"),
        "data": os.path.join(d, "postfix-data"),
        "log": os.path.join(d, "postfix.log"),
        "dovecot_conf": os.path.join(d, "dovecot.conf"),
        "base": os.path.join(d, "dovecot-run"),
        "state": os.path.join(d, "dovecot-state"),
        "dovecot_log": os.path.join(d, "dovecot.log"),
        "users": os.path.join(d, "dovecot-users"),
    }
    # Dovecot's unprivileged processes (auth, stats) must reach base_dir
    # and the passwd-file: the directory is traversable, not listable.
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o711)
    for key in ("etc", "spool", "data"):
        os.makedirs(p[key], exist_ok=True)
    os.chown(p["data"], pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)
    write(
        os.path.join(p["etc"], "main.cf"),
        MAIN_CF.format(
            etc=p["etc"], spool=p["spool"], data=p["data"], log=p["log"], dir=d,
            relay_port=args.relay_port, size_limit=args.size_limit,
            cert=os.path.abspath(args.cert), key=os.path.abspath(args.key),
            user=args.user, refused=REFUSED_RCPT, banner=banner(),
        ),
    )
    # `postfix check` wants a master.cf; start_postfix() picks the port.
    write(os.path.join(p["etc"], "master.cf"), MASTER_CF.format(port=free_port()))
    # The passwd-file is read by Dovecot's auth process (user dovecot).
    write(p["users"], f"{args.user}:{{PLAIN}}{os.environ[PASSWORD_ENV]}::::::\n", 0o640)
    os.chown(p["users"], 0, grp.getgrnam("dovecot").gr_gid)
    p["socket"] = os.path.join(p["spool"], "private", "auth")
    write(
        p["dovecot_conf"],
        DOVECOT_CONF.format(
            base=p["base"], state=p["state"], tag=os.getpid(), log=p["dovecot_log"],
            users=p["users"], socket=p["socket"],
        ),
    )
    return p


def wait_for(what, ready):
    """Polls `ready()` until it is true, for at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            fail(f"timed out after {TIMEOUT}s waiting for {what}")
        time.sleep(POLL)


def banner():
    """This instance's name in its SMTP greeting."""
    return f"mailhop-test-postfix-{os.getpid()}"


def greets(port):
    """True once the port answers with this instance's 220 greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            line = s.recv(512)
            if line.startswith(b"220 ") and banner().encode() in line:
                s.sendall(b"QUIT\r\n")
                return True
            return False
    except OSError:
        return False


def pid_gone(pidfile):
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
        return False
    except (OSError, ValueError, IndexError):
        return True


def stop(p):
    """Stops both servers and waits (bounded) until their masters exited."""
    try:
        subprocess.run(["postfix", "-c", p["etc"], "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    pidfile = os.path.join(p["base"], "master.pid")
    try:
        with open(pidfile) as f:
            os.kill(int(f.read().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass
    deadline = time.monotonic() + TIMEOUT
    for f in (os.path.join(p["spool"], "pid", "master.pid"), pidfile):
        while not pid_gone(f) and time.monotonic() < deadline:
            time.sleep(POLL)


def free_port():
    """A port nobody listens on (bound, learned, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postfix(p):
    """Starts Postfix on a free port and returns the port once it greets.

    Postfix cannot be told to pick a port itself, so one is picked here;
    should another process take it first, Postfix's master cannot bind
    it, and another port is tried.
    """
    master = os.path.join(p["spool"], "pid", "master.pid")
    for _ in range(5):
        port = free_port()
        write(os.path.join(p["etc"], "master.cf"), MASTER_CF.format(port=port))
        logged = len(read(p["log"]))
        if not run(["postfix", "-c", p["etc"], "start"], may_fail=True):
            if "Address already in use" in read(p["log"])[logged:]:
                continue
            fail(f"postfix start failed; see {p['log']}")

        def greeted():
            # A master that could not bind the port exits: say so now.
            if os.path.exists(master) and pid_gone(master):
                fail(f"Postfix's master exited; see {p['log']}")
            return greets(port)

        wait_for("the Dovecot auth socket", lambda: os.path.exists(p["socket"]))
        wait_for(f"Postfix's greeting on port {port}", greeted)
        return port
    fail("no free port for Postfix after 5 tries")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--relay-port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--size-limit", type=int, default=200000)
    args = ap.parse_args()
    p = layout(args)
    # From here on the servers may be running: stop them however we end.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    try:
        run(["postfix", "-c", p["etc"], "check"])
        run(["dovecot", "-c", p["dovecot_conf"]])
        port = start_postfix(p)
        print(f"READY {port}", flush=True)
        # Block until the test closes our stdin (or exits).
        sys.stdin.buffer.read()
    finally:
        stop(p)


if __name__ == "__main__":
    main()
