"""Reference renderings of Qwen2.5's chat template with tools, by llama.cpp.

For each model: writes its `tokenizer.chat_template` to `<name>.jinja`, starts
llama-server with `--jinja` on it, and stores what `POST /apply-template` answers for each
dialog of `dialogs.json` (with `add_generation_prompt`, the default) as
`<name>.<i>.txt`. The Rust tests render the same dialogs through the server's Hermes path
and compare bytes.

Usage (needs the `gguf` package and llama-server from scripts/setup-llama-server):
    LLAMA_SERVER=$(scripts/setup-llama-server | tail -n1) \\
      python testdata/qwen2.5/make_reference.py /path/qwen2.5-coder-0.5b-instruct.gguf \\
      /path/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main():
    server = os.environ["LLAMA_SERVER"]
    dialogs = json.load(open(os.path.join(HERE, "dialogs.json")))
    for path in sys.argv[1:]:
        name = os.path.basename(path).removesuffix(".gguf")
        tmpl = gguf.GGUFReader(path).fields["tokenizer.chat_template"].contents()
        with open(os.path.join(HERE, f"{name}.jinja"), "w", newline="") as f:
            f.write(tmpl)
        port = free_port()
        proc = subprocess.Popen(
            [server, "-m", path, "-t", "1", "-c", "512", "--jinja",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except Exception:
                    time.sleep(0.5)
            for i, d in enumerate(dialogs):
                out = post(port, "/apply-template", d)
                with open(os.path.join(HERE, f"{name}.{i}.txt"), "w", newline="") as f:
                    f.write(out["prompt"])
                print(name, i, len(out["prompt"]), "bytes")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
