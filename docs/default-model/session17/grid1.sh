#!/bin/bash
# session 17: shallow fusion on the dev set (session 11's 231 free questions), beam 16, two processes
cd /work/runs/v17/fcode
G=/work/runs/v17
D="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
/work/main/.venv/bin/python $G/fuse.py assistant/default_model $G/grid1_a.json "16,0,0" "16,0.5,1" "16,0.3,0.5" "16,0.8,2" -- $D > $G/grid1_a.log 2>&1 &
/work/main/.venv/bin/python $G/fuse.py assistant/default_model $G/grid1_b.json "32,0,0" "16,0.5,0" "16,0.5,2" "16,1,2" -- $D > $G/grid1_b.log 2>&1
wait
touch $G/grid1.done
