#!/bin/bash
cd WORKTREE
export PYTHONPATH=WORKTREE OMP_NUM_THREADS=1 THREADS=1
V=/work/runs/v19
.venv/bin/python /work/runs/v23/hear2.py assistant/default_model /work/runs/v23/hyb_free.json 4,0.5,0.3,4.5 4,0.5,0.3,4 -- $V/free_unseen/eval.jsonl $V/free_matched/eval.jsonl $V/free_clean/eval.jsonl > /work/runs/v23/hyb_free.log 2>&1 &
.venv/bin/python /work/runs/v23/hear2.py assistant/default_model /work/runs/v23/hyb_tdev.json 4,0.5,0.3,4.5 4,0.5,0.3,4 4,0.5,0.3,5 4,0.5,0.3,3.5 -- $V/tdev/eval.jsonl > /work/runs/v23/hyb_tdev.log 2>&1 &
wait
