#!/bin/bash
# session 20: stage-1d data: spoken questions and ASR sentences with the foreign accents (--voice-set foreign:
# the random set plus 60 accents through other languages' phoneme tables); then their encoder states
set -uo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/v20
t() { echo "[$(date +%T)] $*"; }
t start
$bin/llasm-train data instructions --out $W/f_q --count 12000 --eval-fraction 0 --multi-turn 0 --no-replies \
  --seed 121 --voice-set foreign --quiet > $W/f_q.log 2>&1; t "f_q rc=$?"
$bin/llasm-train data instructions --out $W/f_qe --count 6000 --eval-fraction 0 --multi-turn 0 --no-replies \
  --seed 131 --voice-set foreign --templates everyday --quiet > $W/f_qe.log 2>&1; t "f_qe rc=$?"
$bin/llasm-train data asr --out $W/f_asr --count 3000 --eval-fraction 0 --seed 5 --hibari-fraction 0.05 \
  --voice-set foreign --quiet > $W/f_asr.log 2>&1; t "f_asr rc=$?"
D=$W/f_q/train.jsonl,$W/f_qe/train.jsonl,$W/f_asr/train.jsonl
$bin/llasm-train cache-states --data $D --out $W/states --engine ct2 > $W/states.log 2>&1; t "states rc=$?"
touch $W/data1d.done
