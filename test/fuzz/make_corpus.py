#!/usr/bin/env python3
# test/fuzz/make_corpus.py: writes the committed seed corpus under test/fuzz/corpus/ (run from the
# repository root; the files are small and committed, this script only documents and regenerates
# them). One directory per fuzz target: shard/, checkpoint/, text/, cli/.
import os, struct

ROOT = "test/fuzz/corpus"

def put(sub, name, data):
    os.makedirs(f"{ROOT}/{sub}", exist_ok=True)
    with open(f"{ROOT}/{sub}/{name}", "wb") as f:
        f.write(data)

# ---- token shards (llm.c format: 256 int32 header, uint16 tokens)
def shard(tokens, count=None):
    hdr = [20240520, 1, len(tokens) if count is None else count] + [0] * 253
    return struct.pack("<256i", *hdr) + struct.pack(f"<{len(tokens)}H", *tokens)

put("shard", "tiny.bin", shard([50256] + [(i * 97) % 50257 for i in range(40)]))
put("shard", "exact_one_batch.bin", shard(list(range(9))))            # B*T+1 = 9 tokens for B=2, T=4
put("shard", "short.bin", shard(list(range(8))))                      # one token too few
put("shard", "eot_and_max_id.bin", shard([50256, 50255, 0, 1] * 5))
put("shard", "header_only.bin", shard([]))

# ---- checkpoints (common/checkpoint.h): the layout fuzz_checkpoint.c expects
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

NP = 64
blobs = [("weights fp32", struct.pack(f"<{NP}f", *[0.01 * i - 0.3 for i in range(NP)])),
         ("weights bf16", struct.pack(f"<{NP}H", *[(0x3C00 + i) for i in range(NP)])),
         ("opt: m", struct.pack(f"<{NP}f", *[1e-3 * i for i in range(NP)]))]

def header(version, step, run=(2, 4, 8, 0, 3e-4), crc=0, skipped=1):
    h = b"GPT2CKPT" + struct.pack("<i", version)
    h += struct.pack("<6i", 2, 32, 2, 50257, 50304, 1024) + struct.pack("<i", 1)
    h += b"adamw".ljust(32, b"\0")
    h += struct.pack("<4i", step, 100, skipped, len(blobs))
    h += struct.pack("<4Q", 1337, 4096, NP, 8 * step)
    if version == 1:
        h += bytes(32)
    else:
        h += struct.pack("<4id", *run) + struct.pack("<II", crc, 0)
    assert len(h) == 152
    return h

def ckpt_v2(step, skipped=1):
    table = b"".join(n.encode().ljust(40, b"\0") + struct.pack("<QII", len(d), crc32c(d), 0) for n, d in blobs)
    c = crc32c(table, crc32c(header(2, step, skipped=skipped)))
    return header(2, step, crc=c, skipped=skipped) + table + b"".join(d for _, d in blobs)

def ckpt_v1(step):
    table = b"".join(n.encode().ljust(40, b"\0") + struct.pack("<Q", len(d)) for n, d in blobs)
    return header(1, step) + table + b"".join(d for _, d in blobs)

put("checkpoint", "v2_step5.bin", ckpt_v2(5))
put("checkpoint", "v2_step0.bin", ckpt_v2(0, skipped=0))
put("checkpoint", "v1_step7.bin", ckpt_v1(7))

# ---- text for the tokenizer: tricky UTF-8 and GPT-2 pre-tokenizer edges
texts = {
    "ascii.txt": b"Hello world! It's 2024; we've 12,345 tokens -- and CAPS, don't we?\n",
    "contractions.txt": b"I'm you're he's she'd we'll they've 'tis ''s '' 's'S'RE",
    "whitespace.txt": b"  a\t\tb\r\n\r\n   \n\x0b\x0c c    \n\n\n",
    "numbers.txt": b"3.14159 1e10 0x1F 1234567890123 \xd9\xa3\xd9\xa4 \xe2\x85\xab",
    "utf8_valid.txt": "naïve café ÅÄÖ Ελληνικά Русский 日本語 한국어 עברית العربية 🎉👩‍👩‍👧‍👦 e\u0301 ﬁ".encode(),
    "utf8_invalid.txt": b"\xff\xfe\xc0\xaf\xe0\x80\xaf\xed\xa0\x80\xed\xbf\xbf\xf4\x90\x80\x80\xf8\x88\x80\x80\x80 \x80\xbf abc \xc3",
    "utf8_truncated.txt": b"abc \xe6\x97 \xf0\x9f\x8e def \xe2",
    "bom_nul.txt": b"\xef\xbb\xbfstart\x00middle\x00\x00end",
    "eot.txt": b"<|endoftext|>text<|endoftext|> <|endoftext|",
    "long_word.txt": b"a" * 300 + b" " + "ü".encode() * 100,
    "empty.txt": b"",
}
for name, data in texts.items():
    put("text", name, data)

# ---- command lines: argv[1..], NUL-separated
cmds = {
    "default.args": ["-model", "d4", "-b", "8", "-t", "64", "-x", "200"],
    "accum.args": ["-model", "2:32:2", "-b", "2", "-t", "16", "-d", "128", "-opt", "adamw", "-l", "1e-3"],
    "model_colon.args": ["-model", "4:256:4", "-opt", "adafactor", "-beta1", "0.9"],
    "sophia.args": ["-opt", "sophia", "-k", "10", "-rho", "0.04", "-b", "4", "-t", "32"],
    "sgdm.args": ["-opt", "sgd", "-momentum", "0.9", "-nesterov", "1", "-c", "0.1"],
    "q8.args": ["-opt", "adamw8bit", "-qblock", "256", "-precision", "fp32", "-sr", "1"],
    "resume.args": ["-o", "/nonexistent/out", "-y", "1", "-n", "5", "-seed", "42"],
    "advise.args": ["-advise", "1", "-params", "124000000", "-mem", "24", "-gpus", "1", "-task", "pretrain"],
    "advise_model.args": ["-advise", "1", "-model", "d12", "-mem", "8", "-reserve", "0.2"],
    "bounds.args": ["-model", "d99999999999", "-d", "1073741824", "-m", "1048576"],
}
for name, args in cmds.items():
    put("cli", name, b"\0".join(a.encode() for a in args))
