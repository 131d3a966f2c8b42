#!/bin/bash
# session 12: a stage-1b
# probe with 8,000 steps instead of 5,000 on the same 48,000 questions, and its hearing
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v12
t() { echo "[$(date +%T)] $*"; }
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl,$W/questions-asr-wide2/train.jsonl,$W/questions-asr-wide3/train.jsonl"
$bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $G/s1b_q48k_8000 --max-steps 8000 \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 > $G/s1b_8000.log 2>&1; t "s1b 8000 rc=$?"
$bin/llasm-export bundle $G/s1b_q48k_8000/final $G/bundle_q48k_8000 --force --ctc-vocab $W/asr/train.jsonl --ctc-vocab $W/asr-wide/train.jsonl \
  --ctc-vocab $W/questions-asr/train.jsonl --ctc-vocab $W/questions-asr-wide/train.jsonl --ctc-vocab $W/questions-asr-wide2/train.jsonl \
  --ctc-vocab $W/questions-asr-wide3/train.jsonl --system-prompt "Answer the question in one short sentence." --ctc-topk 1 \
  --transcribe-instruction "Repeat the sentence above word for word." --llm-quant q8_0 > $G/bundle_8000.log 2>&1; t "bundle rc=$?"
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/bundle_q48k_8000 1 $G/hear_q48k_8000_nb1.json $Q 2>&1 | grep -v Warn &
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/bundle_q48k_8000 1 $G/hear_free_q48k_8000_nb1.json $F 2>&1 | grep -v Warn
wait; t done
touch $G/probe8k.done
