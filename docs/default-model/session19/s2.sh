#!/bin/bash
# session 19: the recipe's stage 2 on the stage-1c adaptor, then the final bundle (steps 5 and 6 of
# scripts/default_model.sh with stage1c/final in place of stage1b/final)
set -uo pipefail
cd /work/main
bin=.venv/bin
W=/work/runs/v19
E=$W/e2e
T=$W/e2e_text
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/s2data.done ]; do sleep 20; done
t start
sys_prompt="Answer the question in one short sentence."
instruction="Repeat the sentence above word for word."
vocab=()
for m in $T/asr/train.jsonl $T/asr-wide/train.jsonl $T/questions-asr/train.jsonl $T/questions-asr-wide/train.jsonl \
  $T/questions-asr-wide2/train.jsonl $T/questions-asr-wide3/train.jsonl $T/questions-everyday/train.jsonl \
  $W/r_q/train.jsonl $W/r_qe/train.jsonl $W/r_asr/train.jsonl $W/w_q/train.jsonl $W/w_qe/train.jsonl $W/w_asr/train.jsonl; do
  vocab+=(--ctc-vocab "$m"); done
ex() { $bin/llasm-export bundle "$1" "$2" --force "${vocab[@]}" --system-prompt "$sys_prompt" --ctc-topk 1 \
    --transcribe-instruction "$instruction" --llm-quant q8_0 "${@:3}"; }
ex $W/s1c/final $E/bundle-stage1 > $W/s2_export1.log 2>&1; t "export stage1 rc=$?"
asr_train=$E/asr/train.jsonl,$E/asr-wide/train.jsonl
$bin/llasm-train data mix --out $E/mix/train.jsonl --asr "$asr_train" --asr-count 2000 \
  --conversations $E/questions-train/train.jsonl --system-prompt "$sys_prompt" --transcribe-instruction "$instruction" \
  --heard-from $E/bundle-stage1 --seed 0 --quiet > $W/s2_mix.log 2>&1; t "mix rc=$?"
$bin/llasm-train data mix --out $E/mix/eval.jsonl --asr $E/asr/eval.jsonl --system-prompt "$sys_prompt" \
  --transcribe-instruction "$instruction" --seed 0 > $W/s2_mixe.log 2>&1; t "mix eval rc=$?"
$bin/llasm-train cache-states --data $E/mix/train.jsonl,$E/mix/eval.jsonl --out $W/states2 --engine ct2 > $W/s2_states.log 2>&1; t "states rc=$?"
$bin/llasm-train cache-heard --init $W/s1c/final --data $E/mix/train.jsonl,$E/mix/eval.jsonl --state-cache $W/states2 \
  --out $E/stage2-heard.json > $W/s2_heard.log 2>&1; t "heard rc=$?"
$bin/llasm-train stage2 --recipe cpu --init $W/s1c/final --topk 1 --llm-weights lora --lora-r 8 \
  --lora-targets q_proj,k_proj,v_proj,o_proj --loss kl --data $E/mix/train.jsonl \
  --eval-data $E/mix/eval.jsonl --heard-cache $E/stage2-heard.json --out $E/stage2 --batch-size 8 \
  --max-steps 480 --lr 5e-4 --warmup-steps 30 --log-every 10 --eval-every 160 --save-every 40 --seed 0 > $W/s2_train.log 2>&1; t "stage2 rc=$?"
ex $E/stage2/final $E/bundle --lora-adapter --lora-turns transcribe --hearing-n-best 3 --hearing-ngram 4 \
  --hearing-ngram-fusion 0.3 > $W/s2_export.log 2>&1; t "export rc=$?"
touch $W/s2.done
