/*
 * cw_metrics.c — the metrics registry (see cw_metrics.h): C11 atomics
 * updated by the processor thread, rendered in the Prometheus text format
 * by the HTTP thread.
 *
 * Consistency: a scrape reads each value with one atomic load, so it sees
 * every value at some moment during the scrape; values of different
 * series may be a few increments apart, which Prometheus tolerates. The
 * histogram's _count is computed from the same bucket loads it prints, so
 * the +Inf bucket always equals _count. Free-form label values (dead-letter
 * reasons) are published with a release store of the slot count after the
 * slot's name is written, so a reader that sees a slot also sees its name.
 */
#include "cw_metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"

#define N_EV_TYPES (CW_EV_UNKNOWN + 1)
#define MAX_BUCKETS 16

/* One value of a free-form label and its counters. */
typedef struct label_slot {
    char name[CW_METRICS_LABEL_MAX]; /* written once, before the slot is published */
    _Atomic uint64_t value;
    _Atomic uint64_t value2; /* a second counter of the same series (stage: nanoseconds) */
} label_slot_t;

/* A counter family with one free-form label, bounded. */
typedef struct label_family {
    label_slot_t slots[CW_METRICS_MAX_LABELS];
    _Atomic size_t n;        /* published slots (release/acquire) */
    _Atomic uint64_t other;  /* values seen after the table filled up */
    _Atomic uint64_t other2; /* ... and their second counter */
    pthread_mutex_t lock;    /* serialises the claiming of new slots only */
} label_family_t;

typedef struct hist_def {
    const char *name;
    const char *help;
    double bounds[MAX_BUCKETS];
    int n_bounds;
} hist_def_t;

typedef struct hist {
    _Atomic uint64_t buckets[MAX_BUCKETS + 1]; /* per-bucket (not cumulative); last = +Inf */
    _Atomic uint64_t sum_ns;                   /* sum of observations, nanoseconds */
} hist_t;

