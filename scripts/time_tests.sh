#!/usr/bin/env bash
# Time test files one at a time, single process (no xdist): wall and CPU seconds (user + sys,
# subprocesses included) per file, with the load average before and after each, and pytest's
# --durations. Used to measure the suite's slow files before / after a change:
#   scripts/time_tests.sh [--root DIR] [--log FILE] FILE_OR_DIR...
# --root runs another checkout's tests (PYTHONPATH=DIR, so its own gaf_trt is imported).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
log=/dev/stdout
while [[ $# -gt 0 ]]; do
  case "$1" in
    --root) root="$(cd "$2" && pwd)"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    *) break ;;
  esac
done
cd "$root"
for f in "$@"; do
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$( { /usr/bin/time -f "TIME %e %U %S" env PYTHONPATH="$root" nice -n 10 python3 -m pytest \
           -q -p no:cacheprovider --durations=15 "$f" 2>&1; } 2>&1 )
  after=$(cut -d' ' -f1-3 /proc/loadavg)
  read -r _ wall user sys <<<"$(grep '^TIME ' <<<"$out" | tail -1)"
  summary=$(grep -E '^[0-9]+ (passed|failed|skipped|error)|^=+ .*(passed|failed|error).* =+$' \
            <<<"$out" | tail -1)
  cpu=$(python3 -c "print(f'{$user + $sys:.1f}')")
  {
    echo "== $f: wall ${wall}s cpu ${cpu}s | load ${before} -> ${after} | ${summary}"
    sed -n '/slowest 15 durations/,/^$/p' <<<"$out" | sed -n '2,16p'
    grep -E '^(FAILED|ERROR) ' <<<"$out"
  } >>"$log"
done
