/*
 * cw_pipeline.c — the processor loop behind `churnwatch run` (see
 * cw_pipeline.h for the data flow and the failure model).
 *
 * Threads. The main thread consumes, decodes, dead-letters, stores
 * offsets and serves the producer's delivery reports. The Redis work of an
 * iteration (apply, wall-mode decisions, outbox re-delivery, day-end
 * timers) is split by partition among redis.connections "lanes": worker
 * threads with their own Redis connection and scratch, partition p on lane
 * p mod N. Partitions share no Redis state that is not commutative (fence,
 * timers, outbox and watermark are per partition; P:bands is HINCRBY), so
 * lanes run side by side and Redis works on one lane's commands while
 * another lane computes. Scoring is done in chunks of CHUNK accounts to
 * keep memory flat however large a batch is.
 *
 * Steps. Work goes in numbered steps (step_t; step k in slot k % NSTEP,
 * NSTEP = 2): the main thread decodes step k into its slot and each lane's
 * batch of that slot while the lanes still run earlier steps, and hands it
 * over at once (publish_step). A lane runs the steps in order, each as
 * soon as it finished its share of the one before: the lanes do not wait
 * for each other at the end of a step, so one lane's long day end does not
 * idle the other (a lane is at most one step ahead). The main thread
 * collects a step once every lane ran it (collect: its outcome, then its
 * offsets), so offsets are stored in step order and never ahead of Redis;
 * it reuses a slot only after collecting the step that used it.
 *
 * Why lanes may run different steps at once: a lane touches only its own
 * partitions' accounts, fences, timers, outboxes and watermarks. The one
 * thing two partitions can share is an account whose events arrive on both
 * (keys moved by a producer, a changed partition count): decode_batch cuts
 * a step before such an account's second partition, and marks a step a
 * barrier when the step before it (which another lane may still run) holds
 * the account under another partition; a barrier step starts only when
 * every lane finished the step before. (Its day-end decisions on the two
 * partitions' lanes can still run at once: cw_state_commit serializes
 * them through the fence of the partition that applied it last.) Decoding
 * reads only the messages, never what the lanes write, so what a step
 * applies does not depend on when it was decoded.
 *
 * A rebalance is served inside the consumer poll: on_rebalance collects
 * every published step first, so a revoke commits their offsets and the
 * assignment never changes under a lane. A lane whose step fails stops and
 * halts the others after their current step; the main thread collects what
 * came before and stops (nothing after the failed step is stored).
 *
 * Who touches what while lanes run: a lane reads its step and its own
 * batch of it, writes only the per-partition entries of its own partitions
 * (wm, rescan, timer_upto, scan_outbox), its own lane_t (state, scratch,
 * stats, results per slot) and the metrics (atomics); it produces with
 * rd_kafka_producev (thread-safe) but never polls the producer, so every
 * delivery report runs on the main thread. The hand-off counters (started,
 * done, busy, stopped, halted) and the folded lane stats are under mu. The
 * main thread meanwhile writes only the slot it prepares (the step, the
 * lanes' batches of it, its account table), the dead letters, eof and its
 * own counters, polls the producer, acks delivered alerts on its own
 * connection (acker), and pauses the consumer while a lane reports Redis
 * down; owned, wm, timer_upto and scan_outbox change only in on_rebalance,
 * after every lane is idle.
 */
#include "cw_pipeline.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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
#include "cw_view.h"

#define CHUNK 1024             /* accounts scored and committed per round trip */
#define TIMER_BATCH CHUNK      /* due accounts per scan: one commit, under the WATCH of the read */
#define OUTBOX_RESCAN_MS 10000 /* re-send alerts whose delivery failed */
#define MAX_ACKS 4096

typedef struct alert_ref {
    int partition;
    char id[CW_ALERT_ID_MAX];
} alert_ref_t;

#define NSTEP 2 /* steps in the ring: step number k uses slot k % NSTEP */

/* One step: the messages decode_batch put in the lanes' batches, and what
 * is stored after every lane applied them. Steps are numbered; the main
 * thread decodes step k into slot k % NSTEP while lanes still run k - 1
 * (see "Steps" at the top of this file). */
typedef struct step {
    int batch;       /* some lane has events to apply */
    int stored;      /* it consumed messages: store next_off after it */
    int dlq_sent;    /* it dead-lettered: their delivery is awaited before the store */
    int real;        /* it held messages (not only errors/EOF): activity */
    int barrier;     /* a lane starts it only once every lane finished step k - 1 */
    int rescan_all;  /* it re-sends every outbox (failed deliveries) */
    int64_t t0_us;   /* decoding began (the batch histogram) */
    int64_t done_us; /* the last lane finished it (monotonic; under mu) */
    int64_t first_day[CW_MAX_PARTITIONS]; /* event mode: its earliest event day per
                                             partition; INT64_MIN none */
    int64_t last_day[CW_MAX_PARTITIONS];  /* and its latest */
    int64_t next_off[CW_MAX_PARTITIONS];  /* offsets to store after it (0 = none) */
} step_t;

/* A lane's scoring scratch, reused for every chunk it decides. */
typedef struct scratch {
    cw_score_t scores[CHUNK];
    cw_decision_t decisions[CHUNK];
    cw_commit_t commits[CHUNK];
    size_t snap_off[CHUNK], snap_len[CHUNK];
    size_t alert_off[CHUNK][CW_REASON__COUNT], alert_len[CHUNK][CW_REASON__COUNT];
    cw_buf_t json; /* all JSON of one chunk */
} scratch_t;

/* One lane: a worker thread with its own Redis connection, owning the
 * partitions p with p % n_lanes == id (see the top of this file). The main
 * thread's connection for outbox acks (pl->acker) is a lane_t too, for
 * WITH_REDIS (connection, backoff, Redis-down flag): id -1, no thread, no
 * batches, no scratch. */
typedef struct lane {
    cw_pipeline_t *pl; /* borrowed back-pointer */
    int id;
    cw_state_t *state;              /* owned: this lane's Redis connection */
    cw_state_batch_t *batch[NSTEP]; /* owned: its share of the step in slot i */
    pthread_t thread;
    int started;
    int64_t backoff_ms;
    atomic_int redis_down; /* set while retrying: the main thread pauses fetching */
    int slot;              /* the slot of the step it runs */
    /* under pl->mu: steps done (it ran steps 0 .. done - 1), running one
     * now, stopped after a step that failed */
    uint64_t done;
    int busy;
    int stopped;
    /* each slot's outcome, read by the main thread once done covers it */
    struct {
        cw_err_t apply;    /* the batch's apply (and wall-mode decisions) */
        cw_err_t work;     /* the apply, then outbox scan and timers */
        const char *stage; /* named in the log when work is an error */
    } res[NSTEP];
    cw_pipeline_stats_t stats; /* counted by the lane, folded into pl->lane_stats */
    atomic_int up;             /* its connection is up (gauges) */
    atomic_ullong reconnects;  /* its connection's reconnects (gauges) */
    scratch_t *scratch;        /* owned: scoring scratch (NULL for pl->acker) */
    int64_t min_next_due;      /* earliest timer the commits of a timer scan set (INT64_MAX none) */
} lane_t;

