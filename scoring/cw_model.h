/*
 * cw_model.h — the health-score model, pure: numbers in, numbers out, no I/O.
 *
 * Two halves:
 *  1. The layout, compiled once from the configured signals: which per-day
 *     counters and distinct sets the Redis state must keep (so adding a
 *     signal is a config change), which window queries the state must
 *     answer, and which counter/set updates one event causes.
 *  2. Scoring: given an account's query results and attributes, each
 *     signal's raw value, normalised score in [0,1], weight and
 *     contribution; the 0–100 health score (weighted mean over signals that
 *     are not missing); the touch tier from ARR and the lifecycle phase.
 *
 * Redis names (stable across config changes, so state survives reordering):
 *   counter "<agg><typechar>[:<feature>]"  e.g. "cl" logins, "su" usage sum,
 *           "cu:export"; agg c = count, s = sum; type chars l u a t n x.
 *   set     "<U|F>:<typechars>[:<feature>]" e.g. "U:lu" users over login+usage,
 *           "F:u" features over usage.
 * Ownership: cw_layout_t is a plain struct filled by cw_layout_build; no heap.
 */
#ifndef CW_MODEL_H
#define CW_MODEL_H

#include "cw_account.h"
#include "cw_conf.h"
#include "cw_event.h"

#define CW_MAX_COUNTERS 32
#define CW_MAX_SETS 8
#define CW_KEYNAME_MAX (CW_FIELD_MAX + 16)

typedef struct cw_counter_def {
    char name[CW_KEYNAME_MAX];  /* Redis field suffix, see above */
    cw_ev_type_t type;          /* events of this type */
    char feature[CW_FIELD_MAX]; /* and this feature ("" any) */
    int sum;                    /* 0: +1 per event, 1: + cw_event_value() */
    int retention_days; /* longest window+offset any query needs; older day fields are pruned */
} cw_counter_def_t;

typedef struct cw_set_def {
    char name[CW_KEYNAME_MAX];  /* Redis key suffix, see above */
    unsigned types;             /* events of these types */
    char feature[CW_FIELD_MAX]; /* and this feature ("" any) */
    int of_users;               /* 1: member = user_id, 0: member = feature */
} cw_set_def_t;

/* One window query: counter sum, or distinct count of a set, over the
 * days [asof_day - offset_days - len_days + 1, asof_day - offset_days]. */
typedef struct cw_query_def {
    int is_set; /* 0: counters[index], 1: sets[index] */
    int index;
    int offset_days;
    int len_days;
} cw_query_def_t;

#define CW_MAX_TERMS 6 /* counters summed per signal term (one per event type) */
typedef struct cw_signal_plan {
    int win_q[CW_MAX_TERMS]; /* queries summed for the window value */
    int n_win_q;
    int base_q[CW_MAX_TERMS]; /* TREND: queries summed for the baseline */
    int n_base_q;
    int cnt_q[CW_MAX_TERMS]; /* MEAN: queries summed for the event count */
    int n_cnt_q;
} cw_signal_plan_t;

/* The fixed windows `explain` reports (SPEC §4). */
typedef enum {
    CW_WIN_LOGINS_7D = 0,
    CW_WIN_LOGINS_30D,
    CW_WIN_ACTIVE_USERS_7D,
    CW_WIN_ACTIVE_USERS_30D,
    CW_WIN_USAGE_7D,
    CW_WIN_USAGE_30D,
    CW_WIN_FEATURES_30D,
    CW_WIN__COUNT
} cw_win_t;
const char *cw_win_name(cw_win_t w); /* "logins_7d", ... */

typedef struct cw_layout {
    cw_counter_def_t counters[CW_MAX_COUNTERS];
    int n_counters;
    cw_set_def_t sets[CW_MAX_SETS];
    int n_sets;
    cw_query_def_t queries[CW_MAX_QUERIES];
    int n_queries;
    cw_signal_plan_t plans[CW_MAX_SIGNALS]; /* parallel to model->signals */
    int win_q[CW_WIN__COUNT];               /* query index of each explain window */
    int retention_days;                     /* days of buckets the state must keep */
    int key_feature_of_usage;               /* 1 when model has key features */
} cw_layout_t;

/**
 * @brief Compile the model's signals into a layout.
 * @returns 0, or -1 with errstr naming the signal that does not fit
 * (too many counters/queries, distinct window over CW_MAX_WINDOW_DAYS).
 */
int cw_layout_build(const cw_model_t *model, cw_layout_t *layout, char *errstr, size_t errstr_size);

/* What one event changes: indices into layout counters/sets. */
typedef struct cw_event_ops {
    int counter[CW_MAX_COUNTERS];    /* counters to add to */
    int64_t amount[CW_MAX_COUNTERS]; /* amount for each */
    int n_counters;
    int set[CW_MAX_SETS]; /* sets to mark the member in */
    int n_sets;
    int key_feature; /* index into model key_features, -1 none */
} cw_event_ops_t;

/** @brief The counter/set updates an event causes under this layout. */
void cw_layout_event_ops(const cw_layout_t *layout, const cw_model_t *model, const cw_event_t *ev,
                         cw_event_ops_t *ops);

/* ---- scoring ---- */
typedef struct cw_signal_value {
    double raw;        /* window value (rate/ratio inputs before normalisation) */
    double baseline;   /* TREND: baseline scaled to the window length; else 0 */
    double ratio;      /* TREND: raw / baseline; SEATS: raw / seats; else raw */
    int missing;       /* 1: no data to judge (excluded from the weighted mean) */
    double normalised; /* [0,1] after direction */
    double weight;
    double contribution; /* points of the 0–100 score this signal contributes */
} cw_signal_value_t;

typedef struct cw_score {
    double score; /* 0..100, rounded to 0.1 */
    cw_tier_t tier;
    cw_phase_t phase;
    cw_signal_value_t signals[CW_MAX_SIGNALS]; /* parallel to model->signals */
    int n_signals;
    int forced_danger; /* cancellation notice forced the account into danger */
} cw_score_t;

/** @brief Normalise one raw value under a signal definition (exposed for tests). */
double cw_model_normalise(const cw_signal_def_t *sig, double ratio);

/** @brief Touch tier from ARR (< 0 unknown: tech). */
cw_tier_t cw_model_tier(const cw_model_t *model, double arr);

/** @brief Lifecycle phase of an account at its as-of time. */
cw_phase_t cw_model_phase(const cw_model_t *model, const cw_account_state_t *acct);

/** @brief Score an account: fills out from acct->q and attributes. */
void cw_model_score(const cw_model_t *model, const cw_layout_t *layout,
                    const cw_account_state_t *acct, cw_score_t *out);

#endif
