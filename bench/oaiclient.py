"""A small client for OpenAI-compatible HTTP servers, standard library only.

Shared by bench/serve.py and bench/reliability/*.py, so none of them needs an install:

* raw HTTP/1.1 over asyncio streams (one connection per request, `Connection: close`):
  `request()` for whole responses (the body may be arbitrary bytes, is uploaded while
  the response is read, so a server that answers 413 early is seen), `Stream` for
  `text/event-stream` responses (de-chunks, splits SSE `data:` lines, stops at `[DONE]`,
  and can drop the connection mid-stream with a FIN or a RST);
* server processes: a free port, start, wait for `GET /health`, stop (SIGTERM, then
  SIGKILL), resident set size from /proc, the pid listening on a port;
* Prometheus text parsing for `GET /metrics`;
* model keys shared with bench/engine.py (`smollm2`, `1b-q8_0`, ...) and prompts of
  random words from a seeded generator.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FERRO = ROOT / "target" / "release" / "ferrollama"


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrollama"


# ======================================================================================
# HTTP/1.1
# ======================================================================================
class HttpError(Exception):
    """Transport-level failure: refused, reset, timeout, malformed response."""


@dataclass
class Target:
    host: str
    port: int
    prefix: str = ""  # path prefix of the base URL, without a trailing slash
    api_key: str | None = None

    @staticmethod
    def parse(base_url: str, api_key: str | None = None) -> "Target":
        u = urllib.parse.urlsplit(base_url if "//" in base_url else "http://" + base_url)
        if u.scheme not in ("http", ""):
            raise SystemExit(f"only http:// base URLs are supported, not {base_url!r}")
        return Target(u.hostname or "127.0.0.1", u.port or 80, u.path.rstrip("/"), api_key)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.prefix}"


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    elapsed: float = 0.0

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _head_bytes(t: Target, method: str, path: str, headers: dict[str, str] | None,
                body_len: int | None) -> bytes:
    h = {"Host": f"{t.host}:{t.port}", "User-Agent": "ferrollama-bench", "Accept": "*/*",
         "Connection": "close"}
    if t.api_key is not None:
        h["Authorization"] = f"Bearer {t.api_key}"
    if body_len is not None:
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(body_len)
    for k, v in (headers or {}).items():
        # case-insensitive override; None removes a default header
        for dk in [dk for dk in h if dk.lower() == k.lower()]:
            del h[dk]
        if v is not None:
            h[k] = v
    lines = [f"{method} {t.prefix}{path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connect(t: Target, timeout: float):
    try:
        return await asyncio.wait_for(asyncio.open_connection(t.host, t.port, limit=1 << 20), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise HttpError(f"connect to {t.host}:{t.port} failed: {e!r}") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise HttpError(f"connection closed before a response head ({len(e.partial)} bytes)") from None
    except asyncio.LimitOverrunError:
        raise HttpError("response head too large") from None
    except OSError as e:
        raise HttpError(f"reading the response head: {e!r}") from None
    lines = raw.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise HttpError(f"bad status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), m.group(2) or "", headers


async def _iter_body(reader: asyncio.StreamReader, headers: dict[str, str], method: str, status: int):
    """The response body as it arrives (de-chunked)."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                line = await reader.readline()
                if not line:
                    raise HttpError("connection closed inside a chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                yield data
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                data = await reader.read(min(left, 1 << 16))
                if not data:
                    raise HttpError(f"connection closed with {left} body bytes missing")
                left -= len(data)
                yield data
        else:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    return
                yield data
    except asyncio.IncompleteReadError:
        raise HttpError("connection closed inside the body") from None
    except (OSError, ValueError) as e:
        raise HttpError(f"reading the body: {e!r}") from None


async def _send(writer: asyncio.StreamWriter, head: bytes, body: bytes | None):
    writer.write(head)
    await writer.drain()
    if body:
        view = memoryview(body)
        for i in range(0, len(body), 1 << 18):
            writer.write(view[i:i + (1 << 18)])
            await writer.drain()


def _abort(writer: asyncio.StreamWriter, rst: bool = False):
    """Close the connection; with rst=True, make the kernel send a RST (SO_LINGER 0)."""
    try:
        if rst:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
    except OSError:
        pass


async def _open(t: Target, method: str, path: str, body, headers, timeout: float):
    """Connect, send the request while reading the response head (so that a server that
    answers before the whole body is uploaded, e.g. 413, is seen), return the head."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    reader, writer = await _connect(t, timeout)
    head = _head_bytes(t, method, path, headers, None if body is None else len(body))
    sender = asyncio.create_task(_send(writer, head, body))
    try:
        status, reason, h = await asyncio.wait_for(_read_head(reader), timeout)
    except asyncio.TimeoutError:
        sender.cancel()
        _abort(writer)
        raise HttpError(f"no response head within {timeout:.0f} s") from None
    except HttpError as e:
        sender.cancel()
        _abort(writer)
        send_err = None
        if sender.done() and not sender.cancelled():
            send_err = sender.exception()
        raise HttpError(f"{e}" + (f" (upload: {send_err!r})" if send_err else "")) from None
    if not sender.done():
        sender.cancel()  # the server answered before taking the whole body
    else:
        sender.exception()  # retrieve, so asyncio does not log it
    return reader, writer, status, reason, h


class _SockReader:
    """Buffered blocking reads from a socket, with an overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline, self.buf = sock, deadline, b""

    def _fill(self) -> bool:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise HttpError("response not complete within the timeout")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(1 << 16)
        except socket.timeout:
            raise HttpError("response not complete within the timeout") from None
        except OSError as e:
            raise HttpError(f"reading the response: {e!r}") from None
        self.buf += d
        return bool(d)

    def until(self, sep: bytes, limit: int = 1 << 20) -> bytes:
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise HttpError("response head too large")
            if not self._fill():
                raise HttpError(f"connection closed before {sep!r} ({len(self.buf)} bytes read)")
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise HttpError(f"connection closed with {n - len(self.buf)} body bytes missing")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self, limit: int) -> bytes:
        while self._fill():
            if len(self.buf) > limit:
                raise HttpError(f"response body over {limit} bytes")
        out, self.buf = self.buf, b""
        return out


