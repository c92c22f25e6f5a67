/*
 * cw_metrics.h — the process's operational metrics, written by the
 * processor thread and read by the HTTP thread, rendered in the Prometheus
 * text exposition format (version 0.0.4) for `/metrics`.
 *
 * Every value is a C11 atomic, so the pipeline updates it with one relaxed
 * fetch-add (no lock, no allocation: the hot path stays allocation-free)
 * and a scrape reads a consistent-enough snapshot without stopping the
 * pipeline. The one exception is the first sighting of a new label value
 * of a free-form label (dead-letter reasons, Redis stages): it takes a mutex to claim a
 * slot in a bounded table (CW_METRICS_MAX_LABELS distinct values, then
 * "other"), so a flood of distinct malformed inputs cannot grow memory or
 * the number of series without bound.
 *
 * What is measured (all names prefixed churnwatch_):
 *   events_in_total{type}            valid events consumed, by event type
 *   dead_lettered_total{reason}      rejected input, by dead-letter reason
 *   alerts_total{reason}             churn alerts decided, by alert reason
 *   band_changes_total{from,to}      band transitions decided by this process
 *   accounts{band}                   accounts per band in Redis (gauge; set
 *                                    at scrape from the state, absent when
 *                                    the state cannot say)
 *   consumer_lag{topic,partition}    high watermark - position (gauge)
 *   batch_duration_seconds           histogram, one consumed batch end to end
 *   redis_roundtrip_seconds          histogram, one pipelined Redis round trip
 *   redis_stage_roundtrips_total{stage}, redis_stage_seconds_total{stage}
 *                                    the same round trips by what they were for
 *                                    (apply_read, apply_write, due_read, commit,
 *                                    ...): where the Redis connections wait
 *   redis_reconnects_total, redis_retries_total, redis_up
 *   producer_delivered_total{topic}, producer_failed_total{topic}
 *   batches_total, duplicates_total, snapshots_total, timer_rescored_total
 *   apply_cache_hits_total, apply_cache_misses_total (state.cache_accounts)
 *   input_skipped_total              input offsets never consumed: deleted by
 *                                    retention before they were read
 *   assigned_partitions, ready, start_time_seconds
 *
 * Ownership: cw_metrics_t is created by main, borrowed by the pipeline and
 * the HTTP listener (both must be destroyed first). Every update function
 * accepts m == NULL and does nothing, so the pipeline runs unchanged
 * without a listener.
 */
#ifndef CW_METRICS_H
#define CW_METRICS_H

#include <stdint.h>

#include "cw_account.h"
#include "cw_buf.h"
#include "cw_conf.h"

#define CW_METRICS_MAX_LABELS 64      /* distinct dead-letter reasons kept, then "other" */
#define CW_METRICS_LABEL_MAX 64       /* bytes of one label value (longer ones are cut) */
#define CW_METRICS_MAX_PARTITIONS 256 /* lag gauges (matches CW_MAX_PARTITIONS) */

typedef struct cw_metrics cw_metrics_t;

/* Plain monotonic counters without labels. */
typedef enum {
    CW_CTR_BATCHES = 0,    /* consumed batches processed */
    CW_CTR_DUPLICATES,     /* redelivered events skipped by offset */
    CW_CTR_SNAPSHOTS,      /* score snapshots produced */
    CW_CTR_TIMER_RESCORED, /* accounts rescored by timers */
    CW_CTR_REDIS_RETRIES,  /* Redis operations retried after a failure */
    CW_CTR_CACHE_HITS,     /* applies of an account found in the apply cache */
    CW_CTR_CACHE_MISSES,   /* applies that read its fixed fields from Redis */
    CW_CTR_INPUT_SKIPPED,  /* input offsets never consumed (deleted unread) */
    CW_CTR__COUNT
} cw_metrics_ctr_t;

/* Histograms (fixed buckets, seconds). */
typedef enum {
    CW_HIST_BATCH = 0, /* one batch: decode, apply, score, commit, produce */
    CW_HIST_REDIS = 1, /* one pipelined Redis round trip */
    CW_HIST__COUNT
} cw_metrics_hist_t;

/* Producer streams (same order as cw_sink_topic_t). */
typedef enum {
    CW_METRICS_TOPIC_ALERT = 0,
    CW_METRICS_TOPIC_SCORE = 1,
    CW_METRICS_TOPIC_DLQ = 2,
    CW_METRICS_TOPIC__COUNT
} cw_metrics_topic_t;

