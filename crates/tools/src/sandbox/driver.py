# The code interpreter's driver: runs inside the bubblewrap sandbox as the session's one
# long-lived Python process, and executes each request's code in one persistent globals
# dict, the way a notebook keeps its state between cells.
#
# Protocol (see sandbox.rs): one JSON object per line on the private request fd (the
# original fd 0), {"id", "code", "cpu", "cap"}; one JSON object per line on the private
# reply fd (the original fd 1), {"id", "stdout", "stderr", "stdout_truncated",
# "stderr_truncated", "exit_code"}. The user's code never sees those fds as 0/1/2: fd 0
# is /dev/null and fds 1/2 are, during a call, pipes this driver drains (so output from
# subprocesses and os.write(1, ...) is captured too, and anything beyond the cap is read
# and thrown away instead of being buffered). Code that goes looking for the private fds
# (/proc/self/fd) can only confuse its own session: the host matches replies by id,
# bounds their size and treats anything else as a dead interpreter.
import ast
import json
import os
import resource
import select
import signal
import sys
import threading
import traceback

REQ = os.dup(0)
REP = os.dup(1)
os.set_inheritable(REQ, False)
os.set_inheritable(REP, False)
_null = os.open("/dev/null", os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
# Where fds 1/2 point between calls (a background process that writes then lands in the
# host's discarded stream, not in the protocol).
_idle = os.open("/dev/null", os.O_WRONLY)
os.dup2(_idle, 1)
os.dup2(_idle, 2)
os.close(_idle)
sys.stdin = open(0, "r", closefd=False)
_requests = os.fdopen(REQ, "rb", buffering=0)


class CpuLimitExceeded(BaseException):
    """Raised in the user's code when the call's CPU budget (RLIMIT_CPU soft) is spent."""


def _on_xcpu(signum, frame):
    raise CpuLimitExceeded("CPU time limit exceeded")


signal.signal(signal.SIGXCPU, _on_xcpu)


class Drain:
    """Reads one captured fd's pipe until told to stop: keeps the first `cap` bytes,
    counts and discards the rest, so a 100 MB print costs no memory."""

    def __init__(self, cap):
        self.cap = cap
        self.buf = bytearray()
        self.dropped = 0
        self.r, self.w = os.pipe()
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def take(self, data):
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def run(self):
        while True:
            # Read `stop` before polling: everything written before `finish()` set it is
            # already in the pipe, so a quiet poll after that loses nothing. (Checking it after
            # a quiet poll raced: output written between the poll and the check was dropped.)
            stopping = self.stop
            ready, _, _ = select.select([self.r], [], [], 0.02)
            if ready:
                data = os.read(self.r, 65536)
                if not data:
                    return
                self.take(data)
            elif stopping:
                return

    def finish(self):
        # The write end is closed by the caller; a background process may still hold a
        # copy, so stop on the first quiet poll instead of waiting for EOF.
        self.stop = True
        self.t.join()
        os.close(self.r)


def _cpu_used():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _set_cpu_budget(seconds):
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = int(_cpu_used()) + 1 + int(seconds)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (want, hard))
    except (ValueError, OSError):
        pass


def _user_tb(exc):
    # Drop the driver's own frames so the traceback starts at the user's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


GLOBALS = {"__name__": "__main__", "__builtins__": __builtins__}


def _run(code):
    """Executes one cell; returns its exit code (0, 1 after an exception, n for SystemExit(n))."""
    try:
        tree = ast.parse(code, "<code>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<code>", "exec"), GLOBALS)
        if last is not None:
            value = eval(compile(last, "<code>", "eval"), GLOBALS)
            if value is not None:
                print(repr(value))
        return 0
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except BaseException as e:  # noqa: B036 - the user's KeyboardInterrupt etc. are reported too
        try:
            sys.stderr.write(_user_tb(e))
        except BaseException:
            pass
        return 1


def _call(req):
    cap = int(req.get("cap", 65536))
    out, err = Drain(cap), Drain(cap)
    saved_out, saved_err = os.dup(1), os.dup(2)
    os.dup2(out.w, 1)
    os.dup2(err.w, 2)
    os.close(out.w)
    os.close(err.w)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    _set_cpu_budget(req.get("cpu", 10))
    code = 1
    try:
        code = _run(req.get("code", ""))
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except BaseException:
                pass
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        out.finish()
        err.finish()
    return {
        "id": req.get("id"),
        "exit_code": code,
        "stdout": out.buf.decode("utf-8", "replace"),
        "stderr": err.buf.decode("utf-8", "replace"),
        "stdout_truncated": out.dropped > 0,
        "stderr_truncated": err.dropped > 0,
    }


def _reply(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(REP, data)
        data = data[n:]


def main():
    _reply({"id": 0, "ready": True})
    while True:
        line = _requests.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            continue
        try:
            rep = _call(req)
        except BaseException as e:  # the driver itself failed: say so rather than hang
            rep = {"id": req.get("id"), "exit_code": 1, "stdout": "", "stderr": "driver error: %r\n" % (e,),
                   "stdout_truncated": False, "stderr_truncated": False}
        _reply(rep)


main()
