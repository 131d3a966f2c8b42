#!/bin/bash
# session 20: the recipe's step 7 on the new bundle; latency alone at 2 threads (the new bundle, then the shipped
# session-19 one); then hands-free agreement on the 576 template questions (--n-best 4 --fusion 0.5)
set -uo pipefail
cd /work/main
V=/work/runs/v19
W=/work/runs/v20
E=$V/e2e
B=$W/e2e/bundle
la() { .venv/bin/llasm-assistant "$@"; }
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/s2.done ] || [ ! -f $W/evf20_s1d.done ]; do sleep 20; done
t start
la evaluate --bundle $B --asr $E/asr/eval.jsonl --questions $E/questions/eval.jsonl --out $W/eval \
  --n-asr 60 --n-questions 40 --threads 1 > $W/eval.log 2>&1; t "unseen rc=$?"
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $E/asr-matched/eval.jsonl --questions $E/questions-matched/eval.jsonl \
  --out $W/eval-matched --n-asr 60 --n-questions 40 --threads 1 --no-latency > $W/eval-matched.log 2>&1 &
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $E/asr-clean/eval.jsonl --questions $E/questions-clean/eval.jsonl \
  --out $W/eval-clean --n-asr 60 --n-questions 40 --threads 1 --no-latency > $W/eval-clean.log 2>&1; t "clean rc=$?"
wait; t "matched done"
la bench $W/eval/latency_clips --threads 2 --bundle $B --out $W/bench_new > $W/bench_new.log 2>&1; t "bench new rc=$?"
la bench $W/eval/latency_clips --threads 2 --bundle $V/e2e/bundle --out $W/bench_s19 > $W/bench_s19.log 2>&1; t "bench s19 rc=$?"
hf() {  # SPLIT
  OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $V/asr/eval.jsonl --questions $V/q200_$1/eval.jsonl \
    --out $W/evhf_$1 --n-asr 1 --n-questions 192 --threads 1 --no-latency --n-best 4 --fusion 0.5 > $W/evhf_$1.log 2>&1; t "hf $1 rc=$?"; }
hf unseen & hf matched & wait
hf clean
touch $W/post20.done
