#!/usr/bin/env bash
# bench/replay_compare.sh — replay one generated data set through two
# churnwatch runs (two binaries, or one binary with two batch sizes) in
# event-time mode and compare what they emitted: alert documents, score
# snapshots (without emitted_at) and the final at-risk ranking. In event
# mode every decision is made at day ends on the state as of the day end,
# so the two must be byte-identical; a difference is a bug (this is how
# the retention bug fixed in commit d85c27e was found).
#
# Usage: bash bench/replay_compare.sh                 (this tree, batch 10000 vs 777)
#        A_BIN=/path/old/churnwatch bash bench/replay_compare.sh   (old binary vs this)
# Knobs: A_BIN, B_BIN (default build/churnwatch), A_BATCH (10000), B_BATCH (777),
#        ACCOUNTS (400), DAYS (40), EVENTS_PER_DAY (4), PARTITIONS (8), SEED (11),
#        LOG_LEVEL (info; "debug" logs every decision to $W/a.log and b.log,
#        kept with KEEP=1: compare one account's lines to find a difference)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh build >/dev/null
A_BIN=${A_BIN:-$PWD/build/churnwatch}
B_BIN=${B_BIN:-$PWD/build/churnwatch}
A_BATCH=${A_BATCH:-10000}
B_BATCH=${B_BATCH:-777}
ACCOUNTS=${ACCOUNTS:-400}
DAYS=${DAYS:-40}
EVENTS_PER_DAY=${EVENTS_PER_DAY:-4}
PARTITIONS=${PARTITIONS:-8}
SEED=${SEED:-11}
LOG_LEVEL=${LOG_LEVEL:-info}

. bench/lib.sh
bench_workdir replay-compare
bench_redis
bench_broker "$B_BIN" "$PARTITIONS" events,a-alerts,a-scores,a-dlq,b-alerts,b-scores,b-dlq
"$B_BIN" gen --seed "$SEED" --accounts "$ACCOUNTS" --days "$DAYS" --events-per-day "$EVENTS_PER_DAY" \
  --end 2026-12-01 --malformed-share 0.005 --brokers "$B" --topic events 2>"$W/gen.log"

# HGETALL calls so far: one per account read (a day-end decision)
hgetalls() {
  redis-cli -s "$W/redis.sock" INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_hgetall:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}

for v in a b; do
  if [ "$v" = a ]; then bin=$A_BIN bs=$A_BATCH; else bin=$B_BIN bs=$B_BATCH; fi
  cat >"$W/$v.json" <<EOF
{ "kafka": { "brokers": "$B", "group_id": "g-$v", "input_topic": "events",
             "alert_topic": "$v-alerts", "score_topic": "$v-scores", "dlq_topic": "$v-dlq",
             "batch_size": $bs },
  "redis": { "url": "unix://$W/redis.sock", "key_prefix": "$v" }, "time": { "mode": "event" },
  "log": { "level": "$LOG_LEVEL" } }
EOF
  reads0=$(hgetalls)
  "$bin" run --config "$W/$v.json" --exit-on-idle 2000 2>"$W/$v.log"
  echo "run $v: $(($(hgetalls) - reads0)) account reads (HGETALL: day-end decisions, explain)"
  kcat -C -b "$B" -t "$v-alerts" -e -q -f "%s\n" 2>/dev/null | sort >"$W/$v.alerts"
  kcat -C -b "$B" -t "$v-scores" -e -q -f '%s\n' 2>/dev/null | jq -c 'del(.emitted_at)' | sort >"$W/$v.scores"
  redis-cli -s "$W/redis.sock" ZRANGE "$v:atrisk" 0 -1 WITHSCORES >"$W/$v.atrisk"
done

# The mock broker keeps ~5 MB per partition and drops the oldest message
# sets beyond it: a topic whose first offset is not 0 lost data, and the
# comparison would report that as a difference (use more PARTITIONS).
for t in events a-alerts a-scores b-alerts b-scores; do
  for p in $(seq 0 $((PARTITIONS - 1))); do
    o=$(kcat -C -b "$B" -t "$t" -p "$p" -o beginning -c 1 -e -q -f '%o\n' 2>/dev/null | head -n1)
    if [ -n "$o" ] && [ "$o" != 0 ]; then
      echo "broker retention dropped the first $o messages of $t partition $p: use more PARTITIONS" >&2
      exit 2
    fi
  done
done

fail=0
for k in alerts scores atrisk; do
  na=$(wc -l <"$W/a.$k") nb=$(wc -l <"$W/b.$k")
  if cmp -s "$W/a.$k" "$W/b.$k"; then
    echo "same      $k ($na lines)"
  else
    echo "DIFFERENT $k (a: $na lines, b: $nb lines); first differences:"
    diff "$W/a.$k" "$W/b.$k" | head -6 | cut -c1-300
    fail=1
  fi
done
exit $fail
