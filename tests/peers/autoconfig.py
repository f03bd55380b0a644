"""HTTPS peer for `mailhop setup --discover` tests: serves Mozilla
autoconfig and Microsoft Autodiscover answers, chosen by the Host header.

usage: autoconfig.py CERT KEY
Prints "PORT <n>" once listening on 127.0.0.1, then serves until killed.
Each request is logged to stdout as "REQUEST <method> <host> <path>".

Hosts (the first label is the service, the rest the test domain):
  autoconfig.good.test      a valid config-v1.1.xml (465 SSL, 587 STARTTLS)
  good.test                 404 (the well-known URL)
  autoconfig.bad.test       malformed XML
  autoconfig.redir.test     302 to https://evil.test:PORT/... (this server)
  autoconfig.gone.test      404
  autoconfig.slow.test      never answers (the client must time out)
  autodiscover.pox.test     a POX answer with an SMTP entry
"""
import http.server
import ssl
import sys
import threading

GOOD = """<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="good.test">
    <domain>good.test</domain>
    <outgoingServer type="smtp">
      <hostname>smtp.good.test</hostname>
      <port>465</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </outgoingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.good.test</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""

POX = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <Account>
      <AccountType>email</AccountType>
      <Action>settings</Action>
      <Protocol><Type>SMTP</Type><Server>mail.pox.test</Server><Port>587</Port>
        <LoginName>jane@pox.test</LoginName><SSL>on</SSL><Encryption>TLS</Encryption>
        <AuthRequired>on</AuthRequired></Protocol>
    </Account>
  </Response>
</Autodiscover>
"""

NEVER = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        print("REQUEST", self.command, host, self.path, flush=True)
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(length, 65536))
        if host == "autoconfig.good.test":
            return self.answer(200, GOOD.encode(), [("Content-Type", "text/xml")])
        if host == "autoconfig.bad.test":
            return self.answer(200, b"<clientConfig><emailProvider>", [("Content-Type", "text/xml")])
        if host == "autoconfig.redir.test":
            to = "https://evil.test:%s/mail/config-v1.1.xml" % self.server.server_address[1]
            return self.answer(302, b"", [("Location", to)])
        if host == "autoconfig.slow.test":
            NEVER.wait(120)
            return self.answer(200, GOOD.encode())
        if host == "autodiscover.pox.test" and self.command == "POST":
            return self.answer(200, POX.encode(), [("Content-Type", "text/xml")])
        return self.answer(404, b"not here")

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()


def main():
    cert, key = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("PORT", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
