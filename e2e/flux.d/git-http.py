#!/usr/bin/env python3
"""Git's smart HTTP protocol on loopback: every request is handed to `git http-backend` (CGI), the
server git itself ships. Read-only (no receive-pack): the tests commit to the bare repositories under
ROOT directly and Flux's source-controller clones and fetches over HTTP, as it would from a forge.

    git-http.py ROOT ADDR PORT
"""

import http.server
import subprocess
import sys
import urllib.parse

ROOT, ADDR, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


class GitHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 with a Content-Length on every answer: go-git keeps connections alive.
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.backend()

    def do_POST(self):
        self.backend()

    def backend(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "GIT_PROJECT_ROOT": ROOT,
            # No per-repository git-daemon-export-ok file needed: everything under ROOT is served.
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": urllib.parse.unquote(url.path),
            "QUERY_STRING": url.query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "PATH": "/usr/bin:/bin",
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        if out.returncode != 0 and not out.stdout:
            status, payload = 500, out.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


if __name__ == "__main__":
    http.server.ThreadingHTTPServer((ADDR, PORT), GitHandler).serve_forever()
