/*
 * test_outage.c — outages mid-stream end with exact counts and no lost
 * alert (issue 4, "Must show" 2).
 *
 *  redis_restart: Redis runs with append-only persistence (appendfsync
 *    always), as a deployment that promises exact counts must. Half the
 *    data is produced, the processor starts, and while it works Redis is
 *    SIGKILLed; the other half is produced during the outage (so there is
 *    input the processor must hold back), and after ~2 s Redis is
 *    restarted from its append-only file. The processor must pause,
 *    reconnect, resume and finish with exit 0, having logged the outage.
 *
 *  broker_freeze: the embedded broker is frozen with SIGSTOP — to every
 *    client that is a network outage: connections stay open, nothing
 *    answers. First a 3 s freeze that the running processor must ride out;
 *    then a second freeze during which the processor is SIGKILLed and a new
 *    instance started (it cannot reach the broker until SIGCONT).
 *
 * Both end with: every account's windows equal the independent reference;
 * every alert of a clean run (same data, own key prefix, group and topics)
 * is on the outage run's alert topic; no alert_id with two contents; every
 * malformed line dead-lettered.
 *
 *  input_deleted_unread: an outage long enough for the broker to delete
 *    input before it was read (the embedded broker keeps ~5 MB per
 *    partition), then a stop as long: input lost to any consumer. What
 *    churnwatch owes is to say so: every produced offset is either
 *    consumed or counted in input_skipped and logged as a warning, a gap
 *    mid-stream and one after the committed offset at a restart alike.
 */
#define _GNU_SOURCE /* strcasestr */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"
#include "cw_harness.h"
#include "cw_ref.h"

#define TOPICS "events,clean-alerts,clean-scores,clean-dlq,out-alerts,out-scores,out-dlq"
#define PARTITIONS 12
#define BATCH_SIZE 500
#define RUN_TIMEOUT_MS 300000

/* Lines of a JSON log with the given level that mention word. */
static int count_log(const char *path, const char *level, const char *word) {
    char *text = cw_h_read_file(path, NULL);
    char lv[64];
    int n = 0;
    if (text == NULL) {
        return 0;
    }
    snprintf(lv, sizeof(lv), "\"level\":\"%s\"", level);
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        n += strstr(line, lv) != NULL && strcasestr(line, word) != NULL;
    }
    free(text);
    return n;
}

/* Split a JSON-lines file: the first `share` of its lines to a, the rest to b. */
static void split_file(const char *path, double share, const char *a, const char *b) {
    size_t len = 0;
    char *text = cw_h_read_file(path, &len);
    cr_assert_not_null(text);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) {
        lines += text[i] == '\n';
    }
    size_t cut_line = (size_t)((double)lines * share), seen = 0, cut = 0;
    for (size_t i = 0; i < len && seen < cut_line; i++) {
        if (text[i] == '\n') {
            seen++;
            cut = i + 1;
        }
    }
    char save = text[cut];
    text[cut] = '\0';
    cr_assert_eq(cw_h_write_file(a, text), 0);
    text[cut] = save;
    cr_assert_eq(cw_h_write_file(b, text + cut), 0);
    free(text);
}

