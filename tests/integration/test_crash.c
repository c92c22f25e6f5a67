/*
 * test_crash.c — effectively-once under SIGKILL (issue 4, "Must show" 1).
 *
 * A generated data set (300 accounts, 45 days, a few malformed lines) is
 * produced once to a 12-partition input topic. A clean run (its own Redis
 * key prefix, consumer group and output topics) processes it untouched.
 * The crash run processes the same topic while `churnwatch run` is
 * SIGKILLed at random moments and restarted: before each kill the test
 * waits a random 200-1500 ms, counted from the process's partition
 * assignment (so the kill lands while it works) or, one time in four, from
 * its start (so it lands in start-up and group join). A last instance then
 * runs to idle. Afterwards:
 *  - every account's windows (`explain --json`) equal the independent
 *    reference exactly, in the crash run and in the clean run;
 *  - no alert_id appears on the crash run's alert topic with two different
 *    contents (redelivery must repeat the identical document);
 *  - every alert of the clean run is on the crash run's alert topic;
 *  - every malformed line is dead-lettered (at least once);
 *  - no instance warned of input never consumed (each restart resumes at
 *    the committed offset; churnwatch_input_skipped_total has no false
 *    positives under kills).
 * The PRNG is seeded (CW_CRASH_SEED, default fixed) so a failure can be
 * replayed; CW_CRASH_KILLS sets the number of kills (default 10;
 * scripts/crash-soak.sh runs long soaks with it).
 *
 * The same in wall-clock mode (`time.mode = "wall"`, the live setting the
 * latency benchmark runs): every batch's accounts are decided right after
 * its apply, the apply sets no timer, and the batch's offsets are stored
 * only after the decision, so a kill between apply and decision must leave
 * the redelivered batch's accounts read back and decided. The data ends
 * now (wall mode counts retention from today). Decisions there are made as
 * of each batch, so the two runs' alerts differ by where batches fell, and
 * that check is replaced: every account with an event has a stored
 * decision, in both runs. Both modes: the band counts equal the bands
 * stored on the accounts.
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

#define TOPICS "events,crash-alerts,crash-scores,crash-dlq,clean-alerts,clean-scores,clean-dlq"
#define PARTITIONS 12
#define BATCH_SIZE 500 /* small batches: many commit points for the kills to fall between */
#define IDLE_MS 3000
#define RUN_TIMEOUT_MS 300000

static long env_long(const char *name, long def, long lo, long hi) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        return def;
    }
    char *end = NULL;
    long x = strtol(v, &end, 10);
    cr_assert(end != NULL && *end == '\0' && x >= lo && x <= hi, "%s=%s: expected %ld..%ld", name,
              v, lo, hi);
    return x;
}

