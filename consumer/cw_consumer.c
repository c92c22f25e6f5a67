/*
 * cw_consumer.c — the Kafka group consumer behind cw_consumer.h.
 *
 * Batches come from the consumer queue (rd_kafka_consume_batch_queue), which
 * also serves rebalance callbacks. Offsets are stored explicitly and
 * committed by auto-commit (every 1 s), and on revoke, at the end of a run
 * and at close with a bounded wait (CW_CONSUMER_COMMIT_MS, _CLOSE_MS).
 *
 * The fetch waker. librdkafka 2.0.2 stops fetching a partition while the
 * consumer queue holds queued.max.messages.kbytes, and decides again only
 * when the leader's broker thread next wakes up: with nothing else to do
 * that is its 1 s idle timeout (2.2.0 made it fetch.queue.backoff.ms). A
 * loop that drains the queue faster than that then waits for the rest of
 * the second: bench/ logged (debug=fetch) ~50,000 messages fetched, then
 * ~1 s of nothing, every second — the processor's ceiling. A request put on
 * the broker's queue wakes its thread, which then re-decides every
 * partition it leads, so while there is a backlog (a full batch came in
 * the last CW_CONSUMER_WAKE_ACTIVE_MS) a thread sends one offset query
 * (ListOffsets) every kafka.fetch_wake_ms to the leader of one
 * assigned partition, taking them in turn (one broker per wake: with B
 * leaders each is woken every B periods). It only reads; nothing it does
 * changes what is fetched or from where. Not under a light load: the queue
 * does not fill up then, and the queries cost latency (bench/README.md: at
 * 1,000 events/s p99 event-to-alert 5.3 s with them, 17 ms without; the
 * mock broker answers a connection's requests in order, and a waiting fetch
 * holds the queries behind it). The period is a trade: at the live tail
 * under overload (wall mode, 50,000 events/s offered while produced) 20 ms
 * processed 556,000 events in 35 s, 100 ms 1,021,000, none 902,000; a
 * cold replay gained 1.43x at 20 ms and 1.26x at 100 ms; 100 is the
 * default.
 */
#include "cw_consumer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cw_sink.h" /* cw_sink_apply_props, cw_sink_rdkafka_log_cb */

struct cw_consumer {
    rd_kafka_t *rk;          /* owned */
    rd_kafka_queue_t *queue; /* owned reference to the consumer queue */
    const cw_conf_t *conf;   /* borrowed */
    cw_consumer_rebalance_cb *cb;
    void *opaque;
    /* shared with the fetch waker, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t waker;
    int waker_started;
    int stop;
    int paused;
    int64_t active_until_ms; /* a full batch came recently: wake until then */
    int32_t assigned[CW_MAX_PARTITIONS];
    int n_assigned;
    uint64_t wakes; /* offset queries sent (tests) */
};

/* The assignment the waker takes its partitions from (NULL: none). */
static void waker_assign(cw_consumer_t *c, const rd_kafka_topic_partition_list_t *parts) {
    pthread_mutex_lock(&c->mu);
    c->n_assigned = 0;
    for (int i = 0; parts != NULL && i < parts->cnt && c->n_assigned < CW_MAX_PARTITIONS; i++) {
        c->assigned[c->n_assigned++] = parts->elems[i].partition;
    }
    pthread_mutex_unlock(&c->mu);
}

