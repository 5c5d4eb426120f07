#!/usr/bin/env bash
# test/sh/optimizers.sh: every registered optimizer, on the default dataset with a tiny model:
#  - a 16-step run lowers the training loss (mean of the last steps below the first step's loss);
#  - a run interrupted at step 8 (-stop 8) and resumed (-y 1) reproduces steps 9..16 bit for bit
#    (loss and gradient norm printed with 9 significant digits).
# Per-optimizer learning rates: the plain-SGD family needs a far larger lr to move in 16 steps.
cd "$(dirname "$0")/../.."
. test/lib.sh
FLAGS="-model 2:64:2 -b 4 -t 32 -x 16 -v 0 -gen 0 -u 2"
lr_for() {
    case $1 in
        sgd|lomo) echo "-l 0.5" ;;
        sgdm|sgdm8bit) echo "-l 0.05" ;;
        adalomo) echo "-l 0.01" ;;
        lion|lion8bit) echo "-l 3e-4" ;;
        came) echo "-l 1e-3" ;;
        *) echo "" ;;
    esac
}
opts=$($TRAIN -opt list | awk 'NR > 1 {print $1}')
[ -n "$opts" ] || { fail "optimizers: -opt list" "printed nothing"; exit 1; }
for o in $opts; do
    lr=$(lr_for "$o")
    $TRAIN $FLAGS -opt "$o" $lr -o "$TMP/$o-full" > "$TMP/$o-full.out" 2>&1 || { fail "$o: 16-step run" "exit $? $(tail -n 2 "$TMP/$o-full.out" | tr '\n' ' ')"; continue; }
    first=$(step_losses "$TMP/$o-full/log.jsonl" | awk 'NR == 1 {print $2}')
    final=$(grep '"type":"summary"' "$TMP/$o-full/log.jsonl" | sed -E 's/.*"train_loss":([^,]+),.*/\1/')
    if awk -v a="$first" -v b="$final" 'BEGIN { exit !(b < a - 0.2) }'; then pass "$o: training lowers the loss ($first -> $final)"
    else fail "$o: training lowers the loss" "first step $first, final $final"; fi
    $TRAIN $FLAGS -opt "$o" $lr -n 8 -stop 8 -o "$TMP/$o-resume" > /dev/null 2>&1 &&
    $TRAIN $FLAGS -opt "$o" $lr -o "$TMP/$o-resume" -y 1 > "$TMP/$o-resume.out" 2>&1
    if [ $? -ne 0 ]; then fail "$o: resume is bit-exact" "resume run failed: $(tail -n 2 "$TMP/$o-resume.out" | tr '\n' ' ')"; continue; fi
    a=$(step_losses "$TMP/$o-full/log.jsonl" | awk '$1 > 8')
    b=$(step_losses "$TMP/$o-resume/log.jsonl" | awk '$1 > 8')
    if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "$o: resume from step 8 is bit-exact (steps 9..16)"
    else fail "$o: resume is bit-exact" "steps 9..16 differ: $(diff <(echo "$a") <(echo "$b") | head -n 4 | tr '\n' ' ')"; fi
done
