#!/bin/bash
# session 12, after the evaluations: hearing with 16 rescored transcripts (the shipped bundle), then a stage-1b
# probe with 8,000 steps instead of 5,000 on the same 48,000 questions, and its hearing
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v12
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $G/ev.done ]; do sleep 10; done
t nb16
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $W/bundle 16 $G/hear_q48k_nb16.json $Q 2>&1 | grep -v Warn &
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $W/bundle 16 $G/hear_free_q48k_nb16.json $F 2>&1 | grep -v Warn
wait; t nb16 done
# (the rest, stage 1b with 8,000 steps, its bundle and its hearing, was stopped at step 507 to give the evaluations
# the CPU, and ran again as probe8k.sh: the same commands)
