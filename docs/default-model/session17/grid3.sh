#!/bin/bash
# session 17: fusion with fewer transcripts picked than the beam keeps (dev set, 231 clips), two processes
cd /work/runs/v17/fcode
G=/work/runs/v17
D="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
/work/main/.venv/bin/python $G/fuse.py assistant/default_model $G/grid3_a.json "4,0.5,1,16" "8,0.5,1,16" -- $D > $G/grid3_a.log 2>&1 &
/work/main/.venv/bin/python $G/fuse.py assistant/default_model $G/grid3_b.json "4,0.5,1,8" "2,0.5,1,16" -- $D > $G/grid3_b.log 2>&1
wait
touch $G/grid3.done
