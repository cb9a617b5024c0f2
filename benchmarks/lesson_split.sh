#!/bin/bash
# The lesson's recipe in one piece (cnnlab's default: exact) against --batch-split 2 (each batch of 32
# in two parts of 16 on two threads; float32 summation order differs), whole processes, alternated.
# usage: bash benchmarks/lesson_split.sh DATA_DIR [REPEATS]   -> prints one line per run
DATA=$1; N=${2:-2}; TMP=$(mktemp -d)
for i in $(seq "$N"); do
  for split in 1 2; do
    rm -rf "$TMP/run"
    s=$(date +%s.%N)
    out=$(python -m cnnlab train --data-dir "$DATA" --no-download --no-progress --run-dir "$TMP/run" --batch-split $split | tail -1)
    e=$(date +%s.%N)
    echo "batch_split=$split wall $(echo "$e - $s" | bc) s  $out  (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
rm -rf "$TMP"
