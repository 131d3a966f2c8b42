#!/bin/bash
# session 14: the recipe with step 2h (the everyday questions) from stage 1b on. Stage 1b is the probe's run
# (probe.sh: the recipe's stage-1b command, word for word); the recipe resumes it at step 8,000 and goes on:
# stage-1 bundle, stage-2 mix, heard cache, stage 2, the bundle, its evaluation. Then install, evaluate, bench.
cd /work/main
W=/work/runs/e2e
G=/work/runs/v14
t() { echo "[$(date +%T)] $*"; }
t start
mkdir -p /work/runs/e2e_s13
for d in stage1b bundle-stage1 mix stage2-heard.json stage2 bundle eval eval-matched eval-clean; do
  [ -e $W/$d ] && mv $W/$d /work/runs/e2e_s13/
done
cp -r $G/s1b_everyday $W/stage1b
scripts/default_model.sh $W > /work/runs/e2e14.log 2>&1; rc=$?; echo "rc=$rc" >> /work/runs/e2e14.log; t "recipe rc=$rc"
[ $rc = 0 ] || exit 1
rm -rf assistant/default_model && cp -r $W/bundle assistant/default_model
bash $G/ev.sh > $G/ev.log 2>&1; t ev
bash $G/ev16.sh > $G/ev16.log 2>&1; t ev16
bash $G/bench.sh > $G/bench.log 2>&1; t bench
.venv/bin/python docs/default-model/session11/grass.py.txt assistant/default_model > $G/grass.log 2>&1; t "grass rc=$?"
F2="$G/free2_unseen/eval.jsonl $G/free2_matched/eval.jsonl $G/free2_clean/eval.jsonl"
OMP_NUM_THREADS=1 .venv/bin/python /work/runs/v11/hear.py assistant/default_model 16 $G/hear_free2_shipped14_nb16.json $F2 2>&1 | grep -v Warn > $G/hear_free2_nb16.log &
F="/work/runs/v11/free_unseen/eval.jsonl /work/runs/v11/free_matched/eval.jsonl /work/runs/v11/free_clean/eval.jsonl"
OMP_NUM_THREADS=1 .venv/bin/python /work/runs/v11/hear.py assistant/default_model 16 $G/hear_free_shipped14_nb16.json $F 2>&1 | grep -v Warn > $G/hear_free_nb16.log
wait; t "free nb16"
touch $G/ship.done
