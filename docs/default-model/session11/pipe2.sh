#!/bin/bash
# session 11: stage 2 from the 24,000-question stage 1b (bf16 autocast on AMX: the cpu recipe's "auto"), then the bundle
set -euo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v11
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $G/pipe.done ]; do sleep 10; done
t start
sys_prompt="Answer the question in one short sentence."
instruction="Repeat the sentence above word for word."
export_bundle() {
  $bin/llasm-export bundle "$1" "$2" --force --ctc-vocab $W/asr/train.jsonl --ctc-vocab $W/asr-wide/train.jsonl \
    --ctc-vocab $W/questions-asr/train.jsonl --ctc-vocab $W/questions-asr-wide/train.jsonl \
    --ctc-vocab $G/q_wide2/train.jsonl --system-prompt "$sys_prompt" --ctc-topk 1 \
    --transcribe-instruction "$instruction" --llm-quant q8_0 "${@:3}"
}
mkdir -p $G/mix
$bin/llasm-train data mix --out $G/mix/train.jsonl --asr $W/asr/train.jsonl,$W/asr-wide/train.jsonl \
  --asr-count 2000 --conversations $W/questions-train/train.jsonl --system-prompt "$sys_prompt" \
  --transcribe-instruction "$instruction" --heard-from $G/bundle_q24k --seed 0 --quiet; t mix
$bin/llasm-train cache-heard --init $G/s1b_q24k/final --data $G/mix/train.jsonl,$W/mix/eval.jsonl \
  --state-cache $W/states --out $G/heard_q24k.json 2> $G/heard.err; t heard
$bin/llasm-train stage2 --recipe cpu --init $G/s1b_q24k/final --topk 1 --llm-weights lora --lora-r 8 \
  --lora-targets q_proj,k_proj,v_proj,o_proj --loss kl --data $G/mix/train.jsonl \
  --eval-data $W/mix/eval.jsonl --heard-cache $G/heard_q24k.json --out $G/s2_q24k --batch-size 8 \
  --max-steps 480 --lr 5e-4 --warmup-steps 30 --log-every 10 --eval-every 160 \
  --save-every 40 --seed 0 2> $G/s2.err; t stage2
export_bundle $G/s2_q24k/final $G/bundle_q24k_s2 --lora-adapter --lora-turns transcribe; t bundle
touch $G/pipe2.done
