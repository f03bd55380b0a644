#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after
changing this file). Realistic inputs: what cron, PHP and mail clients
pipe in, real msmtprc/ssmtp.conf/aliases files, queue records as mailhop
writes them, and replies from Office 365, Gmail and Postfix."""
import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent.parent
ROOT = HERE.parent
CORPUS = HERE / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# intake: first byte = control (bit 0: -i; the rest: read size - 1).
CRON = (
    "From: root (Cron Daemon)\n"
    "To: root\n"
    "Subject: Cron <root@web1> /usr/local/bin/backup.sh\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "\n"
    "rsync: connection unexpectedly closed (0 bytes received so far)\n"
    "Sicherung fehlgeschlagen: Ger\u00e4t nicht bereit\n"
)
PHP = (
    "To: customer@example.net\r\n"
    "Subject: =?UTF-8?B?QmVzdGVsbGJlc3TDpHRpZ3VuZw==?=\r\n"
    "X-PHP-Originating-Script: 33:checkout.php\r\n"
    "From: Shop <shop@example.com>\r\n"
    "Reply-To: support@example.com\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-type: text/html; charset=UTF-8\r\n"
    "\r\n"
    "<html><body><p>Danke f\u00fcr Ihre Bestellung!</p>\r\n"
    ".\r\n"
    "<p>after a lone dot</p></body></html>\r\n"
)
MBOX = (
    "From alice@example.org Mon Jan  1 00:00:00 2024\n"
    "From: alice@example.org\nTo: bob@example.org, \"Smith, J\" <j@example.org>\n"
    "Subject: folded\n\tsubject line\n\n"
    "From the desk of Alice\n\x00nul\r\rbare CRs\n" + "x" * 300 + "\n."
)
put("intake", "cron", b"\x00" + CRON.encode())
put("intake", "cron-trickle", b"\x0e" + CRON.encode())
put("intake", "php-crlf-dot", b"\x00" + PHP.encode())
put("intake", "php-crlf-i", b"\x03" + PHP.encode())
put("intake", "mbox-from-8bit", b"\x40" + MBOX.encode("utf-8"))
put("intake", "no-header", b"\x00just a body line\nno newline at the end")
put("intake", "dot-only", b"\x00.\r\n")

# sendmail_argv: arguments separated by NUL.
ARGV = {
    "cron": ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
    "php": ["-t", "-i"],
    "mutt": ["-oem", "-oi", "-f", "alice@example.org", "--", "bob@example.org"],
    "git-send-email": ["-i", "-f", "dev@example.org", "maint@example.org", "list@example.org"],
    "mdadm": ["-t"],
    "queue": ["-q30m", "-v"],
    "verify": ["-bv", "-N", "failure,delay", "-R", "hdrs", "-V", "env1", "root"],
    "old-flags": ["-odi", "-oQ/var/spool", "-O", "DeliveryMode=b", "-C/etc/mail.cf", "-X", "/tmp/log", "x"],
}
for name, args in ARGV.items():
    put("sendmail_argv", name, "\0".join(args))

# aliases
put("aliases", "debian", (
    "# /etc/aliases\n"
    "mailer-daemon: postmaster\n"
    "postmaster: root\n"
    "nobody: root\n"
    "hostmaster: root\n"
    "webmaster: root\n"
    "www: root\n"
    "root: admin@example.net, \\root\n"
))
put("aliases", "continuations-crlf", (
    "\ufeffops: alice@example.org,\r\n"
    "\tbob@example.org,\r\n"
    "  carol\r\n"
    "carol: \"carol smith\"@example.org\r\n"
    "pipe: |/usr/bin/procmail, /var/mail/file, :include:/etc/list\r\n"
    "Root: ops\r\n"
))
put("aliases", "loop", "a: b\nb: c\nc: a\nd: d, e@x\n")

# config: the packaged example and the importer fixtures' shape.
example = ROOT / "packaging" / "mailhop.toml.example"
if example.exists():
    put("config", "example", example.read_bytes())
put("config", "office365", (
    '[[account]]\nname = "office365"\nhost = "smtp.office365.com"\n'
    'from = "shop@example.com"\nuser = "shop@example.com"\n'
    'password_file = "/etc/mailhop/office365.password"\n\n'
    '[rewrite]\nfrom_policy = "account"\n\n'
    '[aliases]\nmap = { root = "admin@example.net" }\n\n'
    '[[dkim]]\ndomain = "example.com"\nselector = "s1"\nkey_file = "/etc/mailhop/dkim-s1.key"\n'
))
put("config", "oauth", (
    '[[account]]\nname = "office365"\nhost = "smtp.office365.com"\n'
    'from = "shop@example.com"\nuser = "shop@example.com"\nauth = "xoauth2"\n\n'
    '[account.oauth]\nprovider = "microsoft"\n'
    'tenant = "9a8b7c6d-1e2f-3a4b-5c6d-7e8f9a0b1c2d"\n'
    'client_id = "3f1c5b7e-0d2a-4c9b-8e61-2a4f7d9c0b13"\n'
    'token_file = "/var/lib/mailhop/oauth/office365.token"\n'
))
put("config", "local-capture", '[local]\ncapture = true\npath = "/var/tmp/mail-capture"\n')

# importers: the fixtures the integration tests use.
fix = ROOT / "tests" / "fixtures" / "import"
put("import_msmtp", "fixture", (fix / "msmtprc").read_bytes())
put("import_msmtp", "simple", (
    "account default\nhost mail.example.org\nport 465\ntls on\ntls_starttls off\n"
    "auth plain\nuser me\npasswordeval \"gpg -d ~/.pw.gpg\"\nfrom me@example.org\n"
))
put("import_ssmtp", "gmail", (fix / "ssmtp-gmail.conf").read_bytes())
put("import_ssmtp", "office365-revaliases",
    (fix / "ssmtp-office365.conf").read_bytes() + b"\0" + (fix / "revaliases-office365").read_bytes())

# queue records, as Meta::to_bytes writes them.
ID = "065A1B2C300000A1B2C3D4E5F60718293"
put("queue_record", "pending", (
    f"mailhop-queue 1\nid: {ID}\narrival: 1700000000\nsender: root@web1.example.org\n"
    "account: office365\nuid: 0\nattempts: 0\nnext-attempt: 1700000000\nhold: 0\neight-bit: 0\n"
    "rcpt: pending admin@example.net \n\n"
    "From: root (Cron Daemon) <root@web1.example.org>\r\nTo: admin@example.net\r\nSubject: backup\r\n"
))
put("queue_record", "retried", (
    f"mailhop-queue 1\nid: {ID}\narrival: 1700000000\nsender: a%20b@x\naccount: o365\nuid: 33\n"
    "attempts: 2\nnext-attempt: 1700000300\nlast-error: 451%204.3.0%20try%0Alater%20100%25\n"
    "hold: 1\neight-bit: 1\ndsn-notify: failure,delay\ndsn-ret: hdrs\ndsn-envid: env%201\n"
    "rcpt: pending b@y \nrcpt: failed c@y 550%205.1.1%20no%20such%20user\nrcpt: done d@y \n\n"
).encode() + b"Subject: x\r\nX-8: \xe4\r\n")
put("queue_record", "bounce", (
    f"mailhop-queue 1\nid: {ID}\narrival: 1700000000\nsender: \nuid: 1000\nattempts: 9\n"
    "next-attempt: 1700086400\nhold: 0\neight-bit: 0\nrcpt: bounced x@example.org 554%205.2.252%20SendAsDenied\n\n"
))

put("queue_record", "per-recipient", (
    f"mailhop-queue 1\nid: {ID}\narrival: 1700000000\nsender: app@example.com\naccount: o365\n"
    "uid: 0\nattempts: 1\nnext-attempt: 1700000060\nhold: 0\neight-bit: 0\ndsn-ret: hdrs\n"
    "rcpt: done b@y \nvia: backup\nnotify: SUCCESS,FAILURE\n"
    "rcpt: pending c@y 450%204.2.0%20later\nnotify: NEVER\norcpt: rfc822;C+x@y\n"
    "rcpt: failed d@y 550%205.1.1%20no\norcpt: utf-8;J\\x{F6}rg@y\n\n"
    "Subject: per recipient\r\n"
))

# address: header values.
ADDR = {
    "cron": "root (Cron Daemon)",
    "php": "\"M\u00fcller, Hans\" <hans.mueller@example.de>",
    "list": "Alice <alice@example.org>, bob@example.org, \"Smith, J\" <j@example.org>",
    "group": "undisclosed-recipients:;",
    "group-members": "team: a@x.example, B <b@y.example>;, c@z.example",
    "encoded": "=?UTF-8?B?SsO2cmc=?= <joerg@example.de>",
    "folded": "Alice\r\n <alice@example.org>,\r\n\t(comment) bob@[192.0.2.1]",
    "quoted-local": "\"john doe\"@example.org, postmaster",
}
for name, v in ADDR.items():
    put("address", name, v)

# SMTP replies, as servers send them.
REPLIES = {
    "office365-ehlo": "220 AM0PR01CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready\r\n"
        "250-AM0PR01CA0001.outlook.office365.com Hello [192.0.2.7]\r\n250-SIZE 157286400\r\n"
        "250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-8BITMIME\r\n"
        "250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
    "office365-sendas": "554 5.2.252 SendAsDenied; alice@contoso.com not allowed to send as "
        "bob@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied\r\n",
    "office365-auth": "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
        "for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.\r\n",
    "office365-quota": "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; "
        "Failed to process message due to a permanent exception\r\n",
    "gmail-ehlo": "220 smtp.gmail.com ESMTP d2-20020a05 - gsmtp\r\n250-smtp.gmail.com at your service, "
        "[192.0.2.7]\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN "
        "OAUTHBEARER XOAUTH\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
    "gmail-nouser": "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
        "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser d2si\r\n",
    "gmail-auth": "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535-5.7.8 Username and Password not accepted.\r\n"
        "535 5.7.8  https://support.google.com/mail/?p=BadCredentials d2-20020a05 - gsmtp\r\n",
    "gmail-limit": "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n"
        "550 5.4.5 sending limits go to https://support.google.com/a/answer/166852\r\n",
    "postfix": "220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n250-mail.example.org\r\n250-PIPELINING\r\n"
        "250-SIZE 10240000\r\n250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n"
        "553 5.7.1 <ceo@example.org>: Sender address rejected: not owned by user alice\r\n"
        "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 4Tq9Xk1ZzBz9sWj\r\n221 2.0.0 Bye\r\n",
    "postfix-throttle": "421 4.7.0 mail.example.org Error: too many connections from 192.0.2.7\r\n",
}
for name, v in REPLIES.items():
    put("smtp_reply", name, v)

# smtpd: byte 0 = access (bits 0-2: 0 trusted, 6 needs AUTH, 7 denied),
# STARTTLS (8), AUTH (16), shutdown (32), size limit (bits 6-7: 1 MiB, 0,
# 16, 200); byte 1 = recipient limit (bits 0-1: 100, 1, 2, 3), error limit
# (bits 2-3: 20, 1, 3, 5), read size (bits 4-7: whole, 1, 2, 3, 5, 7, 16,
# 64, 100, 500, 1000, 4095, 4096, 4097, 16384, 20000). Then the client.
TLS, AUTH, STOP = 8, 16, 32
NEEDS_AUTH = 6
SIZE_16, SIZE_200 = 2 << 6, 3 << 6
RCPT_2 = 2
ERRORS_3 = 2 << 2


def read(i):
    return i << 4


PLAIN = "AHVzZXIAc2VjcmV0"  # base64("\0user\0secret")
MESSAGE = (
    "From: root@web1.example.org\r\nTo: admin@example.net\r\nSubject: backup\r\n\r\n"
    "rsync finished\r\n..a stuffed dot\r\n.\r\n"
)
SMTPD = {
    "transaction": (0, 0, "EHLO web1.example.org\r\nMAIL FROM:<root@web1.example.org>\r\n"
        "RCPT TO:<admin@example.net>\r\nDATA\r\n" + MESSAGE + "QUIT\r\n"),
    "pipelined-trickle": (0, read(1), "EHLO c\r\nMAIL FROM:<a@b.example> SIZE=120\r\n"
        "RCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\n" + MESSAGE
        + "MAIL FROM:<>\r\nRCPT TO:<g@h.example>\r\nDATA\r\n.\r\nQUIT\r\n"),
    "pipelined-chunks": (0, read(6), "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
        "line\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n"),
    "refused-rcpts": (0, RCPT_2, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<nox@d>\r\n"
        "RCPT TO:<busy@y.example>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nRCPT TO:<g@h>\r\n"
        "DATA\r\nhi\r\n.\r\nQUIT\r\n"),
    "no-valid-rcpt": (0, 0, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@d>\r\nDATA\r\nRSET\r\n"
        "DATA\r\nRCPT TO:<c@d>\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nQUIT\r\n"),
    "delivery-refused": (0, 0, "HELO c\r\nMAIL FROM:<queue@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
        "hi\r\n.\r\nQUIT\r\n"),
    "four-messages": (0, 0, "HELO c\r\n" + "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nm\r\n.\r\n" * 4
        + "QUIT\r\n"),
    "dsn-params": (0, 0, "EHLO c\r\nMAIL FROM:<a@b> RET=HDRS ENVID=env+2B1 SIZE=10 BODY=8BITMIME "
        "SMTPUTF8 AUTH=<>\r\nRCPT TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d\r\n"
        "RCPT TO:<e@f> NOTIFY=NEVER\r\nRCPT TO:<@relay:g@h>\r\nVRFY root\r\nEXPN list\r\nHELP\r\n"
        "DATA\r\n.\r\nQUIT\r\n"),
    "utf8-address": (0, 0, "EHLO c\r\nMAIL FROM:<j\u00f6rg@b> SMTPUTF8\r\nRCPT TO:<\u00e4x@d>\r\n"
        "MAIL FROM:<j\u00f6rg@b>\r\nQUIT\r\n"),
    "size-limit": (SIZE_16, 0, "EHLO c\r\nMAIL FROM:<a@b> SIZE=17\r\nMAIL FROM:<a@b> SIZE=16\r\n"
        "RCPT TO:<c@d>\r\nDATA\r\n0123456789abcdefg\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
        "DATA\r\n0123456789abcd\r\n.\r\nQUIT\r\n"),
    "starttls-auth-plain": (NEEDS_AUTH | TLS | AUTH, 0, "EHLO c\r\nAUTH PLAIN " + PLAIN + "\r\n"
        "MAIL FROM:<a@b>\r\nSTARTTLS\r\nEHLO c\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN " + PLAIN + "\r\n"
        "AUTH PLAIN " + PLAIN + "\r\nEHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\n"
        "STARTTLS\r\nQUIT\r\n"),
    "starttls-auth-dialogue": (NEEDS_AUTH | TLS | AUTH, read(3), "EHLO c\r\nSTARTTLS\r\n"
        "EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\ndXNlcg==\r\nd3Jvbmc=\r\nAUTH PLAIN\r\nQUIT\r\n"
        "AUTH LOGIN dXNlcg==\r\nc2VjcmV0\r\nAUTH PLAIN =\r\nMAIL FROM:<a@b>\r\nQUIT\r\n"),
    "starttls-injection": (TLS, 0, "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@b>\r\nRCPT TO:<c@d>\r\n"),
    "auth-without-tls": (AUTH, 0, "EHLO c\r\nAUTH PLAIN " + PLAIN + "\r\nAUTH CRAM-MD5\r\nAUTH\r\n"
        "STARTTLS\r\nQUIT\r\n"),
    "needs-auth": (NEEDS_AUTH, 0, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nQUIT\r\n"),
    "denied": (7, 0, "EHLO c\r\nQUIT\r\n"),
    "bdat-unsupported": (0, 0, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 10 LAST\r\n"
        "0123456789RSET\r\nQUIT\r\n"),
    "bare-lf": (0, 0, "HELO c\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\na\n.\nb\r\n.\n.\r\nQUIT\n"),
    "smuggling": (0, read(2), "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\n"
        "MAIL FROM:<evil@b>\r\nRCPT TO:<victim@d>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"),
    "nul-and-controls": (0, 0, "HELO c\r\nNOOP\0\r\nMAIL FROM:<a\0b>\r\nRCPT TO:<c@d\x1b[31m>\r\n"
        "\udcff\udcfe\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\0\r\r\n.\r\nQUIT\r\n"),
    "long-lines": (0, read(12), "HELO c\r\nNOOP " + "a" * 5000 + "\r\nMAIL FROM:<" + "a" * 4083
        + ">\r\nMAIL FROM:<" + "b" * 4084 + ">\r\nRCPT TO:<" + "c" * 300 + "@d>\r\nQUIT\r\n"),
    "error-limit": (0, ERRORS_3, "HELO c\r\nFOO\r\nMAIL\r\nRCPT TO:<a@b>\r\nNOOP\r\n"),
    "shutdown-mid-data": (STOP, 0, "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
        "half a message\r\n"),
    "eof-mid-command": (0, read(1), "HELO c\r\nMAIL FROM:<a@b"),
}
for name, (c0, c1, client) in SMTPD.items():
    put("smtpd", name, bytes([c0, c1]) + client.encode("utf-8", "surrogateescape"))

# smtpd_data: byte 0 = size limit (bits 0-2: 0, 1, 2, 5, 16, 64, 1 MiB,
# unlimited) and largest chunk (bits 3-5: 1, 2, 3, 4, 7, 16, 100, 4096);
# byte 1 seeds the chunk lengths. Then what follows a 354.
DATA = {
    "message": (6 | 5 << 3, 1, MESSAGE + "QUIT\r\n"),
    "empty": (6, 0, ".\r\n"),
    "stuffing": (7 | 1 << 3, 7, "..\r\n..x\r\n.y\r\n.\rz\r\n...\r\n.\r\nRSET\r\n"),
    "bare-lf": (6 | 2 << 3, 3, "a\n.\nb\n.\r\nc\r\n.\n\r\n.\r\n"),
    "cr-runs": (6 | 3 << 3, 9, "a\r\r\n\r.\r\r\n\r\r\r\n.\r\n"),
    "unfinished": (6 | 4 << 3, 5, "no end marker\r\n.\r"),
    "over-limit": (3 | 4 << 3, 2, "0123456789\r\n.\r\nNOOP\r\n"),
    "at-limit": (4, 0, "0123456789abcd\r\n.\r\n"),
    "nul-8bit": (6 | 6 << 3, 4, "\0\xff\xfe\r\n.\0\r\n.\r\n"),
}
for name, (c0, c1, body) in DATA.items():
    put("smtpd_data", name, bytes([c0, c1]) + body.encode("latin-1"))
