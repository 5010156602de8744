#!/usr/bin/env bash
# The predecessor's dispatch design, kept as the benchmark's baseline (diag-distill bench):
# every second, each idle slot gets the next report number from a counter file and a new
# Python process that runs that one report (`python -m distill run-one`) in the background.
# Unlike the predecessor it opens no tmux session per report, which only makes it faster.
#
# usage: predecessor_dispatch.sh INPUT_DIR OUTPUT_DIR FIRST LAST SLOTS WORK_DIR [PYTHON]
set -u

input_dir=$1 output_dir=$2 next=$3 last=$4 slots=$5 work_dir=$6 python=${7:-python3}
mkdir -p "$work_dir"
counter="$work_dir/current_diag_processing_number.txt"
declare -a pids=()

while :; do
  busy=0
  for ((slot = 1; slot <= slots; slot++)); do
    pid=${pids[slot]:-}
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      busy=$((busy + 1))
      continue
    fi
    while ((next <= last)) && [[ ! -e "$input_dir/report_$next.txt" ]]; do
      next=$((next + 1))
    done
    if ((next > last)); then
      pids[slot]=""
      continue
    fi
    "$python" -m distill run-one "$input_dir/report_$next.txt" --api "api_$slot" \
      --output-dir "$output_dir" >>"$work_dir/api_$slot.log" 2>&1 &
    pids[slot]=$!
    next=$((next + 1))
    echo "$next" >"$counter"
    busy=$((busy + 1))
  done
  if ((busy == 0 && next > last)); then
    break
  fi
  sleep 1
done
wait
