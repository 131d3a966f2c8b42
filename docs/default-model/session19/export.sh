#!/bin/bash
# session 19: export a stage-1 checkpoint as the recipe's final export does (vocab + 4-gram from the recipe's
# stage-1 transcripts, rebuilt as text by texts_only.py, plus EXTRA manifests), without the LoRA
# export.sh CKPT OUT [EXTRA_MANIFEST ...]
cd /work/main
T=/work/runs/v19/e2e_text
ck=$1; out=$2; shift 2
vocab=()
for m in $T/asr/train.jsonl $T/asr-wide/train.jsonl $T/questions-asr/train.jsonl $T/questions-asr-wide/train.jsonl \
  $T/questions-asr-wide2/train.jsonl $T/questions-asr-wide3/train.jsonl $T/questions-everyday/train.jsonl "$@"; do
  vocab+=(--ctc-vocab "$m"); done
.venv/bin/llasm-export bundle "$ck" "$out" --force "${vocab[@]}" --system-prompt "Answer the question in one short sentence." \
  --ctc-topk 1 --transcribe-instruction "Repeat the sentence above word for word." --llm-quant q8_0 \
  --hearing-n-best 3 --hearing-ngram 4 --hearing-ngram-fusion 0.3
