#!/bin/bash
# session 16, alone: the bench of the shipped bundle (greedy, --n-best 16, 32) with prefix-tree scoring (e1cd428),
# then the hands-free replay with 16 and 32 transcripts, as session 14's bench.sh
cd /work/main
G=/work/runs/v16
t() { echo "[$(date +%T)] $*"; }
for nb in 1 16 32; do
  .venv/bin/llasm-assistant bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --n-best $nb --out $G/bench_nb$nb > $G/bench_nb$nb.log 2>&1
  t "bench nb$nb rc=$?"
done
for nb in 16 32; do
  .venv/bin/python scripts/handsfree_ab.py /work/runs/v14/talk.wav --threads 2 --repeats 1 --n-best $nb > $G/handsfree_nb$nb.log 2>&1
  t "handsfree nb$nb rc=$?"
done
touch $G/bench.done