static const hist_def_t hist_defs[CW_HIST__COUNT] = {
    {"churnwatch_batch_duration_seconds",
     "Time to process one consumed batch: decode, Redis apply, scoring, commit, produce.",
     {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
     13},
    {"churnwatch_redis_roundtrip_seconds",
     "Time of one pipelined Redis round trip (apply, commit, reads).",
     {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
     14},
};

static const struct {
    const char *name;
    const char *help;
} ctr_defs[CW_CTR__COUNT] = {
    {"churnwatch_batches_total", "Consumed batches processed."},
    {"churnwatch_duplicates_total", "Redelivered events skipped because their offset was applied."},
    {"churnwatch_snapshots_total", "Score snapshots produced to the score topic."},
    {"churnwatch_timer_rescored_total", "Accounts rescored by timers (windows rolled)."},
    {"churnwatch_redis_retries_total", "Redis operations retried after a connection failure."},
    {"churnwatch_apply_cache_hits_total",
     "Account applies whose fixed fields and timer came from the apply cache."},
    {"churnwatch_apply_cache_misses_total",
     "Account applies that read their fixed fields and timer from Redis (cache on)."},
    {"churnwatch_input_skipped_total",
     "Input offsets never consumed: events the broker deleted before they were read "
     "(retention), or transaction markers."},
};

static const char *const topic_kinds[CW_METRICS_TOPIC__COUNT] = {"alert", "score", "dlq"};

struct cw_metrics {
    _Atomic uint64_t events_in[N_EV_TYPES];
    label_family_t dlq;
    label_family_t stage; /* Redis round trips (value) and their nanoseconds (value2) */
    _Atomic uint64_t alerts[CW_REASON__COUNT];
    _Atomic uint64_t band_changes[4][3]; /* [from + 1][to]; from -1 = first scoring */
    _Atomic uint64_t counters[CW_CTR__COUNT];
    hist_t hists[CW_HIST__COUNT];
    _Atomic int64_t lag[CW_METRICS_MAX_PARTITIONS]; /* -1 = no series */
    _Atomic uint64_t redis_reconnects;
    _Atomic uint64_t delivered[CW_METRICS_TOPIC__COUNT];
    _Atomic uint64_t failed[CW_METRICS_TOPIC__COUNT];
    _Atomic uint64_t accounts[3];
    _Atomic int accounts_known;
    _Atomic int redis_up;
    _Atomic int assigned;
    int64_t start_ms;
    char input_topic[CW_STR_MAX];
    char topics[CW_METRICS_TOPIC__COUNT][CW_STR_MAX];
    int lock_ok; /* dlq.lock and stage.lock initialised */
};

/* ---- lifecycle ---- */

cw_metrics_t *cw_metrics_new(const cw_conf_t *conf, char *errstr, size_t errstr_size) {
    cw_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(errstr, errstr_size, "metrics: out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&m->dlq.lock, NULL) != 0) {
        snprintf(errstr, errstr_size, "metrics: cannot create a mutex");
        free(m);
        return NULL;
    }
    if (pthread_mutex_init(&m->stage.lock, NULL) != 0) {
        snprintf(errstr, errstr_size, "metrics: cannot create a mutex");
        pthread_mutex_destroy(&m->dlq.lock);
        free(m);
        return NULL;
    }
    m->lock_ok = 1;
    for (int p = 0; p < CW_METRICS_MAX_PARTITIONS; p++) {
        atomic_init(&m->lag[p], -1);
    }
    m->start_ms = cw_time_now_ms();
    if (conf != NULL) {
        cw_strlcpy(m->input_topic, conf->kafka_input_topic, sizeof(m->input_topic));
        cw_strlcpy(m->topics[CW_METRICS_TOPIC_ALERT], conf->kafka_alert_topic,
                   sizeof(m->topics[0]));
        cw_strlcpy(m->topics[CW_METRICS_TOPIC_SCORE], conf->kafka_score_topic,
                   sizeof(m->topics[0]));
        cw_strlcpy(m->topics[CW_METRICS_TOPIC_DLQ], conf->kafka_dlq_topic, sizeof(m->topics[0]));
    }
    for (int t = 0; t < CW_METRICS_TOPIC__COUNT; t++) {
        if (m->topics[t][0] == '\0') {
            cw_strlcpy(m->topics[t], topic_kinds[t], sizeof(m->topics[t]));
        }
    }
    if (m->input_topic[0] == '\0') {
        cw_strlcpy(m->input_topic, "input", sizeof(m->input_topic));
    }
    return m;
}

void cw_metrics_destroy(cw_metrics_t *m) {
    if (m == NULL) {
        return;
    }
    if (m->lock_ok) {
        pthread_mutex_destroy(&m->dlq.lock);
        pthread_mutex_destroy(&m->stage.lock);
    }
    free(m);
}

/* ---- updates ---- */

#define INC(a, n) atomic_fetch_add_explicit(&(a), (n), memory_order_relaxed)
#define SET(a, v) atomic_store_explicit(&(a), (v), memory_order_relaxed)
#define GET(a) atomic_load_explicit(&(a), memory_order_relaxed)

void cw_metrics_event_in(cw_metrics_t *m, cw_ev_type_t type) {
    if (m == NULL || (int)type < 0 || (int)type >= N_EV_TYPES) {
        return;
    }
    INC(m->events_in[type], 1);
}

/* Index of label in the first n slots, or -1. */
static int family_find(label_family_t *f, const char *label, size_t from, size_t n) {
    for (size_t i = from; i < n; i++) {
        if (strcmp(f->slots[i].name, label) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Add v (and v2 to the second counter) to the series of label. */
static void family_add(label_family_t *f, const char *reason, uint64_t v, uint64_t v2) {
    char label[CW_METRICS_LABEL_MAX];
    cw_strlcpy(label, reason != NULL && reason[0] != '\0' ? reason : "unspecified", sizeof(label));
    if (strcmp(label, "other") == 0) {
        INC(f->other, v);
        INC(f->other2, v2);
        return;
    }
    /* fast path: a known label, no lock */
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    int i = family_find(f, label, 0, n);
    if (i >= 0) {
        INC(f->slots[i].value, v);
        INC(f->slots[i].value2, v2);
        return;
    }
    /* first sighting: claim a slot under the lock (another writer may have
     * claimed it meanwhile, so look again at what was added since) */
    pthread_mutex_lock(&f->lock);
    size_t n2 = atomic_load_explicit(&f->n, memory_order_relaxed);
    i = family_find(f, label, n, n2);
    if (i >= 0) {
        INC(f->slots[i].value, v);
        INC(f->slots[i].value2, v2);
    } else if (n2 < CW_METRICS_MAX_LABELS) {
        memcpy(f->slots[n2].name, label, sizeof(label));
        atomic_store_explicit(&f->slots[n2].value, v, memory_order_relaxed);
        atomic_store_explicit(&f->slots[n2].value2, v2, memory_order_relaxed);
        atomic_store_explicit(&f->n, n2 + 1, memory_order_release);
    } else {
        INC(f->other, v);
        INC(f->other2, v2);
    }
    pthread_mutex_unlock(&f->lock);
}

/* The slot of label (after the table's "other"), or NULL when not seen. */
static const label_slot_t *family_get(const label_family_t *f, const char *label) {
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(f->slots[i].name, label, CW_METRICS_LABEL_MAX - 1) == 0) {
            return &f->slots[i];
        }
    }
    return NULL;
}

void cw_metrics_dead_letter(cw_metrics_t *m, const char *reason) {
    if (m == NULL) {
        return;
    }
    family_add(&m->dlq, reason, 1, 0);
}

/* Seconds as nanoseconds, clamped to what a uint64_t holds (negative, NaN: 0). */
static uint64_t to_ns(double seconds) {
    double ns = seconds > 0 ? seconds * 1e9 : 0;
    return ns < 1.8e19 ? (uint64_t)ns : UINT64_C(18000000000000000000);
}

void cw_metrics_redis_stage(cw_metrics_t *m, const char *stage, double seconds) {
    char label[CW_METRICS_LABEL_MAX];
    if (m == NULL) {
        return;
    }
    cw_strlcpy(label, stage != NULL ? stage : "", sizeof(label));
    for (char *c = label; *c != '\0'; c++) {
        *c = *c == ' ' ? '_' : *c; /* "apply read" -> apply_read */
    }
    family_add(&m->stage, label, 1, to_ns(seconds));
}

void cw_metrics_alert(cw_metrics_t *m, cw_reason_t reason) {
    if (m == NULL || (int)reason < 0 || reason >= CW_REASON__COUNT) {
        return;
    }
    INC(m->alerts[reason], 1);
}

void cw_metrics_band_change(cw_metrics_t *m, int from, cw_band_t to) {
    if (m == NULL || from < -1 || from > 2 || (int)to < 0 || (int)to > 2 || from == (int)to) {
        return;
    }
    INC(m->band_changes[from + 1][to], 1);
}

void cw_metrics_add(cw_metrics_t *m, cw_metrics_ctr_t c, uint64_t n) {
    if (m == NULL || (int)c < 0 || c >= CW_CTR__COUNT) {
        return;
    }
    INC(m->counters[c], n);
}

void cw_metrics_observe(cw_metrics_t *m, cw_metrics_hist_t h, double seconds) {
    if (m == NULL || (int)h < 0 || h >= CW_HIST__COUNT) {
        return;
    }
    if (!(seconds > 0)) { /* negative or NaN */
        seconds = 0;
    }
    const hist_def_t *d = &hist_defs[h];
    int b = 0;
    while (b < d->n_bounds && seconds > d->bounds[b]) {
        b++;
    }
    INC(m->hists[h].buckets[b], 1);
    INC(m->hists[h].sum_ns, to_ns(seconds));
}

void cw_metrics_set_lag(cw_metrics_t *m, int partition, int64_t lag) {
    if (m == NULL || partition < 0 || partition >= CW_METRICS_MAX_PARTITIONS) {
        return;
    }
    SET(m->lag[partition], lag < 0 ? -1 : lag);
}

void cw_metrics_set_redis_reconnects(cw_metrics_t *m, uint64_t total) {
    if (m == NULL) {
        return;
    }
    SET(m->redis_reconnects, total);
}

void cw_metrics_set_producer(cw_metrics_t *m, cw_metrics_topic_t topic, uint64_t delivered,
                             uint64_t failed) {
    if (m == NULL || (int)topic < 0 || topic >= CW_METRICS_TOPIC__COUNT) {
        return;
    }
    SET(m->delivered[topic], delivered);
    SET(m->failed[topic], failed);
}

void cw_metrics_set_accounts(cw_metrics_t *m, const uint64_t counts[3], int known) {
    if (m == NULL) {
        return;
    }
    if (known && counts != NULL) {
        for (int b = 0; b < 3; b++) {
            SET(m->accounts[b], counts[b]);
        }
    }
    SET(m->accounts_known, known && counts != NULL);
}

void cw_metrics_set_redis_up(cw_metrics_t *m, int up) {
    if (m == NULL) {
        return;
    }
    SET(m->redis_up, up ? 1 : 0);
}

void cw_metrics_set_assigned(cw_metrics_t *m, int n_partitions) {
    if (m == NULL) {
        return;
    }
    SET(m->assigned, n_partitions < 0 ? 0 : n_partitions);
}

int cw_metrics_ready(const cw_metrics_t *m, int *redis_up, int *assigned) {
    int up = m != NULL ? GET(m->redis_up) : 0;
    int as = m != NULL ? GET(m->assigned) : 0;
    if (redis_up != NULL) {
        *redis_up = up;
    }
    if (assigned != NULL) {
        *assigned = as;
    }
    return up && as > 0;
}

/* ---- reads ---- */

uint64_t cw_metrics_get(const cw_metrics_t *m, cw_metrics_ctr_t c) {
    if (m == NULL || (int)c < 0 || c >= CW_CTR__COUNT) {
        return 0;
    }
    return GET(m->counters[c]);
}

uint64_t cw_metrics_get_events_in(const cw_metrics_t *m, cw_ev_type_t type) {
    if (m == NULL || (int)type < 0 || (int)type >= N_EV_TYPES) {
        return 0;
    }
    return GET(m->events_in[type]);
}

uint64_t cw_metrics_get_dead_letters(const cw_metrics_t *m, const char *reason) {
    if (m == NULL || reason == NULL) {
        return 0;
    }
    if (strcmp(reason, "other") == 0) {
        return GET(m->dlq.other);
    }
    const label_slot_t *sl = family_get(&m->dlq, reason);
    return sl != NULL ? GET(sl->value) : 0;
}

uint64_t cw_metrics_get_redis_stage(const cw_metrics_t *m, const char *stage, double *seconds) {
    const label_slot_t *sl = m != NULL && stage != NULL ? family_get(&m->stage, stage) : NULL;
    if (seconds != NULL) {
        *seconds = sl != NULL ? (double)GET(sl->value2) / 1e9 : 0;
    }
    return sl != NULL ? GET(sl->value) : 0;
}

/* ---- rendering ---- */

/* Append a label value escaped per the exposition format (\\, \", \n). */
static void put_label(cw_buf_t *out, const char *s) {
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\') {
            cw_buf_puts(out, "\\\\");
        } else if (*p == '"') {
            cw_buf_puts(out, "\\\"");
        } else if (*p == '\n') {
            cw_buf_puts(out, "\\n");
        } else {
            cw_buf_append(out, p, 1);
        }
    }
}

static void header(cw_buf_t *out, const char *name, const char *type, const char *help) {
    cw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{key="value"} v */
static void sample1(cw_buf_t *out, const char *name, const char *key, const char *value,
                    uint64_t v) {
    cw_buf_printf(out, "%s{%s=\"", name, key);
    put_label(out, value);
    cw_buf_printf(out, "\"} %llu\n", (unsigned long long)v);
}

/* One sample per published label of f, then "other" when labels overflowed
 * into it: the count (value), or with seconds the second counter (value2,
 * nanoseconds) as seconds. */
static void render_family(cw_buf_t *out, const char *name, const char *key, const label_family_t *f,
                          int seconds) {
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i <= n; i++) {
        uint64_t v = i < n ? GET(f->slots[i].value) : GET(f->other);
        if (i == n && v == 0) {
            break;
        }
        cw_buf_printf(out, "%s{%s=\"", name, key);
        put_label(out, i < n ? f->slots[i].name : "other");
        if (seconds) {
            uint64_t ns = i < n ? GET(f->slots[i].value2) : GET(f->other2);
            cw_buf_printf(out, "\"} %.6f\n", (double)ns / 1e9);
        } else {
            cw_buf_printf(out, "\"} %llu\n", (unsigned long long)v);
        }
    }
}

static void render_hist(const cw_metrics_t *m, cw_metrics_hist_t h, cw_buf_t *out) {
    const hist_def_t *d = &hist_defs[h];
    uint64_t cum = 0;
    header(out, d->name, "histogram", d->help);
    for (int b = 0; b <= d->n_bounds; b++) {
        cum += GET(m->hists[h].buckets[b]);
        if (b < d->n_bounds) {
            cw_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", d->name, d->bounds[b],
                          (unsigned long long)cum);
        } else {
            cw_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", d->name, (unsigned long long)cum);
        }
    }
    cw_buf_printf(out, "%s_sum %.9f\n%s_count %llu\n", d->name,
                  (double)GET(m->hists[h].sum_ns) / 1e9, d->name, (unsigned long long)cum);
}

