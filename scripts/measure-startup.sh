#!/usr/bin/env bash
# Start-up time of `flatstack serve` to its first answered request, and its resident
# memory once the demo data centre exists. Usage: scripts/measure-startup.sh [runs]
# Builds the release binary first. Prints one line per run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --quiet -p flatstack
bin=target/release/flatstack
port=18765
starts=(); rss=()
for i in $(seq "$runs"); do
  dir=$(mktemp -d)
  t0=$(date +%s%N)
  "$bin" serve --demo --data-dir "$dir" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/v1/zones" >/dev/null; do sleep 0.002; done
  t1=$(date +%s%N)
  # The demo is done when its last resource, the offering, exists.
  until [ "$(curl -sf "http://127.0.0.1:$port/v1/instance-offerings" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')" = 1 ]; do sleep 0.01; done
  kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill -INT "$pid"; wait "$pid" || true
  rm -rf "$dir"
  ms=$(( (t1 - t0) / 1000000 ))
  echo "run $i: first answer after ${ms} ms, RSS with the demo data centre ${kb} KiB"
  starts+=("$ms"); rss+=("$kb")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median: first answer $(median "${starts[@]}") ms, RSS $(median "${rss[@]}") KiB"
