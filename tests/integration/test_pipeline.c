/*
 * test_pipeline.c — end to end, with real parts: the embedded broker
 * (`churnwatch broker`), a real redis-server, `churnwatch gen` traffic for
 * 1,000 accounts over 60 days, `churnwatch run` replaying it, then
 *  - every window count `churnwatch explain --json` reports for every
 *    account equals the count computed here, independently, from the same
 *    generated events;
 *  - every malformed message is on the dead-letter topic with a reason;
 *  - accounts planted as silent are alerted (inactive or entered_danger),
 *    every alert names its driving signals (declining and steady accounts
 *    are judged by test_replay.c, on denser data).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "cw_common.h"
#include "cw_harness.h"
#include "cw_ref.h"

#define TOPICS "events,churn-alerts,account-scores,events-dlq"
#define N_ACCOUNTS 1000

static const char *str_at(yajl_val obj, const char *key) {
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v != NULL ? YAJL_GET_STRING(v) : NULL;
}

Test(pipeline, replay_exact_windows_dlq_and_alerts, .timeout = 900) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(12, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], truth[512], cfg[512], conf_text[2048];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(truth, sizeof(truth), "%s/truth.jsonl", dir);
    snprintf(cfg, sizeof(cfg), "%s/churnwatch.json", dir);
    snprintf(
        conf_text, sizeof(conf_text),
        "{ /* integration test */\n"
        "  \"kafka\": {\"brokers\": \"%s\", \"group_id\": \"it\", \"input_topic\": \"events\",\n"
        "            \"alert_topic\": \"churn-alerts\", \"score_topic\": \"account-scores\",\n"
        "            \"dlq_topic\": \"events-dlq\"},\n"
        "  \"redis\": {\"url\": \"%s\", \"key_prefix\": \"it\"}\n}\n",
        brokers, cw_h_redis_url(redis));
    cr_assert_eq(cw_h_write_file(cfg, conf_text), 0);

    const char *gen[] = {CW_H_BINARY,
                         "gen",
                         "--seed",
                         "42",
                         "--accounts",
                         "1000",
                         "--days",
                         "60",
                         "--end",
                         "2026-06-01T00:00:00Z",
                         "--events-per-day",
                         "1.5",
                         "--malformed-share",
                         "0.01",
                         "--out",
                         events,
                         "--truth",
                         truth,
                         NULL};
    cr_assert_eq(cw_h_run(gen, 120000, NULL, NULL), 0, "gen failed");
    /* the reference: valid events per account, counted independently */
    cw_ref_t *ref = cw_ref_load(events);
    cw_ref_load_truth(ref, truth);
    size_t malformed = cw_ref_malformed(ref);
    size_t valid = cw_ref_valid(ref);
    size_t n_accts = cw_ref_accounts(ref);
    cr_assert_geq(n_accts, N_ACCOUNTS);
    cr_assert_gt(malformed, 100, "expected ~1%% malformed, got %zu", malformed);
    size_t produced = cw_h_produce_file(brokers, "events", events);
    cr_assert_eq(produced, valid + malformed);

    char out_log[512], err_log[512];
    snprintf(out_log, sizeof(out_log), "%s/run.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/run.err", dir);
    const char *run[] = {CW_H_BINARY, "run", "--config", cfg, "--exit-on-idle", "3000", NULL};
    pid_t pid = cw_h_spawn(run, out_log, err_log);
    int rc = cw_h_wait(pid, 600000);
    cr_assert_eq(rc, 0, "run exited %d; see %s", rc, err_log);

    /* 1. exact windows for every account (explain vs the reference; an
     * account without valid events must be unknown to explain) */
    size_t checked = 0;
    cw_ref_check_all(ref, cfg, &checked);
    cr_log_info("checked %zu window counts over %zu accounts", checked, n_accts);

    /* 2. every malformed message dead-lettered with a reason */
    size_t n_dlq = 0;
    cw_h_msg_t *dlq = cw_h_consume_all(brokers, "events-dlq", malformed, 2000, 60000, &n_dlq);
    cr_expect_eq(n_dlq, malformed, "dead-lettered %zu of %zu malformed", n_dlq, malformed);
    for (size_t i = 0; i < n_dlq; i++) {
        char err[256];
        yajl_val v = yajl_tree_parse(dlq[i].value, err, sizeof(err));
        cr_expect(v != NULL && str_at(v, "reason") != NULL && str_at(v, "reason")[0] != '\0',
                  "dead letter without a reason: %.200s", dlq[i].value);
        yajl_tree_free(v);
    }
    cw_h_msgs_free(dlq, n_dlq);

    /* 3. alerts: planted silent accounts alerted, every alert with its drivers */
    size_t n_alerts = 0;
    cw_h_msg_t *alerts = cw_h_consume_all(brokers, "churn-alerts", 1, 2000, 60000, &n_alerts);
    size_t silent = 0, silent_hit = 0, decline = 0, decline_hit = 0, steady = 0, steady_hit = 0;
    size_t steady_by_reason[8] = {0};
    static const char *const reasons[] = {"entered_danger",     "usage_drop",          "inactive",
                                          "onboarding_stalled", "cancellation_notice", "recovered"};
    for (size_t i = 0; i < n_accts; i++) {
        int inactive = 0, drop = 0, any = 0;
        for (size_t k = 0; k < n_alerts; k++) {
            char err[256];
            yajl_val v = yajl_tree_parse(alerts[k].value, err, sizeof(err));
            cr_assert(v != NULL, "alert is not JSON");
            const char *id = str_at(v, "account_id");
            const char *reason = str_at(v, "reason");
            if (id != NULL && strcmp(id, cw_ref_account_id(ref, i)) == 0) {
                any = 1;
                inactive |=
                    strcmp(reason, "inactive") == 0 || strcmp(reason, "entered_danger") == 0;
                drop |= strcmp(reason, "usage_drop") == 0 || strcmp(reason, "entered_danger") == 0;
                cr_expect(yajl_tree_get(v, (const char *[]){"signals", NULL}, yajl_t_array) != NULL,
                          "alert without its driving signals");
                if (strcmp(cw_ref_profile(ref, i), "steady") == 0) {
                    for (size_t r = 0; r < 6; r++) {
                        steady_by_reason[r] += strcmp(reason, reasons[r]) == 0;
                    }
                }
            }
            yajl_tree_free(v);
        }
        const char *profile = cw_ref_profile(ref, i);
        if (strcmp(profile, "silent") == 0) {
            silent++;
            silent_hit += inactive;
        } else if (strcmp(profile, "decline") == 0) {
            decline++;
            decline_hit += drop;
        } else if (strcmp(profile, "steady") == 0) {
            steady++;
            steady_hit += any;
        }
    }
    cw_h_msgs_free(alerts, n_alerts);
    for (size_t r = 0; r < 6; r++) {
        cr_log_info("steady accounts' alerts %s: %zu", reasons[r], steady_by_reason[r]);
    }
    cr_log_info("alerts=%zu silent %zu/%zu decline %zu/%zu steady-with-alert %zu/%zu", n_alerts,
                silent_hit, silent, decline_hit, decline, steady_hit, steady);
    cr_expect_gt(silent, 0);
    cr_expect_eq(silent_hit, silent, "silent accounts alerted: %zu of %zu", silent_hit, silent);
    /* Declining and steady accounts are judged in test_replay.c, on data
     * dense enough to judge them (12 events a day): at this data set's 1.5
     * events a day most accounts log in a few times a month, so a login
     * trend cannot be told from chance (the model leaves it unjudged) and a
     * small "steady" account really does go 14 days without a login now and
     * then (inactive is then the right alert). Logged for the record. */
    (void)decline_hit;
    (void)steady_hit;

    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
}

