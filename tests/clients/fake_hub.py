"""A tiny Hugging Face-compatible hub for the `/api/pull` client tests (no internet).

Serves every .gguf file in DIR as repository `test/tiny` (one LFS file each) through the two
endpoints the store's pull uses:
    GET /api/models/{repo}/revision/{rev}[?blobs=true]  -> {"sha", "siblings": [...]}
    GET /{repo}/resolve/{rev}/{path}                    -> the bytes (Range: bytes=N- honoured)
Usage: python3 fake_hub.py DIR PORT_FILE   (binds 127.0.0.1 on a free port, writes it to
PORT_FILE, serves until killed).
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import urllib.parse

REPO = "test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def main() -> None:
    root, port_file = sys.argv[1], sys.argv[2]
    files = {}
    for name in sorted(os.listdir(root)):
        if name.endswith(".gguf"):
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            files[name] = (data, hashlib.sha256(data).hexdigest())

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            listing = f"/api/models/{REPO}/revision/"
            if path.startswith(listing):
                siblings = [
                    {"rfilename": n, "size": len(d), "lfs": {"sha256": h, "size": len(d), "pointerSize": 134}}
                    for n, (d, h) in files.items()
                ]
                body = json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode()
                return self.send(200, body, {"Content-Type": "application/json"})
            prefix = f"/{REPO}/resolve/"
            if path.startswith(prefix):
                name = urllib.parse.unquote(path[len(prefix):].split("/", 1)[-1])
                if name in files:
                    data, sha = files[name]
                    headers = {"ETag": f'"{sha}"'}
                    rng = self.headers.get("Range", "")
                    if rng.startswith("bytes=") and rng.endswith("-"):
                        start = int(rng[6:-1])
                        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                        return self.send(206, data[start:], headers)
                    return self.send(200, data, headers)
            self.send(404, b'{"error":"RepoNotFound"}', {"X-Error-Code": "RepoNotFound"})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
