#!/usr/bin/env bash
# Runs every voice-bench scenario of BENCHMARKS.md and appends each report as a JSON line to
# $OUT (default bench/results/<date>.jsonl); every command's `uptime` goes to $OUT.uptime.txt.
#
#   bench/run.sh                 # everything (~15 min on 2 cores)
#   bench/run.sh relay fanout    # only some parts: machine idle rooms relay fanout flood criterion lambda
#
# Needs: a release build (`cargo build --release -p voice-bench -p voice-lambda`) and the Node
# baseline (`cd bench/node-relay && npm ci`). IDLE_N overrides the idle sizes (default
# 1000,10000,19000: the fd hard limit of the reference box is 20 000 and could not be raised).
# PINNING (relay; default off,on) and BEFORE_EXE (an earlier target/release/voice-bench copied
# aside: measured as voice-before next to voice in every round) are optional.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/voice-bench}
OUT=${OUT:-bench/results/$(date +%Y%m%d-%H%M%S).jsonl}
IDLE_N=${IDLE_N:-1000,10000,19000}
REPEAT=${REPEAT:-3}
PINNING=${PINNING:-off,on}         # relay: unpinned and pinned (server on core 0, generator on 1)
BEFORE=${BEFORE_EXE:+--before-exe $BEFORE_EXE}   # an earlier voice-bench: voice-before in the same run
mkdir -p "$(dirname "$OUT")"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
parts=${*:-machine idle rooms relay fanout flood criterion lambda}

run() {
  echo "### $(date +%T) uptime:$(uptime | sed 's/.*load average//') :: $*" | tee -a "$OUT.uptime.txt"
  "$@" 2>&1 | tee -a "$OUT.uptime.txt"
  echo "### $(date +%T) done, uptime:$(uptime | sed 's/.*load average//')" | tee -a "$OUT.uptime.txt"
}

for p in $parts; do
  case $p in
    machine)
      run "$BIN" machine
      run rustc --version
      run node --version
      ;;
    idle)
      # shellcheck disable=SC2086
      run "$BIN" --json "$OUT" $BEFORE idle --n "$IDLE_N" --targets voice,node --concurrency 64
      ;;
    rooms)
      run "$BIN" --json "$OUT" rooms --rooms 100 --passive 3 --secs 10 --repeat "$REPEAT"
      ;;
    relay)
      # shellcheck disable=SC2086
      run "$BIN" --json "$OUT" $BEFORE relay --pinning "$PINNING" --targets voice,node,echo --rooms 20 --per-room 10 --secs 10 --repeat "$REPEAT"
      ;;
    fanout)
      run "$BIN" --json "$OUT" fanout --members 1000 --runs 20 --repeat "$REPEAT"
      ;;
    flood)
      for _ in $(seq "$REPEAT"); do
        run "$BIN" --json "$OUT" --pinning on flood --secs 15 --bystander-rate 40
      done
      ;;
    criterion)
      run cargo bench -p voice-adapters-memory --bench domain --locked -- --warm-up-time 1 --measurement-time 3
      ;;
    lambda)
      run cargo build --release -p voice-lambda --locked
      size=$(stat -c %s target/release/voice-lambda)
      rm -f /tmp/voice-lambda-bootstrap.zip
      cp target/release/voice-lambda /tmp/bootstrap
      (cd /tmp && zip -q -9 voice-lambda-bootstrap.zip bootstrap)
      echo "voice-lambda release binary (x86_64): $size bytes; zipped as bootstrap: $(stat -c %s /tmp/voice-lambda-bootstrap.zip) bytes" | tee -a "$OUT.uptime.txt"
      run "$BIN" --json "$OUT" lambda-cold --bootstrap target/release/voice-lambda --runs 20
      ;;
    *) echo "unknown part $p" >&2; exit 2 ;;
  esac
done
echo "results: $OUT"
