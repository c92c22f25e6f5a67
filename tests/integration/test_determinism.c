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
static char **read_sorted(const char *brokers, const char *topic, size_t *n_out) {
    size_t n = 0;
    cw_h_msg_t *msgs = cw_h_consume_all(brokers, topic, 1, 3000, 120000, &n);
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
    cr_expect_eq(na, nb, "%s: %zu with batches of 20000, %zu with batches of 100", what, na, nb);
    for (size_t i = 0; i < na && i < nb; i++) {
        if (strcmp(a[i], b[i]) != 0 && differ++ < 5) {
            cr_log_error("%s differ:\n  a: %.600s\n  b: %.600s", what, a[i], b[i]);
        }
    }
    cr_expect_eq(differ, 0, "%s: %zu of %zu differ", what, differ, na);
    cr_log_info("%s: %zu and %zu documents", what, na, nb);
}

Test(determinism, batch_boundaries_change_nothing, .timeout = 600) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], cfg_a[512], cfg_b[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(cfg_a, sizeof(cfg_a), "%s/a.json", dir);
    snprintf(cfg_b, sizeof(cfg_b), "%s/b.json", dir);
    cw_ref_write_config(cfg_a, brokers, cw_h_redis_url(redis), "da", "events", "da", 20000);
    cw_ref_write_config(cfg_b, brokers, cw_h_redis_url(redis), "db", "events", "db", 100);
    /* 300 accounts over 60 days, ~4 events a day: one batch of 20,000 spans
     * weeks of event time on each of the two partitions */
    cw_ref_gen(events, NULL, 5, 300, 60, 4, 0.002);
    size_t produced = cw_h_produce_file(brokers, "events", events);
    cr_assert_gt(produced, 20000);

    cw_ref_run_to_idle(cfg_a, IDLE_MS, dir, "a", RUN_TIMEOUT_MS);
    cw_ref_run_to_idle(cfg_b, IDLE_MS, dir, "b", RUN_TIMEOUT_MS);

    size_t na = 0, nb = 0;
    char **al_a = read_sorted(brokers, "da-alerts", &na);
    char **al_b = read_sorted(brokers, "db-alerts", &nb);
    cr_expect_gt(na, 20, "too few alerts to compare: %zu", na);
    expect_same("alerts", al_a, na, al_b, nb);
    size_t sa = 0, sb = 0;
    char **sc_a = read_sorted(brokers, "da-scores", &sa);
    char **sc_b = read_sorted(brokers, "db-scores", &sb);
    cr_expect_gt(sa, 1000, "too few snapshots to compare: %zu", sa);
    expect_same("score snapshots", sc_a, sa, sc_b, sb);

    /* the final ranking: the same accounts with the same scores */
    {
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
        cr_expect_gt(la, 1000);
        cr_expect(la == lb && memcmp(out_a, out_b, la) == 0, "at-risk rankings differ");
        free(out_a);
        free(out_b);
    }

    for (size_t i = 0; i < na; i++) {
        free(al_a[i]);
    }
    for (size_t i = 0; i < nb; i++) {
        free(al_b[i]);
    }
    for (size_t i = 0; i < sa; i++) {
        free(sc_a[i]);
    }
    for (size_t i = 0; i < sb; i++) {
        free(sc_b[i]);
    }
    free(al_a);
    free(al_b);
    free(sc_a);
    free(sc_b);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
    cw_h_rmrf(dir);
    free(dir);
}
