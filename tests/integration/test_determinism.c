/*
 * test_determinism.c — in event-time mode a replay decides the same
 * whatever the batch boundaries: the same events replayed with batches of
 * 20,000 and of 100 messages emit byte-identical alert documents and score
 * snapshots (emitted_at aside) and leave the same at-risk ranking.
 *
 * Two partitions and a large batch make one batch run many days of event
 * time ahead of the day-end timers, which is where a day-end decision
 * once read an account after the apply had pruned days it needed (retention
 * counted from the newest event instead of the pending decision) and where
 * an alert's facts once showed a cancellation notice dated after the alert.
 * test_replay checks planted behaviours and alert identity with 64
 * partitions; this checks the whole output with few.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"
#include "cw_harness.h"
#include "cw_ref.h"

#define PARTITIONS 2
#define TOPICS "events,da-alerts,da-scores,da-dlq,db-alerts,db-scores,db-dlq"
#define IDLE_MS 2000
#define RUN_TIMEOUT_MS 300000

/* Remove the wall-clock "emitted_at":"..." member from a document in place. */
static void strip_emitted_at(char *doc) {
    char *k = strstr(doc, "\"emitted_at\":\"");
    char *end;
    if (k == NULL) {
        return;
    }
    end = strchr(k + 14, '"');
    cr_assert_not_null(end, "unterminated emitted_at: %.200s", doc);
    end++;
    if (*end == ',') {
        end++;
    } else if (k > doc && k[-1] == ',') {
        k--; /* the last member: drop the comma before it */
    }
    memmove(k, end, strlen(end) + 1);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every message of a topic, values sorted (emitted_at removed). */
static char **read_sorted(const char *brokers, const char *topic, size_t min_count, size_t *n_out) {
    size_t n = 0;
    cw_h_msg_t *msgs = cw_h_consume_all(brokers, topic, min_count, 3000, 120000, &n);
    char **out = calloc(n + 1, sizeof(*out));
    cr_assert_not_null(out);
    for (size_t i = 0; i < n; i++) {
        out[i] = msgs[i].value; /* ownership moves here */
        msgs[i].value = NULL;
        strip_emitted_at(out[i]);
    }
    cw_h_msgs_free(msgs, n);
    qsort(out, n, sizeof(*out), cmp_str);
    *n_out = n;
    return out;
}

static void expect_same(const char *what, char **a, size_t na, char **b, size_t nb) {
    size_t differ = 0;
    cr_expect_eq(na, nb, "%s: %zu in run a, %zu in run b", what, na, nb);
    for (size_t i = 0; i < na && i < nb; i++) {
        if (strcmp(a[i], b[i]) != 0 && differ++ < 5) {
            size_t k = 0;
            while (a[i][k] == b[i][k]) {
                k++;
            }
            k = k > 200 ? k - 200 : 0; /* from a little before the first difference */
            cr_log_error("%s differ:\n  a: %.100s ... %.600s\n  b: %.100s ... %.600s", what, a[i],
                         a[i] + k, b[i], b[i] + k);
        }
    }
    cr_expect_eq(differ, 0, "%s: %zu of %zu differ", what, differ, na);
    cr_log_info("%s: %zu and %zu documents", what, na, nb);
}

static void free_docs(char **docs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(docs[i]);
    }
    free(docs);
}

/* Topics "da-<kind>" and "db-<kind>" hold the same documents, at least
 * min_count of them. */
static void expect_same_topic(const char *brokers, const char *kind, const char *what,
                              size_t min_count) {
    char ta[64], tb[64];
    size_t na = 0, nb = 0;
    snprintf(ta, sizeof(ta), "da-%s", kind);
    snprintf(tb, sizeof(tb), "db-%s", kind);
    char **a = read_sorted(brokers, ta, min_count, &na);
    char **b = read_sorted(brokers, tb, min_count, &nb);
    cr_expect_geq(na, min_count, "too few %s to compare: %zu", what, na);
    expect_same(what, a, na, b, nb);
    free_docs(a, na);
    free_docs(b, nb);
}

/* Runs "da" and "db" emitted the same alerts and snapshots and left the same
 * at-risk ranking; at least min_alerts alerts and min_snaps snapshots. */
static void expect_same_runs(const char *brokers, cw_h_redis_t *redis, size_t min_alerts,
                             size_t min_snaps) {
    expect_same_topic(brokers, "alerts", "alerts", min_alerts);
    expect_same_topic(brokers, "scores", "score snapshots", min_snaps);

    /* the final ranking: the same accounts with the same scores */
    char sock_arg[600];
    char *out_a = NULL, *out_b = NULL;
    size_t la = 0, lb = 0;
    snprintf(sock_arg, sizeof(sock_arg), "%s", cw_h_redis_socket(redis));
    const char *argv_a[] = {"redis-cli", "-s", sock_arg,     "ZRANGE", "da:atrisk",
                            "0",         "-1", "WITHSCORES", NULL};
    const char *argv_b[] = {"redis-cli", "-s", sock_arg,     "ZRANGE", "db:atrisk",
                            "0",         "-1", "WITHSCORES", NULL};
    cr_assert_eq(cw_h_run(argv_a, 30000, &out_a, &la), 0);
    cr_assert_eq(cw_h_run(argv_b, 30000, &out_b, &lb), 0);
    cr_expect(la == lb && memcmp(out_a, out_b, la) == 0, "at-risk rankings differ");
    free(out_a);
    free(out_b);
}

/* Replay events with batches of batch_a and of batch_b messages and expect
 * the same output, with at least min_alerts alerts and min_snaps
 * snapshots. The events: lines[0..n), every line to partition 0 when
 * one_partition (else by key); or, when lines is NULL, `churnwatch gen`'s
 * 300 accounts over 60 days, ~4 events a day (one batch of 20,000 spans
 * weeks of event time on each of the two partitions). */
