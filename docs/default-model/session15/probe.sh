#!/bin/bash
# session 15 probe: 24,000 spoken questions from the new `general` template set (knowledge, language, advice, ...)
# in stage 1b, next to the 72,000 base and everyday ones; same 8,000 steps as the shipped stage 1b. Hearing of the
# stage-1b bundle (no stage 2: the ctc head alone decides what is heard) on the 576 template, 231 old free and
# 351 blind free questions, as session 14's probe.
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v15
t() { echo "[$(date +%T)] $*"; }
t start
$bin/llasm-train data instructions --out $W/questions-general --count 24000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 81 --voice-set wide --templates general --quiet > $G/general.log 2>&1; t "data rc=$?"
$bin/llasm-train cache-states --data $W/questions-general/train.jsonl --out $W/states --engine ct2 > $G/states.log 2>&1; t "states rc=$?"
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl,$W/questions-asr-wide2/train.jsonl,$W/questions-asr-wide3/train.jsonl,$W/questions-everyday/train.jsonl,$W/questions-general/train.jsonl"
$bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $G/s1b_general --max-steps 8000 \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 > $G/s1b_general.log 2>&1; t "s1b rc=$?"
V=""; for d in ${D//,/ }; do V="$V --ctc-vocab $d"; done
$bin/llasm-export bundle $G/s1b_general/final $G/bundle_general --force $V --system-prompt "Answer the question in one short sentence." \
  --ctc-topk 1 --transcribe-instruction "Repeat the sentence above word for word." --llm-quant q8_0 > $G/bundle_general.log 2>&1; t "bundle rc=$?"
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
F2="/work/runs/v14/free2_unseen/eval.jsonl /work/runs/v14/free2_matched/eval.jsonl /work/runs/v14/free2_clean/eval.jsonl"
b=bundle_general
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_${b}_nb1.json $Q 2>&1 | grep -v Warn > $G/hear_$b.log &
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free_${b}_nb1.json $F 2>&1 | grep -v Warn >> $G/hear_free_$b.log
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free2_${b}_nb1.json $F2 2>&1 | grep -v Warn >> $G/hear_free_$b.log
wait
t "hear done"
touch $G/probe.done
