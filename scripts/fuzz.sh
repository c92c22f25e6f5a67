#!/usr/bin/env bash
# fuzz.sh — build and run churnwatch's libFuzzer harnesses (fuzz/*.c).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; 600 for the 10-minute run)
#
# Each harness is compiled with clang -fsanitize=fuzzer,address,undefined
# straight from the sources it needs (common/, config/, consumer/ and the
# embedded default model, generated with config/embed.cmake), then run for
# SECONDS_PER_TARGET starting from the seed corpus in fuzz/corpus/<target>.
# New corpus entries, crash artifacts and logs go to a temporary directory,
# never into the repository; it is kept (and printed) when something is
# found, and removed otherwise unless FUZZ_KEEP=1 or FUZZ_WORK was given. Exit status: 0 when no
# target found anything, 1 otherwise, 2 on a usage or build error.
#
# Environment: CC (default clang), FUZZ_KEEP=1 (keep the work directory),
# FUZZ_WORK (use and keep this directory instead of a fresh mktemp one, e.g.
# to grow one corpus over several runs).
set -euo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: $0 [seconds per target, default 60]" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cc="${CC:-clang}"
if [ -n "${FUZZ_WORK:-}" ]; then
  work="$FUZZ_WORK" # the caller's: never removed
  keep=1
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/churnwatch-fuzz.XXXXXX")"
  keep="${FUZZ_KEEP:-0}"
fi
mkdir -p "$work"

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz.sh: $cc not found (install clang; libFuzzer ships in libclang-rt-14-dev)" >&2
  exit 2
fi
if ! command -v cmake >/dev/null 2>&1 || ! pkg-config --exists yajl; then
  echo "fuzz.sh: needs cmake and yajl (pkg-config yajl); run scripts/setup.sh" >&2
  exit 2
fi

# ---- build ----
flags=(-std=gnu11 -g -O1 -fno-omit-frame-pointer
       "-fsanitize=fuzzer,address,undefined" -fno-sanitize-recover=undefined
       -I"$root/common" -I"$root/config" -I"$root/consumer")
read -r -a yajl_cflags <<<"$(pkg-config --cflags yajl)"
read -r -a yajl_libs <<<"$(pkg-config --libs yajl)"

cmake -DIN="$root/config/default-model.json" -DOUT="$work/cw_default_model.c" \
  -P "$root/config/embed.cmake"

common_src=("$root/common/cw_common.c" "$root/common/cw_buf.c" "$root/config/cw_conf.c"
            "$work/cw_default_model.c")
declare -A target_src=(
  [event]="$root/fuzz/fuzz_event.c $root/consumer/cw_event.c"
  [config]="$root/fuzz/fuzz_config.c"
)
targets=(event config)

for t in "${targets[@]}"; do
  echo "== building fuzz_$t"
  # shellcheck disable=SC2086 # target_src holds a space-separated file list
  if ! "$cc" "${flags[@]}" "${yajl_cflags[@]}" ${target_src[$t]} "${common_src[@]}" \
      "${yajl_libs[@]}" -lm -o "$work/fuzz_$t" 2>"$work/build_$t.log"; then
    cat "$work/build_$t.log" >&2
    echo "fuzz.sh: build of fuzz_$t failed (libFuzzer needs libclang-rt-14-dev)" >&2
    exit 2
  fi
done

# A dictionary of the event format's tokens helps the fuzzer reach field logic.
cat >"$work/event.dict" <<'EOF'
"{"
"}"
"["
"]"
":"
","
"\""
"\\u0000"
"\\u00e9"
"null"
"true"
"false"
"-"
"1e999"
"1.5"
"99999999999999999999"
"\"event_id\""
"\"type\""
"\"account_id\""
"\"user_id\""
"\"ts\""
"\"feature\""
"\"count\""
"\"arr\""
"\"seats\""
"\"plan\""
"\"renewal_date\""
"\"score\""
"\"login\""
"\"usage\""
"\"account\""
"\"support_ticket\""
"\"nps\""
"\"cancellation_notice\""
"\"2026-05-20T10:00:00Z\""
"\"2026-05-20T10:00:00.123+09:00\""
"\"2027-03-31\""
"1779271200000"
EOF
cat >"$work/config.dict" <<'EOF'
"\"kafka\""
"\"redis\""
"\"http\""
"\"model\""
"\"signals\""
"\"bands\""
"\"tiers\""
"\"phases\""
"\"alerts\""
"\"properties\""
"\"brokers\""
"\"input_topic\""
"\"url\""
"\"listen\""
"\"aggregation\""
"\"normalisation\""
"\"window_days\""
"\"baseline_days\""
"\"weight\""
"\"target\""
"\"events\""
"\"distinct_users\""
"\"trend\""
"\"range\""
"\"tcp://127.0.0.1:6379\""
"\"unix:///tmp/s\""
"/*"
"*/"
"//"
EOF

# ---- run ----
status=0
summary=()
for t in "${targets[@]}"; do
  corpus="$work/corpus_$t"
  artifacts="$work/artifacts_$t"
  mkdir -p "$corpus" "$artifacts"
  echo "== fuzz_$t for ${secs}s (corpus $corpus)"
  rc=0
  # The first corpus dir receives new inputs; the repo seeds are read only.
  (cd "$work" && "./fuzz_$t" "$corpus" "$root/fuzz/corpus/$t" \
    -dict="$work/$t.dict" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$work/fuzz_$t.log" 2>&1) || rc=$?
  execs="$(grep -h 'stat::number_of_executed_units' "$work/fuzz_$t.log" |
           awk '{s += $2} END {print s + 0}')"
  cov="$(grep -hoE 'cov: [0-9]+' "$work/fuzz_$t.log" | tail -1 | awk '{print $2}')"
  nfound="$(find "$artifacts" -type f | wc -l)"
  if [ "$rc" -ne 0 ] || [ "$nfound" -gt 0 ]; then
    status=1
    summary+=("fuzz_$t: FINDING (exit $rc, $nfound artifact(s) in $artifacts), $execs execs")
    grep -hE 'ERROR: |SUMMARY: |runtime error|deadly signal' "$work/fuzz_$t.log" | head -20 >&2 || true
  else
    summary+=("fuzz_$t: ok, $execs execs, cov ${cov:-?}, corpus $(find "$corpus" -type f | wc -l) files")
  fi
done

echo "== summary (${secs}s per target)"
printf '  %s\n' "${summary[@]}"
if [ "$status" -ne 0 ] || [ "$keep" = 1 ]; then
  echo "work directory kept: $work"
else
  rm -rf "$work"
fi
exit "$status"
