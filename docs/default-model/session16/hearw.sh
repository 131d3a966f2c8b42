#!/bin/bash
cd /work/main
G=/work/runs/v16
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
F2="/work/runs/v14/free2_unseen/eval.jsonl /work/runs/v14/free2_matched/eval.jsonl /work/runs/v14/free2_clean/eval.jsonl"
for b in "$@"; do
OMP_NUM_THREADS=1 .venv/bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free2_${b}_nb1.json $F2 2>&1 | grep -v Warn > $G/hear_free2_$b.log &
OMP_NUM_THREADS=1 .venv/bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_${b}_nb1.json $Q 2>&1 | grep -v Warn > $G/hear_$b.log
wait
OMP_NUM_THREADS=1 .venv/bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free_${b}_nb1.json $F 2>&1 | grep -v Warn > $G/hear_free_$b.log
done
touch $G/hearw.done
