/*
 * test_consumer.c — consumer/cw_consumer.c on the embedded broker: with a
 * prefetch queue much smaller than the topic (so librdkafka stops fetching
 * again and again) every message is delivered exactly once, in offset order
 * per partition, whether the fetch waker is on or off; with it on, it has
 * sent watermark queries, with it off none. How much faster the waker makes
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

static void consume_all(int wake_ms) {
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, "events");
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char path[512], json[2048], err[512];

    /* ~300-byte lines: 6000 of them are ~1.8 MB, 28 times the 64 KB queue */
    snprintf(path, sizeof(path), "%s/events.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < MESSAGES; i++) {
        fprintf(f,
                "{\"account_id\":\"acct-%05d\",\"type\":\"login\",\"user_id\":\"u%d\","
                "\"ts\":\"2025-06-01T00:00:00Z\",\"pad\":\"%0240d\"}\n",
                i, i, i);
    }
    fclose(f);
    cr_assert_eq(cw_h_produce_file_spread(brokers, "events", path, PARTITIONS), MESSAGES);

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
        cr_expect_gt(cw_consumer_wakes(c), 0, "the waker sent no watermark query");
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
