#!/bin/bash
# session 21: the default-model recipe end to end from an empty work folder, from a git worktree of fc1040d (the
# two-clips-at-once encoder; main's later commits only add steps.tsv), its code imported ahead of the editable
# install, and a monitor that timestamps each step of the bash -x trace as it arrives.
git -C /work/main worktree add /work/recipe21 fc1040d && ln -s /work/main/.venv /work/recipe21/.venv
cd /work/recipe21
PYTHONPATH=/work/recipe21 setsid nohup bash -x scripts/default_model.sh /work/runs/v21/recipe \
  > /work/runs/v21/recipe.log 2>&1 < /dev/null &
tail -n +1 -F /work/runs/v21/recipe.log | grep --line-buffered "^+ \.venv\|^+ cat\|^+ export_bundle\|^+ OMP\|^+ wait\|^+ echo\|recipe done" \
  | while IFS= read -r l; do echo "$(date +%H:%M:%S) ${l:0:200}"; done > /work/runs/v21/steps.log
