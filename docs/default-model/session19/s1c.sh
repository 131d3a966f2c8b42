#!/bin/bash
# session 19: stage 1c from the shipped adaptor on the generated-accent data (+ wide replay), then export and
# dev-set hearing. s1c.sh NAME STEPS LR MANIFESTS
set -uo pipefail
cd /work/main
W=/work/runs/v19
name=$1; steps=$2; lr=$3; data=$4
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/data1c.done ]; do sleep 20; done
t "train $name"
.venv/bin/llasm-train stage1 --recipe cpu --init $W/ship_ckpt --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$data" --eval-data $W/asr_ev/eval.jsonl --state-cache $W/states --out $W/$name \
  --max-steps $steps --batch-size 16 --lr $lr --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 \
  --seed 0 > $W/$name.log 2>&1; t "train rc=$?"
extra=""  # the shipped vocabulary and 4-gram: the adaptor alone changes
$W/export.sh $W/$name/final $W/bundle_$name $extra > $W/export_$name.log 2>&1; t "export rc=$?"
$W/hearbase.sh $W/bundle_$name $name; t "hear done"
cat $W/hear_tdev_$name.log $W/hear_free_$name.log
