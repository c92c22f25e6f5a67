/*
 * cw_pipeline.c — the processor loop behind `churnwatch run` (see
 * cw_pipeline.h for the data flow and the failure model).
 *
 * Everything runs on one thread, in a fixed order per iteration, so a
 * rebalance (served inside the consumer poll) never finds a half-done
 * batch: by the time the consumer is polled again, the previous batch is
 * applied in Redis and its offsets are stored. Scoring is done in chunks of
 * CHUNK accounts to keep memory flat however large a batch is.
 */
#include "cw_pipeline.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cw_alert.h"
#include "cw_buf.h"
#include "cw_consumer.h"
#include "cw_event.h"
#include "cw_model.h"
#include "cw_sink.h"
#include "cw_state.h"

#define CHUNK 256              /* accounts scored and committed per round trip */
#define TIMER_BATCH 1000       /* due accounts fetched per partition per scan */
#define OUTBOX_RESCAN_MS 10000 /* re-send alerts whose delivery failed */
#define MAX_ACKS 4096

typedef struct alert_ref {
    int partition;
    char id[CW_ALERT_ID_MAX];
} alert_ref_t;

struct cw_pipeline {
    const cw_conf_t *conf; /* borrowed */
    cw_pipeline_opts_t opts;
    cw_layout_t layout;
    cw_consumer_t *consumer; /* owned */
    cw_sink_t *sink;         /* owned */
    cw_state_t *state;       /* owned */
    volatile sig_atomic_t stop;
    int fatal;

    rd_kafka_message_t **msgs; /* owned array; messages destroyed per batch */
    int owned[CW_MAX_PARTITIONS];
    int eof[CW_MAX_PARTITIONS];
    int scan_outbox[CW_MAX_PARTITIONS];
    int64_t wm[CW_MAX_PARTITIONS];         /* event-time watermark per partition (-1 none) */
    int64_t timer_upto[CW_MAX_PARTITIONS]; /* timers processed up to this time */
    int rescan[CW_MAX_PARTITIONS];         /* the last batch left a timer at or below the
                                              watermark (late events): scan again */
    int64_t next_off[CW_MAX_PARTITIONS];   /* offsets to store after the batch (0 = none) */
    cw_metrics_t *m;                       /* borrowed, may be NULL */
    int64_t last_gauges_ms;                /* gauges refreshed once a second */
    int64_t last_activity_ms;
    int64_t last_outbox_scan_ms;
    int64_t backoff_ms;

    /* scoring scratch, reused */
    cw_score_t scores[CHUNK];
    cw_decision_t decisions[CHUNK];
    cw_commit_t commits[CHUNK];
    size_t snap_off[CHUNK], snap_len[CHUNK];
    size_t alert_off[CHUNK][CW_REASON__COUNT], alert_len[CHUNK][CW_REASON__COUNT];
    cw_buf_t json; /* all JSON of one chunk */
    cw_buf_t dlq;

    /* delivered alerts waiting to be removed from the outbox */
    int ack_part[MAX_ACKS];
    char ack_id[MAX_ACKS][CW_ALERT_ID_MAX];
    size_t n_acks;
    int dlq_inflight;
    int dlq_failed;
    int alert_failed; /* an alert delivery failed: rescan the outboxes */
    int consumed_any; /* at least one event applied (idle exit waits for it) */

    cw_pipeline_stats_t stats;
};

/* ---- delivery reports ---- */

static void on_delivery(void *opaque, cw_sink_topic_t topic, void *msg_opaque,
                        rd_kafka_resp_err_t err) {
    cw_pipeline_t *pl = opaque;
    if (topic == CW_SINK_DLQ) {
        pl->dlq_inflight--;
        if (err) {
            pl->dlq_failed = 1;
        }
    } else if (topic == CW_SINK_ALERT && msg_opaque != NULL) {
        alert_ref_t *ref = msg_opaque;
        if (err) {
            pl->alert_failed = 1;
        } else if (pl->n_acks < MAX_ACKS) {
            pl->ack_part[pl->n_acks] = ref->partition;
            memcpy(pl->ack_id[pl->n_acks], ref->id, sizeof(ref->id));
            pl->n_acks++;
        }
        /* on failure the alert stays in the outbox and is re-sent by the rescan */
        free(ref);
    }
}

/* ---- rebalance ---- */

