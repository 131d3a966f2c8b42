#!/bin/bash
# session 13: after the recipe (scripts/default_model.sh /work/runs/e2e, STAGE1B_STEPS 8000): install the bundle,
# the 576-question evaluation (greedy, 8, 16), the bench alone, then the ASR-data probe
cd /work/main
G=/work/runs/v13
t() { echo "[$(date +%T)] $*"; }
until grep -q "^rc=" /work/runs/e2e13.log; do sleep 20; done
t "recipe $(grep "^rc=" /work/runs/e2e13.log)"; grep -q "^rc=0" /work/runs/e2e13.log || exit 1
rm -rf assistant/default_model && cp -r /work/runs/e2e/bundle assistant/default_model
bash $G/ev.sh > $G/ev.log 2>&1; t ev
bash $G/ev16.sh > $G/ev16.log 2>&1; t ev16
bash $G/bench.sh > $G/bench.log 2>&1; t bench
bash $G/probe.sh > $G/probe.log 2>&1; t probe
