#!/bin/bash
# session 14, alone: the bench of the shipped bundle (greedy, --n-best 8, --n-best 16), then the hands-free replay
# (--n-best 8 and 16), then one-shot --transcribe with and without expect_transcribe
cd /work/main
G=/work/runs/v14
t() { echo "[$(date +%T)] $*"; }
for nb in 1 8 16; do
  .venv/bin/llasm-assistant bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --n-best $nb --out $G/bench_nb$nb > $G/bench_nb$nb.log 2>&1
  t "bench nb$nb rc=$?"
done
for nb in 8 16; do
  .venv/bin/python scripts/handsfree_ab.py $G/talk.wav --threads 2 --repeats 1 --n-best $nb > $G/handsfree_nb$nb.log 2>&1
  t "handsfree nb$nb rc=$?"
done
.venv/bin/python /work/runs/v12/transcribe.py > $G/transcribe.log 2>&1; t "transcribe rc=$?"
touch $G/bench.done