static void on_rebalance(void *opaque, int assigned, const rd_kafka_topic_partition_list_t *parts) {
    cw_pipeline_t *pl = opaque;
    for (int i = 0; i < parts->cnt; i++) {
        int p = parts->elems[i].partition;
        if (p < 0 || p >= CW_MAX_PARTITIONS) {
            continue;
        }
        pl->owned[p] = assigned;
        pl->eof[p] = 0;
        if (!assigned) {
            cw_metrics_set_lag(pl->m, p, -1);
        }
        pl->next_off[p] = 0;
        if (assigned) {
            pl->wm[p] = -2; /* load from Redis before use */
            pl->timer_upto[p] = -1;
            pl->scan_outbox[p] = 1;
        }
    }
    pl->last_activity_ms = cw_time_mono_ms();
    pl->last_gauges_ms = 0; /* refresh the assignment gauges now */
}

/* ---- metrics ---- */

static void on_redis_rtt(void *opaque, double seconds) {
    cw_metrics_observe(opaque, CW_HIST_REDIS, seconds);
}

/* Gauges copied from other modules, at most once a second (a rebalance
 * zeroes last_gauges_ms to have them refreshed at once). */
static void refresh_gauges(cw_pipeline_t *pl) {
    int64_t now = cw_time_mono_ms();
    if (pl->m == NULL || now - pl->last_gauges_ms < 1000) {
        return;
    }
    pl->last_gauges_ms = now;
    int assigned = 0;
    for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
        if (pl->owned[p]) {
            assigned++;
            cw_metrics_set_lag(pl->m, p, cw_consumer_lag(pl->consumer, p));
        }
    }
    cw_metrics_set_assigned(pl->m, assigned);
    cw_metrics_set_redis_up(pl->m, cw_state_connected(pl->state));
    cw_metrics_set_redis_reconnects(pl->m, cw_state_reconnects(pl->state));
    for (int t = 0; t < CW_SINK__COUNT; t++) {
        uint64_t delivered = 0, failed = 0;
        cw_sink_counts(pl->sink, (cw_sink_topic_t)t, &delivered, &failed);
        cw_metrics_set_producer(pl->m, (cw_metrics_topic_t)t, delivered, failed);
    }
}

/* ---- backoff ---- */

/* Sleep with exponential backoff, serving producer delivery reports. The
 * consumer is not polled meanwhile: a message handed out now could not be
 * processed, and skipping it would let a later offset be stored past it.
 * If an outage outlasts max.poll.interval.ms the group rebalances and the
 * partitions resume from the committed offsets — redelivery that the
 * offset-idempotent apply absorbs. */
static void backoff_wait(cw_pipeline_t *pl) {
    pl->backoff_ms = pl->backoff_ms == 0 ? 100 : pl->backoff_ms * 2;
    if (pl->backoff_ms > pl->conf->redis_backoff_max_ms) {
        pl->backoff_ms = pl->conf->redis_backoff_max_ms;
    }
    int64_t until = cw_time_mono_ms() + pl->backoff_ms;
    while (!pl->stop && cw_time_mono_ms() < until) {
        cw_sink_poll(pl->sink, 20);
    }
}

/* Run fn until it is not CW_RETRY; reconnect with backoff in between.
 * Returns the final result (CW_RETRY only if stopping). */
#define WITH_REDIS(pl, call)                                                                       \
    ({                                                                                             \
        cw_err_t _r;                                                                               \
        int _paused = 0;                                                                           \
        for (;;) {                                                                                 \
            _r = cw_state_connect((pl)->state);                                                    \
            if (_r == CW_OK) {                                                                     \
                _r = (call);                                                                       \
            }                                                                                      \
            if (_r != CW_RETRY || (pl)->stop) {                                                    \
                break;                                                                             \
            }                                                                                      \
            if (!_paused) {                                                                        \
                CW_LOG(CW_LOG_WARN, "pipeline", "redis unavailable; pausing input and retrying");  \
                cw_consumer_pause((pl)->consumer, 1);                                              \
                _paused = 1;                                                                       \
            }                                                                                      \
            (pl)->stats.redis_retries++;                                                           \
            cw_metrics_add((pl)->m, CW_CTR_REDIS_RETRIES, 1);                                      \
            cw_metrics_set_redis_up((pl)->m, 0);                                                   \
            backoff_wait(pl);                                                                      \
        }                                                                                          \
        if (_paused) {                                                                             \
            CW_LOG(CW_LOG_INFO, "pipeline", "redis back; resuming input");                         \
            cw_consumer_pause((pl)->consumer, 0);                                                  \
            cw_metrics_set_redis_up((pl)->m, 1);                                                   \
        }                                                                                          \
        if (_r != CW_RETRY) {                                                                      \
            (pl)->backoff_ms = 0;                                                                  \
        }                                                                                          \
        _r;                                                                                        \
    })

