#!/bin/bash
# session 9: stage 2 again from the new stage 1b (stage1qw), then the bundle
set -euo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs
V=$W/v5
G=$W/v9
t() { echo "[$(date +%T)] $*"; }
t start
sys_prompt="Answer the question in one short sentence."
instruction="Repeat the sentence above word for word."
export_bundle() {
  $bin/llasm-export bundle "$1" "$2" --force --ctc-vocab $W/asr8k/train.jsonl \
    --ctc-vocab $W/asr_wide/train.jsonl --ctc-vocab $V/q_asr/train.jsonl --ctc-vocab $G/q_wide/train.jsonl \
    --system-prompt "$sys_prompt" --ctc-topk 1 --transcribe-instruction "$instruction" --llm-quant q8_0 "${@:3}"
}
[ -f $G/bundle-stage1qw/bundle.json ] || export_bundle $G/stage1qw/final $G/bundle-stage1qw; t bundle-stage1qw
$bin/llasm-train data mix --out $G/mix/train.jsonl --asr $W/asr8k/train.jsonl,$W/asr_wide/train.jsonl \
  --asr-count 2000 --conversations $V/q_train/train.jsonl --system-prompt "$sys_prompt" \
  --transcribe-instruction "$instruction" --heard-from $G/bundle-stage1qw --seed 0 --quiet; t mix
$bin/llasm-train cache-heard --init $G/stage1qw/final --data $G/mix/train.jsonl,$W/s2mix/eval.jsonl \
  --state-cache $W/asr8k_states --out $G/heard-qw.json 2> $G/heard-qw.err; t heard
$bin/llasm-train stage2 --recipe cpu --init $G/stage1qw/final --topk 1 --llm-weights lora --lora-r 8 \
  --lora-targets q_proj,k_proj,v_proj,o_proj --loss kl --data $G/mix/train.jsonl \
  --eval-data $W/s2mix/eval.jsonl --heard-cache $G/heard-qw.json --out $G/s2qw --batch-size 8 \
  --max-steps 480 --lr 5e-4 --warmup-steps 30 --log-every 10 --eval-every 160 \
  --save-every 40 --mixed-precision no --seed 0 2> $G/s2qw.err; t stage2
export_bundle $G/s2qw/final $G/bundle-qw --lora-adapter; t bundle
touch $G/pipe2.done
