#!/usr/bin/python3
"""baseline.py - the churn-signal consumer a team would write first.

The straightforward design churnwatch is compared with (bench/run.sh):
confluent-kafka's Consumer.poll() one message at a time, json.loads, and
one Redis round trip per event - a non-transactional redis-py pipeline
that updates the same kind of rolling state (day-bucketed login/usage/
ticket/NPS counters in an account hash, a user hash and a feature hash
with the last day seen) and reads back the 7-day login window and the
active-user count, from which a simple health score is computed in
Python; a score snapshot is produced to a topic when it changes. No
batching across events, no coalescing, no idempotency by offset, no
pruning (keys expire), no timers, no alert outbox: strictly less work per
event than churnwatch does.

Prints one line of key=value pairs: events, malformed, seconds from
process start (cold: includes the group join) and from the first message,
and the two rates.
"""
import argparse
import datetime
import json
import os
import sys
import time

import redis
from confluent_kafka import Consumer, Producer

DAY_MS = 86400000
TTL_S = 92 * 86400


def parse_ts(v):
    """Event time in epoch ms from an int (ms) or an RFC 3339 string."""
    if isinstance(v, int):
        return v
    return int(datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--redis", required=True, help="unix socket path of redis-server")
    ap.add_argument("--max", type=int, required=True, help="stop after this many messages")
    ap.add_argument("--score-topic", default="bl-scores")
    ap.add_argument("--prefix", default="bl")
    ap.add_argument("--timeout", type=float, default=1800.0)
    a = ap.parse_args()

    t0 = time.monotonic()
    consumer = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": "bl-%d-%d" % (os.getpid(), int(time.time())),
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([a.topic])
    producer = Producer({"bootstrap.servers": a.brokers, "linger.ms": 5})
    r = redis.Redis(unix_socket_path=a.redis)
    last_score = {}
    n = malformed = 0
    t_first = t_last = None

    while n < a.max:
        msg = consumer.poll(1.0)
        if msg is None:
            if time.monotonic() - t0 > a.timeout:
                print("baseline: timeout", file=sys.stderr)
                break
            continue
        if msg.error():
            continue
        n += 1
        if t_first is None:
            t_first = time.monotonic()
        try:
            ev = json.loads(msg.value())
            acct = ev["account_id"]
            typ = ev["type"]
            ts = parse_ts(ev["ts"])
            if not isinstance(acct, str) or not isinstance(typ, str):
                raise ValueError("bad field type")
        except (ValueError, KeyError, TypeError, AttributeError):
            malformed += 1
            continue
        day = ts // DAY_MS
        k = "%s:a:{%s}" % (a.prefix, acct)
        users = "%s:u:{%s}" % (a.prefix, acct)
        feats = "%s:f:{%s}" % (a.prefix, acct)
        p = r.pipeline(transaction=False)
        if typ == "login":
            p.hincrby(k, "%d:logins" % day, 1)
            p.hset(users, str(ev.get("user_id", "")), day)
        elif typ == "usage":
            p.hincrby(k, "%d:usage" % day, int(ev.get("count", 1)))
            p.hset(users, str(ev.get("user_id", "")), day)
            p.hset(feats, str(ev.get("feature", "")), day)
        elif typ == "account":
            p.hset(k, mapping={"arr": ev.get("arr", 0), "seats": ev.get("seats", 1),
                               "renewal": ev.get("renewal_date", "")})
        elif typ == "support_ticket":
            p.hincrby(k, "%d:tickets" % day, 1)
        elif typ == "nps":
            p.hincrby(k, "%d:nps_sum" % day, int(ev.get("score", 0)))
            p.hincrby(k, "%d:nps_n" % day, 1)
        elif typ == "cancellation_notice":
            p.hset(k, "cancel", ts)
        p.expire(k, TTL_S)
        p.expire(users, TTL_S)
        p.hmget(k, ["%d:logins" % d for d in range(day - 6, day + 1)] + ["seats", "cancel"])
        p.hlen(users)
        res = p.execute()
        window, active = res[-2], res[-1]
        logins_7d = sum(int(x) for x in window[:7] if x)
        seats = int(window[7] or 1)
        score = round(100 * (0.5 * min(1.0, active / (0.7 * seats)) +
                             0.5 * min(1.0, logins_7d / 20.0)), 1)
        if window[8]:
            score = 0.0
        if last_score.get(acct) != score:
            last_score[acct] = score
            producer.produce(a.score_topic, key=acct,
                             value=json.dumps({"account_id": acct, "score": score,
                                               "logins_7d": logins_7d, "active_users": active}))
        producer.poll(0)
        t_last = time.monotonic()

    producer.flush(30)
    consumer.close()
    t_last = t_last or time.monotonic()
    cold = t_last - t0
    warm = t_last - (t_first or t0)
    print("events=%d malformed=%d seconds_cold=%.3f seconds_from_first=%.3f rate_cold=%.0f "
          "rate_from_first=%.0f" % (n, malformed, cold, warm, n / cold if cold > 0 else 0,
                                    n / warm if warm > 0 else 0))
    return 0 if n == a.max else 1


if __name__ == "__main__":
    sys.exit(main())