/* ---- producing ---- */

static void produce(cw_pipeline_t *pl, cw_sink_topic_t t, const char *key, const char *val,
                    size_t len, void *opaque) {
    size_t klen = key != NULL ? strlen(key) : 0; /* NULL: no key */
    for (;;) {
        cw_err_t r = cw_sink_send_wait(pl->sink, t, key, klen, val, len, NULL, opaque, 1000);
        if (r == CW_OK) {
            return;
        }
        if (r == CW_ERROR) {
            /* permanent (e.g. topic does not exist): alerts stay in the outbox */
            if (t == CW_SINK_ALERT) {
                free(opaque);
            }
            if (t == CW_SINK_DLQ) {
                pl->dlq_failed = 1;
            }
            return;
        }
        CW_LOG(CW_LOG_WARN, "pipeline", "producer queue full; waiting");
        if (pl->stop) {
            return;
        }
    }
}

static void produce_alert(cw_pipeline_t *pl, int partition, const char *account, const char *id,
                          const char *json, size_t len) {
    alert_ref_t *ref = malloc(sizeof(*ref)); /* freed in on_delivery */
    if (ref != NULL) {
        ref->partition = partition;
        cw_strlcpy(ref->id, id, sizeof(ref->id));
    }
    produce(pl, CW_SINK_ALERT, account, json, len, ref);
}

/* ---- scoring ---- */

/* Score, decide, commit and publish accounts[0..n) (n <= CHUNK). */
static cw_err_t decide_chunk(cw_pipeline_t *pl, cw_account_state_t *accts, size_t n) {
    const cw_model_t *model = &pl->conf->model;
    cw_buf_reset(&pl->json);
    for (size_t i = 0; i < n; i++) {
        cw_score_t *sc = &pl->scores[i];
        cw_decision_t *d = &pl->decisions[i];
        cw_model_score(model, &pl->layout, &accts[i], sc);
        cw_alert_decide(model, &pl->layout, &accts[i], sc, d);
        pl->snap_len[i] = 0;
        if (d->score_changed) {
            pl->snap_off[i] = pl->json.len;
            cw_alert_snapshot_json(model, &accts[i], sc, d, &pl->json);
            pl->snap_len[i] = pl->json.len - pl->snap_off[i];
            cw_buf_append(&pl->json, "", 1); /* NUL-separate documents */
        }
        for (int a = 0; a < d->n_alerts; a++) {
            pl->alert_off[i][a] = pl->json.len;
            cw_alert_json(model, &accts[i], sc, d, a, &pl->json);
            pl->alert_len[i][a] = pl->json.len - pl->alert_off[i][a];
            cw_buf_append(&pl->json, "", 1);
        }
    }
    if (pl->json.oom) {
        CW_LOG(CW_LOG_ERROR, "pipeline", "out of memory building documents");
        return CW_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        cw_commit_t *c = &pl->commits[i];
        cw_decision_t *d = &pl->decisions[i];
        memset(c, 0, sizeof(*c));
        c->acct = &accts[i];
        c->score = pl->scores[i].score;
        c->band = d->band;
        c->tier = pl->scores[i].tier;
        c->phase = pl->scores[i].phase;
        c->active_mask = d->active_mask;
        c->last_alert_ms = d->last_alert_ms;
        c->last_alert_id = d->n_alerts > 0 ? d->alerts[d->n_alerts - 1].alert_id : "";
        c->next_due_ms = d->next_due_ms;
        c->snapshot_json = pl->snap_len[i] ? pl->json.data + pl->snap_off[i] : NULL;
        c->n_alerts = d->n_alerts;
        for (int a = 0; a < d->n_alerts; a++) {
            c->alert_ids[a] = d->alerts[a].alert_id;
            c->alert_json[a] = pl->json.data + pl->alert_off[i][a];
        }
    }
    cw_err_t r = WITH_REDIS(pl, cw_state_commit(pl->state, pl->commits, n));
    if (r != CW_OK) {
        return r;
    }
    /* Decisions are durable (alerts in the outbox); now publish. */
    for (size_t i = 0; i < n; i++) {
        cw_decision_t *d = &pl->decisions[i];
        cw_metrics_band_change(pl->m, accts[i].has_score ? accts[i].band : -1, (cw_band_t)d->band);
        if (pl->snap_len[i]) {
            produce(pl, CW_SINK_SCORE, accts[i].account_id, pl->json.data + pl->snap_off[i],
                    pl->snap_len[i], NULL);
            pl->stats.snapshots++;
            cw_metrics_add(pl->m, CW_CTR_SNAPSHOTS, 1);
        }
        for (int a = 0; a < d->n_alerts; a++) {
            produce_alert(pl, accts[i].partition, accts[i].account_id, d->alerts[a].alert_id,
                          pl->json.data + pl->alert_off[i][a], pl->alert_len[i][a]);
            pl->stats.alerts[d->alerts[a].reason]++;
            cw_metrics_alert(pl->m, d->alerts[a].reason);
            CW_LOG(CW_LOG_INFO, "alert", "%s %s score=%.1f id=%s", accts[i].account_id,
                   cw_reason_name(d->alerts[a].reason), pl->scores[i].score, d->alerts[a].alert_id);
        }
    }
    return CW_OK;
}

