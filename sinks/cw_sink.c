/*
 * cw_sink.c — the Kafka producer behind cw_sink.h.
 *
 * One rd_kafka_t with three topic names. The producer is idempotent with
 * message.timeout.ms = 0 (no delivery deadline): librdkafka keeps retrying
 * through broker outages, so "retry, never drop" is its job, and ours is to
 * handle QUEUE_FULL as back-pressure. Delivery reports carry the topic kind
 * in the per-message opaque of a small static table; the caller's opaque
 * rides in the message's _private pointer.
 */
#include "cw_sink.h"

#include <stdlib.h>
#include <string.h>

struct cw_sink {
    rd_kafka_t *rk;                     /* owned */
    const cw_conf_t *conf;              /* borrowed */
    const char *topics[CW_SINK__COUNT]; /* borrowed from conf */
    cw_sink_dr_cb *cb;
    void *opaque;
    uint64_t delivered[CW_SINK__COUNT];
    uint64_t failed[CW_SINK__COUNT];
};

/* The message opaque is (caller opaque); the topic kind is found by name. */
static cw_sink_topic_t topic_kind(const cw_sink_t *s, const char *name) {
    for (int i = 0; i < CW_SINK__COUNT; i++) {
        if (strcmp(s->topics[i], name) == 0) {
            return (cw_sink_topic_t)i;
        }
    }
    return CW_SINK_DLQ;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    cw_sink_t *s = opaque;
    (void)rk;
    cw_sink_topic_t t = topic_kind(s, rd_kafka_topic_name(m->rkt));
    if (m->err) {
        s->failed[t]++;
        CW_LOG(CW_LOG_WARN, "sink", "delivery to %s failed: %s", s->topics[t],
               rd_kafka_err2str(m->err));
    } else {
        s->delivered[t]++;
    }
    if (s->cb != NULL) {
        s->cb(s->opaque, t, m->_private, m->err);
    }
}

void cw_sink_rdkafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    int lv = level <= 3   ? CW_LOG_ERROR
             : level <= 4 ? CW_LOG_WARN
             : level <= 6 ? CW_LOG_INFO
                          : CW_LOG_DEBUG;
    CW_LOG(lv, "rdkafka", "%s %s: %s", rd_kafka_name(rk), fac, buf);
}

int cw_sink_apply_props(rd_kafka_conf_t *kc, const cw_conf_t *conf, char *errstr,
                        size_t errstr_size) {
    char err[512];
    for (int i = 0; i < conf->n_kafka_props; i++) {
        if (rd_kafka_conf_set(kc, conf->kafka_props[i].name, conf->kafka_props[i].value, err,
                              sizeof(err)) != RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "kafka.properties.%s: %s", conf->kafka_props[i].name,
                     err);
            return -1;
        }
    }
    return 0;
}

static int set(rd_kafka_conf_t *kc, const char *k, const char *v, char *errstr, size_t n) {
    if (rd_kafka_conf_set(kc, k, v, errstr, n) != RD_KAFKA_CONF_OK) {
        return -1;
    }
    return 0;
}

cw_sink_t *cw_sink_kafka_new(const cw_conf_t *conf, cw_sink_dr_cb *cb, void *opaque, char *errstr,
                             size_t errstr_size) {
    cw_sink_t *s = calloc(1, sizeof(*s));
    rd_kafka_conf_t *kc = NULL;
    if (s == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->conf = conf;
    s->cb = cb;
    s->opaque = opaque;
    s->topics[CW_SINK_ALERT] = conf->kafka_alert_topic;
    s->topics[CW_SINK_SCORE] = conf->kafka_score_topic;
    s->topics[CW_SINK_DLQ] = conf->kafka_dlq_topic;

    kc = rd_kafka_conf_new();
    if (set(kc, "bootstrap.servers", conf->kafka_brokers, errstr, errstr_size) ||
        set(kc, "enable.idempotence", "true", errstr, errstr_size) ||
        set(kc, "message.timeout.ms", "0", errstr, errstr_size) ||
        set(kc, "linger.ms", "5", errstr, errstr_size) ||
        set(kc, "queue.buffering.max.messages", "200000", errstr, errstr_size) ||
        /* a bounded backlog (default 1 GB): a full queue makes the pipeline
         * poll deliveries and retry, which is the back-pressure we want */
        set(kc, "queue.buffering.max.kbytes", CW_SINK_QUEUE_KB, errstr, errstr_size) ||
        set(kc, "client.id", "churnwatch-producer", errstr, errstr_size) ||
        cw_sink_apply_props(kc, conf, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        free(s);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(kc, cw_sink_rdkafka_log_cb);
    rd_kafka_conf_set_dr_msg_cb(kc, dr_cb);
    rd_kafka_conf_set_opaque(kc, s);
    s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, errstr_size);
    if (s->rk == NULL) {
        rd_kafka_conf_destroy(kc); /* not taken on failure */
        free(s);
        return NULL;
    }
    kc = NULL; /* owned by s->rk now */
    return s;
}

void cw_sink_destroy(cw_sink_t *s, int timeout_ms) {
    if (s == NULL) {
        return;
    }
    rd_kafka_flush(s->rk, timeout_ms);
    int left = rd_kafka_outq_len(s->rk);
    if (left > 0) {
        CW_LOG(CW_LOG_WARN, "sink", "%d messages still undelivered at shutdown", left);
    }
    rd_kafka_destroy(s->rk);
    free(s);
}

cw_err_t cw_sink_send(cw_sink_t *s, cw_sink_topic_t topic, const char *key, size_t keylen,
                      const char *value, size_t len, rd_kafka_headers_t *headers,
                      void *msg_opaque) {
    rd_kafka_resp_err_t err;
    if (headers != NULL) {
        err = rd_kafka_producev(
            s->rk, RD_KAFKA_V_TOPIC(s->topics[topic]), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    } else {
        err = rd_kafka_producev(s->rk, RD_KAFKA_V_TOPIC(s->topics[topic]),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE((void *)value, len),
                                RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        return CW_OK;
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        return CW_RETRY;
    }
    CW_LOG(CW_LOG_ERROR, "sink", "produce to %s failed: %s", s->topics[topic],
           rd_kafka_err2str(err));
    return CW_ERROR;
}

void cw_sink_poll(cw_sink_t *s, int timeout_ms) {
    rd_kafka_poll(s->rk, timeout_ms);
}

cw_err_t cw_sink_flush(cw_sink_t *s, int timeout_ms) {
    return rd_kafka_flush(s->rk, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR ? CW_OK : CW_RETRY;
}

int cw_sink_outq(cw_sink_t *s) {
    return rd_kafka_outq_len(s->rk);
}

void cw_sink_counts(const cw_sink_t *s, cw_sink_topic_t topic, uint64_t *delivered,
                    uint64_t *failed) {
    *delivered = s->delivered[topic];
    *failed = s->failed[topic];
}