def _request_blocking(t: Target, method: str, path: str, body, headers, timeout: float,
                      max_body: int) -> Response:
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    head = _head_bytes(t, method, path, headers, None if body is None else len(body))
    try:
        sock = socket.create_connection((t.host, t.port), timeout=min(timeout, 10))
    except OSError as e:
        raise HttpError(f"connect to {t.host}:{t.port} failed: {e!r}") from None
    upload_err: list[BaseException] = []

    def upload():
        try:
            sock.sendall(head + (body or b""))
        except OSError as e:
            upload_err.append(e)

    # Upload in a thread while this one reads: a server that answers early (413, 404)
    # and closes before taking the whole body is still heard.
    th = threading.Thread(target=upload, daemon=True)
    th.start()
    try:
        rd = _SockReader(sock, deadline)
        try:
            raw = rd.until(b"\r\n\r\n", 64 << 10)
        except HttpError as e:
            raise HttpError(f"{e}" + (f" (upload: {upload_err[0]!r})" if upload_err else "")) from None
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise HttpError(f"bad status line {lines[0][:100]!r}")
        status, reason = int(m.group(1)), m.group(2) or ""
        h: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                h[k.strip().lower()] = v.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif "chunked" in h.get("transfer-encoding", "").lower():
            parts = []
            n = 0
            while True:
                size = int(rd.until(b"\n").split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                parts.append(rd.exactly(size))
                rd.exactly(2)
                n += size
                if n > max_body:
                    raise HttpError(f"response body over {max_body} bytes")
            data = b"".join(parts)
        elif "content-length" in h:
            n = int(h["content-length"])
            if n > max_body:
                raise HttpError(f"response body over {max_body} bytes")
            data = rd.exactly(n)
        else:
            data = rd.rest(max_body)
        return Response(status, reason, h, data, time.perf_counter() - t0)
    except ValueError as e:
        raise HttpError(f"malformed response: {e}") from None
    finally:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        th.join(5)
        sock.close()


async def request(t: Target, method: str, path: str, body=None, headers: dict | None = None,
                  timeout: float = 60.0, max_body: int = 16 << 20) -> Response:
    """One request, whole response (blocking sockets in a worker thread). body: dict/list
    (sent as JSON), str, bytes or None. headers override the defaults (a None value removes
    one: Content-Type, Authorization...). Raises HttpError on transport failures."""
    return await asyncio.to_thread(_request_blocking, t, method, path, body, headers, timeout, max_body)


class Stream:
    """A streaming (SSE) request. Usage:

        s = await Stream.open(t, "/v1/completions", body)
        if s.status != 200: print(await s.read_rest())
        async for ev in s.events():   # parsed JSON of each `data:` line until [DONE]
            ...
        s.close()   # or s.close(rst=True) to drop it with a RST
    """

    def __init__(self, reader, writer, status, reason, headers, method):
        self.reader, self.writer = reader, writer
        self.status, self.reason, self.headers = status, reason, headers
        self._body = _iter_body(reader, headers, method, status)
        self.done = False  # saw [DONE] (or the body ended)

    @staticmethod
    async def open(t: Target, path: str, body, headers: dict | None = None, timeout: float = 60.0,
                   method: str = "POST") -> "Stream":
        reader, writer, status, reason, h = await _open(t, method, path, body, headers, timeout)
        return Stream(reader, writer, status, reason, h, method)

    async def read_rest(self, max_body: int = 1 << 20) -> bytes:
        out = b""
        async for chunk in self._body:
            out += chunk
            if len(out) > max_body:
                break
        return out

    async def lines(self):
        buf = b""
        async for chunk in self._body:
            buf += chunk
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                line, buf = buf[:i].rstrip(b"\r"), buf[i + 1:]
                yield line
        if buf:
            yield buf.rstrip(b"\r")

    async def events(self):
        """Payload of each SSE `data:` line, JSON-decoded (a non-JSON payload is returned
        as a str); ends at `data: [DONE]` or at the end of the body."""
        async for line in self.lines():
            if not line.startswith(b"data:"):
                continue  # event:, id:, retry:, comments, blank separators
            payload = line[5:]
            if payload.startswith(b" "):
                payload = payload[1:]
            if payload.strip() == b"[DONE]":
                self.done = True
                return
            try:
                yield json.loads(payload)
            except ValueError:
                yield payload.decode("utf-8", "replace")
        self.done = True

    def close(self, rst: bool = False):
        _abort(self.writer, rst)


def event_text(ev) -> str:
    """Generated text of one streamed chunk: OpenAI completions (`choices[0].text`), chat
    (`choices[0].delta.content`), Llama Stack (`event.delta.text` or `event.delta` str, or
    `delta.text`)."""
    if not isinstance(ev, dict):
        return ""
    ch = ev.get("choices")
    if isinstance(ch, list) and ch:
        c = ch[0] if isinstance(ch[0], dict) else {}
        if isinstance(c.get("text"), str):
            return c["text"]
        d = c.get("delta")
        if isinstance(d, dict) and isinstance(d.get("content"), str):
            return d["content"]
        return ""
    e = ev.get("event", ev)
    if isinstance(e, dict):
        d = e.get("delta")
        if isinstance(d, str):
            return d
        if isinstance(d, dict) and isinstance(d.get("text"), str):
            return d["text"]
    return ""


def event_error(ev) -> str | None:
    if isinstance(ev, dict) and ev.get("error") is not None:
        return json.dumps(ev["error"])[:300]
    return None


async def model_id(t: Target, default: str = "default") -> str:
    """The first model of GET /v1/models, else default."""
    try:
        r = await request(t, "GET", "/v1/models", timeout=10)
        if r.status == 200:
            data = r.json().get("data") or r.json().get("models") or []
            if data and isinstance(data[0], dict):
                return str(data[0].get("id") or data[0].get("model") or data[0].get("name") or default)
    except (HttpError, ValueError, AttributeError):
        pass
    return default


# ======================================================================================
# Prometheus text format
# ======================================================================================
_PROM = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _PROM.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out.setdefault(m.group(1), []).append((labels, v))
    return out


def metric(m: dict, name: str) -> float | None:
    """Sum of a metric over its label sets; None if absent."""
    if name not in m:
        return None
    return sum(v for _, v in m[name])


async def metrics(t: Target) -> dict:
    r = await request(t, "GET", "/metrics", timeout=10)
    if r.status != 200:
        raise HttpError(f"GET /metrics: {r.status} {r.text[:200]}")
    return parse_prometheus(r.text)


# ======================================================================================
# processes
# ======================================================================================
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int, key: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_listening_on(port: int) -> int | None:
    """The pid of the process with a listening TCP socket on this port (via /proc/net)."""
    inodes = set()
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if int(p[1].rsplit(":", 1)[1], 16) == port and p[3] == "0A":
                        inodes.add(p[9])
        except (OSError, StopIteration):
            pass
    if not inodes:
        return None
    want = {f"socket:[{i}]" for i in inodes}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                try:
                    if os.readlink(f"/proc/{d}/fd/{fd}") in want:
                        return int(d)
                except OSError:
                    pass
        except OSError:
            pass
    return None


_LIVE: set = set()


def _stop_live():
    for srv in list(_LIVE):
        srv.stop(grace=5)


atexit.register(_stop_live)


def exit_on_sigterm():
    """SIGTERM raises SystemExit, so finally blocks and atexit stop the servers we started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class Server:
    """A server process on 127.0.0.1:port; stdout+stderr go to log_path. Stopped at exit
    if still running."""

    def __init__(self, cmd: list[str], port: int, log_path: Path, api_key: str | None = None):
        self.cmd, self.port, self.log_path = cmd, port, Path(log_path)
        self.target = Target("127.0.0.1", port, "", api_key)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._log.write((" ".join(self.cmd) + "\n").encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT)
        _LIVE.add(self)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 300.0):
        """Poll GET /health until 200 (llama-server answers 503 while loading)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HttpError(f"server exited with {self.proc.returncode} before it was ready;"
                                f" log {self.log_path}:\n{self.log_tail()}")
            try:
                r = await request(self.target, "GET", "/health", timeout=5)
                if r.status == 200:
                    return
                last = f"{r.status} {r.text[:200]}"
            except HttpError as e:
                last = str(e)
            await asyncio.sleep(0.25)
        raise HttpError(f"server not healthy within {timeout:.0f} s (last: {last}); log {self.log_path}")

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        _LIVE.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ======================================================================================
# models and prompts
# ======================================================================================
MODELS = {
    "smollm2": ("models", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "1b-f16": ("bench-models", "llama-1b-f16.gguf"),
    "1b-q8_0": ("bench-models", "llama-1b-q8_0.gguf"),
    "1b-q4_k_m": ("bench-models", "llama-1b-q4_k_m.gguf"),
    "1b-q5_0": ("bench-models", "llama-1b-q5_0.gguf"),
}


def resolve_model(key: str, ferro: Path = FERRO) -> Path:
    """A model key (as in bench/engine.py) or a path -> the file, fetching/generating it
    if missing: smollm2 via `ferrollama fetch smollm2`, 1b-* via bench/make_1b.py."""
    if key == "smollm2":
        r = subprocess.run([str(ferro), "fetch", "smollm2"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if r.returncode != 0 or not r.stdout.strip():
            raise SystemExit(f"`{ferro} fetch smollm2` failed")
        return Path(r.stdout.strip().splitlines()[-1])
    if key in MODELS:
        sub, name = MODELS[key]
        p = cache_dir() / sub / name
        if not p.exists():
            print(f"generating {p.name} with bench/make_1b.py (minutes)", file=sys.stderr, flush=True)
            py = subprocess.run([str(ROOT / "scripts" / "setup-llamacpp")], stdout=subprocess.PIPE,
                                text=True, cwd=ROOT, check=True).stdout.strip().splitlines()[-1]
            subprocess.run([py, str(ROOT / "bench" / "make_1b.py"), "--only", key[3:]], cwd=ROOT, check=True)
        return p
    p = Path(key).expanduser().resolve()
    if not p.is_file():
        raise SystemExit(f"unknown model {key!r}: not one of {','.join(MODELS)} and not a file")
    return p


# Common short English words; with a leading space nearly each is one token in the Llama 3
# and SmolLM2 vocabularies, so N words are about N tokens.
WORDS = """the of and to in is was for on that with as by at from his it an were are which
this be or has had first one their its new after but who not they have her she two been
other when there all during into school time may years more most only over city some world
would where later up such used many can state about national out known university united
then made county team he him also between we people our part area well back work life under
house water number family music game word river north south east west long small large great
high old young good right left light dark open close hand head eye face body mind heart door
road street town village market field forest garden tree flower stone rock sand sea lake
island mountain hill valley rain snow wind sun moon star sky cloud fire earth air red blue
green yellow black white brown gray gold silver iron wood paper glass cup plate bread milk
tea coffee apple fruit table chair bed room window wall floor roof book letter story song
picture color shape line point circle square child man woman friend king queen army war
peace law court church bank office shop hotel station train ship car horse dog cat bird fish
day night week month year morning evening summer winter spring autumn hour minute art history
science nature power money price value voice sound name idea plan fact reason question answer
place side end top bottom center edge front level kind sort type form case way thing""".split()


def make_prompt(rng: random.Random, n_words: int, prefix: list[str] | None = None) -> str:
    """n_words words: the shared prefix words (if any) then random ones."""
    words = list(prefix or [])[:n_words]
    words += [rng.choice(WORDS) for _ in range(n_words - len(words))]
    return " ".join(words).capitalize() + "."


def percentile(xs: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100); None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ======================================================================================
# the common command line of bench/reliability/*.py
# ======================================================================================
def add_target_args(ap):
    g = ap.add_argument_group("server")
    g.add_argument("--base-url", help="an already running server, e.g. http://127.0.0.1:8080")
    g.add_argument("--api-key", help="sent as `Authorization: Bearer KEY` (and given to --spawn)")
    g.add_argument("--spawn", metavar="MODEL",
                   help="start `ferrollama serve -m MODEL` on a free port (MODEL: a .gguf path or a key"
                        f" {','.join(MODELS)})")
    g.add_argument("--server-bin", default=str(FERRO), help="binary for --spawn (default target/release/ferrollama)")
    g.add_argument("--serve-args", default="", help="extra arguments for `ferrollama serve` with --spawn")
    g.add_argument("--model", help="model name to send in requests (default: the first of GET /v1/models)")


class target_from_args:
    """`async with target_from_args(a, "name") as (target, pid):` — either a.base_url, or a
    spawned `ferrollama serve` (stopped on exit). pid is None if unknown."""

    def __init__(self, a, name: str):
        self.a, self.name, self.server = a, name, None

    async def __aenter__(self):
        import shlex
        a = self.a
        if bool(a.base_url) == bool(a.spawn):
            raise SystemExit("give exactly one of --base-url and --spawn MODEL")
        if a.base_url:
            t = Target.parse(a.base_url, a.api_key)
            pid = getattr(a, "pid", None)
            if pid is None and t.host in ("127.0.0.1", "localhost", "::1"):
                pid = pid_listening_on(t.port)
            return t, pid
        model = resolve_model(a.spawn, Path(a.server_bin))
        port = free_port()
        cmd = [a.server_bin, "serve", "-m", str(model), "--port", str(port)]
        if a.api_key:
            cmd += ["--api-key", a.api_key]
        cmd += shlex.split(a.serve_args)
        log = cache_dir() / "bench" / "reliability-logs" / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.server = Server(cmd, port, log, a.api_key)
        print(f"{self.name}: starting {' '.join(cmd)} (log {log})", file=sys.stderr, flush=True)
        self.server.start()
        try:
            await self.server.wait_ready()
        except HttpError:
            self.server.stop()
            raise
        return self.server.target, self.server.pid

    async def __aexit__(self, *exc):
        if self.server is not None:
            rc = self.server.stop()
            print(f"{self.name}: server stopped (exit {rc}); log {self.server.log_path}", file=sys.stderr, flush=True)
        return False


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def cpu_name() -> str:
    """The CPU model, for result headers."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "?"
