#!/bin/bash
# session 19: stage-1c data: spoken questions and ASR sentences in generated accents and speakers (--voice-set
# random), plus a replay of the usual wide voice set; then their encoder states (CTranslate2 int8, as bundles run)
set -uo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/v19
t() { echo "[$(date +%T)] $*"; }
t start
$bin/llasm-train data instructions --out $W/r_q --count 16000 --eval-fraction 0 --multi-turn 0 --no-replies \
  --seed 81 --voice-set random --quiet > $W/r_q.log 2>&1; t "r_q rc=$?"
$bin/llasm-train data instructions --out $W/r_qe --count 8000 --eval-fraction 0 --multi-turn 0 --no-replies \
  --seed 91 --voice-set random --templates everyday --quiet > $W/r_qe.log 2>&1; t "r_qe rc=$?"
$bin/llasm-train data asr --out $W/r_asr --count 4000 --eval-fraction 0 --seed 3 --hibari-fraction 0.05 \
  --voice-set random --quiet > $W/r_asr.log 2>&1; t "r_asr rc=$?"
$bin/llasm-train data instructions --out $W/w_q --count 6000 --eval-fraction 0 --multi-turn 0 --no-replies \
  --seed 101 --voice-set wide --quiet > $W/w_q.log 2>&1; t "w_q rc=$?"
$bin/llasm-train data instructions --out $W/w_qe --count 3000 --eval-fraction 0 --multi-turn 0 --no-replies \
  --seed 111 --voice-set wide --templates everyday --quiet > $W/w_qe.log 2>&1; t "w_qe rc=$?"
$bin/llasm-train data asr --out $W/w_asr --count 2000 --eval-fraction 0 --seed 4 --hibari-fraction 0.05 \
  --voice-set wide --quiet > $W/w_asr.log 2>&1; t "w_asr rc=$?"
$bin/llasm-train data asr --out $W/asr_ev --count 300 --eval-fraction 0.9 --seed 12 --quiet > $W/asr_ev.log 2>&1; t "asr_ev rc=$?"
D=$W/r_q/train.jsonl,$W/r_qe/train.jsonl,$W/r_asr/train.jsonl,$W/w_q/train.jsonl,$W/w_qe/train.jsonl,$W/w_asr/train.jsonl,$W/asr_ev/eval.jsonl,$W/san_wide/train.jsonl
$bin/llasm-train cache-states --data $D --out $W/states --engine ct2 > $W/states.log 2>&1; t "states rc=$?"
touch $W/data1c.done
