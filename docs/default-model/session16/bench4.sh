#!/bin/bash
# session 16, alone, after the close is scored up to <|im_end|> only: bench greedy / 32, hands-free replay with 32
cd /work/main
G=/work/runs/v16
t() { echo "[$(date +%T)] $*"; }
for nb in 1 32; do
  .venv/bin/llasm-assistant bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --n-best $nb --out $G/bench4_nb$nb > $G/bench4_nb$nb.log 2>&1
  t "bench nb$nb rc=$?"
done
.venv/bin/python scripts/handsfree_ab.py /work/runs/v14/talk.wav --threads 2 --repeats 1 --n-best 32 > $G/handsfree4_nb32.log 2>&1
t "handsfree nb32 rc=$?"
touch $G/bench4.done
