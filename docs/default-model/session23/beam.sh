#!/bin/bash
cd WORKTREE
export PYTHONPATH=WORKTREE OMP_NUM_THREADS=1 THREADS=1
V=/work/runs/v19
C="4,0.5,0,16 4,0.5,0,8 4,0.5,0,12 4,0.5,0,6"
.venv/bin/python /work/runs/v23/hear.py assistant/default_model /work/runs/v23/beam_free.json $C -- $V/free_unseen/eval.jsonl $V/free_matched/eval.jsonl $V/free_clean/eval.jsonl > /work/runs/v23/beam_free.log 2>&1 &
.venv/bin/python /work/runs/v23/hear.py assistant/default_model /work/runs/v23/beam_tdev.json $C -- $V/tdev/eval.jsonl > /work/runs/v23/beam_tdev.log 2>&1 &
wait