struct cw_pipeline {
    const cw_conf_t *conf; /* borrowed */
    cw_pipeline_opts_t opts;
    cw_layout_t layout;
    cw_consumer_t *consumer; /* owned */
    cw_sink_t *sink;         /* owned */
    lane_t *lanes;           /* owned array of n_lanes */
    int n_lanes;
    pthread_t main_thread;
    volatile sig_atomic_t stop;
    int fatal;

    /* lane hand-off (under mu): started steps are 0 .. started - 1; the
     * main thread collected 0 .. collected - 1 (offsets stored) */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int sync_ok; /* mu and the condition variables exist */
    uint64_t started;
    uint64_t collected;
    int halted; /* a lane stopped on an error: no lane starts another step */
    int quit;
    cw_pipeline_stats_t lane_stats; /* the lanes' counts, folded in under mu */
    step_t steps[NSTEP];
    int64_t horizon_days; /* event mode: a step's events of one partition span at most
                             this many days (see decode_batch) */
    lane_t *acker;        /* owned: the main thread's own connection (outbox acks); no thread */
    int in_run;           /* cw_pipeline_run is running (lanes may hold steps) */

    rd_kafka_message_t **msgs; /* owned array; messages destroyed per batch */
    /* accounts of the step in slot i: hash of the id -> partition + 1 (0:
     * empty slot), open addressing, 2 x kafka.batch_size slots (see
     * decode_batch) */
    uint64_t *acct_hash[NSTEP]; /* owned */
    int16_t *acct_part[NSTEP];  /* owned */
    size_t acct_slots;
    int owned[CW_MAX_PARTITIONS];
    int eof[CW_MAX_PARTITIONS];
    int scan_outbox[CW_MAX_PARTITIONS];
    int64_t wm[CW_MAX_PARTITIONS];         /* event-time watermark per partition (-1 none) */
    int64_t next_in[CW_MAX_PARTITIONS];    /* offset after the last consumed message
                                              (-1: none since the assignment) */
    int64_t timer_upto[CW_MAX_PARTITIONS]; /* timers processed: event mode, the last
                                              day whose day end was decided; wall
                                              mode, the second scanned */
    int rescan[CW_MAX_PARTITIONS];         /* the last batch left a timer at or below the
                                              watermark (late events): scan again */
    cw_metrics_t *m;                       /* borrowed, may be NULL */
    int64_t last_gauges_ms;                /* gauges refreshed once a second */
    int64_t last_activity_ms;
    int64_t last_outbox_scan_ms;
    int paused; /* fetching paused while a lane retries Redis */

    cw_buf_t dlq;

    /* delivered alerts waiting to be removed from the outbox (main thread) */
    int ack_part[MAX_ACKS];
    char ack_id[MAX_ACKS][CW_ALERT_ID_MAX];
    size_t n_acks;
    int dlq_inflight;
    int dlq_failed;
    int alert_failed; /* an alert delivery failed: rescan the outboxes */
    /* the lanes ran a step since the last assignment (outboxes re-sent,
     * timers checked): the idle exit waits for it, not for an event, so a
     * consumer that starts at the end of every partition exits too */
    int stepped;

    cw_pipeline_stats_t stats;
};

static lane_t *lane_of(cw_pipeline_t *pl, int p) {
    return &pl->lanes[p % pl->n_lanes];
}

static int on_main(const cw_pipeline_t *pl) {
    return pthread_equal(pthread_self(), pl->main_thread);
}

/* Wait about ms: the main thread serves producer delivery reports
 * meanwhile, a lane sleeps (only the main thread polls the producer). */
