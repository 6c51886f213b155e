#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, OSH_FUZZ=ON, into build-fuzz) and
# fuzzes each for a bounded time with its flags (fuzz/README.md). Not part
# of CI, which only replays the committed corpora (ctest in the normal build).
# Usage: scripts/fuzz.sh [SECONDS_EACH (default 60)] [HARNESS...]
# New inputs go to ${OSH_FUZZ_WORK:-/tmp/osh-fuzz}/<harness>; a crash leaves
# crash-<sha1> in that directory and ends the script non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
ALL=(dns packet stack config hosts ssh_config state control frame)
if (($#)); then HARNESSES=("$@"); else HARNESSES=("${ALL[@]}"); fi
# The flags each harness needs: DNS datagrams up to the UDP maximum with a
# 1 s per-input timeout; the stack harness's inputs take longer.
declare -A FLAGS=(
  [dns]="-max_len=65507 -timeout=1"
  [packet]="-max_len=2048"
  [stack]="-max_len=4096 -timeout=30"
  [config]="-max_len=4096"
  [hosts]="-max_len=4096"
  [ssh_config]="-max_len=4096"
  [state]="-max_len=4096"
  [control]="-max_len=4096"
  [frame]="-max_len=70000"
)
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if [[ ! -f build-fuzz/build.ninja ]]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DOSH_FUZZ=ON
fi
cmake --build build-fuzz -j"$(nproc)" --target "${HARNESSES[@]/%/_fuzz}"
WORK="${OSH_FUZZ_WORK:-/tmp/osh-fuzz}"
for h in "${HARNESSES[@]}"; do
  [[ -n "${FLAGS[$h]:-}" ]] || { echo "fuzz.sh: unknown harness $h" >&2; exit 2; }
  mkdir -p "$WORK/$h/corpus"
  echo "== ${h}_fuzz for ${SECS} s"
  # shellcheck disable=SC2086
  (cd "$WORK/$h" && "$OLDPWD/build-fuzz/fuzz/${h}_fuzz" -max_total_time="$SECS" ${FLAGS[$h]} \
      -print_final_stats=1 "$WORK/$h/corpus" "$OLDPWD/fuzz/corpus/$h" 2>&1 | tail -6)
done
