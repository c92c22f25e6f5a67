/*
 * cw_pipeline.h — `churnwatch run`: the processor loop.
 *
 * consume a batch → decode (bad input → dead-letter topic with its reason)
 * → apply every account's events to Redis in one pipelined round trip
 * (idempotent by Kafka offset) → score each touched account and decide
 * alerts → persist decisions + alert outbox atomically → produce alerts
 * and score snapshots → store the batch's offsets (committed by the
 * consumer) → fire due rescoring timers of the owned partitions → ack
 * delivered alerts out of the outbox.
 *
 * The Redis work of a batch (apply, decisions, timers) runs on
 * redis.connections worker threads ("lanes"), partition p on lane p mod N,
 * each with its own Redis connection; the calling thread consumes,
 * decodes, dead-letters, stores offsets and serves delivery reports. It
 * decodes the next batch while the lanes apply the current one; a lane
 * that finished its share starts the next batch without waiting for the
 * others (an account seen on two partitions makes the later batch wait
 * for all). A batch's offsets are stored once every lane applied it, in
 * order; a rebalance waits for every lane.
 *
 * Failure handling: Redis down → pause fetching, reconnect with
 * exponential backoff, re-execute the same batch (idempotent), resume.
 * Producer queue full → poll and retry. A dead-letter message that cannot
 * be delivered stops the processor before its offset is stored (exit 1),
 * so nothing is lost. SIGTERM/SIGINT → finish the batch, flush, commit,
 * return 0.
 *
 * Metrics: with opts.metrics set, every event, dead letter, alert, band
 * change, batch and Redis round trip is counted there, and once a second
 * the gauges (consumer lag, assigned partitions, Redis up, reconnects,
 * producer outcomes) are refreshed for /metrics and /readyz.
 *
 * Ownership: cw_pipeline_t owns its consumer, sink and lanes (threads and
 * their states); it borrows conf and opts.metrics (both must outlive it).
 */
#ifndef CW_PIPELINE_H
#define CW_PIPELINE_H

#include <stdint.h>

#include "cw_conf.h"
#include "cw_metrics.h"

typedef struct cw_pipeline cw_pipeline_t;

typedef struct cw_pipeline_opts {
    int exit_on_idle_ms;   /* > 0: return once every partition is at EOF for this long */
    cw_metrics_t *metrics; /* borrowed, may be NULL: updated as the pipeline works; must
                              outlive the pipeline */
} cw_pipeline_opts_t;

/* Counters, read by metrics and the final summary. */
typedef struct cw_pipeline_stats {
    uint64_t events_in[CW_EV_UNKNOWN + 1]; /* valid events by type (incl. unknown) */
    uint64_t dead_lettered;                /* total malformed */
    uint64_t duplicates;                   /* redeliveries skipped by offset */
    uint64_t alerts[8];                    /* by cw_reason_t */
    uint64_t snapshots;                    /* score snapshots produced */
    uint64_t batches;
    uint64_t rescored_timer; /* accounts rescored by timers */
    uint64_t redis_retries;  /* batches retried after a Redis failure */
    uint64_t input_skipped;  /* input offsets never consumed (see take_offset) */
} cw_pipeline_stats_t;

cw_pipeline_t *cw_pipeline_new(const cw_conf_t *conf, const cw_pipeline_opts_t *opts, char *errstr,
                               size_t errstr_size);
/** @brief Run until stopped or idle; 0 on a clean drain, 1 on a fatal error. */
int cw_pipeline_run(cw_pipeline_t *pl);
/** @brief Ask the loop to drain and return (async-signal-safe). */
void cw_pipeline_stop(cw_pipeline_t *pl);
/** @brief Snapshot of the counters. */
void cw_pipeline_get_stats(const cw_pipeline_t *pl, cw_pipeline_stats_t *out);
/** @brief Free; NULL ok. */
void cw_pipeline_destroy(cw_pipeline_t *pl);

#endif