/* The band counts (P:bands) match the bands stored on the accounts: every
 * band move was counted once. (Two lanes can decide an account on two
 * partitions at the same time; cw_state_commit serializes them, and
 * test_state: decisions_of_an_account_on_two_partitions shows the counts
 * drifting without it.) */
static void expect_band_counts_match(cw_h_redis_t *redis, const char *prefix) {
    cr_expect_gt(cw_ref_expect_band_counts(cw_h_redis_socket(redis), prefix), 0);
}

/* Every account's events spread over two partitions (as after a producer
 * changed its keying, or the topic its partition count): with the
 * partitions on two lanes (the default redis.connections, 3) and on one (1), each
 * account's updates from the two partitions must all count — in one step
 * they would be computed from the same read, and the later write would
 * overwrite the earlier one's counters, masks and facts. */
Test(pipeline, account_on_two_partitions, .timeout = 600) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(2, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], cfg2[512], cfg1[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(cfg2, sizeof(cfg2), "%s/lanes2.json", dir);
    snprintf(cfg1, sizeof(cfg1), "%s/lanes1.json", dir);
    cw_ref_gen(events, NULL, 11, 60, 20, 6, 0);
    cw_ref_t *ref = cw_ref_load(events);
    size_t produced = cw_h_produce_file_spread(brokers, "events", events, 2);
    cr_assert_eq(produced, cw_ref_valid(ref));

    cw_ref_write_config(cfg2, brokers, cw_h_redis_url(redis), "x2", "events", "x2", 20000);
    cw_ref_write_config(cfg1, brokers, cw_h_redis_url(redis), "x1", "events", "x1", 20000);
    {
        size_t len = 0;
        char *text = cw_h_read_file(cfg1, &len);
        char *at = text != NULL ? strstr(text, "\"backoff_max_ms\": 1000") : NULL;
        char out[4096];
        cr_assert_not_null(at);
        snprintf(out, sizeof(out), "%.*s\"connections\": 1, %s", (int)(at - text), text, at);
        cr_assert_eq(cw_h_write_file(cfg1, out), 0);
        free(text);
    }
    cw_ref_run_to_idle(cfg2, 3000, dir, "lanes2", 300000);
    cw_ref_run_to_idle(cfg1, 3000, dir, "lanes1", 300000);

    size_t checked = 0;
    cr_expect_eq(cw_ref_check_all(ref, cfg2, &checked), 0, "two lanes: windows differ");
    cr_log_info("two lanes: checked %zu window counts", checked);
    cr_expect_eq(cw_ref_check_all(ref, cfg1, &checked), 0, "one lane: windows differ");
    cr_log_info("one lane: checked %zu window counts", checked);
    expect_band_counts_match(redis, "x2");
    expect_band_counts_match(redis, "x1");

    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
}

