"""A scripted MCP stdio server for crates/tools/tests/mcp.rs (Python standard library only).

Usage: mcp_fake_server.py MODE. MODE "normal" is a well-behaved server that also sends
notifications, a non-JSON line and a ping request before its replies; the other modes
misbehave on purpose (see MODES)."""

import json
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "normal"
received = []


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def reply(req, result):
    send({"jsonrpc": "2.0", "id": req["id"], "result": result})


def text(s, is_error=False):
    return {"content": [{"type": "text", "text": s}], "isError": is_error}


TOOLS = [
    {"name": "add", "description": "Adds two integers.",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                     "required": ["a", "b"]}},
    {"name": "fail", "description": "Always fails (isError)."},
    {"name": "boom", "description": "JSON-RPC error.", "inputSchema": {"type": "object"}},
    {"name": "sleep", "description": "Never answers in time.", "inputSchema": {"type": "object"}},
    {"name": "exit", "description": "Exits.", "inputSchema": {"type": "object"}},
    {"name": "log", "description": "Returns what the server received.", "inputSchema": {"type": "object"}},
]

if MODE == "exit_at_start":
    sys.stderr.write("fatal: missing config\n")
    sys.stderr.flush()
    sys.exit(3)

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    received.append(msg)
    method = msg.get("method")
    if "id" not in msg or method is None:
        continue  # a notification or a response (to our ping)
    if MODE == "garbage_only":
        sys.stdout.write("garbage, not JSON\n")
        sys.stdout.flush()
        continue
    if method == "initialize":
        version = "1999-01-01" if MODE == "bad_version" else msg["params"]["protocolVersion"]
        if MODE == "old_version":
            version = "2024-11-05"
        reply(msg, {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": "fake-stdio", "version": "0.1"}, "instructions": "be nice"})
    elif method == "tools/list":
        # Noise before the reply: a log notification, a non-JSON line, a ping request.
        send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "listing"}})
        sys.stdout.write("some library printed this to stdout\n")
        send({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"})
        send({"jsonrpc": "2.0", "id": 999, "result": {}})  # someone else's response
        cursor = (msg.get("params") or {}).get("cursor")
        if cursor is None:
            reply(msg, {"tools": TOOLS[:2], "nextCursor": "page-2"})
        elif cursor == "page-2":
            reply(msg, {"tools": TOOLS[2:]})
        else:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": "bad cursor"}})
    elif method == "tools/call":
        name = msg["params"]["name"]
        args = msg["params"].get("arguments") or {}
        if name == "add":
            total = args["a"] + args["b"]
            reply(msg, {"content": [{"type": "text", "text": str(total)}],
                        "structuredContent": {"result": total}, "isError": False})
        elif name == "fail":
            reply(msg, text("it failed: on purpose", is_error=True))
        elif name == "boom":
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32000, "message": "boom happened"}})
        elif name == "sleep":
            time.sleep(5)
            reply(msg, text("late"))
        elif name == "exit":
            sys.stderr.write("bye from fake\n")
            sys.stderr.flush()
            sys.exit(4)
        elif name == "log":
            reply(msg, text(json.dumps(received)))
        else:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": "Unknown tool: " + name}})
    else:
        send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "Method not found"}})
