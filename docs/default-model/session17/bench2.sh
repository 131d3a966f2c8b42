#!/bin/bash
# session 17, alone (commit e90e2ca): one-shot default (3 transcripts, merged scoring) against greedy, 2 threads;
# hands-free replay: fusion 0.5 + 16 transcripts against session 16's 32 plain
cd /work/runs/v17/code
G=/work/runs/v17
py=/work/main/.venv/bin/python
la() { $py -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" "$@"; }
t() { echo "[$(date +%T)] $*"; }
for r in a b; do
  la bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --out $G/bench2_default_$r > $G/bench2_default_$r.log 2>&1; t "default $r rc=$?"
  la bench /work/runs/e2e_s10/eval/latency_clips --threads 2 --n-best 1 --out $G/bench2_nb1_$r > $G/bench2_nb1_$r.log 2>&1; t "nb1 $r rc=$?"
done
$py scripts/handsfree_ab.py /work/runs/v14/talk.wav --threads 2 --repeats 1 --n-best 16 --fusion 0.5 > $G/hf_fu16.log 2>&1; t "handsfree fusion rc=$?"
$py scripts/handsfree_ab.py /work/runs/v14/talk.wav --threads 2 --repeats 1 --n-best 32 --fusion 0 > $G/hf_nb32.log 2>&1; t "handsfree nb32 rc=$?"
touch $G/bench2.done
