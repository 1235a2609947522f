"""Local stand-ins for the Brave Search and Wolfram Alpha APIs, for the agent client tests
(no internet). They answer only requests shaped as the real APIs want them and record each
request, so tests can check what ferrollama sent:

    GET /res/v1/web/search?q=...        with X-Subscription-Token: test-brave-key
    GET /v2/query?input=...&appid=test-wolfram-key&format=plaintext&output=json
    GET /requests                       -> the requests seen so far (JSON list)

Usage: python3 fake_web.py PORT_FILE   (binds 127.0.0.1 on a free port, writes it to PORT_FILE).
"""
from __future__ import annotations

import http.server
import json
import sys
import urllib.parse

BRAVE_KEY = "test-brave-key"
WOLFRAM_KEY = "test-wolfram-key"
SEEN: list[dict] = []


def brave_reply(q: str) -> dict:
    return {
        "query": {"original": q},
        "mixed": {"main": [{"type": "web", "index": 0, "all": False}, {"type": "web", "index": 1, "all": False}]},
        "web": {
            "results": [
                {"title": f"Llamas: {q}", "url": "https://example.org/llamas", "description": "Llamas are South American camelids.", "extra_snippets": ["x"]},
                {"title": "Alpacas", "url": "https://example.org/alpacas", "description": "Alpacas are smaller."},
            ]
        },
    }


def wolfram_reply(q: str) -> dict:
    return {
        "queryresult": {
            "success": True,
            "error": False,
            "numpods": 2,
            "pods": [
                {"title": "Input interpretation", "id": "Input", "numsubpods": 1, "subpods": [{"title": "", "plaintext": q}]},
                {"title": "Result", "id": "Result", "primary": True, "numsubpods": 1, "subpods": [{"title": "", "plaintext": "42"}]},
            ],
        }
    }


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_json(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/requests":
            return self.send_json(200, SEEN)
        SEEN.append({"path": u.path, "query": q, "token": self.headers.get("X-Subscription-Token")})
        if u.path == "/res/v1/web/search":
            if self.headers.get("X-Subscription-Token") != BRAVE_KEY:
                return self.send_json(401, {"type": "ErrorResponse", "error": {"detail": "bad token"}})
            return self.send_json(200, brave_reply(q.get("q", "")))
        if u.path == "/v2/query":
            if q.get("appid") != WOLFRAM_KEY:
                return self.send_json(200, {"queryresult": {"success": False, "error": {"code": "1", "msg": "Invalid appid"}}})
            if q.get("format") != "plaintext" or q.get("output") != "json":
                return self.send_json(400, {"error": "format=plaintext&output=json expected"})
            return self.send_json(200, wolfram_reply(q.get("input", "")))
        self.send_json(404, {"error": "not found"})


def main() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(srv.server_address[1]))
    srv.serve_forever()


if __name__ == "__main__":
    main()