/* Checks shared by both scenarios. */
static void check_results(const cw_ref_t *ref, const char *brokers, const char *out_cfg,
                          const char *clean_cfg) {
    size_t checked = 0;
    size_t bad = cw_ref_check_all(ref, out_cfg, &checked);
    cr_log_info("outage run: %zu window counts checked, %zu wrong", checked, bad);
    bad = cw_ref_check_all(ref, clean_cfg, &checked);
    cr_log_info("clean run: %zu window counts checked, %zu wrong", checked, bad);

    cw_ref_alerts_t *clean = cw_ref_alerts_read(brokers, "clean-alerts", 1);
    cw_ref_alerts_t *out = cw_ref_alerts_read(brokers, "out-alerts", 1);
    cr_log_info("alerts: clean %zu ids / %zu messages, outage run %zu ids / %zu messages",
                cw_ref_alerts_ids(clean), cw_ref_alerts_messages(clean), cw_ref_alerts_ids(out),
                cw_ref_alerts_messages(out));
    cr_expect_gt(cw_ref_alerts_ids(clean), 0, "the clean run raised no alert at all");
    cr_expect_eq(cw_ref_alerts_invalid(clean) + cw_ref_alerts_invalid(out), 0,
                 "alert messages without alert_id/account_id/reason");
    size_t conflicts = cw_ref_alerts_conflicts(out);
    cr_expect_eq(conflicts, 0, "%zu alert ids with different contents", conflicts);
    size_t missing = cw_ref_alerts_missing(clean, out, "outage run");
    cr_expect_eq(missing, 0, "%zu alerts of the clean run are not on the outage run's topic",
                 missing);
    size_t extra = cw_ref_alerts_missing(out, clean, "clean run (informational)");
    cr_log_info("alerts only in the outage run: %zu", extra);
    cw_ref_alerts_free(clean);
    cw_ref_alerts_free(out);

    cw_ref_dlq_t dlq;
    cw_ref_dlq_read(brokers, "out-dlq", cw_ref_malformed(ref), &dlq);
    cr_expect_eq(dlq.invalid, 0, "%zu dead letters without reason/position", dlq.invalid);
    cr_expect_eq(dlq.distinct, cw_ref_malformed(ref),
                 "dead letters name %zu distinct inputs, %zu lines were malformed", dlq.distinct,
                 cw_ref_malformed(ref));
    cw_ref_dlq_free(&dlq);
}

Test(outage, redis_restart, .timeout = 900) {
    cw_ref_redis_t *redis = cw_ref_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], part1[512], part2[512], clean_cfg[512], out_cfg[512], out_log[512],
        err_log[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(part1, sizeof(part1), "%s/part1.jsonl", dir);
    snprintf(part2, sizeof(part2), "%s/part2.jsonl", dir);
    snprintf(clean_cfg, sizeof(clean_cfg), "%s/clean.json", dir);
    snprintf(out_cfg, sizeof(out_cfg), "%s/out.json", dir);
    snprintf(out_log, sizeof(out_log), "%s/out.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/out.err", dir);
    cw_ref_write_config(clean_cfg, brokers, cw_ref_redis_url(redis), "clean", "events", "clean",
                        BATCH_SIZE);
    cw_ref_write_config(out_cfg, brokers, cw_ref_redis_url(redis), "out", "events", "out",
                        BATCH_SIZE);

    cw_ref_gen(events, NULL, 21, 300, 45, 4.0, 0.005);
    cw_ref_t *ref = cw_ref_load(events);
    split_file(events, 0.5, part1, part2);
    size_t produced = cw_h_produce_file(brokers, "events", part1);

    /* the processor starts on the first half */
    pid_t pid = cw_ref_spawn_run(out_cfg, 10000, out_log, err_log);
    cr_assert(cw_ref_wait_log(err_log, "assigned ", 1, pid, 60000),
              "the processor was not assigned its partitions");
    cw_ref_sleep_ms(700);
    cr_assert(cw_ref_alive(pid), "the processor ended before the outage");

    /* outage: Redis dies; the rest of the input arrives meanwhile */
    int64_t t_kill = cw_time_mono_ms();
    cw_ref_redis_kill(redis);
    produced += cw_h_produce_file(brokers, "events", part2);
    cr_assert_eq(produced, cw_ref_valid(ref) + cw_ref_malformed(ref));
    int64_t left = 2000 - (cw_time_mono_ms() - t_kill);
    if (left > 0) {
        cw_ref_sleep_ms((int)left);
    }
    cr_assert(cw_ref_alive(pid), "the processor died while Redis was down");
    cw_ref_redis_restart(redis);
    cr_log_info("redis was down for %lld ms", (long long)(cw_time_mono_ms() - t_kill));

    int rc = cw_h_wait(pid, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("outage run stderr", err_log);
    }
    cr_assert_eq(rc, 0, "the processor exited %d after the Redis outage", rc);
    int warned = count_log(err_log, "warn", "redis") + count_log(err_log, "error", "redis");
    cr_log_info("warn/error lines about redis: %d", warned);
    cr_expect_geq(warned, 1, "the Redis outage was not logged as a warning or error");

    cw_ref_run_to_idle(clean_cfg, 3000, dir, "clean", RUN_TIMEOUT_MS);
    check_results(ref, brokers, out_cfg, clean_cfg);

    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_ref_redis_stop(redis);
}