static cw_err_t decide_all(cw_pipeline_t *pl, cw_account_state_t *accts, size_t n) {
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t k = n - off < CHUNK ? n - off : CHUNK;
        cw_err_t r = decide_chunk(pl, accts + off, k);
        if (r != CW_OK) {
            return r;
        }
    }
    return CW_OK;
}

/* ---- dead letters ---- */

static void dead_letter(cw_pipeline_t *pl, const rd_kafka_message_t *m, const char *reason,
                        const char *detail) {
    cw_buf_t *b = &pl->dlq;
    char key[CW_FIELD_MAX] = "";
    cw_buf_reset(b);
    cw_buf_puts(b, "{\"reason\":");
    cw_buf_json_str(b, reason, strlen(reason));
    cw_buf_puts(b, ",\"detail\":");
    cw_buf_json_str(b, detail, strlen(detail));
    cw_buf_puts(b, ",\"topic\":");
    cw_buf_json_str(b, pl->conf->kafka_input_topic, strlen(pl->conf->kafka_input_topic));
    cw_buf_printf(b, ",\"partition\":%d,\"offset\":%lld,\"key\":", (int)m->partition,
                  (long long)m->offset);
    if (m->key != NULL) {
        cw_buf_json_str(b, m->key, m->key_len);
        size_t kl = m->key_len < sizeof(key) - 1 ? m->key_len : sizeof(key) - 1;
        memcpy(key, m->key, kl);
        key[kl] = '\0';
    } else {
        cw_buf_puts(b, "null");
    }
    cw_buf_puts(b, ",\"payload\":");
    cw_buf_json_str(b, m->payload != NULL ? m->payload : "", m->len);
    cw_buf_puts(b, "}");
    pl->dlq_inflight++;
    /* keyed like the input; a keyless input stays keyless, so those dead
     * letters spread over the topic's partitions instead of one */
    produce(pl, CW_SINK_DLQ, m->key != NULL ? key : NULL, b->data, b->len, NULL);
    pl->stats.dead_lettered++;
    cw_metrics_dead_letter(pl->m, reason);
    CW_LOG(CW_LOG_DEBUG, "dlq", "p%d@%lld %s: %s", (int)m->partition, (long long)m->offset, reason,
           detail);
}

/* ---- timers, outbox ---- */

static cw_err_t load_watermark(cw_pipeline_t *pl, int p) {
    if (pl->wm[p] != -2) {
        return CW_OK;
    }
    int64_t wm = -1;
    cw_err_t r = WITH_REDIS(pl, cw_state_watermark(pl->state, p, &wm));
    if (r == CW_OK) {
        pl->wm[p] = wm;
    }
    return r;
}

