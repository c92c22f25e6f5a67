/*
 * cw_sink.h — the output side: one idempotent Kafka producer behind a small
 * sink interface that writes to the alert, score and dead-letter topics.
 *
 * Answers follow fluent-bit's OK / RETRY / ERROR: CW_OK when the message is
 * queued, CW_RETRY when the local queue is full (the caller polls and tries
 * again — back-pressure, never a drop), CW_ERROR for a permanent problem
 * (unknown topic, message too large). Delivery is confirmed asynchronously:
 * the delivery report callback gets each message's opaque and its final
 * result. The producer is configured idempotent (enable.idempotence) with
 * unlimited delivery time, so librdkafka retries transient broker failures
 * itself until the broker acknowledges; a failed report is therefore rare
 * and the caller re-sends what its outbox still holds.
 *
 * Threads: cw_sink_send may be called from several threads at once
 * (rd_kafka_producev is thread-safe); cw_sink_poll — and so the delivery
 * callback — from one thread only.
 *
 * Ownership: cw_sink_t owns its rd_kafka_t. Keys and values are copied by
 * librdkafka (RD_KAFKA_MSG_F_COPY); msg_opaque is passed through untouched.
 * The conf pointer must outlive the sink.
 */
#ifndef CW_SINK_H
#define CW_SINK_H

#include <librdkafka/rdkafka.h>

/* Producer backlog bound set by default (kafka.properties overrides it). */
#define CW_SINK_QUEUE_KB "4096" /* queue.buffering.max.kbytes */

#include "cw_common.h"
#include "cw_conf.h"

typedef enum {
    CW_SINK_ALERT = 0,
    CW_SINK_SCORE = 1,
    CW_SINK_DLQ = 2,
    CW_SINK__COUNT
} cw_sink_topic_t;

typedef struct cw_sink cw_sink_t;

/** @brief Called from cw_sink_poll for every delivery report. */
typedef void(cw_sink_dr_cb)(void *opaque, cw_sink_topic_t topic, void *msg_opaque,
                            rd_kafka_resp_err_t err);

/**
 * @brief Create the producer (kafka.brokers, kafka.properties pass-through).
 * @returns the sink, or NULL with librdkafka's own message in errstr.
 */
cw_sink_t *cw_sink_kafka_new(const cw_conf_t *conf, cw_sink_dr_cb *cb, void *opaque, char *errstr,
                             size_t errstr_size);

/** @brief Flush (up to timeout_ms), report what is left, destroy; NULL ok. */
void cw_sink_destroy(cw_sink_t *sink, int timeout_ms);

/**
 * @brief Queue one message (key = account id).
 * @param headers optional (may be NULL): ownership passes to the sink on CW_OK
 *        only; on RETRY/ERROR the caller still owns them.
 */
cw_err_t cw_sink_send(cw_sink_t *sink, cw_sink_topic_t topic, const char *key, size_t keylen,
                      const char *value, size_t len, rd_kafka_headers_t *headers, void *msg_opaque);

/** @brief Serve delivery reports (calls the callback). */
void cw_sink_poll(cw_sink_t *sink, int timeout_ms);

/** @brief Wait until every queued message is delivered (or timeout). */
cw_err_t cw_sink_flush(cw_sink_t *sink, int timeout_ms);

/** @brief Messages queued or in flight. */
int cw_sink_outq(cw_sink_t *sink);

/** @brief Per-topic counters since creation: delivered and failed reports. */
void cw_sink_counts(const cw_sink_t *sink, cw_sink_topic_t topic, uint64_t *delivered,
                    uint64_t *failed);

/** @brief Apply kafka.properties to an rd_kafka_conf_t (shared with the consumer). */
int cw_sink_apply_props(rd_kafka_conf_t *kc, const cw_conf_t *conf, char *errstr,
                        size_t errstr_size);

/** @brief librdkafka log callback that routes into CW_LOG (set on every handle). */
void cw_sink_rdkafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

#endif
