#!/bin/bash
cd /work/main
for nb in 1 8; do .venv/bin/llasm-assistant bench /work/runs/eval/latency_clips --threads 2 --n-best $nb --out /work/runs/v8/bench_nb$nb > /work/runs/v8/bench_nb$nb.log 2>&1; echo "bench $nb rc=$? $(date +%T)"; done
for nb in 1 8; do .venv/bin/python scripts/handsfree_ab.py /work/runs/v5/talk.wav --threads 2 --repeats 1 --n-best $nb > /work/runs/v8/hf_nb$nb.log 2>&1; echo "hf $nb rc=$? $(date +%T)"; done
touch /work/runs/v8/bench.done
