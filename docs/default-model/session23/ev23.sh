#!/bin/bash
# session 23: fusion_max_s 4.5 (8b52f92) hands-free (--n-best 4 --fusion 0.5) on the 576 template questions and the 351
# blind ones, the shipped bundle, one thread a run, two runs at a time (as session 22's ev22.sh)
set -uo pipefail
cd WORKTREE
export PYTHONPATH=WORKTREE
V=/work/runs/v19
W=/work/runs/v23/ev
B=assistant/default_model
t() { echo "[$(date +%T)] $*"; }
ev() {  # QUESTIONS OUT N_QUESTIONS [ARGS]
  q=$1; o=$2; n=$3; shift 3
  OMP_NUM_THREADS=1 .venv/bin/python -m assistant.cli evaluate --bundle $B --asr $V/asr/eval.jsonl --questions $q --out $W/$o \
    --n-asr 1 --n-questions $n --threads 1 --no-latency "$@" > $W/$o.log 2>&1; t "$o rc=$?"; }
HF="--n-best 4 --fusion 0.5"
t start
ev $V/q200_unseen/eval.jsonl evhf_unseen 192 $HF & ev $V/q200_matched/eval.jsonl evhf_matched 192 $HF & wait
ev $V/q200_clean/eval.jsonl evhf_clean 192 $HF & ev $V/free2_unseen/eval.jsonl evhff_unseen 117 $HF & wait
ev $V/free2_matched/eval.jsonl evhff_matched 117 $HF & ev $V/free2_clean/eval.jsonl evhff_clean 117 $HF & wait
touch $W/ev23.done
