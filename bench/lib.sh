# bench/lib.sh — shared by the bench scripts that replay data through a
# local redis-server and the embedded broker (sourced, not run).
#
#   bench_workdir NAME       W = a new temp dir, removed with every started
#                            process on exit (KEEP=1 keeps it)
#   bench_redis              redis-server on $W/redis.sock, no persistence
#   bench_broker BIN N TOPICS  BIN's embedded broker, N partitions; sets B
#                            to its bootstrap address

bench_pids=()
bench_cleanup() {
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bench_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}

bench_workdir() {
  W=$(mktemp -d "/tmp/cw-$1.XXXXXX")
  trap bench_cleanup EXIT INT TERM
  if [ -n "${KEEP:-}" ]; then trap - EXIT; fi
}

bench_redis() {
  redis-server --port 0 --unixsocket "$W/redis.sock" --save '' --appendonly no --dir "$W" \
    >"$W/redis.log" 2>&1 &
  bench_pids+=($!)
  for _ in $(seq 100); do redis-cli -s "$W/redis.sock" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start ($W/redis.log)" >&2
  return 1
}

bench_broker() {
  "$1" broker --partitions "$2" --topics "$3" >"$W/broker.out" 2>"$W/broker.log" &
  bench_pids+=($!)
  for _ in $(seq 100); do [ -s "$W/broker.out" ] && break; sleep 0.1; done
  B=$(head -n1 "$W/broker.out")
  [ -n "$B" ] || { echo "the broker did not start ($W/broker.log)" >&2; return 1; }
}
