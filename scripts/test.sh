#!/usr/bin/env bash
# The whole test suite, as CI runs it: install deps, check formatting, build
# (optimised, and under AddressSanitizer + UndefinedBehaviorSanitizer) and run
# every unit and integration test with ctest, in both builds. Integration
# tests start their own redis-server and embedded broker and stop them.
#
# The two ctest runs go side by side: the integration tests mostly wait
# (group joins, idle timeouts, restarts), so on 2 cores this halves the wall
# time. Each run's log is printed when both are done.
#   scripts/test.sh                        everything
#   CW_TEST_LABEL=unit scripts/test.sh     only one label (unit|integration)
#   CW_TEST_SERIAL=1 scripts/test.sh       one ctest run after the other
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== clang-format check"
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.c' -o -name '*.h')
# shellcheck disable=SC2086 # one argument per file
if ! clang-format --dry-run -Werror $files; then
  echo "clang-format: run 'clang-format -i' on the files above" >&2
  exit 1
fi

label_args=()
[ -n "${CW_TEST_LABEL:-}" ] && label_args=(-L "$CW_TEST_LABEL")

echo "== build (RelWithDebInfo)"
bash scripts/build.sh build
echo "== build (ASan + UBSan)"
bash scripts/build.sh build-asan -DCW_SANITIZE=ON

logs=$(mktemp -d /tmp/churnwatch-test.XXXXXX)
run_suite() { # name dir
  local name=$1 dir=$2 start=$SECONDS rc=0
  if [ "$name" = sanitizers ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  fi
  (cd "$dir" && ctest --output-on-failure "${label_args[@]}") >"$logs/$name.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - start))" >"$logs/$name.rc"
}

echo "== tests (optimised build and sanitizer build)"
if [ -n "${CW_TEST_SERIAL:-}" ]; then
  run_suite optimised build
  run_suite sanitizers build-asan
else
  run_suite optimised build &
  p1=$!
  run_suite sanitizers build-asan &
  p2=$!
  wait "$p1" "$p2"
fi

status=0
for name in optimised sanitizers; do
  read -r rc secs <"$logs/$name.rc"
  echo "== ctest, $name build ($secs s, exit $rc)"
  cat "$logs/$name.log"
  [ "$rc" = 0 ] || status=1
done
rm -rf "$logs"
exit "$status"