/* The crash test in time.mode `mode` ("event" or "wall"). */
static void crash_test(const char *mode) {
    int wall = strcmp(mode, "wall") == 0;
    long kills = env_long("CW_CRASH_KILLS", 10, 1, 100000);
    uint64_t seed = (uint64_t)env_long("CW_CRASH_SEED", 20261125, 0, 0x7fffffff);
    cr_log_info("crash test (%s mode): %ld kills, seed %llu (CW_CRASH_KILLS, CW_CRASH_SEED)", mode,
                kills, (unsigned long long)seed);

    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], truth[512], clean_cfg[512], crash_cfg[512], out_log[512], err_log[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(truth, sizeof(truth), "%s/truth.jsonl", dir);
    snprintf(clean_cfg, sizeof(clean_cfg), "%s/clean.json", dir);
    snprintf(crash_cfg, sizeof(crash_cfg), "%s/crash.json", dir);
    cw_ref_write_config_mode(clean_cfg, brokers, cw_h_redis_url(redis), "clean", "events", "clean",
                             BATCH_SIZE, mode);
    cw_ref_write_config_mode(crash_cfg, brokers, cw_h_redis_url(redis), "crash", "events", "crash",
                             BATCH_SIZE, mode);

    cw_ref_gen_end(events, truth, 11, 300, 45, 4.0, 0.005, wall ? "now" : CW_REF_GEN_END);
    cw_ref_t *ref = cw_ref_load(events);
    cw_ref_load_truth(ref, truth);
    cr_assert_geq(cw_ref_accounts(ref), 300);
    cr_assert_gt(cw_ref_malformed(ref), 0, "expected some malformed lines");
    size_t produced = cw_h_produce_file(brokers, "events", events);
    cr_assert_eq(produced, cw_ref_valid(ref) + cw_ref_malformed(ref));

    /* 1. the clean run */
    snprintf(out_log, sizeof(out_log), "%s/clean.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/clean.err", dir);
    int64_t t0 = cw_time_mono_ms();
    pid_t pid = cw_ref_spawn_run(clean_cfg, IDLE_MS, out_log, err_log);
    int rc = cw_h_wait(pid, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("clean run stderr", err_log);
    }
    cr_assert_eq(rc, 0, "clean run exited %d", rc);
    cr_log_info("clean run: %lld ms (incl. %d ms idle)", (long long)(cw_time_mono_ms() - t0),
                IDLE_MS);

    /* 2. the crash run: kill, restart, ... */
    cw_ref_rng_t rng = {seed};
    long killed = 0, after_assign = 0, self_exit = 0;
    /* no input is ever skipped: a restart resumes at the committed offset,
     * and nothing here outgrows the broker's retention */
    int skipped_lines = cw_ref_count_in_file(err_log, "never consumed");
    for (long k = 0; k < kills; k++) {
        snprintf(out_log, sizeof(out_log), "%s/crash-%ld.out", dir, k % 4);
        snprintf(err_log, sizeof(err_log), "%s/crash-%ld.err", dir, k % 4);
        pid = cw_ref_spawn_run(crash_cfg, IDLE_MS, out_log, err_log);
        int from_start = cw_ref_rng_range(&rng, 0, 3) == 0;
        int delay = (int)cw_ref_rng_range(&rng, 200, 1500);
        if (!from_start) {
            if (cw_ref_wait_log(err_log, "assigned ", 1, pid, 60000)) {
                after_assign++;
            }
        }
        cw_ref_sleep_ms(delay);
        const char *what = "killed";
        if (cw_ref_alive(pid)) {
            kill(pid, SIGKILL);
            rc = cw_h_wait(pid, 10000);
            cr_assert_eq(rc, 128 + SIGKILL, "kill %ld: exit %d", k, rc);
            killed++;
        } else {
            /* it finished by itself (all input done and idle): must be clean */
            rc = cw_h_wait(pid, 10000);
            if (rc != 0) {
                cw_ref_dump("crash run stderr", err_log);
            }
            cr_assert_eq(rc, 0, "instance %ld exited %d before its kill", k, rc);
            self_exit++;
            what = "exited by itself";
        }
        skipped_lines += cw_ref_count_in_file(err_log, "never consumed");
        if (k < 20 || k % 50 == 0) {
            cr_log_info("kill %ld: %s, %d ms after %s", k, what, delay,
                        from_start ? "start" : "assignment");
        }
    }
    cr_log_info("crash run: %ld kills (%ld timed from assignment), %ld self-exits", killed,
                after_assign, self_exit);
    cr_expect_eq(killed, kills, "only %ld of %ld instances were alive to be killed", killed, kills);
    cr_expect_geq(after_assign * 2, kills, "too few kills landed after assignment (%ld of %ld)",
                  after_assign, kills);

    snprintf(out_log, sizeof(out_log), "%s/final.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/final.err", dir);
    pid = cw_ref_spawn_run(crash_cfg, IDLE_MS, out_log, err_log);
    rc = cw_h_wait(pid, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("final run stderr", err_log);
    }
    cr_assert_eq(rc, 0, "final run exited %d", rc);
    skipped_lines += cw_ref_count_in_file(err_log, "never consumed");
    cr_expect_eq(skipped_lines, 0, "%d warnings of input never consumed", skipped_lines);

    /* 3. exact windows, both runs */
    size_t checked = 0;
    int64_t asof_max = wall ? -1 : cw_ref_max_ts(ref); /* wall mode: explain reads as of now */
    size_t bad_crash = cw_ref_check_all_until(ref, crash_cfg, asof_max, &checked);
    cr_log_info("crash run: %zu window counts checked, %zu wrong", checked, bad_crash);
    size_t bad_clean = cw_ref_check_all_until(ref, clean_cfg, asof_max, &checked);
    cr_log_info("clean run: %zu window counts checked, %zu wrong", checked, bad_clean);

    /* 4. alerts: one content per id; nothing of the clean run missing */
    cw_ref_alerts_t *clean = cw_ref_alerts_read(brokers, "clean-alerts", 1);
    cw_ref_alerts_t *crash = cw_ref_alerts_read(brokers, "crash-alerts", 1);
    cr_log_info("alerts: clean %zu ids / %zu messages, crash %zu ids / %zu messages",
                cw_ref_alerts_ids(clean), cw_ref_alerts_messages(clean), cw_ref_alerts_ids(crash),
                cw_ref_alerts_messages(crash));
    cr_expect_gt(cw_ref_alerts_ids(clean), 0, "the clean run raised no alert at all");
    cr_expect_eq(cw_ref_alerts_invalid(clean) + cw_ref_alerts_invalid(crash), 0,
                 "alert messages without alert_id/account_id/reason");
    size_t conflicts = cw_ref_alerts_conflicts(crash);
    cr_expect_eq(conflicts, 0, "%zu alert ids with different contents in the crash run", conflicts);
    cr_expect_eq(cw_ref_alerts_conflicts(clean), 0, "alert ids with different contents (clean)");
    if (!wall) {
        size_t missing = cw_ref_alerts_missing(clean, crash, "crash run");
        cr_expect_eq(missing, 0, "%zu alerts of the clean run are not on the crash run's topic",
                     missing);
        size_t extra = cw_ref_alerts_missing(crash, clean, "clean run (informational)");
        cr_log_info("alerts only in the crash run: %zu", extra);
    }

    /* 5. stored decisions: band counts; in wall mode every account decided */
    const char *sock = cw_h_redis_socket(redis);
    size_t scored_crash = cw_ref_expect_band_counts(sock, "crash");
    size_t scored_clean = cw_ref_expect_band_counts(sock, "clean");
    cr_log_info("accounts with a stored decision: crash run %zu, clean run %zu", scored_crash,
                scored_clean);
    if (wall) {
        cw_ref_expect_all_decided(ref, sock, "crash");
        cw_ref_expect_all_decided(ref, sock, "clean");
    }

    /* 6. dead letters: every malformed line at least once */
    cw_ref_dlq_t dlq;
    cw_ref_dlq_read(brokers, "crash-dlq", cw_ref_malformed(ref), &dlq);
    cr_expect_eq(dlq.invalid, 0, "%zu dead letters without reason/position", dlq.invalid);
    cr_expect_eq(dlq.distinct, cw_ref_malformed(ref),
                 "dead letters name %zu distinct inputs, %zu lines were malformed", dlq.distinct,
                 cw_ref_malformed(ref));
    cr_log_info("dead letters: %zu messages for %zu malformed lines", dlq.messages,
                cw_ref_malformed(ref));
    cw_ref_dlq_free(&dlq);

    cw_ref_alerts_free(clean);
    cw_ref_alerts_free(crash);
    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
}

/* No Criterion timeout: the kill count is variable (crash-soak.sh); every
 * step has its own bound, and ctest bounds the suite run. */
Test(crash, sigkill_at_random_moments) {
    crash_test("event");
}

Test(crash, sigkill_at_random_moments_in_wall_mode) {
    crash_test("wall");
}