/* In event-time mode every decision (score, band, alerts, snapshot,
 * history) is made at day ends only, by the timers, on the state as of the
 * day end: what a replay decides, and the alert ids, then do not depend on
 * where batches happen to start or a crash happens to fall. Applying events
 * only (re)schedules the account's timer to the end of its as-of day. In
 * wall-clock mode events decide at once. */
static int is_day_end(int64_t ms) {
    return ms >= 0 && ms % CW_MS_PER_DAY == CW_MS_PER_DAY - 1;
}

/* The end of the UTC day of ms. */
static int64_t day_end_of(int64_t ms) {
    return (cw_time_day(ms) + 1) * CW_MS_PER_DAY - 1;
}

static cw_err_t reschedule_all(cw_pipeline_t *pl, cw_account_state_t *accts, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            const cw_account_state_t *a = &accts[i];
            /* Only a dirty mark (a timer that is not a day end: written by
             * versions before the apply set day-end timers itself) moves, to
             * the end of its day; a day-end timer stays. */
            if (a->due_ms < 0 || is_day_end(a->due_ms)) {
                continue;
            }
            cw_commit_t *c = &pl->commits[k++];
            memset(c, 0, sizeof(*c));
            c->acct = a;
            c->reschedule_only = 1;
            c->next_due_ms = day_end_of(a->due_ms);
        }
        if (k > 0 && (k == CHUNK || i == n)) {
            cw_err_t r = WITH_REDIS(pl, cw_state_commit(pl->state, pl->commits, k));
            if (r != CW_OK) {
                return r;
            }
            k = 0;
        }
    }
    return CW_OK;
}

/* Rescore accounts whose windows rolled (timers due at or before "now" of
 * their partition: the watermark in event mode, the wall clock otherwise). */
static cw_err_t fire_timers(cw_pipeline_t *pl) {
    int64_t wall = cw_time_now_ms();
    for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
        if (!pl->owned[p]) {
            continue;
        }
        if (load_watermark(pl, p) != CW_OK) {
            return CW_RETRY;
        }
        int64_t upto = pl->conf->time_mode == CW_TIME_WALL ? wall : pl->wm[p];
        if (upto < 0) {
            continue;
        }
        /* event mode: timers are day-granular, so scan once per watermark day;
         * wall mode: at most once a second */
        int64_t key = pl->conf->time_mode == CW_TIME_WALL ? upto / 1000 : cw_time_day(upto);
        if (key == pl->timer_upto[p] && !pl->rescan[p]) {
            continue;
        }
        pl->rescan[p] = 0;
        for (;;) {
            cw_account_state_t *accts = NULL;
            size_t n = 0;
            cw_err_t r = WITH_REDIS(pl, cw_state_due(pl->state, p, upto, TIMER_BATCH, &accts, &n));
            if (r != CW_OK) {
                return r;
            }
            if (n == 0) {
                break;
            }
            if (pl->conf->time_mode == CW_TIME_EVENT) {
                /* day ends decide; a dirty mark left in Redis by an older
                 * version is only moved to its day end */
                size_t nd = 0;
                for (size_t i = 0; i < n; i++) {
                    if (!is_day_end(accts[i].due_ms)) {
                        cw_account_state_t tmp = accts[nd];
                        accts[nd++] = accts[i];
                        accts[i] = tmp;
                    }
                }
                r = reschedule_all(pl, accts, nd);
                if (r == CW_OK) {
                    r = decide_all(pl, accts + nd, n - nd);
                }
            } else {
                r = decide_all(pl, accts, n);
            }
            if (r != CW_OK) {
                return r;
            }
            pl->stats.rescored_timer += n;
            cw_metrics_add(pl->m, CW_CTR_TIMER_RESCORED, n);
            /* each decision schedules the account's next day end, which may
             * itself be due already when the watermark jumped several days:
             * scan again until nothing is due */
        }
        pl->timer_upto[p] = key;
    }
    return CW_OK;
}

static void outbox_cb(void *opaque, const char *alert_id, const char *json, size_t len) {
    void **ctx = opaque;
    cw_pipeline_t *pl = ctx[0];
    int p = *(int *)ctx[1];
    /* the key is the account id inside the alert; use the id prefix-free JSON
     * field for routing: alerts are keyed by account */
    char account[CW_FIELD_MAX] = "";
    const char *k = strstr(json, "\"account_id\":\"");
    if (k != NULL) {
        k += 14;
        size_t i = 0;
        while (k[i] != '"' && k[i] != '\0' && i + 1 < sizeof(account)) {
            account[i] = k[i];
            i++;
        }
        account[i] = '\0';
    }
    produce_alert(pl, p, account, alert_id, json, len);
}

