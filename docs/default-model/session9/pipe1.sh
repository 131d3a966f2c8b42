#!/bin/bash
# session 9: stage 1b again with 9,000 more spoken training questions in the wide voice set
set -euo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs
V=$W/v5
G=$W/v9
t() { echo "[$(date +%T)] $*"; }
t start
$bin/llasm-train data instructions --out $G/q_wide --count 9000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 41 --voice-set wide --quiet; t data
$bin/llasm-train cache-states --data $G/q_wide/train.jsonl --out $W/asr8k_states --engine ct2 2> $G/cache.err; t cache
$bin/llasm-train stage1 --recipe cpu --init $W/v6/stage1s/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data $W/asr8k/train.jsonl,$W/asr_wide/train.jsonl,$V/q_asr/train.jsonl,$G/q_wide/train.jsonl \
  --eval-data $W/asr8k/eval.jsonl --state-cache $W/asr8k_states --out $G/stage1qw --max-steps 1500 --batch-size 16 \
  --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 2> $G/stage1qw.err; t stage1qw
touch $G/pipe1.done
