/*
 * test_consumer.c — consumer/cw_consumer.c on the embedded broker: with a
 * prefetch queue much smaller than the topic (so librdkafka stops fetching
 * again and again) every message is delivered exactly once, in offset order
 * per partition, whether the fetch waker is on or off; with it on, it has
 * sent offset queries, with it off none. How much faster the waker makes
 * consuming is a benchmark figure (bench/README.md), not checked here.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"
#include "cw_conf.h"
#include "cw_consumer.h"
#include "cw_harness.h"

#define PARTITIONS 4
#define MESSAGES 6000
#define BATCH 64 /* full batches while the queue holds a backlog: the waker runs */

/* n login lines with a pad field of pad digits, spread over the partitions. */
static void produce_events(const char *brokers, const char *dir, int n, int pad) {
    char path[512];
    snprintf(path, sizeof(path), "%s/events.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        fprintf(f,
                "{\"account_id\":\"acct-%05d\",\"type\":\"login\",\"user_id\":\"u%d\","
                "\"ts\":\"2025-06-01T00:00:00Z\",\"pad\":\"%0*d\"}\n",
                i, i, pad, i);
    }
    fclose(f);
    cr_assert_eq(cw_h_produce_file_spread(brokers, "events", path, PARTITIONS), (size_t)n);
}

static void consume_all(int wake_ms) {
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, "events");
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char json[2048], err[512];

    /* ~300-byte lines: 6000 of them are ~1.8 MB, 28 times the 64 KB queue */
    produce_events(brokers, dir, MESSAGES, 240);

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g-wake-%d\","
             " \"input_topic\": \"events\", \"fetch_wake_ms\": %d,"
             " \"properties\": {\"queued.max.messages.kbytes\": \"64\","
             " \"fetch.max.bytes\": \"65536\", \"message.max.bytes\": \"65536\", "
             "\"max.partition.fetch.bytes\": \"16384\"}},"
             " \"redis\": {\"url\": \"unix:///nonexistent.sock\"}}",
             brokers, wake_ms, wake_ms);
    cw_conf_t *conf = cw_conf_parse(json, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    cw_consumer_t *c = cw_consumer_new(conf, NULL, NULL, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);

    int64_t next[PARTITIONS] = {0};
    int eof[PARTITIONS] = {0};
    size_t seen = 0;
    rd_kafka_message_t *msgs[BATCH];
    int64_t deadline = cw_time_mono_ms() + 120000;
    while (cw_time_mono_ms() < deadline) {
        size_t n = cw_consumer_batch(c, msgs, BATCH, 100);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            int p = m->partition;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                eof[p] = next[p] > 0;
            } else {
                cr_assert_eq(m->err, 0, "%s", rd_kafka_err2str(m->err));
                cr_assert(p >= 0 && p < PARTITIONS);
                /* exactly once, in order: no message skipped or repeated */
                cr_assert_eq(m->offset, next[p], "partition %d: offset %lld, expected %lld", p,
                             (long long)m->offset, (long long)next[p]);
                next[p]++;
                seen++;
                eof[p] = 0;
            }
            rd_kafka_message_destroy(m);
        }
        int done = seen == MESSAGES;
        for (int p = 0; p < PARTITIONS; p++) {
            done &= eof[p];
        }
        if (done) {
            break;
        }
    }
    cr_assert_eq(seen, MESSAGES, "consumed %zu of %d", seen, MESSAGES);
    if (wake_ms > 0) {
        cr_expect_gt(cw_consumer_wakes(c), 0, "the waker sent no offset query");
    } else {
        cr_expect_eq(cw_consumer_wakes(c), 0);
    }
    cw_consumer_destroy(c);
    cw_conf_destroy(conf);
    cw_h_broker_stop(broker);
    cw_h_rmrf(dir);
    free(dir);
}

Test(consumer, small_queue_with_fetch_waker_delivers_each_message_once, .timeout = 300) {
    consume_all(5);
}

Test(consumer, small_queue_without_fetch_waker_delivers_each_message_once, .timeout = 300) {
    consume_all(0);
}

static void count_revokes(void *opaque, int assigned,
                          const rd_kafka_topic_partition_list_t *parts) {
    (void)parts;
    if (!assigned) {
        ++*(int *)opaque;
    }
}

/* A stop with the broker gone: librdkafka's consumer close and synchronous
 * commit wait for the group coordinator without a bound or for the session
 * timeout; cw_consumer_destroy returns within about the session timeout it
 * sets (the offsets that matter are in Redis). */
Test(consumer, destroy_returns_in_bounded_time_when_the_broker_is_gone, .timeout = 180) {
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, "events");
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char json[1024], err[512];
    produce_events(brokers, dir, 400, 1);
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g-close\","
             " \"input_topic\": \"events\"}, \"redis\": {\"url\": \"unix:///nonexistent.sock\"}}",
             brokers);
    cw_conf_t *conf = cw_conf_parse(json, err, sizeof(err));
    cr_assert_not_null(conf, "%s", err);
    int revokes = 0;
    cw_consumer_t *c = cw_consumer_new(conf, count_revokes, &revokes, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);

    /* consume and store part of the input: the close has offsets to commit */
    int64_t next[PARTITIONS] = {0};
    size_t seen = 0;
    rd_kafka_message_t *msgs[BATCH];
    for (int64_t deadline = cw_time_mono_ms() + 60000;
         seen < 200 && cw_time_mono_ms() < deadline;) {
        size_t n = cw_consumer_batch(c, msgs, BATCH, 100);
        for (size_t i = 0; i < n; i++) {
            if (msgs[i]->err == 0) {
                next[msgs[i]->partition] = msgs[i]->offset + 1;
                seen++;
            }
            rd_kafka_message_destroy(msgs[i]);
        }
        cw_consumer_store(c, next, PARTITIONS);
    }
    cr_assert_geq(seen, 200, "consumed %zu", seen);

    cw_h_broker_stop(broker);
    int64_t t0 = cw_time_mono_ms();
    cw_consumer_destroy(c);
    int64_t took = cw_time_mono_ms() - t0;
    /* without the bounds: >10 minutes seen in rd_kafka_consumer_close, and
     * ~46 s (the 45 s default session) in the commit on revoke */
    cr_expect_leq(took, atoi(CW_CONSUMER_SESSION_MS) + CW_CONSUMER_COMMIT_MS + 3000,
                  "destroy took %lld ms", (long long)took);
    cr_expect_eq(revokes, 1, "the revoke callback ran %d times", revokes);
    cw_conf_destroy(conf);
    cw_h_rmrf(dir);
    free(dir);
}