static cw_err_t scan_outboxes(cw_pipeline_t *pl, int all) {
    for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
        if (!pl->owned[p] || (!all && !pl->scan_outbox[p])) {
            continue;
        }
        void *ctx[2] = {pl, &p};
        cw_err_t r = WITH_REDIS(pl, cw_state_outbox_scan(pl->state, p, outbox_cb, ctx));
        if (r != CW_OK) {
            return r;
        }
        pl->scan_outbox[p] = 0;
    }
    pl->last_outbox_scan_ms = cw_time_mono_ms();
    return CW_OK;
}

static cw_err_t ack_alerts(cw_pipeline_t *pl) {
    if (pl->n_acks == 0) {
        return CW_OK;
    }
    const char *ids[MAX_ACKS];
    for (size_t i = 0; i < pl->n_acks; i++) {
        ids[i] = pl->ack_id[i];
    }
    cw_err_t r = WITH_REDIS(pl, cw_state_outbox_ack(pl->state, pl->ack_part, ids, pl->n_acks));
    if (r == CW_OK) {
        pl->n_acks = 0;
    }
    return r;
}

/* ---- one batch ---- */

static cw_err_t process_batch(cw_pipeline_t *pl, size_t n) {
    cw_event_limits_t lim = cw_event_limits_from_conf(pl->conf);
    cw_event_t ev;
    char reason[CW_REASON_MAX], detail[CW_DETAIL_MAX];
    int dlq_sent = 0;

    cw_state_batch_begin(pl->state);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = pl->msgs[i];
        int p = m->partition;
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (p >= 0 && p < CW_MAX_PARTITIONS) {
                    pl->eof[p] = 1;
                }
            } else {
                CW_LOG(CW_LOG_WARN, "consumer", "%s", rd_kafka_message_errstr(m));
            }
            continue;
        }
        if (p < 0 || p >= CW_MAX_PARTITIONS) {
            CW_LOG(CW_LOG_ERROR, "consumer", "partition %d beyond %d not supported", p,
                   CW_MAX_PARTITIONS);
            pl->fatal = 1;
            return CW_ERROR;
        }
        pl->eof[p] = 0;
        pl->next_off[p] = m->offset + 1;
        if (cw_event_decode(m->payload, m->len, m->key, m->key_len, &lim, &ev, reason, detail) !=
            CW_OK) {
            dead_letter(pl, m, reason, detail);
            dlq_sent = 1;
            continue;
        }
        pl->stats.events_in[ev.type]++;
        cw_metrics_event_in(pl->m, ev.type);
        if (ev.type == CW_EV_UNKNOWN) {
            continue;
        }
        if (cw_state_batch_add(pl->state, p, m->offset, &ev) != CW_OK) {
            CW_LOG(CW_LOG_ERROR, "pipeline", "state batch full");
            pl->fatal = 1;
            return CW_ERROR;
        }
    }

    if (cw_state_batch_len(pl->state) > 0) {
        cw_account_state_t *accts = NULL;
        for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
            if (pl->owned[p] && load_watermark(pl, p) != CW_OK) {
                return CW_RETRY;
            }
        }
        size_t na = 0;
        uint64_t dup0 = cw_state_duplicates(pl->state);
        cw_err_t r = WITH_REDIS(pl, cw_state_batch_exec(pl->state, &accts, &na));
        if (r != CW_OK) {
            return r;
        }
        uint64_t dups = cw_state_duplicates(pl->state) - dup0;
        pl->stats.duplicates += dups;
        cw_metrics_add(pl->m, CW_CTR_DUPLICATES, dups);
        for (size_t i = 0; i < na; i++) {
            int p = accts[i].partition;
            if (p >= 0 && p < CW_MAX_PARTITIONS && accts[i].last_event_ms > pl->wm[p]) {
                pl->wm[p] = accts[i].last_event_ms;
            }
        }
        for (size_t i = 0; i < na; i++) {
            /* Timers are scanned when a partition's watermark day moves;
             * late events can also leave one due at or below the current
             * watermark (a timer moved back to a late event's day end, or
             * an older version's dirty mark), and then the partition is
             * scanned again after this batch. */
            int p = accts[i].partition;
            int64_t due = accts[i].due_ms;
            if (p >= 0 && p < CW_MAX_PARTITIONS && due >= 0 &&
                (is_day_end(due) ? due : day_end_of(due)) <= pl->wm[p]) {
                pl->rescan[p] = 1;
            }
        }
        /* event mode: the apply itself set each account's day-end timer */
        if (pl->conf->time_mode == CW_TIME_WALL) {
            for (size_t i = 0; i < na; i++) {
                accts[i].suppress_mask = 0; /* events decide at once */
            }
            r = decide_all(pl, accts, na);
            if (r != CW_OK) {
                return r;
            }
        }
        pl->consumed_any = 1;
    }

    /* Dead letters must be acknowledged before their offsets are stored. */
    if (dlq_sent) {
        while (pl->dlq_inflight > 0 && !pl->dlq_failed) {
            cw_sink_poll(pl->sink, 10);
        }
        if (pl->dlq_failed) {
            CW_LOG(CW_LOG_ERROR, "pipeline",
                   "dead-letter delivery failed; stopping without committing those offsets");
            pl->fatal = 1;
            return CW_ERROR;
        }
    }
    cw_consumer_store(pl->consumer, pl->next_off, CW_MAX_PARTITIONS);
    memset(pl->next_off, 0, sizeof(pl->next_off));
    pl->stats.batches++;
    cw_metrics_add(pl->m, CW_CTR_BATCHES, 1);
    return CW_OK;
}

