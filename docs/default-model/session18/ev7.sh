#!/bin/bash
# session 18: the recipe's step 7 (evaluate) on the shipped bundle with its new one-shot default (the 4-gram at 0.3 + the pick among 3)
set -uo pipefail
cd /work/runs/v18/code
W=/work/runs/e2e
O=/work/runs/v18
B=/work/runs/v18/code/assistant/default_model
t() { echo "[$(date +%T)] $*"; }
la() { /work/main/.venv/bin/python -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" "$@"; }
t start
la evaluate --bundle $B --asr $W/asr/eval.jsonl --questions $W/questions/eval.jsonl --out $O/eval \
  --n-asr 60 --n-questions 40 --threads 1 > $O/eval.log 2>&1; t "unseen rc=$?"
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $W/asr-matched/eval.jsonl --questions $W/questions-matched/eval.jsonl \
  --out $O/eval-matched --n-asr 60 --n-questions 40 --threads 1 --no-latency > $O/eval-matched.log 2>&1 &
OMP_NUM_THREADS=1 la evaluate --bundle $B --asr $W/asr-clean/eval.jsonl --questions $W/questions-clean/eval.jsonl \
  --out $O/eval-clean --n-asr 60 --n-questions 40 --threads 1 --no-latency > $O/eval-clean.log 2>&1; t "clean rc=$?"
wait; t "matched done"
touch $O/ev7.done
