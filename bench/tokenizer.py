#!/usr/bin/env python3
"""Tokenizer throughput: ferrollama vs tiktoken on the same multilingual corpus, one run.

    python3 bench/tokenizer.py [--mb 8] [--threads N] [--repeats 5]

Sets up (once, in the cache, outside the repo) a virtualenv with tiktoken and Faker from
PyPI, builds a deterministic corpus (English, Portuguese, French, German, Hindi, Thai,
Spanish, Italian, code), and times:
  * tiktoken  `Encoding.encode_ordinary` per document, and `encode_ordinary_batch` with
    N threads, with Meta's ranks, pattern and special tokens;
  * ferrollama `Tokenizer::encode` per document (Meta's semantics, including its
    400,000/25,000-character splitting), and `encode_batch` on N threads.
Both use the best of --repeats runs and exclude loading. Token ids must agree exactly
(an FNV-1a checksum over all ids) or the benchmark fails. It also times 1 MiB adversarial
inputs. Prints MB/s for each and the ratios; --json writes them for scripts.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
PINS = ["tiktoken==0.14.0", "faker==40.54.0"]


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "ferrollama"
    return Path.home() / ".cache" / "ferrollama"


def ensure_venv() -> Path:
    venv = cache_dir() / "bench-venv"
    py = venv / "bin" / "python"
    stamp = venv / ".pins"
    if not (py.exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS)):
        print(f"setting up {venv} with {', '.join(PINS)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text("\n".join(PINS))
    return py


# Real sentences for the two languages Faker has no lorem for; mixed with Faker's
# localized names, addresses and jobs.
PORTUGUESE = [
    "O Brasil é o maior país da América do Sul e tem uma enorme diversidade cultural.",
    "Ontem à noite fomos jantar num restaurante perto da praia, e a comida estava ótima.",
    "Você já pensou em aprender a tocar violão? Não é tão difícil quanto parece.",
    "A reunião foi adiada para quinta-feira porque o diretor ainda não voltou de viagem.",
    "Segundo o relatório, as exportações cresceram 12% no último trimestre.",
    "Não se esqueça de levar o guarda-chuva: a previsão diz que vai chover à tarde.",
    "As crianças brincavam no parque enquanto os pais conversavam à sombra das árvores.",
    "É preciso cuidar da saúde, dormir bem e beber bastante água todos os dias.",
    "O açúcar, o café e a laranja continuam entre os produtos mais vendidos do país.",
    "Quando chegamos à estação, o trem já tinha partido há quase meia hora.",
]
HINDI = [
    "भारत एक विशाल देश है जहाँ अनेक भाषाएँ बोली जाती हैं।",
    "कल सुबह हम सब मिलकर पुराने किले को देखने जाएँगे।",
    "क्या आप मुझे बता सकते हैं कि रेलवे स्टेशन यहाँ से कितनी दूर है?",
    "बारिश के मौसम में खेतों में हरियाली छा जाती है और किसान खुश हो जाते हैं।",
    "इस वर्ष विद्यालय के वार्षिक उत्सव में बच्चों ने सुंदर नाटक प्रस्तुत किया।",
    "डॉक्टर ने कहा कि रोज़ सुबह टहलना स्वास्थ्य के लिए बहुत लाभदायक है।",
    "हमारी टीम ने कड़ी मेहनत करके परियोजना को समय पर पूरा कर लिया।",
    "पुस्तकालय में हिंदी, अंग्रेज़ी और संस्कृत की हज़ारों किताबें उपलब्ध हैं।",
    "माँ ने आज खाने में दाल, चावल, रोटी और आलू की सब्ज़ी बनाई है।",
    "दिल्ली से मुंबई की उड़ान लगभग दो घंटे की होती है।",
]


def build_corpus(path: Path, mb: float) -> None:
    from faker import Faker

    rng = random.Random(20241127)
    per_lang = int(mb * 1e6 / 9)
    docs = []

    def add_docs(make_para, budget):
        size = 0
        while size < budget:
            doc = "\n\n".join(make_para() for _ in range(rng.randint(3, 12)))
            docs.append(doc)
            size += len(doc.encode())

    for loc in ["en_US", "fr_FR", "de_DE", "es_ES", "it_IT", "th_TH"]:
        f = Faker(loc)
        f.seed_instance(rng.randint(0, 1 << 30))
        add_docs(lambda f=f: f.paragraph(nb_sentences=rng.randint(3, 9)) + " " + f.address().replace("\n", ", ") + ".", per_lang)
    for loc, sentences in [("pt_BR", PORTUGUESE), ("hi_IN", HINDI)]:
        f = Faker(loc)
        f.seed_instance(rng.randint(0, 1 << 30))

        def para(f=f, sentences=sentences):
            parts = rng.sample(sentences, rng.randint(2, 5))
            parts.insert(rng.randint(0, len(parts)), f"{f.name()} — {f.address().replace(chr(10), ', ')}.")
            return " ".join(parts)

        add_docs(para, per_lang)
    # Code: the Python standard library's own sources, in a fixed order.
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    size = 0
    for p in sorted(stdlib.glob("*.py")):
        if size >= per_lang:
            break
        text = p.read_text(encoding="utf-8", errors="replace")
        docs.append(text)
        size += len(text.encode())
    rng.shuffle(docs)
    with path.open("w", encoding="utf-8") as out:
        for d in docs:
            out.write(json.dumps({"text": d}) + "\n")


TIKTOKEN_SIDE = r"""
import json, sys, time
import tiktoken
from tiktoken.load import load_tiktoken_bpe
tok_path, corpus, threads, repeats, pat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ranks = load_tiktoken_bpe(tok_path)
specials = {f"<|special_{i}|>": len(ranks) + i for i in range(256)}
enc = tiktoken.Encoding(name="llama3", pat_str=pat, mergeable_ranks=ranks, special_tokens=specials)
docs = [json.loads(l)["text"] for l in open(corpus, encoding="utf-8")]
def best(f):
    t_best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); t_best = min(t_best, time.perf_counter() - t)
    return t_best, out