static void *waker_main(void *arg) {
    cw_consumer_t *c = arg;
    const int period = c->conf->kafka_fetch_wake_ms;
    size_t next = 0;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec until = cw_time_deadline(period);
        pthread_cond_timedwait(&c->cv, &c->mu, &until);
        if (c->stop || c->paused || c->n_assigned == 0 || cw_time_mono_ms() >= c->active_until_ms) {
            continue;
        }
        int32_t p = c->assigned[next++ % (size_t)c->n_assigned];
        c->wakes++;
        pthread_mutex_unlock(&c->mu);
        /* offsets_for_times of the latest offset, not query_watermark_offsets:
         * 2.0.2's watermark query waits for its reply without a deadline, so
         * with the broker gone the waker (and a stop joining it) hung up to
         * socket.timeout.ms; offsets_for_times stops waiting at its timeout */
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, c->conf->kafka_input_topic, p)->offset =
            RD_KAFKA_OFFSET_END;
        rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(c->rk, l, CW_CONSUMER_WAKE_WAIT_MS);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
            CW_LOG(CW_LOG_DEBUG, "consumer", "fetch wake-up of partition %d: %s", (int)p,
                   rd_kafka_err2str(err));
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Commit the stored offsets, waiting at most timeout_ms for the result.
 * rd_kafka_commit waits for the group coordinator: with the broker gone it
 * blocked ~46 s ("Waiting for coordinator") in test_consumer. A commit not
 * done in time is left to librdkafka; the offsets that decide what is
 * applied are in Redis, so a missed commit costs a redelivery, not an
 * event. Returns NO_ERROR, __NO_OFFSET (nothing stored), __TIMED_OUT or
 * the commit's error. */
static rd_kafka_resp_err_t commit_within(rd_kafka_t *rk, int timeout_ms) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(rk, NULL, q, NULL, NULL);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        int64_t deadline = cw_time_mono_ms() + timeout_ms;
        for (int64_t left = timeout_ms; left > 0; left = deadline - cw_time_mono_ms()) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, (int)left);
            int done = ev != NULL && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT;
            if (done) {
                err = rd_kafka_event_error(ev);
            }
            rd_kafka_event_destroy(ev);
            if (done) {
                break;
            }
        }
    }
    rd_kafka_queue_destroy(q);
    return err;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    cw_consumer_t *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        /* the committed offsets, for the caller (cw_consumer.h); on a
         * failure they stay unknown (RD_KAFKA_OFFSET_INVALID, err set) */
        rd_kafka_resp_err_t qerr = rd_kafka_committed(rk, parts, CW_CONSUMER_COMMIT_MS);
        if (qerr) {
            CW_LOG(CW_LOG_WARN, "consumer", "committed offsets: %s", rd_kafka_err2str(qerr));
        }
        waker_assign(c, parts);
        CW_LOG(CW_LOG_INFO, "consumer", "assigned %d partitions", parts->cnt);
        if (c->paused) {
            rd_kafka_pause_partitions(rk, parts);
        }
        if (c->cb != NULL) {
            c->cb(c->opaque, 1, parts);
        }
    } else {
        if (c->cb != NULL) {
            c->cb(c->opaque, 0, parts);
        }
        rd_kafka_resp_err_t cerr = commit_within(rk, CW_CONSUMER_COMMIT_MS);
        if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            CW_LOG(CW_LOG_WARN, "consumer", "commit on revoke failed: %s", rd_kafka_err2str(cerr));
        }
        CW_LOG(CW_LOG_INFO, "consumer", "revoked %d partitions", parts->cnt);
        waker_assign(c, NULL);
        rd_kafka_assign(rk, NULL);
    }
}