Test(outage, broker_freeze, .timeout = 900) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_ref_broker_t *broker = cw_ref_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_ref_broker_bootstraps(broker);
    pid_t bpid = cw_ref_broker_pid(broker);
    char *dir = cw_h_tmpdir();
    char events[512], clean_cfg[512], out_cfg[512], out_log[512], err_log[512], out2_log[512],
        err2_log[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(clean_cfg, sizeof(clean_cfg), "%s/clean.json", dir);
    snprintf(out_cfg, sizeof(out_cfg), "%s/out.json", dir);
    snprintf(out_log, sizeof(out_log), "%s/out1.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/out1.err", dir);
    snprintf(out2_log, sizeof(out2_log), "%s/out2.out", dir);
    snprintf(err2_log, sizeof(err2_log), "%s/out2.err", dir);
    cw_ref_write_config(clean_cfg, brokers, cw_h_redis_url(redis), "clean", "events", "clean",
                        BATCH_SIZE);
    cw_ref_write_config(out_cfg, brokers, cw_h_redis_url(redis), "out", "events", "out",
                        BATCH_SIZE);

    cw_ref_gen(events, NULL, 31, 300, 45, 4.0, 0.005);
    cw_ref_t *ref = cw_ref_load(events);
    size_t produced = cw_h_produce_file(brokers, "events", events);
    cr_assert_eq(produced, cw_ref_valid(ref) + cw_ref_malformed(ref));

    /* freeze 1: the running processor must ride it out */
    pid_t p1 = cw_ref_spawn_run(out_cfg, 15000, out_log, err_log);
    cr_assert(cw_ref_wait_log(err_log, "assigned ", 1, p1, 60000),
              "the processor was not assigned its partitions");
    cw_ref_sleep_ms(500);
    cr_assert(cw_ref_alive(p1), "the processor ended before the first freeze");
    cr_assert_eq(kill(bpid, SIGSTOP), 0);
    cw_ref_sleep_ms(3000);
    cr_assert_eq(kill(bpid, SIGCONT), 0);
    cw_ref_sleep_ms(800);
    cr_assert(cw_ref_alive(p1), "the processor did not survive a 3 s broker freeze");

    /* freeze 2: the processor is killed during it; a new one starts blind */
    cr_assert_eq(kill(bpid, SIGSTOP), 0);
    cw_ref_sleep_ms(1000);
    kill(p1, SIGKILL);
    int rc = cw_h_wait(p1, 10000);
    cr_assert_eq(rc, 128 + SIGKILL, "first processor: exit %d", rc);
    pid_t p2 = cw_ref_spawn_run(out_cfg, 15000, out2_log, err2_log);
    cw_ref_sleep_ms(2000);
    cr_assert_eq(kill(bpid, SIGCONT), 0);

    rc = cw_h_wait(p2, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("second processor stderr", err2_log);
    }
    cr_assert_eq(rc, 0, "the second processor exited %d", rc);

    cw_ref_run_to_idle(clean_cfg, 3000, dir, "clean", RUN_TIMEOUT_MS);
    check_results(ref, brokers, out_cfg, clean_cfg);

    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_ref_broker_stop(broker);
    cw_h_redis_stop(redis);
}

/* A stop line's "key=N" (0 when absent). */
static unsigned long long stop_field(const char *log, const char *key) {
    char *text = cw_h_read_file(log, NULL);
    unsigned long long v = 0;
    const char *line = text != NULL ? strstr(text, "stopped (clean)") : NULL;
    const char *at = line != NULL ? strstr(line, key) : NULL;
    if (at != NULL) {
        v = strtoull(at + strlen(key), NULL, 10);
    }
    free(text);
    return v;
}

