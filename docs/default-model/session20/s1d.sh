#!/bin/bash
# session 20: stage 1d from the shipped (stage-1c) adaptor on the foreign-accent data plus a replay of stage 1c's
# clips, then export (the shipped vocabulary and 4-gram) and dev-set hearing. s1d.sh NAME STEPS LR
set -uo pipefail
cd /work/main
V=/work/runs/v19
W=/work/runs/v20
name=$1; steps=$2; lr=$3
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/data1d.done ]; do sleep 20; done
if [ ! -f $W/states_all/index.json ]; then  # one state cache over both sessions' clips (links to the shards)
  .venv/bin/python - <<'PY'
import json, os
from pathlib import Path
out = Path("/work/runs/v20/states_all"); out.mkdir(exist_ok=True)
clips = {}
for tag, root in (("v19", Path("/work/runs/v19/states")), ("v20", Path("/work/runs/v20/states"))):
    idx = json.loads((root / "index.json").read_text())
    for shard in root.glob("shard-*.safetensors"):
        link = out / f"{tag}-{shard.name}"
        if not link.exists():
            os.symlink(shard, link)
    clips |= {k: [f"{tag}-{v[0]}", *v[1:]] for k, v in idx["clips"].items()}
    meta = {k: v for k, v in idx.items() if k != "clips"}
(out / "index.json").write_text(json.dumps(meta | {"clips": clips}))
print(len(clips), "clips")
PY
fi
D=$W/f_q/train.jsonl,$W/f_qe/train.jsonl  # not f_asr: its sentences add 768 tokens to the shortlist (3 MB over 25 MB)
for m in r_q r_qe r_asr w_q w_qe w_asr; do D=$D,$V/$m/train.jsonl; done
t "train $name"
.venv/bin/llasm-train stage1 --recipe cpu --init $V/s1c/final --adaptor ctc --objective ctc --stack 4 --hidden 2048 \
  --ctc-shortlist --data "$D" --eval-data $V/asr_ev/eval.jsonl --state-cache $W/states_all --out $W/$name \
  --max-steps $steps --batch-size 16 --lr $lr --warmup-steps 20 --log-every 10 --eval-every 500 --save-every 50 \
  --seed 0 > $W/$name.log 2>&1; t "train rc=$?"
extra=()
for m in r_q r_qe r_asr w_q w_qe w_asr; do extra+=($V/$m/train.jsonl); done
for m in f_q f_qe; do extra+=($W/$m/train.jsonl); done
$V/export.sh $W/$name/final $W/bundle_$name "${extra[@]}" > $W/export_$name.log 2>&1; t "export rc=$?"
OMP_NUM_THREADS=1 .venv/bin/python $V/hear.py $W/bundle_$name $W/hear_tdev_$name.json 3,0,0.3 1,0,0 -- $V/tdev/eval.jsonl > $W/hear_tdev_$name.log 2>&1 &
OMP_NUM_THREADS=1 .venv/bin/python $V/hear.py $W/bundle_$name $W/hear_free_$name.json 3,0,0.3 1,0,0 -- $V/free_unseen/eval.jsonl $V/free_matched/eval.jsonl $V/free_clean/eval.jsonl > $W/hear_free_$name.log 2>&1
wait
t "hear done"
cat $W/hear_tdev_$name.log $W/hear_free_$name.log