static void consumer_free(cw_consumer_t *c) {
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int set(rd_kafka_conf_t *kc, const char *k, const char *v, char *errstr, size_t n) {
    return rd_kafka_conf_set(kc, k, v, errstr, n) == RD_KAFKA_CONF_OK ? 0 : -1;
}

cw_consumer_t *cw_consumer_new(const cw_conf_t *conf, cw_consumer_rebalance_cb *cb, void *opaque,
                               char *errstr, size_t errstr_size) {
    cw_consumer_t *c = calloc(1, sizeof(*c));
    rd_kafka_conf_t *kc;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t err;

    if (c == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    c->conf = conf;
    c->cb = cb;
    c->opaque = opaque;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        snprintf(errstr, errstr_size, "cannot create the consumer's mutex");
        return NULL;
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        snprintf(errstr, errstr_size, "cannot create the consumer's condition variable");
        return NULL;
    }
    kc = rd_kafka_conf_new();
    if (set(kc, "bootstrap.servers", conf->kafka_brokers, errstr, errstr_size) ||
        set(kc, "group.id", conf->kafka_group_id, errstr, errstr_size) ||
        set(kc, "enable.auto.commit", "true", errstr, errstr_size) ||
        set(kc, "auto.commit.interval.ms", "1000", errstr, errstr_size) ||
        set(kc, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        set(kc, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        set(kc, "enable.partition.eof", "true", errstr, errstr_size) ||
        set(kc, "client.id", "churnwatch-consumer", errstr, errstr_size) ||
        set(kc, "fetch.wait.max.ms", "50", errstr, errstr_size) ||
        set(kc, "session.timeout.ms", CW_CONSUMER_SESSION_MS, errstr, errstr_size) ||
        /* bounded prefetch: librdkafka's defaults queue up to 64 MB of
         * fetched messages and fetch 50 MB at once; with the fetch waker
         * refilling the queue within kafka.fetch_wake_ms, a few batches
         * ahead is all the loop needs. Each queued byte of payload costs
         * ~3 bytes of RSS (a ~300-byte op per message, plus the fetch
         * buffers), and a fetch lands on top of a queue just below the
         * limit (bench/README.md: 2 MB + 1 MB fetches ran as fast as
         * 4 MB + 4 MB, peak RSS 36.5 vs 56.3 MB) */
        set(kc, "queued.max.messages.kbytes", CW_CONSUMER_QUEUE_KB, errstr, errstr_size) ||
        set(kc, "fetch.max.bytes", CW_CONSUMER_FETCH_BYTES, errstr, errstr_size) ||
        cw_sink_apply_props(kc, conf, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(kc);
        consumer_free(c);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(kc, cw_sink_rdkafka_log_cb);
    rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
    rd_kafka_conf_set_opaque(kc, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, errstr_size);
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(kc);
        consumer_free(c);
        return NULL;
    }
    kc = NULL; /* owned by c->rk */
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);

    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, conf->kafka_input_topic, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe to %s: %s", conf->kafka_input_topic,
                 rd_kafka_err2str(err));
        cw_consumer_destroy(c);
        return NULL;
    }
    if (conf->kafka_fetch_wake_ms > 0) {
        if (pthread_create(&c->waker, NULL, waker_main, c) != 0) {
            snprintf(errstr, errstr_size, "cannot start the fetch waker thread");
            cw_consumer_destroy(c);
            return NULL;
        }
        c->waker_started = 1;
    }
    return c;
}

/* Close: revoke (rebalance_cb runs), commit the stored offsets, leave the
 * group, waiting at most timeout_ms. rd_kafka_consumer_close waits without
 * a bound for the group coordinator: with the broker killed during a stop,
 * 2.0.2 hung in it for over 10 minutes. The asynchronous close, served
 * here until a deadline, bounds the stop; if it is not done by then the
 * group is left by the session timeout instead, and nothing is lost: the
 * processed offsets are in Redis, and a redelivery is absorbed by the
 * offset-idempotent apply. Returns 1 if the close finished. */
static int consumer_close(cw_consumer_t *c, int timeout_ms) {
    rd_kafka_t *rk = c->rk;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(rk, q);
    int closed = 0;
    if (error != NULL) {
        CW_LOG(CW_LOG_WARN, "consumer", "close: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else {
        int64_t deadline = cw_time_mono_ms() + timeout_ms;
        while (!(closed = rd_kafka_consumer_closed(rk)) && cw_time_mono_ms() < deadline) {
            /* the queue gets rebalance events, served as rebalance_cb
             * would be, and errors (broker down), logged by the log_cb */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 50);
            if (ev != NULL && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                rebalance_cb(rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev),
                             c);
            }
            rd_kafka_event_destroy(ev);
        }
        if (!closed) {
            CW_LOG(CW_LOG_WARN, "consumer",
                   "close not done within %d ms (broker unreachable?): leaving the group to "
                   "the session timeout; processed offsets are kept in Redis",
                   timeout_ms);
        }
    }
    rd_kafka_queue_destroy(q);
    return closed;
}

