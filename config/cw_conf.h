/*
 * cw_conf.h — churnwatch configuration: the values every module reads, and
 * the loader that fills them from a JSON file (comments allowed).
 *
 * Every scalar key is one row of a table in cw_conf.c (type, name, default,
 * field offset, range, description — fluent-bit flb_config_map style). The
 * table validates the file, rejects unknown keys by name, applies
 * environment overrides (CW_KAFKA_BROKERS for kafka.brokers, ...), feeds
 * `--help` and generates docs/configuration.md. The scoring model (signals,
 * bands, tiers, phases, alert rules) lives under "model" and is validated by
 * the same loader; a file without "model" runs the shipped default model
 * (config/default-model.json, compiled in).
 *
 * Ownership: cw_conf_load returns a heap cw_conf_t owned by the caller and
 * released with cw_conf_destroy. Modules keep a const pointer and never
 * free or modify it. All strings are fixed-size arrays inside the struct.
 */
#ifndef CW_CONF_H
#define CW_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CW_NAME_MAX 64    /* signal / topic-ish short names */
#define CW_STR_MAX 256    /* hosts, urls, topics, paths */
#define CW_FIELD_MAX 129  /* event string fields: <= 128 bytes + NUL */
#define CW_MAX_SIGNALS 16 /* signals in one model */
#define CW_MAX_KEY_FEATURES 8
#define CW_MAX_KPROPS 32      /* kafka.properties pass-through entries */
#define CW_MAX_WINDOW_DAYS 52 /* distinct-set day masks are 52 bits wide */
#define CW_MAX_RETENTION_DAYS 400

/* Event types, usable as bits in a type mask. */
typedef enum {
    CW_EV_LOGIN = 0,
    CW_EV_USAGE = 1,
    CW_EV_ACCOUNT = 2,
    CW_EV_SUPPORT_TICKET = 3,
    CW_EV_NPS = 4,
    CW_EV_CANCELLATION = 5,
    CW_EV__COUNT = 6,
    CW_EV_UNKNOWN = 7, /* well-formed event of a type we do not know: counted, skipped */
} cw_ev_type_t;
#define CW_EV_BIT(t) (1u << (t))

/** @brief "login", "usage", ... ; NULL for out-of-range. */
const char *cw_ev_type_name(cw_ev_type_t t);
/** @brief Parse a type name of len bytes; CW_EV_UNKNOWN when not known. */
cw_ev_type_t cw_ev_type_parse(const char *s, size_t len);

/* How a signal aggregates the events it reads over its window. */
typedef enum {
    CW_AGG_COUNT = 0,         /* number of events */
    CW_AGG_SUM,               /* sum of the event value (usage: count; nps: score) */
    CW_AGG_MEAN,              /* sum / count over the window (missing when count = 0) */
    CW_AGG_DISTINCT_USERS,    /* distinct user_id */
    CW_AGG_DISTINCT_FEATURES, /* distinct feature */
} cw_agg_t;

/* How a raw value becomes a normalised score in [0,1]. */
typedef enum {
    CW_NORM_TARGET = 0, /* min(1, raw / target) */
    CW_NORM_SEATS,      /* rate = raw / seats; min(1, rate / target) (target e.g. 0.7) */
    CW_NORM_TREND,      /* ratio = raw / (baseline_raw * window/baseline); min(1, ratio / target) */
    CW_NORM_RANGE,      /* (raw - min) / (max - min), clamped */
} cw_norm_t;

typedef struct cw_signal_def {
    char name[CW_NAME_MAX];       /* unique, [a-z0-9_]+ */
    unsigned types;               /* CW_EV_BIT mask of the event types read */
    char feature[CW_FIELD_MAX];   /* only events with this feature; "" = any */
    cw_agg_t agg;                 /* aggregation */
    int window_days;              /* window length, days (1..CW_MAX_WINDOW_DAYS for distinct) */
    int baseline_days;            /* trend only: trailing baseline length right before the window */
    cw_norm_t norm;               /* normalisation */
    double target;                /* TARGET/SEATS/TREND: the value that scores 1.0 */
    double range_min, range_max;  /* RANGE bounds */
    double weight;                /* >= 0; contribution = weight * normalised */
    int direction;                /* +1: more is healthier; -1: more is worse (score = 1 - n) */
    double min_baseline;          /* trend: below this baseline (per window) the trend is missing */
    double drop_share;            /* usage_drop when trend ratio <= 1 - drop_share (0 = off) */
    char description[CW_STR_MAX]; /* why this signal, for explain/docs */
} cw_signal_def_t;

typedef enum { CW_BAND_HEALTHY = 0, CW_BAND_CAUTION = 1, CW_BAND_DANGER = 2 } cw_band_t;
typedef enum { CW_TIER_HIGH = 0, CW_TIER_LOW = 1, CW_TIER_TECH = 2 } cw_tier_t;
typedef enum { CW_PHASE_ONBOARDING = 0, CW_PHASE_ADOPTION = 1, CW_PHASE_RENEWAL = 2 } cw_phase_t;

