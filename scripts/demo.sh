#!/usr/bin/env bash
# The live demo: install what is missing, build, start a local redis-server
# and the embedded Kafka broker, start the processor, stream 60 days of
# generated traffic for 300 accounts through Kafka, show churn alerts as
# they arrive, then an at-risk summary and the /metrics counters checked
# against what was produced. The dashboard is on http://127.0.0.1:$DEMO_PORT/
# while it runs. Everything stops cleanly on exit (Ctrl-C included).
# Tunables: DEMO_ACCOUNTS, DEMO_DAYS, DEMO_PORT (default 8080), DEMO_HOLD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${DEMO_ACCOUNTS:-300}
DAYS=${DEMO_DAYS:-60}
PORT=${DEMO_PORT:-8080}

bash scripts/setup.sh
bash scripts/build.sh build >/dev/null
CW=./build/churnwatch

work=$(mktemp -d /tmp/churnwatch-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  echo "demo: stopped everything and removed $work"
}
trap cleanup EXIT INT TERM

echo "== starting redis-server (unix socket $work/redis.sock)"
redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 --save '' \
  --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -s "$work/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "== starting the embedded broker"
"$CW" broker --partitions 6 --topics events,churn-alerts,account-scores,events-dlq \
  >"$work/broker.out" 2>"$work/broker.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/broker.out" ] && break; sleep 0.1; done
BROKERS=$(head -n1 "$work/broker.out")
echo "   broker at $BROKERS"

cat >"$work/churnwatch.json" <<JSON
{
  /* demo configuration: everything not listed takes its documented default */
  "kafka": { "brokers": "$BROKERS", "group_id": "demo", "input_topic": "events",
             "alert_topic": "churn-alerts", "score_topic": "account-scores",
             "dlq_topic": "events-dlq" },
  "redis": { "url": "unix://$work/redis.sock", "key_prefix": "demo" },
  "http": { "listen": "127.0.0.1:$PORT" }
}
JSON
"$CW" check-config "$work/churnwatch.json"

echo "== starting churnwatch run (logs: $work/run.log)"
"$CW" run --config "$work/churnwatch.json" 2>"$work/run.log" &
pids+=($!)

echo "== alerts as they arrive (topic churn-alerts):"
kcat -C -b "$BROKERS" -t churn-alerts -u -q -f '%s\n' 2>/dev/null |
  jq -r --unbuffered '"  [\(.event_time[0:10])] \(.account_id) \(.reason | ascii_upcase) score \(.score) (\(.previous_band) -> \(.band), \(.tier) touch, \(.phase)) — \(.explanation)"' &
pids+=($!)

for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
echo "== dashboard: http://127.0.0.1:$PORT/   metrics: http://127.0.0.1:$PORT/metrics"

echo "== streaming $DAYS days of traffic for $ACCOUNTS accounts (event time, replayed as fast as Kafka takes it)"
"$CW" gen --seed 7 --accounts "$ACCOUNTS" --days "$DAYS" --events-per-day 3 \
  --malformed-share 0.005 --brokers "$BROKERS" --topic events \
  --truth "$work/truth.jsonl" 2>"$work/gen.log"
echo "   generator done: $(tail -n1 "$work/gen.log" | jq -c '{events: .summary.events, malformed: .summary.malformed.total}')"

# wait until the processor has caught up: every produced line counted
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }
want_in=$(tail -n1 "$work/gen.log" | jq '.summary.events')
want_dlq=$(tail -n1 "$work/gen.log" | jq '.summary.malformed.total')
for _ in $(seq 600); do
  [ "$(metric churnwatch_events_in_total)" -ge "$want_in" ] &&
    [ "$(metric churnwatch_dead_lettered_total)" -ge "$want_dlq" ] && break
  sleep 0.2
done
sleep 2
echo
echo "== at-risk accounts (lowest health scores, from Redis):"
redis-cli -s "$work/redis.sock" ZRANGE demo:atrisk 0 9 | while read -r acct; do
    "$CW" explain "$acct" --config "$work/churnwatch.json" --json 2>/dev/null |
      jq -r '"  \(.account_id)  score \(.score)  \(.band)  \(.tier) touch  \(.phase)  logins 7d/30d \(.windows.logins_7d)/\(.windows.logins_30d)  active users 30d \(.windows.active_users_30d)  last alert: \(.last_alert.reason // "-")"'
  done
echo
got_in=$(metric churnwatch_events_in_total)
got_dlq=$(metric churnwatch_dead_lettered_total)
echo "== /metrics: events in $got_in (produced $want_in valid)," \
     "dead-lettered $got_dlq (produced $want_dlq malformed)," \
     "alerts $(metric churnwatch_alerts_total), snapshots $(metric churnwatch_snapshots_total)," \
     "lag $(metric churnwatch_consumer_lag)"
[ "$got_in" = "$want_in" ] && [ "$got_dlq" = "$want_dlq" ] && echo "   counters match what was produced" ||
  echo "   COUNTERS DO NOT MATCH what was produced" >&2
echo "== counts: dead-lettered $(kcat -C -b "$BROKERS" -t events-dlq -e -q -f 'x\n' 2>/dev/null | wc -l)," \
     "alerts $(kcat -C -b "$BROKERS" -t churn-alerts -e -q -f 'x\n' 2>/dev/null | wc -l)," \
     "score snapshots $(kcat -C -b "$BROKERS" -t account-scores -e -q -f 'x\n' 2>/dev/null | wc -l)"
if [ -n "${DEMO_HOLD:-}" ]; then
  echo "== DEMO_HOLD set: running until Ctrl-C"; wait
fi