void cw_metrics_render(const cw_metrics_t *m, cw_buf_t *out) {
    if (m == NULL) {
        return;
    }
    static const char *const band_from[4] = {"none", "healthy", "caution", "danger"};

    header(out, "churnwatch_events_in_total", "counter",
           "Valid input events consumed, by event type (unknown types are counted and skipped).");
    for (int t = 0; t < N_EV_TYPES; t++) {
        const char *name = cw_ev_type_name((cw_ev_type_t)t);
        if (name != NULL) {
            sample1(out, "churnwatch_events_in_total", "type", name, GET(m->events_in[t]));
        }
    }

    header(out, "churnwatch_dead_lettered_total", "counter",
           "Input messages sent to the dead-letter topic, by reason.");
    render_family(out, "churnwatch_dead_lettered_total", "reason", &m->dlq, 0);

    header(out, "churnwatch_alerts_total", "counter", "Churn-risk alerts decided, by reason.");
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        sample1(out, "churnwatch_alerts_total", "reason", cw_reason_name((cw_reason_t)r),
                GET(m->alerts[r]));
    }

    header(out, "churnwatch_band_changes_total", "counter",
           "Band transitions decided by this process (from=\"none\": first scoring).");
    for (int f = 0; f < 4; f++) {
        for (int t = 0; t < 3; t++) {
            if (f - 1 == t) {
                continue;
            }
            cw_buf_printf(out, "churnwatch_band_changes_total{from=\"%s\",to=\"%s\"} %llu\n",
                          band_from[f], cw_band_name((cw_band_t)t),
                          (unsigned long long)GET(m->band_changes[f][t]));
        }
    }

    if (GET(m->accounts_known)) {
        header(out, "churnwatch_accounts", "gauge",
               "Accounts per health band, as stored in Redis (shared by all replicas).");
        for (int b = 0; b < 3; b++) {
            sample1(out, "churnwatch_accounts", "band", cw_band_name((cw_band_t)b),
                    GET(m->accounts[b]));
        }
    }

    header(out, "churnwatch_consumer_lag", "gauge",
           "Messages behind the high watermark, per assigned input partition.");
    for (int p = 0; p < CW_METRICS_MAX_PARTITIONS; p++) {
        int64_t lag = GET(m->lag[p]);
        if (lag >= 0) {
            cw_buf_puts(out, "churnwatch_consumer_lag{topic=\"");
            put_label(out, m->input_topic);
            cw_buf_printf(out, "\",partition=\"%d\"} %lld\n", p, (long long)lag);
        }
    }

    for (int h = 0; h < CW_HIST__COUNT; h++) {
        render_hist(m, (cw_metrics_hist_t)h, out);
    }

    /* Redis round trips by what they were for: where the lanes wait */
    header(out, "churnwatch_redis_stage_roundtrips_total", "counter",
           "Pipelined Redis round trips, by stage (apply_read, apply_write, due_read, commit, "
           "...).");
    render_family(out, "churnwatch_redis_stage_roundtrips_total", "stage", &m->stage, 0);
    header(out, "churnwatch_redis_stage_seconds_total", "counter",
           "Time in pipelined Redis round trips, by stage (summed over the Redis connections).");
    render_family(out, "churnwatch_redis_stage_seconds_total", "stage", &m->stage, 1);

    for (int c = 0; c < CW_CTR__COUNT; c++) {
        header(out, ctr_defs[c].name, "counter", ctr_defs[c].help);
        cw_buf_printf(out, "%s %llu\n", ctr_defs[c].name, (unsigned long long)GET(m->counters[c]));
    }

    header(out, "churnwatch_redis_reconnects_total", "counter",
           "Connections (re)established to Redis by the processor.");
    cw_buf_printf(out, "churnwatch_redis_reconnects_total %llu\n",
                  (unsigned long long)GET(m->redis_reconnects));

    header(out, "churnwatch_producer_delivered_total", "counter",
           "Messages acknowledged by Kafka, per output topic.");
    for (int t = 0; t < CW_METRICS_TOPIC__COUNT; t++) {
        sample1(out, "churnwatch_producer_delivered_total", "topic", m->topics[t],
                GET(m->delivered[t]));
    }
    header(out, "churnwatch_producer_failed_total", "counter",
           "Messages whose delivery failed for good, per output topic.");
    for (int t = 0; t < CW_METRICS_TOPIC__COUNT; t++) {
        sample1(out, "churnwatch_producer_failed_total", "topic", m->topics[t], GET(m->failed[t]));
    }

    int up = 0, assigned = 0;
    int ready = cw_metrics_ready(m, &up, &assigned);
    header(out, "churnwatch_redis_up", "gauge", "1 when the processor's Redis connection is up.");
    cw_buf_printf(out, "churnwatch_redis_up %d\n", up);
    header(out, "churnwatch_assigned_partitions", "gauge",
           "Input partitions assigned to this consumer.");
    cw_buf_printf(out, "churnwatch_assigned_partitions %d\n", assigned);
    header(out, "churnwatch_ready", "gauge",
           "1 when ready: Redis connected and at least one partition assigned.");
    cw_buf_printf(out, "churnwatch_ready %d\n", ready);
    header(out, "churnwatch_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch, seconds.");
    cw_buf_printf(out, "churnwatch_start_time_seconds %.3f\n", (double)m->start_ms / 1000.0);
}
