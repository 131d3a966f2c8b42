#!/bin/bash
# session 18, alone (code: a clone of 2a8cccd with the new bundle.json and hearing_lm.npz): one-shot default (the
# 4-gram in the beam at 0.3, the LLM's pick among 3) against the same without the 4-gram, 2 threads, interleaved
cd /work/runs/v18/code
G=/work/runs/v18
py=/work/main/.venv/bin/python
la() { $py -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" "$@"; }
t() { echo "[$(date +%T)] $*"; }
for r in a b; do
  la bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --out $G/bench_default_$r > $G/bench_default_$r.log 2>&1; t "default $r rc=$?"
  la bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --ngram-fusion 0 --out $G/bench_ng0_$r > $G/bench_ng0_$r.log 2>&1; t "ngram 0 $r rc=$?"
done
touch $G/bench.done
