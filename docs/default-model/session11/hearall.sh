#!/bin/bash
# hearing of one bundle: template questions (576) and free questions (231), greedy and --n-best 8
cd /work/main
B=$1; TAG=$2; G=/work/runs/v11
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="$G/free_unseen/eval.jsonl $G/free_matched/eval.jsonl $G/free_clean/eval.jsonl"
for nb in ${NBS:-1 8}; do
  OMP_NUM_THREADS=1 .venv/bin/python $G/hear.py $B $nb $G/hear_${TAG}_nb$nb.json $Q 2>&1 | grep -v Warn
  OMP_NUM_THREADS=1 .venv/bin/python $G/hear.py $B $nb $G/hear_free_${TAG}_nb$nb.json $F 2>&1 | grep -v Warn
done
