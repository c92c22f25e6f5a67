#!/usr/bin/env bash
# bench/migrate_check.sh — the key-layout migration, end to end: an older
# churnwatch (OLD_BIN, which kept distinct-set members in keys of their own,
# P:s:{id}:<set>) processes a generated data set; this build must refuse to
# run on that keyspace; `churnwatch migrate` moves the members (timed); then
# `explain` of this build must print, for a sample of accounts, exactly what
# the older build printed before the migration (every window, signal, score
# and band), and this build must run on.
#
# Usage: OLD_BIN=/path/to/old/churnwatch bash bench/migrate_check.sh
# Knobs: NEW_BIN (default build/churnwatch), ACCOUNTS (2000), DAYS (40),
#        EVENTS_PER_DAY (2), PARTITIONS (16), SAMPLE (300 accounts compared), SEED (5)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${OLD_BIN:-}" ] || { echo "set OLD_BIN to a churnwatch built before the layout change" >&2; exit 2; }
if [ -z "${NEW_BIN:-}" ]; then
  bash scripts/build.sh build >/dev/null
  NEW_BIN=$PWD/build/churnwatch
fi
ACCOUNTS=${ACCOUNTS:-2000}
DAYS=${DAYS:-40}
EVENTS_PER_DAY=${EVENTS_PER_DAY:-2}
PARTITIONS=${PARTITIONS:-16}
SAMPLE=${SAMPLE:-300}
SEED=${SEED:-5}

rcli() { redis-cli -s "$W/redis.sock" "$@"; }
now_ms() { date +%s%3N; }

. bench/lib.sh
bench_workdir migrate-check
bench_redis
bench_broker "$NEW_BIN" "$PARTITIONS" events,alerts,scores,dlq
cat >"$W/c.json" <<EOF
{ "kafka": { "brokers": "$B", "group_id": "g", "input_topic": "events", "alert_topic": "alerts",
             "score_topic": "scores", "dlq_topic": "dlq" },
  "redis": { "url": "unix://$W/redis.sock", "key_prefix": "m" }, "time": { "mode": "event" } }
EOF
"$NEW_BIN" gen --seed "$SEED" --accounts "$ACCOUNTS" --days "$DAYS" --events-per-day "$EVENTS_PER_DAY" \
  --end 2026-12-01 --brokers "$B" --topic events 2>"$W/gen.log"

"$OLD_BIN" run --config "$W/c.json" --exit-on-idle 2000 2>"$W/old.log"
set_keys=$(rcli --scan --pattern 'm:s:{*' | wc -l)
n_acc=$(rcli SCARD m:accounts)
echo "old build: $n_acc accounts, $set_keys set keys, $(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p') used"

# a fixed sample: every k-th account id in sorted order
rcli SMEMBERS m:accounts | sort >"$W/all"
step=$(((n_acc + SAMPLE - 1) / SAMPLE))
awk -v s="$step" 'NR % s == 1 || s == 1' "$W/all" >"$W/sample"
explain_all() { # $1 binary, $2 out file
  : >"$2"
  while read -r id; do
    "$1" explain "$id" --config "$W/c.json" --json 2>>"$W/explain.log" >>"$2" || echo "explain $id failed" >>"$2"
  done <"$W/sample"
}
explain_all "$OLD_BIN" "$W/before"

fail=0
if "$NEW_BIN" run --config "$W/c.json" --exit-on-idle 500 2>"$W/refused.log"; then
  echo "FAIL: this build ran on the old layout"
  fail=1
elif grep -q 'churnwatch migrate' "$W/refused.log"; then
  echo "refused   before the migration: $(grep -o 'was written by[^"]*' "$W/refused.log" | head -n1 | cut -c1-90)..."
else
  echo "FAIL: this build stopped without naming the migration:"; tail -3 "$W/refused.log"; fail=1
fi

t0=$(now_ms)
out=$("$NEW_BIN" migrate --config "$W/c.json")
t1=$(now_ms)
echo "$out"
echo "          $((t1 - t0)) ms for $set_keys set keys ($n_acc accounts); $(rcli --scan --pattern 'm:s:{*' | wc -l) set keys left, layout $(rcli GET m:layout), $(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p') used"

explain_all "$NEW_BIN" "$W/after"
if cmp -s "$W/before" "$W/after"; then
  echo "same      explain of $(wc -l <"$W/sample") accounts before (old build) and after (this build)"
else
  echo "DIFFERENT explain before/after; first differences:"
  diff "$W/before" "$W/after" | head -6 | cut -c1-300
  fail=1
fi
# two more days of events (a consumer at the end of its partitions would
# wait for them), applied on the migrated state
"$NEW_BIN" gen --seed $((SEED + 1)) --accounts "$ACCOUNTS" --days 2 --events-per-day "$EVENTS_PER_DAY" \
  --end 2026-12-03 --brokers "$B" --topic events 2>>"$W/gen.log"
if timeout 300 "$NEW_BIN" run --config "$W/c.json" --exit-on-idle 2000 2>"$W/after.log"; then
  echo "runs      after the migration: $(grep -o '"msg":"stopped[^"]*' "$W/after.log" | tail -n1 | cut -c8-)"
else
  echo "FAIL: this build did not run after the migration:"; tail -3 "$W/after.log"; fail=1
fi
exit $fail
