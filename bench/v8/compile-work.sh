#!/bin/sh
# V8's compile work for each module given, in instructions (callgrind), minus node compiling an
# empty module: the part of an Envoy sidecar's start-up CPU that the module's code costs, as a
# count that does not move with the machine's load (BENCHMARKS.md, "Start-up and module size").
# Usage: bench/v8/compile-work.sh MODULE.wasm [MODULE.wasm ...]
set -eu
here=$(dirname "$0")
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    node --no-liftoff --no-wasm-lazy-compilation --single-threaded "$here/compile.mjs" "$@" 2>&1 |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
empty=$(count)
printf '%-60s %12s %14s\n' module bytes "V8 compile (G instructions)"
for m in "$@"; do
  n=$(count "$m")
  printf '%-60s %12s %14s\n' "$m" "$(stat -c %s "$m")" "$(echo "$n $empty" | awk '{printf "%.3f", ($1-$2)/1e9}')"
done
echo "(node compiling an empty module: $(echo "$empty" | awk '{printf "%.3f", $1/1e9}') G, subtracted)"
