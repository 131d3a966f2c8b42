#!/bin/bash
# session 15 probe 2: probe.sh's stage 1b (with the 24,000 general questions) run for 11,000 steps instead of 8,000, so
# that each clip is seen about as often as in session 14's shipped stage 1b (1.61 passes over 109,450 clips against
# 1.50 over 85,450): did the general set cost template hearing by diluting the other questions' steps?
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v15
t() { echo "[$(date +%T)] $*"; }
t start
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl,$W/questions-asr-wide2/train.jsonl,$W/questions-asr-wide3/train.jsonl,$W/questions-everyday/train.jsonl,$W/questions-general/train.jsonl"
$bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $G/s1b_general_11k --max-steps 11000 \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 > $G/s1b_general_11k.log 2>&1; t "s1b rc=$?"
V=""; for d in ${D//,/ }; do V="$V --ctc-vocab $d"; done
$bin/llasm-export bundle $G/s1b_general_11k/final $G/bundle_general_11k --force $V --system-prompt "Answer the question in one short sentence." \
  --ctc-topk 1 --transcribe-instruction "Repeat the sentence above word for word." --llm-quant q8_0 > $G/bundle_general_11k.log 2>&1; t "bundle rc=$?"
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
F2="/work/runs/v14/free2_unseen/eval.jsonl /work/runs/v14/free2_matched/eval.jsonl /work/runs/v14/free2_clean/eval.jsonl"
b=bundle_general_11k
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_${b}_nb1.json $Q 2>&1 | grep -v Warn > $G/hear_$b.log &
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free_${b}_nb1.json $F 2>&1 | grep -v Warn >> $G/hear_free_$b.log
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free2_${b}_nb1.json $F2 2>&1 | grep -v Warn >> $G/hear_free_$b.log
wait
t "hear done"
touch $G/probe2.done