/* ---- lifecycle ---- */

cw_pipeline_t *cw_pipeline_new(const cw_conf_t *conf, const cw_pipeline_opts_t *opts, char *errstr,
                               size_t errstr_size) {
    cw_pipeline_t *pl = calloc(1, sizeof(*pl));
    if (pl == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pl->conf = conf;
    if (opts != NULL) {
        pl->opts = *opts;
    }
    pl->m = pl->opts.metrics;
    for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
        pl->wm[p] = -2;
        pl->timer_upto[p] = -1;
    }
    if (cw_layout_build(&conf->model, &pl->layout, errstr, errstr_size) != 0) {
        goto fail;
    }
    pl->msgs = calloc((size_t)conf->kafka_batch_size, sizeof(*pl->msgs));
    if (pl->msgs == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    pl->state = cw_state_new(conf, &pl->layout, errstr, errstr_size);
    if (pl->state == NULL) {
        goto fail;
    }
    if (pl->m != NULL) {
        cw_state_set_rtt_cb(pl->state, on_redis_rtt, pl->m);
    }
    pl->sink = cw_sink_kafka_new(conf, on_delivery, pl, errstr, errstr_size);
    if (pl->sink == NULL) {
        goto fail;
    }
    pl->consumer = cw_consumer_new(conf, on_rebalance, pl, errstr, errstr_size);
    if (pl->consumer == NULL) {
        goto fail;
    }
    return pl;
fail:
    cw_pipeline_destroy(pl);
    return NULL;
}

void cw_pipeline_stop(cw_pipeline_t *pl) {
    pl->stop = 1;
}

void cw_pipeline_get_stats(const cw_pipeline_t *pl, cw_pipeline_stats_t *out) {
    *out = pl->stats;
}

static int all_idle(const cw_pipeline_t *pl) {
    int any = 0;
    for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
        if (pl->owned[p]) {
            any = 1;
            if (!pl->eof[p]) {
                return 0;
            }
        }
    }
    return any;
}

