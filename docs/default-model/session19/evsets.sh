#!/bin/bash
# session 19: rebuild the held-out evaluation and dev sets (the machine is new)
set -uo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/v19
t() { echo "[$(date +%T)] $*"; }
for a in unseen matched clean; do
  $bin/llasm-train data instructions --out $W/q200_$a --count 400 --eval-fraction 0.5 --multi-turn 0 \
    --no-replies --seed 8 --eval-acoustics $a --quiet > $W/q200_$a.log 2>&1; t "q200 $a rc=$?"
  $bin/llasm-train data convert docs/default-model/free-questions-2.jsonl --out $W/free2_$a --eval-fraction 0.99 \
    --seed 8 --eval-acoustics $a --quiet > $W/free2_$a.log 2>&1; t "free2 $a rc=$?"
  $bin/llasm-train data convert docs/default-model/free-questions.jsonl --out $W/free_$a --eval-fraction 0.99 \
    --seed 8 --eval-acoustics $a --quiet > $W/free_$a.log 2>&1; t "free $a rc=$?"
done
$bin/llasm-train data instructions --out $W/tdev_all --count 400 --eval-fraction 0.5 --multi-turn 0 \
  --no-replies --seed 9 --eval-acoustics unseen --quiet > $W/tdev.log 2>&1; t "tdev rc=$?"
$bin/llasm-train data asr --out $W/asr --count 140 --eval-fraction 0.9 --seed 11 --quiet > $W/asr.log 2>&1; t "asr rc=$?"
touch $W/evsets.done
