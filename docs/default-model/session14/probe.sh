#!/bin/bash
# session 14 probe: 24,000 spoken questions from the new `everyday` template set (other kinds and phrasings) in
# stage 1b, next to the 48,000 base-template ones; same 8,000 steps as the shipped stage 1b.
cd /work/main
bin=.venv/bin
W=/work/runs/e2e
G=/work/runs/v14
t() { echo "[$(date +%T)] $*"; }
t start
$bin/llasm-train data instructions --out $W/questions-everyday --count 24000 --eval-fraction 0 --multi-turn 0 \
  --no-replies --seed 71 --voice-set wide --templates everyday --quiet > $G/everyday.log 2>&1; t "data rc=$?"
for a in unseen matched clean; do
  $bin/llasm-train data convert docs/default-model/free-questions-2.jsonl --out $G/free2_$a --eval-fraction 0.99 \
    --seed 8 --eval-acoustics $a --quiet > $G/free2_$a.log 2>&1; t "free2 $a rc=$?"
done
F2="$G/free2_unseen/eval.jsonl $G/free2_matched/eval.jsonl $G/free2_clean/eval.jsonl"
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py /work/main/assistant/default_model 1 $G/hear_free2_shipped_nb1.json $F2 > $G/hear_free2_shipped_nb1.log 2>&1 &
base=$!
$bin/llasm-train cache-states --data $W/questions-everyday/train.jsonl --out $W/states --engine ct2 > $G/states.log 2>&1; t "states rc=$?"
wait $base; t "shipped free2 done"
D="$W/asr/train.jsonl,$W/asr-wide/train.jsonl,$W/questions-asr/train.jsonl,$W/questions-asr-wide/train.jsonl,$W/questions-asr-wide2/train.jsonl,$W/questions-asr-wide3/train.jsonl,$W/questions-everyday/train.jsonl"
$bin/llasm-train stage1 --recipe cpu --init $W/stage1/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $W/asr/eval.jsonl --state-cache $W/states --out $G/s1b_everyday --max-steps 8000 \
  --batch-size 16 --lr 1e-3 --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 --seed 0 > $G/s1b_everyday.log 2>&1; t "s1b rc=$?"
V=""; for d in ${D//,/ }; do V="$V --ctc-vocab $d"; done
$bin/llasm-export bundle $G/s1b_everyday/final $G/bundle_everyday --force $V --system-prompt "Answer the question in one short sentence." \
  --ctc-topk 1 --transcribe-instruction "Repeat the sentence above word for word." --llm-quant q8_0 > $G/bundle_everyday.log 2>&1; t "bundle rc=$?"
Q="/work/runs/v10/q200_unseen/eval.jsonl /work/runs/v10/q200_matched/eval.jsonl /work/runs/v10/q200_clean/eval.jsonl"
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
b=bundle_everyday
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_${b}_nb1.json $Q 2>&1 | grep -v Warn > $G/hear_$b.log &
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free_${b}_nb1.json $F 2>&1 | grep -v Warn >> $G/hear_free_$b.log
OMP_NUM_THREADS=1 $bin/python /work/runs/v11/hear.py $G/$b 1 $G/hear_free2_${b}_nb1.json $F2 2>&1 | grep -v Warn >> $G/hear_free_$b.log
wait
t "hear done"
touch $G/probe.done
