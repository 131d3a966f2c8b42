#!/bin/bash
# session 11: stage 1b with 24,000 spoken training questions (12,000 more, wide voice set, seed 51) and 3,000 steps;
# control: the recipe's 12,000 questions with 3,000 steps (separates more data from more steps)
set -euo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v11
t() { echo "[$(date +%T)] $*"; }
t start
[ -f $G/q_wide2/train.jsonl ] || $bin/llasm-train data instructions --out $G/q_wide2 --count 12000 --eval-fraction 0 \
  --multi-turn 0 --no-replies --seed 51 --voice-set wide --quiet; t data
$bin/llasm-train cache-states --data $G/q_wide2/train.jsonl --out $W/states --engine ct2 2> $G/cache.err; t cache
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl"
s1b() {  # OUT DATA
  $bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
    --ctc-shortlist --data "$2" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $1 --max-steps 3000 \
    --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 2> $1.err
}
s1b $G/s1b_q24k "$D,$G/q_wide2/train.jsonl"; t s1b_q24k
s1b $G/s1b_q12k_3000 "$D"; t s1b_q12k_3000
touch $G/pipe.done
