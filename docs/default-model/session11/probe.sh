#!/bin/bash
# session 11 probe (a curve point, nice 19): 48,000 spoken questions (24,000 more, wide voices, seed 61), 5,000 steps
set -euo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v11
t() { echo "[$(date +%T)] $*"; }
t start
[ -f $G/q_wide3/train.jsonl ] || $bin/llasm-train data instructions --out $G/q_wide3 --count 24000 --eval-fraction 0 \
  --multi-turn 0 --no-replies --seed 61 --voice-set wide --quiet; t data
$bin/llasm-train cache-states --data $G/q_wide3/train.jsonl --out $W/states --engine ct2 2> $G/cache3.err; t cache
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl,$G/q_wide2/train.jsonl,$G/q_wide3/train.jsonl"
$bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $G/s1b_q48k --max-steps 5000 \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 2> $G/s1b_q48k.err; t s1b_q48k
touch $G/probe.done
