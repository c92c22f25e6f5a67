/*
 * cw_consumer.h — the Kafka input: a high-level consumer in a group, read in
 * batches, with offsets *stored* only when the caller says the work they
 * carry is durable (enable.auto.offset.store = false) and committed by
 * librdkafka's auto-commit, on revoke and at close. That is the standard
 * at-least-once pattern; exactness comes from the idempotent Redis apply.
 *
 * Rebalances (eager protocol) are served inside cw_consumer_batch: on
 * revoke, the caller's revoke callback runs first (the caller has no
 * in-flight batch at that point, because batches are processed between
 * polls), stored offsets are committed synchronously, then the assignment
 * is dropped; on assign, the new partitions are assigned (resuming from
 * committed offsets) and the assign callback runs.
 *
 * Threads: cw_consumer_t runs one thread of its own, the fetch waker
 * (kafka.fetch_wake_ms; see cw_consumer.c), which only sends offset
 * queries; every function here is called from one thread, the poller.
 *
 * Ownership: cw_consumer_t owns its rd_kafka_t, queue and waker thread. Messages returned
 * by cw_consumer_batch are owned by the caller, who destroys each with
 * rd_kafka_message_destroy.
 */
#ifndef CW_CONSUMER_H
#define CW_CONSUMER_H

#include <librdkafka/rdkafka.h>

#include "cw_common.h"
#include "cw_conf.h"

#define CW_MAX_PARTITIONS 256
/* Prefetch bounds set by default (kafka.properties overrides them). */
#define CW_CONSUMER_QUEUE_KB "2048"       /* queued.max.messages.kbytes */
#define CW_CONSUMER_FETCH_BYTES "1048576" /* fetch.max.bytes */
/* The fetch waker (cw_consumer.c) runs while a full batch came this recently,
 * and waits at most CW_CONSUMER_WAKE_WAIT_MS for each query's reply. */
#define CW_CONSUMER_WAKE_ACTIVE_MS 1000
#define CW_CONSUMER_WAKE_WAIT_MS 1000
/* Bounds on the waits for the broker at a stop or a rebalance (librdkafka's
 * own waits have none or the 45 s session timeout; deploy/ gives a stop
 * 25 s in all): a synchronous commit (cw_consumer_commit, the commit on
 * revoke), and the group close in cw_consumer_destroy. */
#define CW_CONSUMER_COMMIT_MS 2000
#define CW_CONSUMER_CLOSE_MS 3000
/* session.timeout.ms by default: librdkafka 2.0.2's handle destroy waits for
 * commits queued for a coordinator until the session times out, so this
 * bounds cw_consumer_destroy with the broker gone (test_consumer: ~46 s at
 * 2.0.2's default of 45 s, ~10 s at this); a process that died is also
 * replaced in the group sooner. Kafka's own default before 3.0. */
#define CW_CONSUMER_SESSION_MS "10000"

typedef struct cw_consumer cw_consumer_t;

/** @brief Rebalance notification: assigned (1) or revoked (0) partitions.
 * On assign each element's offset is the group's committed offset
 * (RD_KAFKA_OFFSET_INVALID when there is none, or err set when it could not
 * be read within CW_CONSUMER_COMMIT_MS). */
typedef void(cw_consumer_rebalance_cb)(void *opaque, int assigned,
                                       const rd_kafka_topic_partition_list_t *parts);

/** @brief Create, subscribe to kafka.input_topic. NULL + errstr on failure. */
cw_consumer_t *cw_consumer_new(const cw_conf_t *conf, cw_consumer_rebalance_cb *cb, void *opaque,
                               char *errstr, size_t errstr_size);

/** @brief Commit stored offsets, leave the group, destroy; NULL ok. With the
 * broker gone it gives up on the group after CW_CONSUMER_CLOSE_MS and returns
 * within about CW_CONSUMER_SESSION_MS.
 */
void cw_consumer_destroy(cw_consumer_t *c);

/**
 * @brief Wait at most timeout_ms for a message, then take up to max - 1 more
 * of those already fetched without waiting: a light load is served at once
 * in small batches, a heavy one in full batches.
 * @returns number of messages written to msgs (caller destroys each).
 */
size_t cw_consumer_batch(cw_consumer_t *c, rd_kafka_message_t **msgs, size_t max, int timeout_ms);

/** @brief Mark offsets done: next_offset[p] (> 0) is stored for partition p. */
void cw_consumer_store(cw_consumer_t *c, const int64_t *next_offset, int n_partitions);

/** @brief Commit stored offsets now, waiting at most CW_CONSUMER_COMMIT_MS (else CW_RETRY). */
cw_err_t cw_consumer_commit(cw_consumer_t *c);

/** @brief Pause (1) or resume (0) fetching on the current assignment (back-pressure). */
void cw_consumer_pause(cw_consumer_t *c, int pause);

/** @brief Consumer lag per assigned partition: high watermark - position (-1 unknown). */
int64_t cw_consumer_lag(cw_consumer_t *c, int partition);

/** @brief Offset queries (ListOffsets) the fetch waker has sent (tests). */
uint64_t cw_consumer_wakes(cw_consumer_t *c);

/** @brief The underlying handle (for metrics); owned by c. */
rd_kafka_t *cw_consumer_handle(cw_consumer_t *c);

#endif