/* JSON lines of ~200 bytes, all valid, from offset `from`. */
static void write_padded_events(const char *path, int from, int n) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = from; i < from + n; i++) {
        fprintf(f,
                "{\"event_id\":\"e-%d\",\"account_id\":\"acct-%04d\",\"type\":\"login\","
                "\"user_id\":\"u%d\",\"ts\":\"2026-06-01T00:00:00Z\",\"pad\":\"%090d\"}\n",
                i, i % 500, i % 7, i);
    }
    fclose(f);
}

Test(outage, input_deleted_unread_is_counted_and_logged, .timeout = 600) {
    cw_ref_redis_t *redis = cw_ref_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(1, "events,gap-alerts,gap-scores,gap-dlq");
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char part1[512], part2[512], cfg[512], out_log[512], err_log[512];
    snprintf(part1, sizeof(part1), "%s/part1.jsonl", dir);
    snprintf(part2, sizeof(part2), "%s/part2.jsonl", dir);
    snprintf(cfg, sizeof(cfg), "%s/gap.json", dir);
    snprintf(out_log, sizeof(out_log), "%s/gap.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/gap.err", dir);
    cw_ref_write_config(cfg, brokers, cw_ref_redis_url(redis), "gap", "events", "gap", BATCH_SIZE);

    write_padded_events(part1, 0, 2000);
    size_t produced = cw_h_produce_file(brokers, "events", part1);
    pid_t pid = cw_ref_spawn_run(cfg, 5000, out_log, err_log);
    cr_assert(cw_ref_wait_log(err_log, "assigned ", 1, pid, 60000),
              "the processor was not assigned its partition");
    cw_ref_sleep_ms(1500);

    /* Redis down: the processor pauses its partition; meanwhile ~9 MB
     * arrive, more than the broker keeps, so the offsets after the
     * processor's position are deleted before it can read them */
    cw_ref_redis_kill(redis);
    cw_ref_sleep_ms(500);
    write_padded_events(part2, 2000, 45000);
    produced += cw_h_produce_file(brokers, "events", part2);
    cr_assert_eq(produced, 47000);
    cw_ref_redis_restart(redis);

    int rc = cw_h_wait(pid, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("gap run stderr", err_log);
    }
    cr_assert_eq(rc, 0, "the processor exited %d", rc);
    unsigned long long in = stop_field(err_log, "events_in=");
    unsigned long long dlq = stop_field(err_log, "dead_lettered=");
    unsigned long long skipped = stop_field(err_log, "input_skipped=");
    cr_log_info("consumed %llu, dead-lettered %llu, skipped %llu of %zu", in, dlq, skipped,
                produced);
    cr_expect_gt(skipped, 0, "nothing was deleted unread: the test did not test");
    cr_expect_eq(dlq, 0);
    cr_expect_eq(in + dlq + skipped, produced, "consumed %llu + %llu, skipped %llu, produced %zu",
                 in, dlq, skipped, produced);
    cr_expect_geq(count_log(err_log, "warn", "never consumed"), 1,
                  "the skipped offsets were not logged");

    /* stopped while ~9 MB more arrive: the offsets after the committed one
     * are deleted before the next start reads them */
    char part3[512], out2_log[512], err2_log[512];
    snprintf(part3, sizeof(part3), "%s/part3.jsonl", dir);
    snprintf(out2_log, sizeof(out2_log), "%s/gap2.out", dir);
    snprintf(err2_log, sizeof(err2_log), "%s/gap2.err", dir);
    write_padded_events(part3, 47000, 45000);
    cr_assert_eq(cw_h_produce_file(brokers, "events", part3), 45000);
    pid = cw_ref_spawn_run(cfg, 3000, out2_log, err2_log);
    rc = cw_h_wait(pid, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("second gap run stderr", err2_log);
    }
    cr_assert_eq(rc, 0, "the second run exited %d", rc);
    in = stop_field(err2_log, "events_in=");
    skipped = stop_field(err2_log, "input_skipped=");
    cr_log_info("after the restart: consumed %llu, skipped %llu of 45000", in, skipped);
    cr_expect_gt(skipped, 0, "the gap after the committed offset was not counted");
    cr_expect_eq(in + skipped, 45000, "consumed %llu, skipped %llu, produced 45000", in, skipped);
    cr_expect_geq(count_log(err2_log, "warn", "never consumed"), 1);

    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_ref_redis_stop(redis);
}
