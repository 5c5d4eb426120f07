#!/usr/bin/env bash
# test/sh/defaults_typed.sh: an optimizer's built-in defaults are exactly what a user gets by typing the
# values `-opt list` shows (optim/optim.h: constants are doubles holding the decimal, never float
# literals such as 0.999f, whose double is 0.99899999...). For every optimizer: 2 steps with no
# optimizer flag, and 2 steps with each default typed as a flag (lr -> -l, betas -> -beta1 -beta2
# -beta3, eps, eps2, wd -> -c, momentum, nesterov, rho, k, block -> -qblock, rank, gap ->
# -update-proj-gap, scale -> -galore-scale, aux_lr -> -aux-lr): every blob of the two checkpoints
# (weights and optimizer state) must be equal byte for byte. The run flags blob and the header's -l
# (given or not) are the only parts allowed to differ.
cd "$(dirname "$0")/../.."
. test/lib.sh
M="-model 1:32:2 -b 2 -t 16 -x 2 -v 0 -gen 0"
$TRAIN -opt list | awk 'NR > 1' > "$TMP/list"
[ -s "$TMP/list" ] || { fail "defaults typed: -opt list" "printed nothing"; exit 1; }
# "name key=value ..." -> the flags
typed_flags() {
    awk '{ for (i = 3; i <= NF; i++) { if ($i !~ /^[a-z_0-9]+=/) break; split($i, kv, "="); k = kv[1]; v = kv[2];
        if (k == "lr" && v != "relative") printf " -l %s", v;
        else if (k == "betas") { gsub(/[()]/, "", v); n = split(v, b, ","); for (j = 1; j <= n; j++) printf " -beta%d %s", j, b[j] }
        else if (k == "wd") printf " -c %s", v;
        else if (k == "block") printf " -qblock %s", v;
        else if (k == "gap") printf " -update-proj-gap %s", v;
        else if (k == "scale") printf " -galore-scale %s", v;
        else if (k == "aux_lr") printf " -aux-lr %s", v;
        else if (k != "lr") printf " -%s %s", k, v } }'
}
# every blob but the run flags, name and bytes, compared
same_blobs() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
def blobs(p):
    b = open(p, "rb").read()
    ver, n = struct.unpack_from("<i", b, 8)[0], struct.unpack_from("<i", b, 84)[0]
    e = 56 if ver >= 2 else 48
    off, out = 152 + e * n, {}
    for i in range(n):
        name = b[152 + e * i:152 + e * i + 40].split(b"\0")[0].decode()
        size = struct.unpack_from("<Q", b, 152 + e * i + 40)[0]
        out[name] = b[off:off + size]; off += size
    out.pop("run flags", None)
    return out
a, b = blobs(sys.argv[1]), blobs(sys.argv[2])
bad = [k for k in a if a[k] != b.get(k)] + [k for k in b if k not in a]
print(", ".join(bad)); sys.exit(1 if bad else 0)
PY
}
while read -r line; do
    o=${line%% *}
    flags=$(echo "$line" | typed_flags)
    $TRAIN $M -opt "$o" -o "$TMP/$o.def" > "$TMP/$o.def.out" 2>&1
    rc1=$?
    $TRAIN $M -opt "$o" $flags -o "$TMP/$o.typed" > "$TMP/$o.typed.out" 2>&1
    rc2=$?
    if [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then fail "defaults typed: $o" "exit $rc1/$rc2 (flags:$flags) $(tail -n 1 "$TMP/$o.typed.out")"; continue; fi
    if diff=$(same_blobs "$TMP/$o.def/checkpoint.bin" "$TMP/$o.typed/checkpoint.bin"); then
        pass "defaults typed: $o with no flags = $o with$flags (checkpoints' weights and state bit for bit)"
    else fail "defaults typed: $o with no flags vs with$flags" "blobs differ: $diff"; fi
done < "$TMP/list"
