#!/bin/bash
# session 17, alone: the one-shot default (the bundle's hearing.n_best 3) against greedy, 2 threads, twice each
cd /work/runs/v17/code
G=/work/runs/v17
la() { /work/main/.venv/bin/python -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" "$@"; }
t() { echo "[$(date +%T)] $*"; }
for r in a b; do
  la bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --out $G/bench_default_$r > $G/bench_default_$r.log 2>&1; t "default $r rc=$?"
  la bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --n-best 1 --out $G/bench_nb1_$r > $G/bench_nb1_$r.log 2>&1; t "nb1 $r rc=$?"
done
touch $G/bench.done
