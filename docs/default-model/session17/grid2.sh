#!/bin/bash
# session 17: shallow fusion on the dev set (session 11's 231 free questions): smaller and larger beams
cd /work/runs/v17/fcode
G=/work/runs/v17
D="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
/work/main/.venv/bin/python $G/fuse.py assistant/default_model $G/grid2_a.json "8,0.5,1,8" "16,0.5,1,24" -- $D > $G/grid2_a.log 2>&1 &
/work/main/.venv/bin/python $G/fuse.py assistant/default_model $G/grid2_b.json "12,0.5,1,12" "16,0.8,1" -- $D > $G/grid2_b.log 2>&1
wait
touch $G/grid2.done