single, ids = best(lambda: [enc.encode_ordinary(d) for d in docs])
batch, ids_b = best(lambda: enc.encode_ordinary_batch(docs, num_threads=threads))
assert ids == ids_b
h = 0xcbf29ce484222325
for doc in ids:
    for i in doc:
        for b in i.to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
adv = {}
for name, make in [("one repeated char", lambda n: "a" * n), ("one repeated space", lambda n: " " * n),
                   ("no whitespace", lambda n: ("abcdefghij0123456789!@#$%^&*()" * (n // 30 + 1))[:n])]:
    times = []
    for n in (1 << 20, 2 << 20):
        text = make(n)
        t = time.perf_counter()
        try:
            enc.encode_ordinary(text)
            times.append(time.perf_counter() - t)
        except BaseException as e:  # pyo3 panics derive from BaseException
            times.append(f"failed: {type(e).__name__}: {str(e)[:60]}")
    adv[name] = times
print(json.dumps({"single_s": single, "batch_s": batch, "fnv1a": f"{h:016x}", "tokens": sum(map(len, ids)), "adversarial_s": adv}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=8.0, help="corpus size in MB (default 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the batch runs (default: all cores)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    py = ensure_venv()
    tok_path = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "ferrollama", "--", "fetch", "tokenizer"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "ferrollama-tokenizer", "--example", "encode_bench"], cwd=ROOT, check=True)

    corpus = cache_dir() / "bench" / f"tokenizer-corpus-{args.mb:g}mb.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    if not corpus.exists():
        print(f"building corpus {corpus} ...", file=sys.stderr)
        tmp = corpus.with_suffix(".tmp")
        subprocess.run([str(py), "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import tokenizer as t; t.build_corpus(t.Path({str(tmp)!r}), {args.mb})"], check=True)
        tmp.rename(corpus)

    ours = json.loads(subprocess.run(
        [str(ROOT / "target/release/examples/encode_bench"), tok_path, str(corpus), str(args.threads), str(args.repeats)],
        check=True, capture_output=True, text=True).stdout)
    theirs = json.loads(subprocess.run(
        [str(py), "-c", TIKTOKEN_SIDE, tok_path, str(corpus), str(args.threads), str(args.repeats), PAT],
        check=True, capture_output=True, text=True).stdout)
    if ours["fnv1a"] != theirs["fnv1a"] or ours["tokens"] != theirs["tokens"]:
        print(f"MISMATCH: ferrollama {ours['fnv1a']} ({ours['tokens']} tokens) vs tiktoken {theirs['fnv1a']} ({theirs['tokens']} tokens)")
        return 1

    mb = ours["bytes"] / 1e6
    rows = {
        "ferrollama_single_mb_s": mb / ours["single_s"],
        "tiktoken_single_mb_s": mb / theirs["single_s"],
        "ferrollama_batch_mb_s": mb / ours["batch_s"],
        "tiktoken_batch_mb_s": mb / theirs["batch_s"],
    }
    rows["ratio_single"] = rows["ferrollama_single_mb_s"] / rows["tiktoken_single_mb_s"]
    rows["ratio_batch_vs_tiktoken_batch"] = rows["ferrollama_batch_mb_s"] / rows["tiktoken_batch_mb_s"]
    rows["ratio_batch_vs_tiktoken_single"] = rows["ferrollama_batch_mb_s"] / rows["tiktoken_single_mb_s"]

    adv = adversarial_times()
    print(f"corpus: {ours['docs']} documents, {mb:.2f} MB, {ours['tokens']} tokens (ids identical: fnv1a {ours['fnv1a']})")
    print(f"{'':28}{'ferrollama':>12}{'tiktoken':>12}{'ratio':>8}")
    print(f"{'1 thread, MB/s':28}{rows['ferrollama_single_mb_s']:12.2f}{rows['tiktoken_single_mb_s']:12.2f}{rows['ratio_single']:8.2f}")
    print(f"{f'batch, {args.threads} threads, MB/s':28}{rows['ferrollama_batch_mb_s']:12.2f}{rows['tiktoken_batch_mb_s']:12.2f}{rows['ratio_batch_vs_tiktoken_batch']:8.2f}")
    print(f"batch ferrollama vs single-thread tiktoken: {rows['ratio_batch_vs_tiktoken_single']:.2f}x")
    print("adversarial inputs, ferrollama (1 MiB and 2 MiB, seconds):")
    for name, (t1, t2) in adv.items():
        print(f"  {name:32} {t1:7.3f} {t2:7.3f}  (x{t2 / t1:.2f})")
    print("tiktoken on the same inputs (plain tiktoken, without Meta's 25,000-char splitting):")
    for name, (t1, t2) in theirs["adversarial_s"].items():
        if isinstance(t1, float) and isinstance(t2, float):
            print(f"  {name:32} {t1:7.3f} {t2:7.3f}  (x{t2 / t1:.2f})")
        else:
            print(f"  {name:32} 1 MiB: {t1}; 2 MiB: {t2}")
    if args.json:
        Path(args.json).write_text(json.dumps({**rows, "corpus_mb": mb, "threads": args.threads, "adversarial": adv, "tiktoken_adversarial": theirs["adversarial_s"]}, indent=2))
    return 0


def adversarial_times():
    """Times ferrollama's CLI-free encoder on adversarial 1 and 2 MiB inputs via the example."""
    out = {}
    tmp = cache_dir() / "bench"
    for name, make in [
        ("one repeated char", lambda n: "a" * n),
        ("one repeated space", lambda n: " " * n),
        ("no whitespace", lambda n: ("abcdefghij0123456789!@#$%^&*()" * (n // 30 + 1))[:n]),
    ]:
        times = []
        for n in (1 << 20, 2 << 20):
            f = tmp / "adversarial.jsonl"
            f.write_text(json.dumps({"text": make(n)}) + "\n")
            tok = subprocess.run(
                ["cargo", "run", "-q", "--release", "-p", "ferrollama", "--", "fetch", "tokenizer"],
                cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
            r = json.loads(subprocess.run([str(ROOT / "target/release/examples/encode_bench"), tok, str(f), "1", "3"],
                                          check=True, capture_output=True, text=True).stdout)
            times.append(r["single_s"])
        out[name] = tuple(times)
    return out


if __name__ == "__main__":
    sys.exit(main())
