#!/bin/bash
# session 22: latency alone, 2 threads, the shipped bundle on session 20's 37 latency clips: merge_spellings code
# (fff2aba) and the code before (4ce9e8c), interleaved new / old / new / old
set -uo pipefail
W=/work/runs/v22
C=/work/runs/v20/eval/latency_clips
t() { echo "[$(date +%T)] $*"; }
b() {  # TREE OUT
  (cd $1 && PYTHONPATH=$1 .venv/bin/python -m assistant.cli bench $C --threads 2 --bundle assistant/default_model --out $W/$2 > $W/$2.log 2>&1); t "$2 rc=$?"; }
while [ ! -f $W/ev22.done ]; do sleep 10; done
t start
b /work/ev22 bench_new_a; b /work/old21 bench_old_a; b /work/ev22 bench_new_b; b /work/old21 bench_old_b
touch $W/bench22.done