int cw_pipeline_run(cw_pipeline_t *pl) {
    int64_t last_stats = cw_time_mono_ms();
    pl->last_activity_ms = cw_time_mono_ms();
    pl->last_outbox_scan_ms = cw_time_mono_ms();
    CW_LOG(CW_LOG_INFO, "pipeline", "consuming %s from %s (time mode %s)",
           pl->conf->kafka_input_topic, pl->conf->kafka_brokers,
           pl->conf->time_mode == CW_TIME_WALL ? "wall" : "event");
    while (!pl->stop && !pl->fatal) {
        size_t n = cw_consumer_batch(pl->consumer, pl->msgs, (size_t)pl->conf->kafka_batch_size,
                                     pl->conf->kafka_batch_timeout_ms);
        cw_err_t r = CW_OK;
        const char *stage = "batch"; /* named in the log when a stage fails for good */
        int real = 0;
        for (size_t i = 0; i < n; i++) {
            real += pl->msgs[i]->err == 0;
        }
        if (n > 0) {
            int64_t t0 = cw_time_mono_us();
            r = process_batch(pl, n);
            if (real > 0) {
                cw_metrics_observe(pl->m, CW_HIST_BATCH, (double)(cw_time_mono_us() - t0) / 1e6);
            }
            for (size_t i = 0; i < n; i++) {
                rd_kafka_message_destroy(pl->msgs[i]);
                pl->msgs[i] = NULL;
            }
        }
        if (real > 0) {
            pl->last_activity_ms = cw_time_mono_ms();
        }
        if (r == CW_OK) {
            int rescan =
                pl->alert_failed && cw_time_mono_ms() - pl->last_outbox_scan_ms > OUTBOX_RESCAN_MS;
            pl->alert_failed = rescan ? 0 : pl->alert_failed;
            stage = "outbox scan";
            r = scan_outboxes(pl, rescan);
        }
        if (r == CW_OK) {
            stage = "timers";
            r = fire_timers(pl);
        }
        cw_sink_poll(pl->sink, 0);
        if (r == CW_OK) {
            stage = "outbox ack";
            r = ack_alerts(pl);
        }
        if (r == CW_ERROR) {
            CW_LOG(CW_LOG_ERROR, "pipeline", "%s failed; stopping without committing", stage);
            pl->fatal = 1;
        }
        refresh_gauges(pl);
        if (cw_time_mono_ms() - last_stats > 10000) {
            last_stats = cw_time_mono_ms();
            CW_LOG(CW_LOG_INFO, "stats",
                   "batches=%llu logins=%llu usage=%llu dlq=%llu dups=%llu alerts=%llu",
                   (unsigned long long)pl->stats.batches,
                   (unsigned long long)pl->stats.events_in[CW_EV_LOGIN],
                   (unsigned long long)pl->stats.events_in[CW_EV_USAGE],
                   (unsigned long long)pl->stats.dead_lettered,
                   (unsigned long long)pl->stats.duplicates,
                   (unsigned long long)(pl->stats.alerts[0] + pl->stats.alerts[1] +
                                        pl->stats.alerts[2] + pl->stats.alerts[3] +
                                        pl->stats.alerts[4] + pl->stats.alerts[5]));
        }
        if (pl->opts.exit_on_idle_ms > 0 && pl->consumed_any && all_idle(pl) &&
            cw_sink_outq(pl->sink) == 0 && pl->n_acks == 0 &&
            cw_time_mono_ms() - pl->last_activity_ms >= pl->opts.exit_on_idle_ms) {
            CW_LOG(CW_LOG_INFO, "pipeline", "all partitions idle; draining");
            break;
        }
    }
    /* Drain: deliver what is queued, remove acked alerts, commit offsets. */
    int64_t deadline = cw_time_mono_ms() + 5000;
    while (cw_sink_outq(pl->sink) > 0 && cw_time_mono_ms() < deadline) {
        cw_sink_poll(pl->sink, 50);
    }
    if (!pl->fatal && pl->n_acks > 0 && cw_state_connect(pl->state) == CW_OK) {
        const char *ids[MAX_ACKS];
        for (size_t i = 0; i < pl->n_acks; i++) {
            ids[i] = pl->ack_id[i];
        }
        cw_state_outbox_ack(pl->state, pl->ack_part, ids, pl->n_acks);
        pl->n_acks = 0;
    }
    if (!pl->fatal) {
        cw_consumer_commit(pl->consumer);
    }
    CW_LOG(CW_LOG_INFO, "pipeline", "stopped (%s): batches=%llu dead_lettered=%llu",
           pl->fatal ? "fatal" : "clean", (unsigned long long)pl->stats.batches,
           (unsigned long long)pl->stats.dead_lettered);
    return pl->fatal ? 1 : 0;
}

void cw_pipeline_destroy(cw_pipeline_t *pl) {
    if (pl == NULL) {
        return;
    }
    cw_consumer_destroy(pl->consumer);
    cw_sink_destroy(pl->sink, 5000);
    cw_state_destroy(pl->state);
    free(pl->msgs);
    cw_buf_free(&pl->json);
    cw_buf_free(&pl->dlq);
    free(pl);
}
