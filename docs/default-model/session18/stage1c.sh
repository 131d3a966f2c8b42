#!/bin/bash
# session 18 probe: stage 1c, 3,000 more steps from the shipped stage-1b adaptor at lr 3e-4 (same data)
cd /work/runs/v18/code
nice -n 10 /work/main/.venv/bin/llasm-train stage1 --recipe cpu --init /work/runs/e2e/stage1b/final --adaptor ctc --objective ctc --stack 4 \
  --hidden 2048 --ctc-shortlist --data "/work/runs/e2e/asr/train.jsonl,/work/runs/e2e/asr-wide/train.jsonl,/work/runs/e2e/questions-asr/train.jsonl,/work/runs/e2e/questions-asr-wide/train.jsonl,/work/runs/e2e/questions-asr-wide2/train.jsonl,/work/runs/e2e/questions-asr-wide3/train.jsonl,/work/runs/e2e/questions-everyday/train.jsonl" \
  --eval-data "/work/runs/e2e/asr/eval.jsonl" --state-cache "/work/runs/e2e/states" --out /work/runs/v18/stage1c --max-steps 3000 \
  --batch-size 16 --lr 3e-4 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 1
