#!/bin/bash
# session 22: the recipe's step 7 (held-out evaluation, 60 ASR sentences + 40 questions a split) on the shipped bundle
# with merge_spellings (fff2aba); session 20's post20.sh commands
set -uo pipefail
cd WORKTREE
export PYTHONPATH=WORKTREE
E=/work/runs/v19/e2e
W=/work/runs/v22
B=assistant/default_model
la() { .venv/bin/python -m assistant.cli "$@"; }
t() { echo "[$(date +%T)] $*"; }
t start
la evaluate --bundle $B --asr $E/asr/eval.jsonl --questions $E/questions/eval.jsonl --out $W/eval \
  --n-asr 60 --n-questions 40 --threads 1 > $W/eval.log 2>&1; t "unseen rc=$?"
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $E/asr-matched/eval.jsonl --questions $E/questions-matched/eval.jsonl \
  --out $W/eval-matched --n-asr 60 --n-questions 40 --threads 1 --no-latency > $W/eval-matched.log 2>&1 &
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $E/asr-clean/eval.jsonl --questions $E/questions-clean/eval.jsonl \
  --out $W/eval-clean --n-asr 60 --n-questions 40 --threads 1 --no-latency > $W/eval-clean.log 2>&1; t "clean rc=$?"
wait; t "matched done"
touch $W/ev7.done