/**
 * @brief Create an empty registry.
 * @param conf optional (may be NULL): topic names used as labels; not kept.
 * @returns the registry, or NULL with a message in errstr.
 */
cw_metrics_t *cw_metrics_new(const cw_conf_t *conf, char *errstr, size_t errstr_size);

/** @brief Free; NULL ok. No other thread may use m any more. */
void cw_metrics_destroy(cw_metrics_t *m);

/* ---- updates (any thread; m may be NULL) ---- */

/** @brief One valid event of this type consumed (CW_EV_UNKNOWN included). */
void cw_metrics_event_in(cw_metrics_t *m, cw_ev_type_t type);

/** @brief One message dead-lettered with this reason ("missing_field:ts", ...). */
void cw_metrics_dead_letter(cw_metrics_t *m, const char *reason);

/** @brief One alert decided with this reason. */
void cw_metrics_alert(cw_metrics_t *m, cw_reason_t reason);

/**
 * @brief An account's band was decided: from = its previous band, or -1 for
 * a first scoring. Nothing is counted when from == to.
 */
void cw_metrics_band_change(cw_metrics_t *m, int from, cw_band_t to);

/** @brief Add n to a plain counter. */
void cw_metrics_add(cw_metrics_t *m, cw_metrics_ctr_t c, uint64_t n);

/**
 * @brief One pipelined Redis round trip of this stage took seconds: counted
 * in churnwatch_redis_stage_{roundtrips,seconds}_total{stage}. stage is
 * cw_state's name of it ("apply read"; spaces become '_' in the label);
 * free-form but bounded like dead-letter reasons.
 */
void cw_metrics_redis_stage(cw_metrics_t *m, const char *stage, double seconds);

/** @brief Record one observation of seconds in a histogram (negative = 0). */
void cw_metrics_observe(cw_metrics_t *m, cw_metrics_hist_t h, double seconds);

/** @brief Consumer lag of a partition; lag < 0 removes the series (revoked/unknown). */
void cw_metrics_set_lag(cw_metrics_t *m, int partition, int64_t lag);

/** @brief Total Redis reconnects so far (from cw_state_reconnects; monotonic). */
void cw_metrics_set_redis_reconnects(cw_metrics_t *m, uint64_t total);

/** @brief Producer delivery outcomes so far for one topic (from cw_sink_counts). */
void cw_metrics_set_producer(cw_metrics_t *m, cw_metrics_topic_t topic, uint64_t delivered,
                             uint64_t failed);

/** @brief Accounts per band (index cw_band_t) as stored in Redis; known = 0 hides the gauge. */
void cw_metrics_set_accounts(cw_metrics_t *m, const uint64_t counts[3], int known);

/* ---- readiness (set by the pipeline, read by /readyz) ---- */

/** @brief The pipeline's Redis connection is up (1) or down (0). */
void cw_metrics_set_redis_up(cw_metrics_t *m, int up);

/** @brief Number of input partitions currently assigned to this consumer. */
void cw_metrics_set_assigned(cw_metrics_t *m, int n_partitions);

/**
 * @brief Ready = Redis connected and at least one partition assigned.
 * @param redis_up,assigned optional out-params (may be NULL).
 * @returns 1 when ready, 0 otherwise (and 0 for m == NULL).
 */
int cw_metrics_ready(const cw_metrics_t *m, int *redis_up, int *assigned);

/* ---- reads ---- */

/** @brief Current value of a plain counter (tests, summaries). */
uint64_t cw_metrics_get(const cw_metrics_t *m, cw_metrics_ctr_t c);

/** @brief Events in of one type so far. */
uint64_t cw_metrics_get_events_in(const cw_metrics_t *m, cw_ev_type_t type);

/** @brief Dead letters so far with this reason ("other" = the overflow bucket). */
uint64_t cw_metrics_get_dead_letters(const cw_metrics_t *m, const char *reason);
/** @brief Round trips of a stage (its label: "apply_read"), and their seconds into *seconds. */
uint64_t cw_metrics_get_redis_stage(const cw_metrics_t *m, const char *stage, double *seconds);

/**
 * @brief Append every metric in the Prometheus text format (0.0.4) to out.
 * Content type: "text/plain; version=0.0.4; charset=utf-8".
 */
void cw_metrics_render(const cw_metrics_t *m, cw_buf_t *out);

/** @brief The Content-Type of cw_metrics_render's output. */
#define CW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