static void replay(const char *const *lines, size_t n, int one_partition, int batch_a, int batch_b,
                   size_t min_alerts, size_t min_snaps) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], cfg_a[512], cfg_b[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(cfg_a, sizeof(cfg_a), "%s/a.json", dir);
    snprintf(cfg_b, sizeof(cfg_b), "%s/b.json", dir);
    cw_ref_write_config(cfg_a, brokers, cw_h_redis_url(redis), "da", "events", "da", batch_a);
    cw_ref_write_config(cfg_b, brokers, cw_h_redis_url(redis), "db", "events", "db", batch_b);
    if (lines == NULL) {
        cw_ref_gen(events, NULL, 5, 300, 60, 4, 0.002);
        cr_assert_gt(cw_h_produce_file(brokers, "events", events), 20000);
    } else {
        FILE *f = fopen(events, "w");
        cr_assert_not_null(f);
        for (size_t i = 0; i < n; i++) {
            fprintf(f, "%s\n", lines[i]);
        }
        fclose(f);
        cr_assert_eq(cw_h_produce_file_spread(brokers, "events", events, one_partition ? 1 : 0), n);
    }

    cw_ref_run_to_idle(cfg_a, IDLE_MS, dir, "a", RUN_TIMEOUT_MS);
    cw_ref_run_to_idle(cfg_b, IDLE_MS, dir, "b", RUN_TIMEOUT_MS);
    expect_same_runs(brokers, redis, min_alerts, min_snaps);

    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
    cw_h_rmrf(dir);
    free(dir);
}

Test(determinism, batch_boundaries_change_nothing, .timeout = 600) {
    replay(NULL, 0, 0, 20000, 100, 21, 1001);
}

#define LOGIN(n, acct, user, ts)                                                                   \
    "{\"event_id\":\"ev-" #n "\",\"type\":\"login\",\"account_id\":\"" acct "\","                  \
    "\"user_id\":\"" user "\",\"ts\":\"" ts "\"}"
#define ACCOUNT(acct, ts)                                                                          \
    "{\"event_id\":\"ev-" acct "\",\"type\":\"account\",\"account_id\":\"" acct "\","              \
    "\"ts\":\"" ts                                                                                 \
    "\",\"arr\":50000,\"seats\":4,\"plan\":\"pro\",\"renewal_date\":\"2027-09-30\"}"

/* A late event (older than the events before it in its partition) must not
 * stretch a step past the day-mask horizon. A user active on day 0 whose
 * window (30 days) still holds that day at the day-29 decision; the
 * partition then sends day 30, a late day-29 login and the day-0 user again
 * on day 52. Counted from the step's first event (day 30) day 52 was within
 * the horizon (52 - 30 = 22 days), but the late event puts a day-29
 * decision into the step, and the day-52 login had shifted the day-0 bit
 * out of the user's 52-day mask before that decision read it: with one
 * batch the day-29 snapshot counted 1 active user, with batches of one
 * event 2. (With batches of one event day 29 is decided once before the
 * late login, with one active user as on day 28: that decision stores
 * nothing new, so both runs emit the same.) */
Test(determinism, late_event_keeps_the_mask_horizon, .timeout = 300) {
    static const char *const lines[] = {
        ACCOUNT("acct-late", "2026-10-01T08:00:00Z"),
        LOGIN(1, "acct-late", "u-old", "2026-10-01T09:00:00Z"),  /* day 0 */
        LOGIN(2, "acct-late", "u-new", "2026-10-31T09:00:00Z"),  /* day 30 */
        LOGIN(3, "acct-late", "u-late", "2026-10-30T09:00:00Z"), /* day 29, late */
        LOGIN(4, "acct-late", "u-old", "2026-11-22T09:00:00Z"),  /* day 52 */
    };
    replay(lines, sizeof(lines) / sizeof(lines[0]), 0, 10000, 1, 0, 2);
}

/* A step that ends inside day D (the watermark there) leaves D's day end
 * undecided; the next step, starting on D + 1, must decide it before its
 * apply. With D = day 40, all on one partition: a step [34, 18, 40 10:00]
 * (day 18 another account's late first event) ends before day 41 (more
 * than 22 days from day 18), and the next step [41, 63] holds the day-11
 * user again on day 63. Counted as decided up to the watermark's day, day
 * 40's end was left to after that apply, whose day-63 login had shifted
 * the user's day-11 bit (the first day of the 30-day window as of day 40)
 * out of its 52-day mask. The late account has no other event, so its
 * decisions do not depend on when they are made. */
Test(determinism, step_after_a_mid_day_watermark, .timeout = 300) {
    static const char *const lines[] = {
        ACCOUNT("acct-mid", "2026-09-12T08:00:00Z"),
        LOGIN(1, "acct-mid", "u-old", "2026-09-12T09:00:00Z"), /* day 11 */
        LOGIN(2, "acct-mid", "u-a", "2026-10-05T09:00:00Z"),   /* day 34: a new step */
        LOGIN(3, "acct-other", "u-x", "2026-09-19T09:00:00Z"), /* day 18, late */
        LOGIN(4, "acct-mid", "u-c", "2026-10-11T10:00:00Z"),   /* day 40 */
        LOGIN(5, "acct-mid", "u-d", "2026-10-12T09:00:00Z"),   /* day 41: a new step */
        LOGIN(6, "acct-mid", "u-old", "2026-11-03T09:00:00Z"), /* day 63 */
    };
    replay(lines, sizeof(lines) / sizeof(lines[0]), 1, 10000, 1, 0, 2);
}
