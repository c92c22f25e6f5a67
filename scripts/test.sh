#!/usr/bin/env bash
# The whole test suite, as CI runs it: install deps, check formatting, build
# (optimised and under AddressSanitizer + UndefinedBehaviorSanitizer) and run
# every unit and integration test with ctest. Integration tests start their
# own redis-server and embedded broker and stop them.
#   scripts/test.sh            everything
#   CW_TEST_LABEL=unit scripts/test.sh   only one label (unit|integration)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== clang-format check"
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.c' -o -name '*.h')
if ! clang-format --dry-run -Werror $files; then
  echo "clang-format: run 'clang-format -i' on the files above" >&2
  exit 1
fi

label_args=()
[ -n "${CW_TEST_LABEL:-}" ] && label_args=(-L "$CW_TEST_LABEL")

echo "== build (RelWithDebInfo)"
bash scripts/build.sh build
echo "== tests"
(cd build && ctest --output-on-failure "${label_args[@]}")

echo "== build (ASan + UBSan)"
bash scripts/build.sh build-asan -DCW_SANITIZE=ON
echo "== tests under sanitizers"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure "${label_args[@]}")