void cw_consumer_destroy(cw_consumer_t *c) {
    if (c == NULL) {
        return;
    }
    if (c->waker_started) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->waker, NULL);
    }
    if (c->queue != NULL) {
        rd_kafka_queue_destroy(c->queue);
    }
    int closed = consumer_close(c, CW_CONSUMER_CLOSE_MS);
    rd_kafka_destroy_flags(c->rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    consumer_free(c);
}

size_t cw_consumer_batch(cw_consumer_t *c, rd_kafka_message_t **msgs, size_t max, int timeout_ms) {
    ssize_t n;
    if (max == 0) {
        return 0;
    }
    /* Wait for the first message only, then take what has already arrived:
     * rd_kafka_consume_batch_queue alone waits until max messages or the
     * timeout, which under a light load delays every event by the timeout. */
    msgs[0] = rd_kafka_consume_queue(c->queue, timeout_ms);
    if (msgs[0] == NULL) {
        return 0;
    }
    n = max > 1 ? rd_kafka_consume_batch_queue(c->queue, 0, msgs + 1, max - 1) : 0;
    size_t got = 1 + (n < 0 ? 0 : (size_t)n);
    if (c->waker_started && got == max) {
        /* a full batch: a backlog, so the prefetch queue may fill up */
        pthread_mutex_lock(&c->mu);
        c->active_until_ms = cw_time_mono_ms() + CW_CONSUMER_WAKE_ACTIVE_MS;
        pthread_mutex_unlock(&c->mu);
    }
    return got;
}

void cw_consumer_store(cw_consumer_t *c, const int64_t *next_offset, int n_partitions) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int p = 0; p < n_partitions; p++) {
        if (next_offset[p] > 0) {
            rd_kafka_topic_partition_list_add(l, c->conf->kafka_input_topic, p)->offset =
                next_offset[p];
        }
    }
    if (l->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(c->rk, l);
        if (err) {
            /* A partition revoked meanwhile cannot be stored: its new owner
             * re-applies those events, and the Redis offsets skip them. */
            CW_LOG(CW_LOG_DEBUG, "consumer", "offsets_store: %s", rd_kafka_err2str(err));
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

cw_err_t cw_consumer_commit(cw_consumer_t *c) {
    rd_kafka_resp_err_t err = commit_within(c->rk, CW_CONSUMER_COMMIT_MS);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        return CW_OK;
    }
    CW_LOG(CW_LOG_WARN, "consumer", "commit: %s", rd_kafka_err2str(err));
    return CW_RETRY;
}

void cw_consumer_pause(cw_consumer_t *c, int pause) {
    rd_kafka_topic_partition_list_t *a = NULL;
    if (pause == c->paused) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->paused = pause;
    pthread_mutex_unlock(&c->mu);
    if (rd_kafka_assignment(c->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a != NULL) {
        if (pause) {
            rd_kafka_pause_partitions(c->rk, a);
        } else {
            rd_kafka_resume_partitions(c->rk, a);
        }
        rd_kafka_topic_partition_list_destroy(a);
    }
    CW_LOG(CW_LOG_INFO, "consumer", "%s fetching", pause ? "paused" : "resumed");
}

int64_t cw_consumer_lag(cw_consumer_t *c, int partition) {
    int64_t lo = -1, hi = -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, c->conf->kafka_input_topic, partition);
    int64_t lag = -1;
    if (rd_kafka_position(c->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_get_watermark_offsets(c->rk, c->conf->kafka_input_topic, partition, &lo, &hi) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        l->elems[0].offset >= 0 && hi >= 0) {
        lag = hi - l->elems[0].offset;
    }
    rd_kafka_topic_partition_list_destroy(l);
    return lag;
}

uint64_t cw_consumer_wakes(cw_consumer_t *c) {
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->wakes;
    pthread_mutex_unlock(&c->mu);
    return n;
}

rd_kafka_t *cw_consumer_handle(cw_consumer_t *c) {
    return c->rk;
}
