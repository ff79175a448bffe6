#!/usr/bin/env python3
"""The compose sandbox's applications (the native sandbox runs the Rust ones of e2e/src/app.rs).

HTTP echo: every request gets 200 and a JSON body {"method", "path", "headers"} (lower-case
header names), so a caller sees what the server sidecar forwarded (x-forwarded-client-cert).
TCP echo: writes back every byte it reads. Both listen on 127.0.0.1 only.

    python3 echo.py --http-port 8090 --tcp-port 9090
"""
import argparse
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 20

    def _echo(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = headers[name] + "," + value if name in headers else value
        body = json.dumps({"method": self.command, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo

    def log_message(self, fmt, *args):
        print("echo: %s %s" % (self.address_string(), fmt % args), flush=True)


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(20)
        while True:
            data = self.request.recv(4096)
            if not data:
                break
            self.request.sendall(data)


class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--tcp-port", type=int)
    a = p.parse_args()
    if a.tcp_port:
        tcp = ThreadingTcp(("127.0.0.1", a.tcp_port), TcpEcho)
        threading.Thread(target=tcp.serve_forever, daemon=True).start()
        print("echo: TCP on 127.0.0.1:%d" % a.tcp_port, flush=True)
    http = ThreadingHTTPServer(("127.0.0.1", a.http_port), Echo)
    print("echo: HTTP on 127.0.0.1:%d" % a.http_port, flush=True)
    http.serve_forever()


if __name__ == "__main__":
    main()