const char *cw_band_name(cw_band_t b);
const char *cw_tier_name(cw_tier_t t);
const char *cw_phase_name(cw_phase_t p);

/* Band lines for one tier. Hysteresis: an account enters danger below
 * danger_enter and leaves it only at or above danger_exit (> danger_enter);
 * likewise caution. */
typedef struct cw_bands {
    double danger_enter;  /* score < this: danger (default 40) */
    double danger_exit;   /* a danger account leaves danger only at score >= this (45) */
    double caution_enter; /* score < this: caution (default 70) */
    double caution_exit;  /* a caution account becomes healthy only at >= this (75) */
} cw_bands_t;

typedef struct cw_model {
    cw_signal_def_t signals[CW_MAX_SIGNALS];
    int n_signals;
    cw_bands_t bands[3];  /* per tier (index cw_tier_t) */
    double tier_high_arr; /* ARR >= this: high touch (5,000,000) */
    double tier_low_arr;  /* ARR >= this: low touch (500,000); else tech */
    int onboarding_days;  /* onboarding phase length after first activity (30) */
    int renewal_days;     /* renewal phase: within N days before renewal_date (90) */
    char key_features[CW_MAX_KEY_FEATURES][CW_FIELD_MAX]; /* onboarding_stalled checks these */
    int n_key_features;
    int inactive_days; /* inactive alert after N days without login (14) */
    int cooldown_days; /* same account+reason not re-alerted within N days (7) */
    int warmup_days;   /* no entered_danger/usage_drop/recovered alerts in the first N days after
                          first activity (30) */
    double score_drop_share; /* usage_drop when score falls this share vs 7 days ago (0=off) */
    int cancellation_forces_danger; /* 1: a cancellation notice puts the account in danger */
} cw_model_t;

typedef struct cw_kprop {
    char name[CW_NAME_MAX];
    char value[CW_STR_MAX];
} cw_kprop_t;

typedef enum { CW_TIME_EVENT = 0, CW_TIME_WALL = 1 } cw_time_mode_t;

typedef struct cw_conf {
    /* kafka */
    char kafka_brokers[CW_STR_MAX];
    char kafka_group_id[CW_STR_MAX];
    char kafka_input_topic[CW_STR_MAX];
    char kafka_alert_topic[CW_STR_MAX];
    char kafka_score_topic[CW_STR_MAX];
    char kafka_dlq_topic[CW_STR_MAX];
    cw_kprop_t kafka_props[CW_MAX_KPROPS]; /* kafka.properties, passed verbatim */
    int n_kafka_props;
    int kafka_batch_size;       /* max messages per consume batch (default 4096) */
    int kafka_batch_timeout_ms; /* max wait for a batch (default 100) */
    int kafka_fetch_wake_ms;    /* fetcher wake-up period while consuming, 0 off (default 100) */
    /* redis */
    char redis_url[CW_STR_MAX]; /* tcp://host:port or unix:///path */
    char redis_key_prefix[CW_NAME_MAX];
    char redis_password[CW_STR_MAX]; /* never logged */
    int redis_db;
    int redis_timeout_ms;     /* per-command timeout (default 5000) */
    int redis_backoff_max_ms; /* reconnect backoff cap (default 5000) */
    int redis_connections;    /* lanes: worker threads, one connection each (default 2) */
    /* http */
    char http_listen[CW_STR_MAX]; /* "" = no listener */
    /* time & validation */
    cw_time_mode_t time_mode; /* event (watermark) or wall clock */
    int64_t max_future_ms;    /* events later than wall clock + this are absurd (1 day) */
    int64_t min_ts_ms;        /* events before this are absurd (2000-01-01) */
    int max_event_bytes;      /* larger messages are dead-lettered (65536) */
    int retention_days;       /* derived: longest window + baseline; state kept this long */
    int history_len;          /* score history points kept per account (30) */
    int cache_accounts;       /* apply cache size, accounts per process (32768; 0 off) */
    char log_level[16];
    /* model */
    cw_model_t model;
} cw_conf_t;

/**
 * @brief Load and validate a config file; apply environment overrides.
 * @param path file path; NULL = defaults only (still needs required keys from env)
 * @returns a heap config (caller frees with cw_conf_destroy), or NULL with a
 * message naming the bad key in errstr.
 */
cw_conf_t *cw_conf_load(const char *path, char *errstr, size_t errstr_size);

/** @brief Same as cw_conf_load but from a NUL-terminated JSON text. */
cw_conf_t *cw_conf_parse(const char *json, char *errstr, size_t errstr_size);

/** @brief Free a config; accepts NULL. */
void cw_conf_destroy(cw_conf_t *conf);

/** @brief Write docs/configuration.md (Markdown) describing every key. */
void cw_conf_write_docs(FILE *out);

/** @brief Write a short key/default/description listing (for --help). */
void cw_conf_write_help(FILE *out);

/** @brief The shipped default model JSON text (config/default-model.json). */
extern const char cw_conf_default_model_json[];

#endif
