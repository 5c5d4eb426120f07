#!/usr/bin/env python3
# test/sh/ckpt_edit.py: crafts checkpoints that prove themselves (format version 2, common/checkpoint.h)
# for test/sh/reliability2.sh: changes a header field or a blob's bytes, then writes every checksum
# again, so that only the reader's other checks (ranges, finiteness) can refuse the file.
#   ckpt_edit.py FILE field NAME VALUE         NAME: step tokens_seen data_position skipped_steps total_steps
#   ckpt_edit.py FILE blob NAME INDEX HEX      the bytes HEX at byte INDEX of blob NAME
import struct, sys

def crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8): c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t
T = crc32c_table()
def crc32c(b, c=0):
    c ^= 0xFFFFFFFF
    for x in b: c = T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

FIELDS = {"step": (72, "<i"), "total_steps": (76, "<i"), "skipped_steps": (80, "<i"), "data_position": (96, "<Q"),
          "tokens_seen": (112, "<Q")}
path, what = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())
nblobs = struct.unpack_from("<i", b, 84)[0]
table = 152
offs, o = [], table + 56 * nblobs
for i in range(nblobs):
    name = bytes(b[table + 56 * i: table + 56 * i + 40]).split(b"\0")[0].decode()
    n = struct.unpack_from("<Q", b, table + 56 * i + 40)[0]
    offs.append((name, o, n)); o += n
if what == "field":
    off, fmt = FIELDS[sys.argv[3]]
    struct.pack_into(fmt, b, off, int(sys.argv[4], 0))
else:
    name, idx, data = sys.argv[3], int(sys.argv[4]), bytes.fromhex(sys.argv[5])
    for i, (bn, bo, n) in enumerate(offs):
        if bn == name:
            b[bo + idx: bo + idx + len(data)] = data
            struct.pack_into("<I", b, table + 56 * i + 48, crc32c(bytes(b[bo:bo + n])))
            break
    else: sys.exit("no blob " + name)
struct.pack_into("<I", b, 144, 0)
struct.pack_into("<I", b, 144, crc32c(bytes(b[table:table + 56 * nblobs]), crc32c(bytes(b[:152]))))
open(path, "wb").write(b)
