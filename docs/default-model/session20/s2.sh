#!/bin/bash
# session 20: the recipe's stage 2 on the stage-1d adaptor, then the final bundle (steps 5 and 6 of
# scripts/default_model.sh with stage1d/final in place of stage1c/final; session 19's stage-2 clips and states)
set -uo pipefail
cd /work/main
bin=.venv/bin
V=/work/runs/v19
W=/work/runs/v20
E=$V/e2e
O=$W/e2e
T=$V/e2e_text
S1=$W/s1d/final
mkdir -p $O
t() { echo "[$(date +%T)] $*"; }
t start
sys_prompt="Answer the question in one short sentence."
instruction="Repeat the sentence above word for word."
vocab=()
for m in $T/asr/train.jsonl $T/asr-wide/train.jsonl $T/questions-asr/train.jsonl $T/questions-asr-wide/train.jsonl \
  $T/questions-asr-wide2/train.jsonl $T/questions-asr-wide3/train.jsonl $T/questions-everyday/train.jsonl \
  $V/r_q/train.jsonl $V/r_qe/train.jsonl $V/r_asr/train.jsonl $V/w_q/train.jsonl $V/w_qe/train.jsonl $V/w_asr/train.jsonl \
  $W/f_q/train.jsonl $W/f_qe/train.jsonl; do
  vocab+=(--ctc-vocab "$m"); done
ex() { $bin/llasm-export bundle "$1" "$2" --force "${vocab[@]}" --system-prompt "$sys_prompt" --ctc-topk 1 \
    --transcribe-instruction "$instruction" --llm-quant q8_0 "${@:3}"; }
ex $S1 $O/bundle-stage1 > $W/s2_export1.log 2>&1; t "export stage1 rc=$?"
asr_train=$E/asr/train.jsonl,$E/asr-wide/train.jsonl
$bin/llasm-train data mix --out $O/mix/train.jsonl --asr "$asr_train" --asr-count 2000 \
  --conversations $E/questions-train/train.jsonl --system-prompt "$sys_prompt" --transcribe-instruction "$instruction" \
  --heard-from $O/bundle-stage1 --seed 0 --quiet > $W/s2_mix.log 2>&1; t "mix rc=$?"
$bin/llasm-train data mix --out $O/mix/eval.jsonl --asr $E/asr/eval.jsonl --system-prompt "$sys_prompt" \
  --transcribe-instruction "$instruction" --seed 0 > $W/s2_mixe.log 2>&1; t "mix eval rc=$?"
$bin/llasm-train cache-states --data $O/mix/train.jsonl,$O/mix/eval.jsonl --out $V/states2 --engine ct2 > $W/s2_states.log 2>&1; t "states rc=$?"
$bin/llasm-train cache-heard --init $S1 --data $O/mix/train.jsonl,$O/mix/eval.jsonl --state-cache $V/states2 \
  --out $O/stage2-heard.json > $W/s2_heard.log 2>&1; t "heard rc=$?"
$bin/llasm-train stage2 --recipe cpu --init $S1 --topk 1 --llm-weights lora --lora-r 8 \
  --lora-targets q_proj,k_proj,v_proj,o_proj --loss kl --data $O/mix/train.jsonl \
  --eval-data $O/mix/eval.jsonl --heard-cache $O/stage2-heard.json --out $O/stage2 --batch-size 8 \
  --max-steps 480 --lr 5e-4 --warmup-steps 30 --log-every 10 --eval-every 160 --save-every 40 --seed 0 > $W/s2_train.log 2>&1; t "stage2 rc=$?"
ex $O/stage2/final $O/bundle --lora-adapter --lora-turns transcribe --hearing-n-best 3 --hearing-ngram 4 \
  --hearing-ngram-fusion 0.3 > $W/s2_export.log 2>&1; t "export rc=$?"
touch $W/s2.done
