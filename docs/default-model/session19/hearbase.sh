#!/bin/bash
# session 19: the shipped bundle's hearing on the dev sets (baseline; reproduces session 18's 94/140 and 40/231?)
cd /work/main
W=/work/runs/v19
B=${1:-/work/main/assistant/default_model}
L=${2:-shipped}
OMP_NUM_THREADS=1 .venv/bin/python $W/hear.py $B $W/hear_tdev_$L.json 3,0,0.3 1,0,0 -- $W/tdev/eval.jsonl > $W/hear_tdev_$L.log 2>&1 &
OMP_NUM_THREADS=1 .venv/bin/python $W/hear.py $B $W/hear_free_$L.json 3,0,0.3 1,0,0 -- $W/free_unseen/eval.jsonl $W/free_matched/eval.jsonl $W/free_clean/eval.jsonl > $W/hear_free_$L.log 2>&1
wait
