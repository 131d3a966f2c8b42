#!/bin/bash
# session 21: the recipe run's steps (timestamped from its bash -x trace by a tail monitor) as the steps.tsv that
# scripts/default_model.sh now writes itself; the first step's start is the script's own start= line.
L=/work/runs/v21/steps.log; O=/work/runs/v21/recipe/steps.tsv
start=$(grep -m1 "^+ start=" /work/runs/v21/recipe.log | cut -d= -f2)
{ printf '%s\t# run starts\n' "$start"
  first=1
  while IFS= read -r line; do
    t=${line%% *}; cmd=${line#* + }
    full=$(grep -a -m1 -F -- "+ $cmd" /work/runs/v21/recipe.log | tr -d '\r'); [ -n "$full" ] && cmd=${full#+ }  # the monitor kept 200 characters
    e=$(date -d "2026-11-28 $t" +%s); [ $first = 1 ] && e=$start; first=0
    cmd=${cmd//.venv\/bin\//\$bin/}; cmd=${cmd//\/work\/runs\/v21\/recipe\//\$work/}
    case "$cmd" in \$bin/llasm-export*) continue;;  # traced inside export_bundle, one step with it
      OMP_NUM_THREADS=1) continue;;  # bash -x traces the assignment on a line of its own
      echo*) continue;;
      *"recipe done"*) printf '%s\t# run ends\n' "$e";; echo*) ;; *) printf '%s\t%s\n' "$e" "$cmd";; esac
  done < "$L"
  if [ -n "${END:-}" ]; then printf "%s\t# run ends\n" "$END"; fi
} > "$O"
