/*
 * test_group.c — two instances in one consumer group equal one instance
 * (issue 4, "Must show" 3).
 *
 * One data set on a 6-partition input topic is processed twice:
 *  - "single": one `churnwatch run` (own key prefix, group and topics);
 *  - "pair": two `churnwatch run` in one group, which split the six
 *    partitions; once both hold an assignment and have worked for a
 *    moment, one is SIGKILLed mid-way and the survivor must take its
 *    partitions over (after the dead member's session times out), resume
 *    from the committed offsets and finish.
 * Then every account's windows are exact in both (so equal to each other),
 * and the alert topics hold the same set of alert ids with the same
 * contents, none of them with two different contents.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"
#include "cw_harness.h"
#include "cw_ref.h"

#define TOPICS "events,single-alerts,single-scores,single-dlq,pair-alerts,pair-scores,pair-dlq"
#define PARTITIONS 6
#define BATCH_SIZE 500
#define RUN_TIMEOUT_MS 300000
#define PAIR_IDLE_MS 20000 /* longer than a session timeout plus a rebalance */

Test(group, two_instances_one_killed_equal_one, .timeout = 900) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], single_cfg[512], pair_cfg[512];
    char a_out[512], a_err[512], b_out[512], b_err[512], s_out[512], s_err[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(single_cfg, sizeof(single_cfg), "%s/single.json", dir);
    snprintf(pair_cfg, sizeof(pair_cfg), "%s/pair.json", dir);
    snprintf(s_out, sizeof(s_out), "%s/single.out", dir);
    snprintf(s_err, sizeof(s_err), "%s/single.err", dir);
    snprintf(a_out, sizeof(a_out), "%s/a.out", dir);
    snprintf(a_err, sizeof(a_err), "%s/a.err", dir);
    snprintf(b_out, sizeof(b_out), "%s/b.out", dir);
    snprintf(b_err, sizeof(b_err), "%s/b.err", dir);
    cw_ref_write_config(single_cfg, brokers, cw_h_redis_url(redis), "single", "events", "single",
                        BATCH_SIZE);
    cw_ref_write_config(pair_cfg, brokers, cw_h_redis_url(redis), "pair", "events", "pair",
                        BATCH_SIZE);

    /* ~2 MB per partition: inside the mock broker's ~5 MB retention */
    cw_ref_gen(events, NULL, 41, 300, 45, 4.0, 0.005);
    cw_ref_t *ref = cw_ref_load(events);
    size_t produced = cw_h_produce_file(brokers, "events", events);
    cr_assert_eq(produced, cw_ref_valid(ref) + cw_ref_malformed(ref));

    /* the single instance */
    pid_t s = cw_ref_spawn_run(single_cfg, 3000, s_out, s_err);
    int rc = cw_h_wait(s, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("single instance stderr", s_err);
    }
    cr_assert_eq(rc, 0, "single instance exited %d", rc);

    /* the pair: both join, share the partitions, then A dies */
    pid_t a = cw_ref_spawn_run(pair_cfg, PAIR_IDLE_MS, a_out, a_err);
    pid_t b = cw_ref_spawn_run(pair_cfg, PAIR_IDLE_MS, b_out, b_err);
    cr_assert(cw_ref_wait_log(a_err, "assigned ", 1, a, 60000), "A was never assigned");
    cr_assert(cw_ref_wait_log(b_err, "assigned ", 1, b, 60000), "B was never assigned");
    cw_ref_sleep_ms(800);
    cr_assert(cw_ref_alive(a) && cw_ref_alive(b), "an instance ended before the kill");
    int b_assigned = cw_ref_count_in_file(b_err, "assigned ");
    kill(a, SIGKILL);
    rc = cw_h_wait(a, 10000);
    cr_assert_eq(rc, 128 + SIGKILL, "A: exit %d", rc);

    rc = cw_h_wait(b, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("B stderr", b_err);
    }
    cr_assert_eq(rc, 0, "B exited %d", rc);
    int b_assigned_end = cw_ref_count_in_file(b_err, "assigned ");
    cr_log_info("B assignments: %d before the kill, %d at the end", b_assigned, b_assigned_end);
    cr_expect_gt(b_assigned_end, b_assigned, "B never took over A's partitions");

    /* same counts: both exact */
    size_t checked = 0;
    size_t bad = cw_ref_check_all(ref, pair_cfg, &checked);
    cr_log_info("pair: %zu window counts checked, %zu wrong", checked, bad);
    bad = cw_ref_check_all(ref, single_cfg, &checked);
    cr_log_info("single: %zu window counts checked, %zu wrong", checked, bad);

    /* same alerts */
    cw_ref_alerts_t *one = cw_ref_alerts_read(brokers, "single-alerts", 1);
    cw_ref_alerts_t *two = cw_ref_alerts_read(brokers, "pair-alerts", 1);
    cr_log_info("alerts: single %zu ids / %zu messages, pair %zu ids / %zu messages",
                cw_ref_alerts_ids(one), cw_ref_alerts_messages(one), cw_ref_alerts_ids(two),
                cw_ref_alerts_messages(two));
    cr_expect_gt(cw_ref_alerts_ids(one), 0, "the single instance raised no alert at all");
    cr_expect_eq(cw_ref_alerts_invalid(one) + cw_ref_alerts_invalid(two), 0,
                 "alert messages without alert_id/account_id/reason");
    cr_expect_eq(cw_ref_alerts_conflicts(two), 0, "alert ids with two contents (pair)");
    cr_expect_eq(cw_ref_alerts_conflicts(one), 0, "alert ids with two contents (single)");
    size_t missing = cw_ref_alerts_missing(one, two, "pair");
    size_t extra = cw_ref_alerts_missing(two, one, "single");
    size_t diffs = cw_ref_alerts_content_diffs(one, two);
    cr_expect_eq(missing, 0, "%zu alerts of the single instance missing from the pair", missing);
    cr_expect_eq(extra, 0, "%zu alerts of the pair that the single instance did not raise", extra);
    cr_expect_eq(diffs, 0, "%zu alerts with the same id but different content", diffs);

    cw_ref_dlq_t dlq;
    cw_ref_dlq_read(brokers, "pair-dlq", cw_ref_malformed(ref), &dlq);
    cr_expect_eq(dlq.distinct, cw_ref_malformed(ref),
                 "pair dead letters name %zu distinct inputs, %zu lines were malformed",
                 dlq.distinct, cw_ref_malformed(ref));
    cw_ref_dlq_free(&dlq);

    cw_ref_alerts_free(one);
    cw_ref_alerts_free(two);
    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
}