static void pause_ms(cw_pipeline_t *pl, int main_thread, int ms) {
    if (main_thread) {
        cw_sink_poll(pl->sink, ms);
    } else {
        struct timespec ts = {0, (long)ms * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

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

static void collect_all(cw_pipeline_t *pl);

/* Served inside the consumer poll, which the main thread calls while the
 * lanes may run a step: that step is collected first (applied, offsets
 * stored, so a revoke commits them), then the assignment changes. */
static void on_rebalance(void *opaque, int assigned, const rd_kafka_topic_partition_list_t *parts) {
    cw_pipeline_t *pl = opaque;
    if (pl->in_run) {
        collect_all(pl);
    }
    for (int i = 0; i < parts->cnt; i++) {
        int p = parts->elems[i].partition;
        if (p < 0 || p >= CW_MAX_PARTITIONS) {
            continue;
        }
        pl->owned[p] = assigned;
        pl->eof[p] = 0;
        /* the committed offset: the first message is expected there, and
         * one after it means input deleted before it was read (e.g. a stop
         * longer than the retention) */
        pl->next_in[p] = assigned && parts->elems[i].err == 0 && parts->elems[i].offset >= 0
                             ? parts->elems[i].offset
                             : -1;
        if (!assigned) {
            cw_metrics_set_lag(pl->m, p, -1);
        }
        if (assigned) {
            pl->stepped = 0;
            pl->wm[p] = -2; /* load from Redis before use */
            pl->timer_upto[p] = -1;
            pl->scan_outbox[p] = 1;
        }
    }
    pl->last_activity_ms = cw_time_mono_ms();
    pl->last_gauges_ms = 0; /* refresh the assignment gauges now */
}

/* ---- metrics ---- */

static void on_redis_rtt(void *opaque, const char *stage, double seconds) {
    cw_metrics_observe(opaque, CW_HIST_REDIS, seconds);
    cw_metrics_redis_stage(opaque, stage, seconds);
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
    int up = 1;
    uint64_t reconnects = cw_state_reconnects(pl->acker->state);
    for (int i = 0; i < pl->n_lanes; i++) {
        up &= atomic_load(&pl->lanes[i].up); /* as of its last step */
        reconnects += atomic_load(&pl->lanes[i].reconnects);
    }
    cw_metrics_set_redis_up(pl->m, up);
    cw_metrics_set_redis_reconnects(pl->m, reconnects);
    for (int t = 0; t < CW_SINK__COUNT; t++) {
        uint64_t delivered = 0, failed = 0;
        cw_sink_counts(pl->sink, (cw_sink_topic_t)t, &delivered, &failed);
        cw_metrics_set_producer(pl->m, (cw_metrics_topic_t)t, delivered, failed);
    }
}

/* ---- backoff ---- */

/* Sleep with exponential backoff. On the main thread, producer delivery
 * reports are served meanwhile; a lane only sleeps (the main thread polls
 * the producer while lanes work) and flags Redis down, and the main thread
 * pauses fetching. The consumer is not polled meanwhile: a message handed
 * out now could not be processed, and skipping it would let a later offset
 * be stored past it. If an outage outlasts max.poll.interval.ms the group
 * rebalances and the partitions resume from the committed offsets —
 * redelivery that the offset-idempotent apply absorbs. */
static void backoff_wait(lane_t *ln) {
    cw_pipeline_t *pl = ln->pl;
    ln->backoff_ms = ln->backoff_ms == 0 ? 100 : ln->backoff_ms * 2;
    if (ln->backoff_ms > pl->conf->redis_backoff_max_ms) {
        ln->backoff_ms = pl->conf->redis_backoff_max_ms;
    }
    int64_t until = cw_time_mono_ms() + ln->backoff_ms;
    int main_thread = on_main(pl);
    while (!pl->stop && cw_time_mono_ms() < until) {
        pause_ms(pl, main_thread, 20);
    }
}

static void set_paused(cw_pipeline_t *pl, int pause) {
    if (pl->paused != pause) {
        CW_LOG(CW_LOG_INFO, "pipeline", "%s",
               pause ? "redis unavailable; pausing input and retrying"
                     : "redis back; resuming input");
        cw_consumer_pause(pl->consumer, pause);
        cw_metrics_set_redis_up(pl->m, !pause);
        pl->paused = pause;
    }
}

/* Run call (a cw_state_* call on ln->state) until it is not CW_RETRY;
 * reconnect with backoff in between. Returns the final result (CW_RETRY
 * only if stopping). */
#define WITH_REDIS(ln, call)                                                                       \
    ({                                                                                             \
        cw_err_t _r;                                                                               \
        for (;;) {                                                                                 \
            _r = cw_state_connect((ln)->state);                                                    \
            if (_r == CW_OK) {                                                                     \
                _r = (call);                                                                       \
            }                                                                                      \
            if (_r != CW_RETRY || (ln)->pl->stop) {                                                \
                break;                                                                             \
            }                                                                                      \
            atomic_store(&(ln)->redis_down, 1);                                                    \
            if (on_main((ln)->pl)) {                                                               \
                set_paused((ln)->pl, 1);                                                           \
            }                                                                                      \
            (ln)->stats.redis_retries++;                                                           \
            cw_metrics_add((ln)->pl->m, CW_CTR_REDIS_RETRIES, 1);                                  \
            backoff_wait(ln);                                                                      \
        }                                                                                          \
        if (_r != CW_RETRY) {                                                                      \
            (ln)->backoff_ms = 0;                                                                  \
            atomic_store(&(ln)->redis_down, 0);                                                    \
        }                                                                                          \
        _r;                                                                                        \
    })

/* ---- producing ---- */

/* Produce one message; a full producer queue is waited out (the main
 * thread polls delivery reports to make room, a lane sleeps while the main
 * thread does). */
static void produce(cw_pipeline_t *pl, cw_sink_topic_t t, const char *key, const char *val,
                    size_t len, void *opaque) {
    size_t klen = key != NULL ? strlen(key) : 0; /* NULL: no key */
    int main_thread = on_main(pl);
    int64_t next_log = 0;
    for (;;) {
        cw_err_t r = cw_sink_send(pl->sink, t, key, klen, val, len, NULL, opaque);
        if (r == CW_OK) {
            return;
        }
        if (r == CW_ERROR) {
            /* permanent (e.g. topic does not exist): alerts stay in the outbox */
            if (t == CW_SINK_ALERT) {
                free(opaque);
            }
            if (t == CW_SINK_DLQ) {
                pl->dlq_failed = 1; /* dead letters are produced on the main thread */
            }
            return;
        }
        if (pl->stop) {
            return;
        }
        if (cw_time_mono_ms() >= next_log) {
            CW_LOG(CW_LOG_WARN, "pipeline", "producer queue full; waiting");
            next_log = cw_time_mono_ms() + 1000;
        }
        pause_ms(pl, main_thread, main_thread ? 10 : 1);
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

/* A commit sets an account's timer to due (< 0: none): fire_partition
 * scans again only if one is at or before its bound. */
static void note_timer(lane_t *ln, int64_t due) {
    if (due >= 0 && due < ln->min_next_due) {
        ln->min_next_due = due;
    }
}

/* Score, decide, commit and publish accounts[0..n) (n <= CHUNK). */
static cw_err_t decide_chunk(lane_t *ln, cw_account_state_t *accts, size_t n) {
    cw_pipeline_t *pl = ln->pl;
    const cw_model_t *model = &pl->conf->model;
    scratch_t *x = ln->scratch;
    cw_buf_reset(&x->json);
    for (size_t i = 0; i < n; i++) {
        cw_score_t *sc = &x->scores[i];
        cw_decision_t *d = &x->decisions[i];
        cw_model_score(model, &pl->layout, &accts[i], sc);
        cw_alert_decide(model, &pl->layout, &accts[i], sc, d);
        /* log.level debug: every decision, to compare two replays' */
        CW_LOG(CW_LOG_DEBUG, "decide",
               "%s p%d as_of=%lld score=%.1f was=%.1f band=%d next=%lld last_event=%lld "
               "last_login=%lld",
               accts[i].account_id, accts[i].partition, (long long)accts[i].asof_ms, sc->score,
               accts[i].has_score ? accts[i].score : -1.0, (int)d->band, (long long)d->next_due_ms,
               (long long)accts[i].last_event_ms, (long long)accts[i].last_login_ms);
        x->snap_len[i] = 0;
        if (d->score_changed) {
            x->snap_off[i] = x->json.len;
            cw_alert_snapshot_json(model, &accts[i], sc, d, &x->json);
            x->snap_len[i] = x->json.len - x->snap_off[i];
            cw_buf_append(&x->json, "", 1); /* NUL-separate documents */
        }
        for (int a = 0; a < d->n_alerts; a++) {
            x->alert_off[i][a] = x->json.len;
            cw_alert_json(model, &accts[i], sc, d, a, &x->json);
            x->alert_len[i][a] = x->json.len - x->alert_off[i][a];
            cw_buf_append(&x->json, "", 1);
        }
    }
    if (x->json.oom) {
        CW_LOG(CW_LOG_ERROR, "pipeline", "out of memory building documents");
        return CW_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        cw_commit_t *c = &x->commits[i];
        cw_decision_t *d = &x->decisions[i];
        memset(c, 0, sizeof(*c));
        c->acct = &accts[i];
        c->score = x->scores[i].score;
        c->band = d->band;
        c->tier = x->scores[i].tier;
        c->phase = x->scores[i].phase;
        c->active_mask = d->active_mask;
        c->last_alert_ms = d->last_alert_ms;
        c->last_alert_id = d->n_alerts > 0 ? d->alerts[d->n_alerts - 1].alert_id : "";
        c->next_due_ms = d->next_due_ms;
        note_timer(ln, c->next_due_ms);
        c->snapshot_json = x->snap_len[i] ? x->json.data + x->snap_off[i] : NULL;
        c->n_alerts = d->n_alerts;
        for (int a = 0; a < d->n_alerts; a++) {
            c->alert_ids[a] = d->alerts[a].alert_id;
            c->alert_json[a] = x->json.data + x->alert_off[i][a];
        }
    }
    cw_err_t r = WITH_REDIS(ln, cw_state_commit(ln->state, x->commits, n));
    if (r != CW_OK) {
        return r;
    }
    /* Decisions are durable (alerts in the outbox); now publish. */
    for (size_t i = 0; i < n; i++) {
        cw_decision_t *d = &x->decisions[i];
        cw_metrics_band_change(pl->m, accts[i].has_score ? accts[i].band : -1, (cw_band_t)d->band);
        if (x->snap_len[i]) {
            produce(pl, CW_SINK_SCORE, accts[i].account_id, x->json.data + x->snap_off[i],
                    x->snap_len[i], NULL);
            ln->stats.snapshots++;
            cw_metrics_add(pl->m, CW_CTR_SNAPSHOTS, 1);
        }
        for (int a = 0; a < d->n_alerts; a++) {
            produce_alert(pl, accts[i].partition, accts[i].account_id, d->alerts[a].alert_id,
                          x->json.data + x->alert_off[i][a], x->alert_len[i][a]);
            ln->stats.alerts[d->alerts[a].reason]++;
            cw_metrics_alert(pl->m, d->alerts[a].reason);
            CW_LOG(CW_LOG_INFO, "alert", "%s %s score=%.1f id=%s", accts[i].account_id,
                   cw_reason_name(d->alerts[a].reason), x->scores[i].score, d->alerts[a].alert_id);
        }
    }
    return CW_OK;
}

static cw_err_t decide_all(lane_t *ln, cw_account_state_t *accts, size_t n) {
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t k = n - off < CHUNK ? n - off : CHUNK;
        cw_err_t r = decide_chunk(ln, accts + off, k);
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

static cw_err_t load_watermark(lane_t *ln, int p) {
    cw_pipeline_t *pl = ln->pl;
    if (pl->wm[p] != -2) {
        return CW_OK;
    }
    int64_t wm = -1;
    cw_err_t r = WITH_REDIS(ln, cw_state_watermark(ln->state, p, &wm));
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

static cw_err_t reschedule_all(lane_t *ln, cw_account_state_t *accts, size_t n) {
    scratch_t *x = ln->scratch;
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
            cw_commit_t *c = &x->commits[k++];
            memset(c, 0, sizeof(*c));
            c->acct = a;
            c->reschedule_only = 1;
            c->next_due_ms = day_end_of(a->due_ms);
            note_timer(ln, c->next_due_ms);
        }
        if (k > 0 && (k == CHUNK || i == n)) {
            cw_err_t r = WITH_REDIS(ln, cw_state_commit(ln->state, x->commits, k));
            if (r != CW_OK) {
                return r;
            }
            k = 0;
        }
    }
    return CW_OK;
}

/* Rescore partition p's accounts whose timers are due at or before upto
 * (key: the scan's day, or second in wall mode, for timer_upto). */
static cw_err_t fire_partition(lane_t *ln, int p, int64_t upto, int64_t key) {
    cw_pipeline_t *pl = ln->pl;
    pl->rescan[p] = 0;
    for (;;) {
        cw_account_state_t *accts = NULL;
        size_t n = 0;
        cw_err_t r = WITH_REDIS(ln, cw_state_due(ln->state, p, upto, TIMER_BATCH, &accts, &n));
        if (r != CW_OK) {
            return r;
        }
        if (n == 0) {
            break;
        }
        ln->min_next_due = INT64_MAX;
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
            r = reschedule_all(ln, accts, nd);
            if (r == CW_OK) {
                r = decide_all(ln, accts + nd, n - nd);
            }
        } else {
            r = decide_all(ln, accts, n);
        }
        if (r != CW_OK) {
            return r;
        }
        ln->stats.rescored_timer += n;
        cw_metrics_add(pl->m, CW_CTR_TIMER_RESCORED, n);
        /* each decision schedules the account's next day end, which may
         * itself be due already when the watermark jumped several days:
         * scan again until nothing is due. A scan that was not full found
         * every timer due, so when no commit set one at or before upto
         * nothing is due (only this lane writes the partition's timers) */
        if (n < TIMER_BATCH && ln->min_next_due > upto) {
            break;
        }
    }
    pl->timer_upto[p] = key;
    return CW_OK;
}

/* Rescore accounts whose windows rolled (timers due at or before "now" of
 * their partition: the watermark in event mode, the wall clock otherwise),
 * on the lane's partitions. */
static cw_err_t fire_timers(lane_t *ln) {
    cw_pipeline_t *pl = ln->pl;
    int64_t wall = cw_time_now_ms();
    for (int p = ln->id; p < CW_MAX_PARTITIONS; p += pl->n_lanes) {
        if (!pl->owned[p]) {
            continue;
        }
        if (load_watermark(ln, p) != CW_OK) {
            return CW_RETRY;
        }
        int64_t upto = pl->conf->time_mode == CW_TIME_WALL ? wall : pl->wm[p];
        if (upto < 0) {
            continue;
        }
        /* event mode: timers are day-granular, so scan once per watermark day
         * (the key is the last day whose end is at or before upto: a
         * watermark inside day D decides day ends up to D - 1, and
         * fire_before_step must still decide D's before a step that starts
         * on D + 1); wall mode: at most once a second */
        int64_t key = pl->conf->time_mode == CW_TIME_WALL ? upto / 1000
                      : is_day_end(upto)                  ? cw_time_day(upto)
                                                          : cw_time_day(upto) - 1;
        if (key == pl->timer_upto[p] && !pl->rescan[p]) {
            continue;
        }
        cw_err_t r = fire_partition(ln, p, upto, key);
        if (r != CW_OK) {
            return r;
        }
    }
    return CW_OK;
}

/* Event mode, before a step's apply: decide the lane's partitions' day ends
 * before the step's first event day of each (decode_batch explains why). */
static cw_err_t fire_before_step(lane_t *ln) {
    cw_pipeline_t *pl = ln->pl;
    const step_t *s = &pl->steps[ln->slot];
    for (int p = ln->id; p < CW_MAX_PARTITIONS; p += pl->n_lanes) {
        if (!pl->owned[p] || s->first_day[p] <= 0) {
            continue; /* INT64_MIN: no event of p in this step */
        }
        int64_t key = s->first_day[p] - 1; /* the day before the step's first */
        if (pl->timer_upto[p] >= key && !pl->rescan[p]) {
            continue;
        }
        cw_err_t r = fire_partition(ln, p, (key + 1) * CW_MS_PER_DAY - 1, key);
        if (r != CW_OK) {
            return r;
        }
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

/* Re-send what the lane's partitions' outboxes hold: at assignment, or
 * every outbox (all) after a failed alert delivery. */
static cw_err_t scan_outboxes(lane_t *ln, int all) {
    cw_pipeline_t *pl = ln->pl;
    for (int p = ln->id; p < CW_MAX_PARTITIONS; p += pl->n_lanes) {
        if (!pl->owned[p] || (!all && !pl->scan_outbox[p])) {
            continue;
        }
        void *ctx[2] = {pl, &p};
        cw_err_t r = WITH_REDIS(ln, cw_state_outbox_scan(ln->state, p, outbox_cb, ctx));
        if (r != CW_OK) {
            return r;
        }
        pl->scan_outbox[p] = 0;
    }
    return CW_OK;
}

/* Remove delivered alerts from the outboxes (main thread, on its own
 * connection: an HDEL of the outbox, which no fence covers). */
static cw_err_t ack_alerts(cw_pipeline_t *pl) {
    if (pl->n_acks == 0) {
        return CW_OK;
    }
    const char *ids[MAX_ACKS];
    for (size_t i = 0; i < pl->n_acks; i++) {
        ids[i] = pl->ack_id[i];
    }
    cw_err_t r =
        WITH_REDIS(pl->acker, cw_state_outbox_ack(pl->acker->state, pl->ack_part, ids, pl->n_acks));
    if (r == CW_OK) {
        pl->n_acks = 0;
    }
    return r;
}

/* ---- one batch ---- */

/* The partition + 1 under which slot's step holds the account of hash h
 * (0: none); *at (unless NULL) = where it is or would go. */
static int acct_find(const cw_pipeline_t *pl, int slot, uint64_t h, size_t *at) {
    size_t i = (size_t)h & (pl->acct_slots - 1);
    while (pl->acct_part[slot][i] != 0 && pl->acct_hash[slot][i] != h) {
        i = (i + 1) & (pl->acct_slots - 1);
    }
    if (at != NULL) {
        *at = i;
    }
    return pl->acct_part[slot][i];
}

/* Note that step s (in slot) applies account id's events of partition p:
 * 1 when the step already holds the account's events from another
 * partition (or, rarely, another account's with the same 64-bit hash: the
 * cut is then merely early). When an earlier step that a lane may still
 * run (the other slots) holds them under another partition, s becomes a
 * barrier. */
static int acct_on_other_partition(cw_pipeline_t *pl, step_t *s, int slot, const char *id, int p) {
    uint64_t h = cw_fnv1a(CW_FNV_INIT, id, strlen(id));
    size_t i;
    int here = acct_find(pl, slot, h, &i);
    if (here != 0) {
        return here != p + 1;
    }
    for (int k = 1; k < NSTEP && !s->barrier; k++) {
        int before = acct_find(pl, (slot + k) % NSTEP, h, NULL);
        s->barrier = before != 0 && before != p + 1;
    }
    pl->acct_hash[slot][i] = h;
    pl->acct_part[slot][i] = (int16_t)(p + 1);
    return 0;
}

/* 1 when the step must end before event ev of partition p (see
 * decode_batch): its account is in the step under another partition, or
 * (event mode) p's events in the step would span more than horizon_days. */
static int ends_step(cw_pipeline_t *pl, step_t *s, int slot, const cw_event_t *ev, int p) {
    if (ev->type == CW_EV_UNKNOWN) {
        return 0;
    }
    if (acct_on_other_partition(pl, s, slot, ev->account_id, p)) {
        return 1;
    }
    if (pl->conf->time_mode == CW_TIME_EVENT) {
        int64_t d = cw_time_day(ev->ts_ms);
        if (s->first_day[p] == INT64_MIN) {
            s->first_day[p] = s->last_day[p] = d;
        } else if (d > s->first_day[p] + pl->horizon_days ||
                   d < s->last_day[p] - pl->horizon_days) {
            return 1;
        } else {
            s->first_day[p] = d < s->first_day[p] ? d : s->first_day[p];
            s->last_day[p] = d > s->last_day[p] ? d : s->last_day[p];
        }
    }
    return 0;
}

/* Message off of partition p is taken into step s (decoded or dead-lettered):
 * its offset is stored after the step, and offsets skipped since the
 * previous one are input this process never saw. With librdkafka's
 * auto.offset.reset (earliest) that is what happens when the broker deleted
 * events before they were read (retention outran the consumer: the mock
 * broker keeps ~5 MB per partition); transaction markers and compaction
 * also leave gaps. Counted and logged, so a loss is never silent. After an
 * assignment the first message is compared with the committed offset
 * (on_rebalance); with none committed (a new group) nothing is expected. */
static void take_offset(cw_pipeline_t *pl, step_t *s, int p, int64_t off) {
    pl->eof[p] = 0;
    s->next_off[p] = off + 1;
    s->real = 1;
    int64_t want = pl->next_in[p];
    if (want >= 0 && off > want) {
        pl->stats.input_skipped += (uint64_t)(off - want);
        cw_metrics_add(pl->m, CW_CTR_INPUT_SKIPPED, (uint64_t)(off - want));
        CW_LOG(CW_LOG_WARN, "consumer",
               "partition %d: offsets %lld..%lld never consumed (deleted by retention before "
               "they were read, or transaction markers)",
               p, (long long)want, (long long)(off - 1));
    }
    pl->next_in[p] = off + 1;
}

/* Decode msgs[start..n) into the step being prepared and the lanes'
 * batches of it (main thread, while the lanes may still run earlier
 * steps); malformed messages are dead-lettered. *end = where this step
 * stops.
 *
 * Event mode cuts the step before an event that would make its
 * partition's events in the step span more than horizon_days: a member's
 * day mask holds 52 days, so a day-end decision must not read an account
 * whose newest applied activity is so far past its as-of day that the
 * window's first days have been shifted out of the mask. With the
 * partition's day ends before the step's earliest event day decided first
 * (lane_step), no decision lags the applied data by more than horizon_days,
 * whatever the batch size. The span is counted from the earliest event,
 * not the first: a late event (older than those before it) sets its day's
 * timer back inside the step (tests/integration/test_determinism.c:
 * late_event_keeps_the_mask_horizon).
 *
 * A step also ends before an account's event from a second partition
 * (keys moved by a producer or a change of the partition count): its two
 * partitions' updates would otherwise be computed from the same read —
 * by two lanes at once, or as two groups of one transaction — and the
 * later write would overwrite the earlier one's counters, masks and
 * facts. In consecutive steps they are applied one after the other
 * (test_pipeline: account_on_two_partitions). */
static cw_err_t decode_batch(cw_pipeline_t *pl, size_t start, size_t n, size_t *end) {
    cw_event_limits_t lim = cw_event_limits_from_conf(pl->conf);
    cw_event_t ev;
    char reason[CW_REASON_MAX], detail[CW_DETAIL_MAX];
    int slot = (int)(pl->started % NSTEP); /* prepared by prepare_step */
    step_t *s = &pl->steps[slot];

    for (int i = 0; i < pl->n_lanes; i++) {
        cw_state_batch_begin(pl->lanes[i].batch[slot]);
    }
    for (int p = 0; p < CW_MAX_PARTITIONS; p++) {
        s->first_day[p] = INT64_MIN;
    }
    s->stored = 1;
    *end = n;
    for (size_t i = start; i < n; i++) {
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
            return CW_ERROR;
        }
        if (cw_event_decode(m->payload, m->len, m->key, m->key_len, &lim, &ev, reason, detail) !=
            CW_OK) {
            take_offset(pl, s, p, m->offset);
            dead_letter(pl, m, reason, detail);
            s->dlq_sent = 1;
            continue;
        }
        if (ends_step(pl, s, slot, &ev, p)) {
            *end = i; /* the next step starts here */
            return CW_OK;
        }
        take_offset(pl, s, p, m->offset);
        pl->stats.events_in[ev.type]++;
        cw_metrics_event_in(pl->m, ev.type);
        if (ev.type == CW_EV_UNKNOWN) {
            continue;
        }
        if (cw_state_batch_add(lane_of(pl, p)->batch[slot], p, m->offset, &ev) != CW_OK) {
            CW_LOG(CW_LOG_ERROR, "pipeline", "state batch full");
            return CW_ERROR;
        }
        s->batch = 1;
    }
    return CW_OK;
}

/* Apply the lane's share of the batch; in wall mode, decide at once. */
static cw_err_t lane_apply(lane_t *ln) {
    cw_pipeline_t *pl = ln->pl;
    cw_state_batch_t *batch = ln->batch[ln->slot];
    if (cw_state_batch_len(batch) == 0) {
        return CW_OK;
    }
    cw_account_state_t *accts = NULL;
    for (int p = ln->id; p < CW_MAX_PARTITIONS; p += pl->n_lanes) {
        if (pl->owned[p] && load_watermark(ln, p) != CW_OK) {
            return CW_RETRY;
        }
    }
    size_t na = 0;
    uint64_t dup0 = cw_state_duplicates(ln->state), hit0, miss0, hit1, miss1;
    cw_state_cache_stats(ln->state, &hit0, &miss0);
    cw_err_t r = WITH_REDIS(ln, cw_state_batch_exec(ln->state, batch, &accts, &na));
    if (r != CW_OK) {
        return r;
    }
    uint64_t dups = cw_state_duplicates(ln->state) - dup0;
    ln->stats.duplicates += dups;
    cw_metrics_add(pl->m, CW_CTR_DUPLICATES, dups);
    cw_state_cache_stats(ln->state, &hit1, &miss1);
    cw_metrics_add(pl->m, CW_CTR_CACHE_HITS, hit1 - hit0);
    cw_metrics_add(pl->m, CW_CTR_CACHE_MISSES, miss1 - miss0);
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
        r = decide_all(ln, accts, na);
    }
    return r;
}

/* One lane's work of a step (in slot ln->slot): its share of the batch,
 * then its partitions' outboxes and due timers (timers only after a good
 * apply). */
static void lane_step(lane_t *ln) {
    cw_pipeline_t *pl = ln->pl;
    const step_t *s = &pl->steps[ln->slot];
    cw_err_t apply = CW_OK, work;
    const char *stage = "batch";
    if (s->batch && pl->conf->time_mode == CW_TIME_EVENT) {
        apply = fire_before_step(ln);
    }
    if (s->batch && apply == CW_OK) {
        apply = lane_apply(ln);
    }
    work = apply;
    if (work == CW_OK) {
        stage = "outbox scan";
        work = scan_outboxes(ln, s->rescan_all);
    }
    if (work == CW_OK) {
        stage = "timers";
        work = fire_timers(ln);
    }
    ln->res[ln->slot].apply = apply;
    ln->res[ln->slot].work = work;
    ln->res[ln->slot].stage = stage;
}

static void stats_add(cw_pipeline_stats_t *dst, cw_pipeline_stats_t *src) {
    for (size_t i = 0; i < sizeof(dst->alerts) / sizeof(dst->alerts[0]); i++) {
        dst->alerts[i] += src->alerts[i];
    }
    dst->duplicates += src->duplicates;
    dst->snapshots += src->snapshots;
    dst->rescored_timer += src->rescored_timer;
    dst->redis_retries += src->redis_retries;
    memset(src, 0, sizeof(*src));
}

/* Under mu: lane ln may start its next step (ln->done): it is published,
 * and unless it is a barrier, whatever the other lanes are doing; a
 * barrier waits until every lane finished the step before it. */
static int lane_can_start(const cw_pipeline_t *pl, const lane_t *ln) {
    if (pl->halted || ln->done >= pl->started) {
        return 0;
    }
    if (pl->steps[ln->done % NSTEP].barrier) {
        for (int i = 0; i < pl->n_lanes; i++) {
            if (pl->lanes[i].done < ln->done) {
                return 0;
            }
        }
    }
    return 1;
}

static void *lane_main(void *arg) {
    lane_t *ln = arg;
    cw_pipeline_t *pl = ln->pl;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        while (!pl->quit && !lane_can_start(pl, ln)) {
            pthread_cond_wait(&pl->cv_work, &pl->mu);
        }
        if (pl->quit) {
            break;
        }
        ln->slot = (int)(ln->done % NSTEP);
        ln->busy = 1;
        pthread_mutex_unlock(&pl->mu);
        lane_step(ln);
        atomic_store(&ln->up, cw_state_connected(ln->state));
        atomic_store(&ln->reconnects, cw_state_reconnects(ln->state));
        pthread_mutex_lock(&pl->mu);
        stats_add(&pl->lane_stats, &ln->stats);
        pl->steps[ln->slot].done_us = cw_time_mono_us(); /* the last lane's time stays */
        if (ln->res[ln->slot].work != CW_OK) {
            ln->stopped = pl->halted = 1;
        }
        ln->busy = 0;
        ln->done++;
        pthread_cond_broadcast(&pl->cv_work); /* lanes waiting at a barrier */
        pthread_cond_signal(&pl->cv_done);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

/* Under mu: every lane ran steps 0 .. need - 1, or a lane stopped on an
 * error and none is running a step any more. */
static int lanes_reached(const cw_pipeline_t *pl, uint64_t need) {
    int all = 1, busy = 0;
    for (int i = 0; i < pl->n_lanes; i++) {
        all &= pl->lanes[i].done >= need;
        busy |= pl->lanes[i].busy;
    }
    return all || (pl->halted && !busy);
}

/* Fetching is paused while some lane (or the main thread's connection)
 * retries Redis. */
static void pause_if_down(cw_pipeline_t *pl) {
    int down = atomic_load(&pl->acker->redis_down);
    for (int i = 0; i < pl->n_lanes; i++) {
        down |= atomic_load(&pl->lanes[i].redis_down);
    }
    set_paused(pl, down);
}

/* After every lane applied step s: dead letters must be acknowledged
 * before the offsets are stored. */
static cw_err_t store_offsets(cw_pipeline_t *pl, const step_t *s) {
    if (s->dlq_sent) {
        while (pl->dlq_inflight > 0 && !pl->dlq_failed) {
            cw_sink_poll(pl->sink, 10);
        }
        if (pl->dlq_failed) {
            CW_LOG(CW_LOG_ERROR, "pipeline",
                   "dead-letter delivery failed; stopping without committing those offsets");
            return CW_ERROR;
        }
    }
    cw_consumer_store(pl->consumer, s->next_off, CW_MAX_PARTITIONS);
    pl->stats.batches++;
    cw_metrics_add(pl->m, CW_CTR_BATCHES, 1);
    return CW_OK;
}

/* Step s (every lane ran it): its outcome, then its offsets. */
static cw_err_t collect_one(cw_pipeline_t *pl, uint64_t k, const char **stage) {
    int slot = (int)(k % NSTEP);
    const step_t *s = &pl->steps[slot];
    cw_err_t r;
    for (int i = 0; i < pl->n_lanes; i++) {
        if (pl->lanes[i].res[slot].apply != CW_OK) {
            *stage = "batch";
            return pl->lanes[i].res[slot].apply;
        }
    }
    if (s->stored && (r = store_offsets(pl, s)) != CW_OK) {
        *stage = "batch";
        return r;
    }
    for (int i = 0; i < pl->n_lanes; i++) {
        if (pl->lanes[i].res[slot].work != CW_OK) {
            *stage = pl->lanes[i].res[slot].stage;
            return pl->lanes[i].res[slot].work;
        }
    }
    pl->stepped = 1;
    if (s->real) {
        pl->last_activity_ms = s->done_us / 1000;
        cw_metrics_observe(pl->m, CW_HIST_BATCH, (double)(s->done_us - s->t0_us) / 1e6);
    }
    return CW_OK;
}

/* Wait until every lane ran steps 0 .. need - 1 (serving delivery reports
 * and pausing fetching while a lane retries Redis), then collect them in
 * order: each step's offsets are stored once every lane applied it, never
 * ahead of Redis; then (main thread) ack delivered alerts and refresh the
 * gauges. A lane that stopped on an error ends the wait; its error is
 * returned once the steps before it are collected. *stage names what
 * failed. */
static cw_err_t collect(cw_pipeline_t *pl, uint64_t need, const char **stage) {
    uint64_t reach = UINT64_MAX;
    const lane_t *stopped = NULL;
    *stage = "batch";
    pthread_mutex_lock(&pl->mu);
    while (!lanes_reached(pl, need)) {
        struct timespec until = cw_time_deadline(1);
        pthread_cond_timedwait(&pl->cv_done, &pl->mu, &until);
        if (lanes_reached(pl, need)) {
            break;
        }
        pthread_mutex_unlock(&pl->mu);
        cw_sink_poll(pl->sink, 0);
        pause_if_down(pl);
        pthread_mutex_lock(&pl->mu);
    }
    for (int i = 0; i < pl->n_lanes; i++) {
        const lane_t *ln = &pl->lanes[i];
        reach = ln->done < reach ? ln->done : reach;
        if (ln->stopped && stopped == NULL) {
            stopped = ln;
        }
    }
    stats_add(&pl->stats, &pl->lane_stats);
    pthread_mutex_unlock(&pl->mu);
    stats_add(&pl->stats, &pl->acker->stats);
    for (; pl->collected < reach; pl->collected++) {
        cw_err_t r = collect_one(pl, pl->collected, stage);
        if (r != CW_OK) {
            return r;
        }
    }
    if (stopped != NULL) {
        /* its failed step: collected already if the others ran it too */
        int slot = (int)((stopped->done - 1) % NSTEP);
        *stage = stopped->res[slot].stage;
        return stopped->res[slot].work;
    }
    pause_if_down(pl);
    *stage = "outbox ack";
    cw_err_t r = ack_alerts(pl);
    refresh_gauges(pl);
    return r;
}

/* The next step's slot, free and empty: the step that used it before is
 * collected first. */
static cw_err_t prepare_step(cw_pipeline_t *pl, const char **stage) {
    if (pl->started >= NSTEP) {
        cw_err_t r = collect(pl, pl->started - NSTEP + 1, stage);
        if (r != CW_OK) {
            return r;
        }
    }
    int slot = (int)(pl->started % NSTEP);
    memset(&pl->steps[slot], 0, sizeof(pl->steps[slot]));
    memset(pl->acct_part[slot], 0, pl->acct_slots * sizeof(*pl->acct_part[slot]));
    pl->steps[slot].t0_us = cw_time_mono_us();
    return CW_OK;
}

/* Hand the prepared step to the lanes; returns at once. */
static void publish_step(cw_pipeline_t *pl) {
    step_t *s = &pl->steps[pl->started % NSTEP];
    int64_t now = cw_time_mono_ms();
    s->rescan_all = pl->alert_failed && now - pl->last_outbox_scan_ms > OUTBOX_RESCAN_MS;
    if (s->rescan_all) {
        pl->alert_failed = 0;
        pl->last_outbox_scan_ms = now;
    }
    pthread_mutex_lock(&pl->mu);
    pl->started++;
    pthread_cond_broadcast(&pl->cv_work);
    pthread_mutex_unlock(&pl->mu);
}

/* One iteration's work on n consumed messages (n may be 0: timers and
 * outboxes only), in as many steps as the event-time horizon needs. Each
 * step is decoded while the lanes still run earlier ones and handed to
 * them at once; a lane that finished its share starts the next step
 * without waiting for the others. *stage names what failed. */
static cw_err_t process(cw_pipeline_t *pl, size_t n, const char **stage) {
    size_t start = 0;
    do {
        size_t end = n;
        cw_err_t r = prepare_step(pl, stage);
        if (r == CW_OK && n > 0) {
            *stage = "batch";
            r = decode_batch(pl, start, n, &end);
        }
        if (r != CW_OK) {
            return r;
        }
        publish_step(pl);
        start = end;
    } while (start < n);
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
        pl->next_in[p] = -1;
        pl->wm[p] = -2;
        pl->timer_upto[p] = -1;
    }
    if (cw_layout_build(&conf->model, &pl->layout, errstr, errstr_size) != 0) {
        goto fail;
    }
    /* a set member's mask holds 52 days: a decision may lag the newest
     * applied activity by 52 minus the longest distinct window (its offset
     * included) before that window's first days are shifted out */
    pl->horizon_days = 52;
    for (int j = 0; j < pl->layout.n_queries; j++) {
        const cw_query_def_t *q = &pl->layout.queries[j];
        int64_t h = 52 - (int64_t)q->offset_days - (int64_t)q->len_days;
        if (q->is_set && h < pl->horizon_days) {
            pl->horizon_days = h < 0 ? 0 : h;
        }
    }
    /* nor by more than the logins' retention: a decision's last login
     * comes from the day buckets of the days it lags (the older one is kept
     * by the apply, as lt), and those must still be there */
    {
        cw_view_plan_t vp;
        if (cw_view_plan_build(conf, &pl->layout, CW_STATE_SLACK_DAYS, &vp, errstr, errstr_size) !=
            0) {
            goto fail;
        }
        if (vp.logins >= 0 && vp.cr[vp.logins] - 1 < pl->horizon_days) {
            pl->horizon_days = vp.cr[vp.logins] - 1;
        }
    }
    pl->msgs = calloc((size_t)conf->kafka_batch_size, sizeof(*pl->msgs));
    for (pl->acct_slots = 64; pl->acct_slots < 2 * (size_t)conf->kafka_batch_size;) {
        pl->acct_slots *= 2;
    }
    if (pl->msgs == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    for (int k = 0; k < NSTEP; k++) {
        pl->acct_hash[k] = calloc(pl->acct_slots, sizeof(*pl->acct_hash[k]));
        pl->acct_part[k] = calloc(pl->acct_slots, sizeof(*pl->acct_part[k]));
        if (pl->acct_hash[k] == NULL || pl->acct_part[k] == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
    }
    pl->n_lanes = conf->redis_connections;
    pl->lanes = calloc((size_t)pl->n_lanes, sizeof(*pl->lanes));
    if (pl->lanes == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    for (int i = 0; i < pl->n_lanes; i++) {
        lane_t *ln = &pl->lanes[i];
        ln->pl = pl;
        ln->id = i;
        ln->state = cw_state_new(conf, &pl->layout, errstr, errstr_size);
        if (ln->state == NULL) {
            goto fail;
        }
        if ((ln->scratch = calloc(1, sizeof(*ln->scratch))) == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
        for (int k = 0; k < NSTEP; k++) {
            if ((ln->batch[k] = cw_state_batch_new(conf, &pl->layout)) == NULL) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
            }
        }
        if (pl->m != NULL) {
            cw_state_set_rtt_cb(ln->state, on_redis_rtt, pl->m);
        }
    }
    pl->acker = calloc(1, sizeof(*pl->acker));
    if (pl->acker == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    pl->acker->pl = pl;
    pl->acker->id = -1;
    pl->acker->state = cw_state_new(conf, &pl->layout, errstr, errstr_size);
    if (pl->acker->state == NULL) {
        goto fail;
    }
    if (pl->m != NULL) {
        cw_state_set_rtt_cb(pl->acker->state, on_redis_rtt, pl->m);
    }
    pl->sink = cw_sink_kafka_new(conf, on_delivery, pl, errstr, errstr_size);
    if (pl->sink == NULL) {
        goto fail;
    }
    pl->consumer = cw_consumer_new(conf, on_rebalance, pl, errstr, errstr_size);
    if (pl->consumer == NULL) {
        goto fail;
    }
    if (pthread_mutex_init(&pl->mu, NULL) != 0 || pthread_cond_init(&pl->cv_work, NULL) != 0 ||
        pthread_cond_init(&pl->cv_done, NULL) != 0) {
        snprintf(errstr, errstr_size, "cannot create the lanes' mutex");
        goto fail;
    }
    pl->sync_ok = 1;
    pl->main_thread = pthread_self();
    for (int i = 0; i < pl->n_lanes; i++) {
        if (pthread_create(&pl->lanes[i].thread, NULL, lane_main, &pl->lanes[i]) != 0) {
            snprintf(errstr, errstr_size, "cannot start lane thread %d", i);
            goto fail;
        }
        pl->lanes[i].started = 1;
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

/* --exit-on-idle: every owned partition at its end, nothing to deliver or
 * ack, and no activity for the idle period since a step (outboxes re-sent,
 * timers checked) ran after the assignment. */
static int idle_for_exit(const cw_pipeline_t *pl) {
    return pl->opts.exit_on_idle_ms > 0 && pl->stepped && all_idle(pl) &&
           cw_sink_outq(pl->sink) == 0 && pl->n_acks == 0 &&
           cw_time_mono_ms() - pl->last_activity_ms >= pl->opts.exit_on_idle_ms;
}

/* A stage failed for good (CW_ERROR): stop without committing. CW_RETRY
 * comes back only when stopping anyway. */
static void stop_on_error(cw_pipeline_t *pl, cw_err_t r, const char *stage) {
    if (r == CW_ERROR && !pl->fatal) {
        CW_LOG(CW_LOG_ERROR, "pipeline", "%s failed; stopping without committing", stage);
        pl->fatal = 1;
        pl->stop = 1; /* lanes retrying Redis give up */
    }
}

/* Collect every step handed to the lanes (see collect). */
static void collect_all(cw_pipeline_t *pl) {
    const char *stage;
    cw_err_t r = collect(pl, pl->started, &stage);
    stop_on_error(pl, r, stage);
}

int cw_pipeline_run(cw_pipeline_t *pl) {
    int64_t last_stats = cw_time_mono_ms();
    pl->main_thread = pthread_self(); /* the thread that polls the consumer and producer */
    pl->in_run = 1;
    pl->last_activity_ms = cw_time_mono_ms();
    pl->last_outbox_scan_ms = cw_time_mono_ms();
    CW_LOG(CW_LOG_INFO, "pipeline", "consuming %s from %s (time mode %s)",
           pl->conf->kafka_input_topic, pl->conf->kafka_brokers,
           pl->conf->time_mode == CW_TIME_WALL ? "wall" : "event");
    while (!pl->stop && !pl->fatal) {
        size_t n = cw_consumer_batch(pl->consumer, pl->msgs, (size_t)pl->conf->kafka_batch_size,
                                     pl->conf->kafka_batch_timeout_ms);
        const char *stage = "batch"; /* named in the log when a stage fails for good */
        cw_err_t r = process(pl, n, &stage);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_message_destroy(pl->msgs[i]);
            pl->msgs[i] = NULL;
        }
        cw_sink_poll(pl->sink, 0);
        stop_on_error(pl, r, stage);
        if (cw_time_mono_ms() - last_stats > 10000) {
            last_stats = cw_time_mono_ms();
            CW_LOG(CW_LOG_INFO, "stats",
                   "batches=%llu logins=%llu usage=%llu dlq=%llu dups=%llu skipped=%llu "
                   "alerts=%llu",
                   (unsigned long long)pl->stats.batches,
                   (unsigned long long)pl->stats.events_in[CW_EV_LOGIN],
                   (unsigned long long)pl->stats.events_in[CW_EV_USAGE],
                   (unsigned long long)pl->stats.dead_lettered,
                   (unsigned long long)pl->stats.duplicates,
                   (unsigned long long)pl->stats.input_skipped,
                   (unsigned long long)(pl->stats.alerts[0] + pl->stats.alerts[1] +
                                        pl->stats.alerts[2] + pl->stats.alerts[3] +
                                        pl->stats.alerts[4] + pl->stats.alerts[5]));
        }
        if (idle_for_exit(pl)) {
            /* the step just started may hold the last events: collect it
             * (its end is the last activity) and look again */
            collect_all(pl);
            if (!pl->fatal && idle_for_exit(pl)) {
                CW_LOG(CW_LOG_INFO, "pipeline", "all partitions idle; draining");
                break;
            }
        }
    }
    collect_all(pl);
    /* Drain: deliver what is queued, remove acked alerts, commit offsets. */
    int64_t deadline = cw_time_mono_ms() + 5000;
    while (cw_sink_outq(pl->sink) > 0 && cw_time_mono_ms() < deadline) {
        cw_sink_poll(pl->sink, 50);
    }
    if (!pl->fatal && pl->n_acks > 0 && cw_state_connect(pl->acker->state) == CW_OK) {
        const char *ids[MAX_ACKS];
        for (size_t i = 0; i < pl->n_acks; i++) {
            ids[i] = pl->ack_id[i];
        }
        cw_state_outbox_ack(pl->acker->state, pl->ack_part, ids, pl->n_acks);
        pl->n_acks = 0;
    }
    if (!pl->fatal) {
        cw_consumer_commit(pl->consumer);
    }
    pl->in_run = 0;
    uint64_t in = 0;
    for (int t = 0; t <= CW_EV_UNKNOWN; t++) {
        in += pl->stats.events_in[t];
    }
    CW_LOG(CW_LOG_INFO, "pipeline",
           "stopped (%s): batches=%llu events_in=%llu dead_lettered=%llu input_skipped=%llu",
           pl->fatal ? "fatal" : "clean", (unsigned long long)pl->stats.batches,
           (unsigned long long)in, (unsigned long long)pl->stats.dead_lettered,
           (unsigned long long)pl->stats.input_skipped);
    return pl->fatal ? 1 : 0;
}

void cw_pipeline_destroy(cw_pipeline_t *pl) {
    if (pl == NULL) {
        return;
    }
    pl->stop = 1; /* a lane retrying Redis gives up */
    if (pl->sync_ok) {
        pthread_mutex_lock(&pl->mu);
        pl->quit = 1;
        pthread_cond_broadcast(&pl->cv_work);
        pthread_mutex_unlock(&pl->mu);
    }
    for (int i = 0; pl->lanes != NULL && i < pl->n_lanes; i++) {
        if (pl->lanes[i].started) {
            pthread_join(pl->lanes[i].thread, NULL);
        }
    }
    /* steps never collected (run not called to its end) are dropped with
     * their offsets unstored: a redelivery the apply absorbs */
    if (pl->sync_ok) {
        pthread_mutex_destroy(&pl->mu);
        pthread_cond_destroy(&pl->cv_work);
        pthread_cond_destroy(&pl->cv_done);
    }
    cw_consumer_destroy(pl->consumer);
    cw_sink_destroy(pl->sink, 2000); /* run's drain waited 5 s already; the outbox keeps alerts */
    for (int i = 0; pl->lanes != NULL && i < pl->n_lanes; i++) {
        cw_state_destroy(pl->lanes[i].state);
        for (int k = 0; k < NSTEP; k++) {
            cw_state_batch_destroy(pl->lanes[i].batch[k]);
        }
        if (pl->lanes[i].scratch != NULL) {
            cw_buf_free(&pl->lanes[i].scratch->json);
            free(pl->lanes[i].scratch);
        }
    }
    free(pl->lanes);
    free(pl->msgs);
    for (int k = 0; k < NSTEP; k++) {
        free(pl->acct_hash[k]);
        free(pl->acct_part[k]);
    }
    if (pl->acker != NULL) {
        cw_state_destroy(pl->acker->state);
        free(pl->acker);
    }
    cw_buf_free(&pl->dlq);
    free(pl);
}
