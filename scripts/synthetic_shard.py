#!/usr/bin/env python3
"""scripts/synthetic_shard.py PATH [N]: an llm.c token shard of N (default 4,000,000) uniform random GPT-2
token ids, for the GPU scripts on machines without the dataset (throughput does not depend on the text).
Format: a 256-int32 header (magic 20240520, version 1, token count), then the tokens as uint16.
Standard library only; seeded, so every machine writes the same file."""
import random
import struct
import sys

if len(sys.argv) not in (2, 3):
    sys.exit(__doc__.splitlines()[0])
path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 4_000_000
random.seed(0)
toks = [random.randrange(50257) for _ in range(n)]
with open(path, "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
    f.write(struct.pack("<%dH" % n, *toks))
