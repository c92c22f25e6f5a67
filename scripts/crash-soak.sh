#!/usr/bin/env bash
# Crash soak: the crash test (tests/integration/test_crash.c) with many more
# SIGKILLs than CI's 10. It builds churnwatch and the tests, then runs
# test_crash with CW_CRASH_KILLS=N and a seed, so a failure can be replayed
# with the same seed. Each kill costs a few seconds (start, group join, a
# random 0.2-1.5 s of work), so 200 kills take roughly 15-25 minutes, per
# mode: test_crash runs the event-time test and the wall-clock one
# (CW_SOAK_FILTER='crash/*wall*' or 'crash/sigkill_at_random_moments' runs one).
#
#   scripts/crash-soak.sh [KILLS] [SEED]       defaults: 200 kills, seed = time
#   CW_SOAK_BUILD=build-asan CW_SOAK_CMAKE="-DCW_SANITIZE=ON" scripts/crash-soak.sh 50
#                                              soak the sanitizer build
set -euo pipefail
cd "$(dirname "$0")/.."

kills=${1:-200}
seed=${2:-$(($(date +%s) % 2147483647))}
build=${CW_SOAK_BUILD:-build}
case "$kills" in '' | *[!0-9]*) echo "crash-soak: KILLS must be a number" >&2; exit 2 ;; esac
case "$seed" in '' | *[!0-9]*) echo "crash-soak: SEED must be a number" >&2; exit 2 ;; esac

# shellcheck disable=SC2086 # CW_SOAK_CMAKE holds several arguments on purpose
bash scripts/build.sh "$build" ${CW_SOAK_CMAKE:-}

echo "crash soak: $kills kills, seed $seed (replay: scripts/crash-soak.sh $kills $seed)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
start=$(date +%s)
status=0
CW_CRASH_KILLS=$kills CW_CRASH_SEED=$seed \
  "$build/tests/test_crash" --jobs 1 --verbose --timeout $((kills * 60 + 1800)) \
  ${CW_SOAK_FILTER:+--filter "$CW_SOAK_FILTER"} || status=$?
echo "crash soak: $( [ "$status" = 0 ] && echo PASSED || echo FAILED ) after $(($(date +%s) - start)) s" \
  "($kills kills, seed $seed)"
exit "$status"
