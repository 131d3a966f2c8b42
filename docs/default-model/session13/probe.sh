#!/bin/bash
# session 13 probe: do 16,000 more general ASR clips (Debian sentences, wide voice set) in stage 1b help free
# phrasing? Same stage 1b as the shipped one (8,000 steps), with asr-wide2 added to its data.
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v13
t() { echo "[$(date +%T)] $*"; }
t start
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
# the shipped bundle (session 13) on the free questions, the LLM rescoring 16 (greedy: session 12's probe, same head)
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py /work/main/assistant/default_model 16 $G/hear_free_shipped_nb16.json $F > $G/hear_free_shipped_nb16.log 2>&1 &
free=$!
$bin/llasm-train data asr --out $G/asr-wide2 --count 16000 --seed 3 --eval-fraction 0.02 --hibari-fraction 0.05 \
  --voice-set wide --quiet > $G/asr-wide2.log 2>&1; t "data rc=$?"
$bin/llasm-train cache-states --data $G/asr-wide2/train.jsonl --out $W/states --engine ct2 > $G/states.log 2>&1; t "states rc=$?"
wait $free; t "free nb16 done"
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$G/asr-wide2/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl,$W/questions-asr-wide2/train.jsonl,$W/questions-asr-wide3/train.jsonl"
$bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $G/s1b_asr16k --max-steps 8000 \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 > $G/s1b_asr16k.log 2>&1; t "s1b rc=$?"
V=""; for d in ${D//,/ }; do V="$V --ctc-vocab $d"; done
$bin/llasm-export bundle $G/s1b_asr16k/final $G/bundle_asr16k --force $V --system-prompt "Answer the question in one short sentence." \
  --ctc-topk 1 --transcribe-instruction "Repeat the sentence above word for word." --llm-quant q8_0 > $G/bundle_asr16k.log 2>&1; t "bundle rc=$?"
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
for b in bundle_asr16k; do
  OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_${b}_nb1.json $Q 2>&1 | grep -v Warn &
  OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free_${b}_nb1.json $F 2>&1 | grep -v Warn
  wait
done
t "hear done"
touch $G/probe.done