/* --exit-on-idle also ends a run that starts at the end of every partition
 * (its group has consumed everything already, as after a crash that came
 * late): after one step (outboxes re-sent, timers checked) and the idle
 * period it exits, and nothing is applied twice. It used to wait for a
 * first applied event that never came (test_crash's final run hung when
 * the killed runs had finished the input). */
Test(pipeline, idle_exit_at_the_end_of_the_topic, .timeout = 300) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(2, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], cfg[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(cfg, sizeof(cfg), "%s/end.json", dir);
    cw_ref_gen(events, NULL, 5, 20, 10, 3, 0);
    cw_ref_t *ref = cw_ref_load(events);
    cr_assert_eq(cw_h_produce_file(brokers, "events", events), cw_ref_valid(ref));
    cw_ref_write_config(cfg, brokers, cw_h_redis_url(redis), "end", "events", "end", 500);
    cw_ref_run_to_idle(cfg, 1000, dir, "first", 120000);
    int64_t t0 = cw_time_mono_ms();
    cw_ref_run_to_idle(cfg, 1000, dir, "again", 60000); /* asserts exit 0 in time */
    cr_log_info("a run starting at the end exited after %lld ms",
                (long long)(cw_time_mono_ms() - t0));
    size_t checked = 0;
    cr_expect_eq(cw_ref_check_all(ref, cfg, &checked), 0, "windows differ after the second run");
    cr_expect_gt(checked, 0);
    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
}
