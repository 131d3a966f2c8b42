#!/bin/bash
# session 19: the recipe's step 7 on the new bundle, then latency alone at 2 threads, the new bundle and the
# session-18 one interleaved
set -uo pipefail
cd /work/main
W=/work/runs/v19
E=$W/e2e
B=$E/bundle
la() { .venv/bin/llasm-assistant "$@"; }
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/s2.done ] || [ ! -f $W/ev19_s1c.done ]; do sleep 20; done
t start
la evaluate --bundle $B --asr $E/asr/eval.jsonl --questions $E/questions/eval.jsonl --out $W/eval \
  --n-asr 60 --n-questions 40 --threads 1 > $W/eval.log 2>&1; t "unseen rc=$?"
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $E/asr-matched/eval.jsonl --questions $E/questions-matched/eval.jsonl \
  --out $W/eval-matched --n-asr 60 --n-questions 40 --threads 1 --no-latency > $W/eval-matched.log 2>&1 &
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $E/asr-clean/eval.jsonl --questions $E/questions-clean/eval.jsonl \
  --out $W/eval-clean --n-asr 60 --n-questions 40 --threads 1 --no-latency > $W/eval-clean.log 2>&1; t "clean rc=$?"
wait; t "matched done"
for r in a; do
  la bench $W/eval/latency_clips --threads 2 --bundle $B --out $W/bench_new_$r > $W/bench_new_$r.log 2>&1; t "new $r rc=$?"
  la bench $W/eval/latency_clips --threads 2 --bundle /work/runs/v19/bundle_s18 --out $W/bench_s18_$r > $W/bench_s18_$r.log 2>&1; t "s18 $r rc=$?"
done
touch $W/post.done
