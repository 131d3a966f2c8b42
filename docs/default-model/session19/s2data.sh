#!/bin/bash
# session 19: stage-2 inputs as the recipe builds them (steps 1, 1b and the 520 training questions), audio included
set -uo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/v19
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/data1c.done ]; do sleep 20; done
t start
$bin/llasm-train data asr --out $W/e2e/asr --count 8000 --seed 0 --quiet > $W/e2e_asr.log 2>&1; t "asr rc=$?"
$bin/llasm-train data asr --out $W/e2e/asr-wide --count 6000 --seed 1 --eval-fraction 0.02 --hibari-fraction 0.05 \
  --voice-set wide --quiet > $W/e2e_asrw.log 2>&1; t "asr-wide rc=$?"
$bin/llasm-train data instructions --out $W/e2e/questions-train --count 520 --eval-fraction 0 --multi-turn 0 \
  --max-tokens 40 --seed 21 --quiet > $W/e2e_qt.log 2>&1; t "questions-train rc=$?"
$bin/llasm-train cache-states --data $W/e2e/questions-train/train.jsonl --out $W/states2 --engine ct2 > $W/e2e_qt_states.log 2>&1; t "states rc=$?"
touch $W/s2data.done
