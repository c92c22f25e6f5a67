/*
 * cw_account.h — the data that flows between the Redis state (cw_state),
 * the pure score model (cw_model) and the pure alert decision (cw_alert):
 * one account's state as read from Redis at an "as-of" time, and what the
 * decision writes back. Plain structs, no behaviour; owned by whoever
 * declares them (fixed arrays, no pointers to free).
 */
#ifndef CW_ACCOUNT_H
#define CW_ACCOUNT_H

#include <stdint.h>

#include "cw_conf.h"

#define CW_MAX_QUERIES 48 /* window queries per model (layout) */

typedef enum {
    CW_REASON_ENTERED_DANGER = 0,
    CW_REASON_USAGE_DROP,
    CW_REASON_INACTIVE,
    CW_REASON_ONBOARDING_STALLED,
    CW_REASON_CANCELLATION_NOTICE,
    CW_REASON_RECOVERED,
    CW_REASON__COUNT
} cw_reason_t;

/** @brief "entered_danger", "usage_drop", ... (the alert `reason` strings). */
const char *cw_reason_name(cw_reason_t r);

/* One account as read from Redis, as of asof_ms. */
typedef struct cw_account_state {
    char account_id[CW_FIELD_MAX];
    int partition;            /* Kafka partition the account's events come from; -1 unknown */
    int home_partition;       /* partition whose apply wrote the account last (its hash's
                                 "p"); differs from partition for an account whose events
                                 arrive on two partitions; -1 unknown */
    int64_t asof_ms;          /* the time windows are evaluated at */
    int64_t due_ms;           /* the due-timer score this read was triggered by; -1 none */
    unsigned suppress_mask;   /* reasons this evaluation must not decide (bit per cw_reason_t):
                                 their previous active bits are carried over unchanged. The
                                 pipeline sets 0 (event-time mode decides at day ends only and
                                 wall mode decides at once); kept for callers that evaluate
                                 without deciding. */
    double q[CW_MAX_QUERIES]; /* window query results, indexed like cw_layout_t.queries */
    /* attributes (from account events); < 0 = unknown */
    double arr;
    int64_t seats;
    int64_t renewal_ms;
    char plan[CW_FIELD_MAX];
    /* activity facts */
    int64_t first_ms;                                  /* first activity (any event) */
    int64_t first_login_ms;                            /* first login; -1 none */
    int64_t last_login_ms;                             /* latest login; -1 none */
    int64_t last_event_ms;                             /* latest event time */
    int64_t cancel_ms;                                 /* latest cancellation notice; -1 none */
    int64_t key_feature_first_ms[CW_MAX_KEY_FEATURES]; /* first use of each key feature; -1 never */
    /* previous decision state; has_score = 0 for a never-scored account */
    int has_score;
    double score;
    int band;             /* cw_band_t */
    int tier, phase;      /* of the last decision (cw_tier_t, cw_phase_t); -1 unknown */
    unsigned active_mask; /* bit r: condition of reason r held at the last scoring */
    int64_t last_alert_ms[CW_REASON__COUNT]; /* as-of time of the last alert per reason; -1 never */
    char last_alert_id[40];                  /* the most recent alert id ("" none) */
    int has_score_7d; /* 1 when a score from >= 7 days before asof is in history */
    double score_7d;  /* that score */
    /* First as-of day after this one at which the inputs read here (window
     * values, first/last login, the 7-day-old score) can differ without new
     * events: a bucket or day-mask bit entering or leaving a window, a
     * history entry turning 7 days old. INT64_MAX: never; 0: not known (a
     * decision then does not look ahead). Set by cw_view_eval. */
    int64_t inputs_change_day;
    uint64_t read_tag; /* cw_state bookkeeping: which watched read filled this (0 none) */
} cw_account_state_t;

#endif
