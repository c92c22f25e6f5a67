/*
 * cw_conf.c — the churnwatch configuration loader, validator and
 * documentation generator.
 *
 * Every key is one row of a table (cw_key_t below: type, dotted name,
 * default as text, field offset, range, validator, description), in the
 * manner of fluent-bit's flb_config_map and Redis' createIntConfig. Four
 * tables cover the whole file: conf_keys (the top level: kafka, redis, http,
 * time, validation, state, log, plus the "kafka.properties" and "model"
 * objects), model_keys (model.*), signal_keys (model.signals[].*) and
 * band_keys (model.bands.<tier>.*). One generic walker applies a table to a
 * parsed JSON object: it matches keys to rows, descends into sections
 * ("kafka" is a section because rows start with "kafka."), rejects
 * duplicates and unknown keys by their full dotted path (with a "did you
 * mean" hint), and stores each value through the row after checking its
 * type and range. The same rows, read as text, apply the defaults and the
 * CW_<KEY> environment overrides (env wins over the file), and they produce
 * `--help` (cw_conf_write_help) and docs/configuration.md
 * (cw_conf_write_docs), so the documentation cannot drift from the code.
 *
 * Loading order: defaults, then the file, then the environment, then the
 * required-key check, the default model when the file has no "model", and
 * the cross-key checks. The first problem stops the load (fail fast); the
 * message always names the key. The value of redis.password, of any
 * kafka.properties entry and of any value containing '@' (credentials) is
 * never echoed; JSON syntax errors are reported as line and column only,
 * never with the surrounding text (which may hold a password).
 *
 * yajl: yajl_tree_parse enables comments itself in yajl 2.1 (it calls
 * yajl_config(handle, yajl_allow_comments, 1)), so both comment styles are
 * accepted; a second, callback-free yajl pass locates a syntax error.
 */
#include "cw_conf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "cw_common.h"

#define CW_PATH_MAX 256             /* longest dotted key path we display */
#define CW_CONF_FILE_MAX (4u << 20) /* larger config files are refused */

/* ------------------------------------------------------------------ */
/* Names of the enums shared with the rest of churnwatch               */
/* ------------------------------------------------------------------ */

static const char *const ev_names[] = {
    "login", "usage", "account", "support_ticket", "nps", "cancellation_notice", NULL};

const char *cw_ev_type_name(cw_ev_type_t t) {
    if ((int)t >= 0 && t < CW_EV__COUNT) {
        return ev_names[t];
    }
    if (t == CW_EV_UNKNOWN) {
        return "unknown";
    }
    return NULL;
}

cw_ev_type_t cw_ev_type_parse(const char *s, size_t len) {
    if (s == NULL) {
        return CW_EV_UNKNOWN;
    }
    for (int i = 0; i < CW_EV__COUNT; i++) {
        if (strlen(ev_names[i]) == len && memcmp(ev_names[i], s, len) == 0) {
            return (cw_ev_type_t)i;
        }
    }
    return CW_EV_UNKNOWN;
}

const char *cw_band_name(cw_band_t b) {
    static const char *const names[] = {"healthy", "caution", "danger"};
    return ((int)b >= 0 && (int)b < 3) ? names[b] : "unknown";
}

const char *cw_tier_name(cw_tier_t t) {
    static const char *const names[] = {"high", "low", "tech"};
    return ((int)t >= 0 && (int)t < 3) ? names[t] : "unknown";
}

const char *cw_phase_name(cw_phase_t p) {
    static const char *const names[] = {"onboarding", "adoption", "renewal"};
    return ((int)p >= 0 && (int)p < 3) ? names[p] : "unknown";
}

/* ------------------------------------------------------------------ */
/* The key table                                                       */
/* ------------------------------------------------------------------ */

typedef enum {
    KT_STRING,    /* char[size] */
    KT_INT,       /* int */
    KT_INT64,     /* int64_t, stored as value * scale */
    KT_BOOL,      /* int 0/1 */
    KT_ENUM,      /* int (enum_vals[i] or i), or char[size] when size > 0 */
    KT_DOUBLE,    /* double */
    KT_TIMESTAMP, /* RFC 3339 string stored as int64_t epoch ms */
    KT_KPROPS,    /* kafka.properties object (cw_conf_t) */
    KT_MODEL,     /* the model object (cw_conf_t) */
    KT_EVENTS,    /* event type name or array of names -> unsigned CW_EV_BIT mask */
    KT_STRLIST,   /* array of strings: char[max][size] at off, int count at off2 */
    KT_SIGNALS,   /* model.signals array (cw_model_t) */
    KT_BANDS,     /* model.bands object (cw_model_t) */
} cw_ktype_t;

#define KF_REQUIRED 0x01u /* no default: must be given (file or environment) */
#define KF_SECRET 0x02u   /* value never printed */
#define KF_NOENV 0x04u    /* no CW_* environment override */
#define KF_NONEMPTY 0x08u /* string must not be empty */
#define KF_COND 0x10u     /* no default; required or refused depending on other keys */
#define KF_MINEXCL 0x20u  /* numeric minimum is exclusive */

/* String validator: 0 when s is valid, else -1 with a reason in why. */
typedef int (*cw_check_fn)(const char *s, char *why, size_t why_size);

typedef struct cw_key {
    cw_ktype_t type;
    const char *name;         /* dotted path below the table's root */
    const char *def;          /* default as text; NULL: required or conditional */
    size_t off;               /* field offset in the table's struct */
    size_t size;              /* string buffer size (KT_STRING, KT_STRLIST, string KT_ENUM) */
    size_t off2;              /* KT_STRLIST: offset of the int element count */
    double min, max;          /* numeric range (KT_STRLIST: max = element count) */
    int64_t scale;            /* KT_INT64: stored value = given value * scale */
    const char *const *enums; /* KT_ENUM: NULL-terminated names */
    const int *enum_vals;     /* KT_ENUM: stored values (NULL: the index) */
    cw_check_fn check;        /* extra string validator */
    const char *format;       /* docs: what a valid string looks like */
    unsigned flags;           /* KF_* */
    const char *desc;         /* one-line description (docs, --help) */
} cw_key_t;

/* ---- string validators ---- */

static int check_brokers(const char *s, char *why, size_t n) {
    const char *p = s;
    while (1) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) {
            snprintf(why, n, "expected HOST:PORT[,HOST:PORT...] with no empty entry");
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            if (!isgraph((unsigned char)p[i])) {
                snprintf(why, n, "expected HOST:PORT[,HOST:PORT...] without spaces");
                return -1;
            }
        }
        if (e == NULL) {
            return 0;
        }
        p = e + 1;
    }
}

static int check_topic(const char *s, char *why, size_t n) {
    size_t len = strlen(s);
    if (len > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        snprintf(why, n, "not a valid Kafka topic name");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') {
            snprintf(why, n, "a Kafka topic name may only hold [A-Za-z0-9._-]");
            return -1;
        }
    }
    return 0;
}

static int check_key_prefix(const char *s, char *why, size_t n) {
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') {
            snprintf(why, n, "expected [A-Za-z0-9_.-]+");
            return -1;
        }
    }
    return 0;
}

static int check_signal_name(const char *s, char *why, size_t n) {
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            snprintf(why, n, "expected [a-z0-9_]+");
            return -1;
        }
    }
    return 0;
}

/* HOST:PORT with HOST a name, an IPv4 address or a [bracketed] IPv6 address. */
static int parse_hostport(const char *s, int port_min) {
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb == s + 1 || rb[1] != ':') {
            return -1;
        }
        for (const char *p = s + 1; p < rb; p++) {
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') {
                return -1;
            }
        }
        colon = rb + 1;
    } else {
        colon = strchr(s, ':');
        if (colon == NULL || colon == s || strchr(colon + 1, ':') != NULL) {
            return -1;
        }
        for (const char *p = s; p < colon; p++) {
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_') {
                return -1;
            }
        }
    }
    const char *port = colon + 1;
    size_t plen = strlen(port);
    if (plen == 0 || plen > 5) {
        return -1;
    }
    long v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (port[i] < '0' || port[i] > '9') {
            return -1;
        }
        v = v * 10 + (port[i] - '0');
    }
    return (v >= port_min && v <= 65535) ? 0 : -1;
}

static int check_redis_url(const char *s, char *why, size_t n) {
    if (strchr(s, '@') != NULL) {
        snprintf(why, n, "credentials do not belong in the URL; use redis.password");
        return -1;
    }
    if (strncmp(s, "tcp://", 6) == 0) {
        if (parse_hostport(s + 6, 1) == 0) {
            return 0;
        }
    } else if (strncmp(s, "unix://", 7) == 0) {
        const char *path = s + 7;
        /* sun_path holds 108 bytes including the NUL */
        if (path[0] == '/' && path[1] != '\0' && strlen(path) < 108) {
            return 0;
        }
    }
    snprintf(why, n, "expected tcp://HOST:PORT or unix:///ABSOLUTE/PATH");
    return -1;
}

static int check_listen(const char *s, char *why, size_t n) {
    if (s[0] == '\0' || parse_hostport(s, 0) == 0) {
        return 0;
    }
    snprintf(why, n, "expected HOST:PORT (e.g. 127.0.0.1:9100), or \"\" for no listener");
    return -1;
}

/* ---- the tables ---- */

static const char *const time_modes[] = {"event", "wall", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const agg_names[] = {
    "count", "sum", "mean", "distinct_users", "distinct_features", NULL};
static const char *const norm_names[] = {"target", "seats", "trend", "range", NULL};
static const char *const dir_names[] = {"up", "down", NULL};
static const int dir_vals[] = {1, -1};

#define COFF(f) offsetof(cw_conf_t, f)
#define CSZ(f) sizeof(((cw_conf_t *)0)->f)

static const cw_key_t conf_keys[] = {
    {.type = KT_STRING,
     .name = "kafka.brokers",
     .off = COFF(kafka_brokers),
     .size = CSZ(kafka_brokers),
     .flags = KF_REQUIRED | KF_NONEMPTY,
     .check = check_brokers,
     .format = "HOST:PORT[,HOST:PORT...]",
     .desc = "Kafka bootstrap servers (librdkafka bootstrap.servers)."},
    {.type = KT_STRING,
     .name = "kafka.group_id",
     .def = "churnwatch",
     .off = COFF(kafka_group_id),
     .size = CSZ(kafka_group_id),
     .flags = KF_NONEMPTY,
     .desc = "Consumer group id; instances with the same id share the input partitions."},
    {.type = KT_STRING,
     .name = "kafka.input_topic",
     .off = COFF(kafka_input_topic),
     .size = CSZ(kafka_input_topic),
     .flags = KF_REQUIRED | KF_NONEMPTY,
     .check = check_topic,
     .format = "Kafka topic name",
     .desc = "Topic of the input events (message key = account id)."},
    {.type = KT_STRING,
     .name = "kafka.alert_topic",
     .def = "churn-alerts",
     .off = COFF(kafka_alert_topic),
     .size = CSZ(kafka_alert_topic),
     .flags = KF_NONEMPTY,
     .check = check_topic,
     .format = "Kafka topic name",
     .desc = "Topic the churn-risk alerts are published to."},
    {.type = KT_STRING,
     .name = "kafka.score_topic",
     .def = "account-scores",
     .off = COFF(kafka_score_topic),
     .size = CSZ(kafka_score_topic),
     .flags = KF_NONEMPTY,
     .check = check_topic,
     .format = "Kafka topic name",
     .desc = "Topic of the latest health snapshot per account (suits log compaction)."},
    {.type = KT_STRING,
     .name = "kafka.dlq_topic",
     .def = "events-dlq",
     .off = COFF(kafka_dlq_topic),
     .size = CSZ(kafka_dlq_topic),
     .flags = KF_NONEMPTY,
     .check = check_topic,
     .format = "Kafka topic name",
     .desc = "Dead-letter topic: rejected input events with the reason."},
    {.type = KT_KPROPS,
     .name = "kafka.properties",
     .flags = KF_NOENV,
     .desc = "librdkafka properties, name -> value, passed verbatim."},
    {.type = KT_INT,
     .name = "kafka.batch_size",
     .def = "4096",
     .off = COFF(kafka_batch_size),
     .min = 1,
     .max = 100000,
     .desc = "Maximum messages per consume batch (bench/: 4096 was as fast as 10000 and "
             "keeps peak memory lower)."},
    {.type = KT_INT,
     .name = "kafka.batch_timeout_ms",
     .def = "100",
     .off = COFF(kafka_batch_timeout_ms),
     .min = 1,
     .max = 10000,
     .desc = "Longest wait for the first message of a consume batch, milliseconds; a batch "
             "is then whatever has already arrived, up to kafka.batch_size."},
    {.type = KT_INT,
     .name = "kafka.fetch_wake_ms",
     .def = "100",
     .off = COFF(kafka_fetch_wake_ms),
     .min = 0,
     .max = 1000,
     .desc = "While there is a backlog (full batches), wake librdkafka's fetcher this often, "
             "milliseconds "
             "(0: never). librdkafka 2.0.2 stops fetching when its prefetch queue "
             "(queued.max.messages.kbytes) is full and looks again only when its broker "
             "thread next wakes up, up to 1 s later; an offset query (ListOffsets) to the "
             "partition's leader wakes it (bench/README.md)."},
    {.type = KT_STRING,
     .name = "redis.url",
     .off = COFF(redis_url),
     .size = CSZ(redis_url),
     .flags = KF_REQUIRED | KF_NONEMPTY,
     .check = check_redis_url,
     .format = "tcp://HOST:PORT or unix:///PATH",
     .desc = "Redis server address."},
    {.type = KT_STRING,
     .name = "redis.key_prefix",
     .def = "cw",
     .off = COFF(redis_key_prefix),
     .size = CSZ(redis_key_prefix),
     .flags = KF_NONEMPTY,
     .check = check_key_prefix,
     .format = "[A-Za-z0-9_.-]+",
     .desc = "Prefix of every Redis key churnwatch writes."},
    {.type = KT_STRING,
     .name = "redis.password",
     .def = "",
     .off = COFF(redis_password),
     .size = CSZ(redis_password),
     .flags = KF_SECRET,
     .desc = "Redis AUTH password (\"\" = no AUTH); never logged or printed."},
    {.type = KT_INT,
     .name = "redis.db",
     .def = "0",
     .off = COFF(redis_db),
     .min = 0,
     .max = 15,
     .desc = "Redis database number (SELECT)."},
    {.type = KT_INT,
     .name = "redis.timeout_ms",
     .def = "5000",
     .off = COFF(redis_timeout_ms),
     .min = 1,
     .max = 600000,
     .desc = "Connect and per-command timeout, milliseconds."},
    {.type = KT_INT,
     .name = "redis.backoff_max_ms",
     .def = "5000",
     .off = COFF(redis_backoff_max_ms),
     .min = 1,
     .max = 600000,
     .desc = "Cap of the reconnect backoff, milliseconds."},
    {.type = KT_INT,
     .name = "redis.connections",
     .def = "3",
     .off = COFF(redis_connections),
     .min = 1,
     .max = 16,
     .desc = "Redis connections, each served by its own worker thread; the assigned partitions "
             "are split among them (partition mod N), so Redis executes one connection's "
             "commands while the processor computes another's (bench/: 3 on 2 cores, "
             "1.11-1.17x the events/s of 2)."},
    {.type = KT_STRING,
     .name = "http.listen",
     .def = "",
     .off = COFF(http_listen),
     .size = CSZ(http_listen),
     .check = check_listen,
     .format = "HOST:PORT or \"\"",
     .desc = "Metrics/health/dashboard listener address; \"\" = no listener; port 0 = any free "
             "port."},
    {.type = KT_ENUM,
     .name = "time.mode",
     .def = "event",
     .off = COFF(time_mode),
     .enums = time_modes,
     .desc = "Clock of the windows: event = event-time watermark (replays), wall = wall clock."},
    {.type = KT_INT64,
     .name = "validation.max_future_seconds",
     .def = "86400",
     .off = COFF(max_future_ms),
     .scale = 1000,
     .min = 0,
     .max = 31536000,
     .desc = "Events later than the wall clock plus this many seconds are dead-lettered."},
    {.type = KT_TIMESTAMP,
     .name = "validation.min_timestamp",
     .def = "2000-01-01T00:00:00Z",
     .off = COFF(min_ts_ms),
     .desc = "Events before this time are dead-lettered."},
    {.type = KT_INT,
     .name = "validation.max_event_bytes",
     .def = "65536",
     .off = COFF(max_event_bytes),
     .min = 256,
     .max = 1048576,
     .desc = "Larger input messages are dead-lettered as oversized."},
    {.type = KT_INT,
     .name = "state.history_len",
     .def = "30",
     .off = COFF(history_len),
     .min = 1,
     .max = 365,
     .desc = "Score history points kept per account: one per UTC day (the day's last "
             "decision), so this many days."},
    {.type = KT_INT,
     .name = "state.cache_accounts",
     .def = "32768",
     .off = COFF(cache_accounts),
     .min = 0,
     .max = 16777216,
     .desc = "Accounts whose fixed fields (facts, prune marks, last offset) and timer the "
             "apply keeps in memory, split among the redis.connections lanes (about 240 bytes "
             "each): an apply of a cached account asks Redis only for its day buckets and "
             "members. Trusted while the partition's fence shows no other writer; 0 = off."},
    {.type = KT_ENUM,
     .name = "log.level",
     .def = "info",
     .off = COFF(log_level),
     .size = CSZ(log_level),
     .enums = log_levels,
     .desc = "Log threshold."},
    {.type = KT_MODEL,
     .name = "model",
     .flags = KF_NOENV,
     .desc = "The health-score model; absent = the shipped default model."},
};
#define N_CONF_KEYS (sizeof conf_keys / sizeof conf_keys[0])

#define MOFF(f) offsetof(cw_model_t, f)
enum { MK_SIGNALS = 0, MK_BANDS, MK_HIGH_ARR, MK_LOW_ARR };
static const cw_key_t model_keys[] = {
    [MK_SIGNALS] = {.type = KT_SIGNALS,
                    .name = "signals",
                    .flags = KF_REQUIRED,
                    .desc = "The signals the score is made of (see model.signals[] below)."},
    [MK_BANDS] = {.type = KT_BANDS,
                  .name = "bands",
                  .desc = "Band lines: \"default\" and per-tier overrides \"high\", \"low\", "
                          "\"tech\" (see below)."},
    [MK_HIGH_ARR] = {.type = KT_DOUBLE,
                     .name = "tiers.high_arr",
                     .def = "5000000",
                     .off = MOFF(tier_high_arr),
                     .min = 0,
                     .max = 1e15,
                     .desc = "ARR at or above this: high touch (named CSM)."},
    [MK_LOW_ARR] = {.type = KT_DOUBLE,
                    .name = "tiers.low_arr",
                    .def = "500000",
                    .off = MOFF(tier_low_arr),
                    .min = 0,
                    .max = 1e15,
                    .desc = "ARR at or above this (and below high_arr): low touch; below: tech "
                            "touch (automation)."},
    {.type = KT_INT,
     .name = "phases.onboarding_days",
     .def = "30",
     .off = MOFF(onboarding_days),
     .min = 1,
     .max = 365,
     .desc = "Onboarding phase length after the first activity, days."},
    {.type = KT_INT,
     .name = "phases.renewal_days",
     .def = "90",
     .off = MOFF(renewal_days),
     .min = 1,
     .max = 365,
     .desc = "Renewal phase: this many days before renewal_date."},
    {.type = KT_STRLIST,
     .name = "key_features",
     .def = "",
     .off = MOFF(key_features),
     .size = CW_FIELD_MAX,
     .off2 = MOFF(n_key_features),
     .max = CW_MAX_KEY_FEATURES,
     .desc = "Features onboarding must reach within onboarding_days (onboarding_stalled "
             "alert); [] = off."},
    {.type = KT_INT,
     .name = "alerts.inactive_days",
     .def = "14",
     .off = MOFF(inactive_days),
     .min = 1,
     .max = 365,
     .desc = "inactive alert after this many days without a login."},
    {.type = KT_INT,
     .name = "alerts.cooldown_days",
     .def = "7",
     .off = MOFF(cooldown_days),
     .min = 0,
     .max = 365,
     .desc = "The same account and reason is not alerted again within this many days."},
    {.type = KT_INT,
     .name = "alerts.warmup_days",
     .def = "30",
     .off = MOFF(warmup_days),
     .min = 0,
     .max = 365,
     .desc = "No entered_danger/usage_drop/recovered alerts this many days after the first "
             "activity."},
    {.type = KT_DOUBLE,
     .name = "alerts.score_drop_share",
     .def = "0",
     .off = MOFF(score_drop_share),
     .min = 0,
     .max = 0.95,
     .desc = "usage_drop when the score fell by this share against 7 days ago; 0 = off."},
    {.type = KT_BOOL,
     .name = "alerts.cancellation_forces_danger",
     .def = "true",
     .off = MOFF(cancellation_forces_danger),
     .desc = "A cancellation notice puts the account in danger at once."},
};
#define N_MODEL_KEYS (sizeof model_keys / sizeof model_keys[0])

#define SOFF(f) offsetof(cw_signal_def_t, f)
#define SSZ(f) sizeof(((cw_signal_def_t *)0)->f)
enum {
    SK_NAME,
    SK_EVENTS,
    SK_FEATURE,
    SK_AGG,
    SK_WINDOW,
    SK_BASELINE,
    SK_NORM,
    SK_TARGET,
    SK_MIN,
    SK_MAX,
    SK_WEIGHT,
    SK_DIRECTION,
    SK_MIN_BASELINE,
    SK_DROP_SHARE,
    SK_DESCRIPTION,
    SK__COUNT
};
static const cw_key_t signal_keys[SK__COUNT] = {
    [SK_NAME] = {.type = KT_STRING,
                 .name = "name",
                 .off = SOFF(name),
                 .size = SSZ(name),
                 .flags = KF_REQUIRED | KF_NONEMPTY,
                 .check = check_signal_name,
                 .format = "[a-z0-9_]+, unique",
                 .desc = "Signal name (explain output, alerts, docs)."},
    [SK_EVENTS] = {.type = KT_EVENTS,
                   .name = "events",
                   .off = SOFF(types),
                   .flags = KF_REQUIRED,
                   .desc = "Event type(s) read: a name or an array of names (login, usage, "
                           "account, support_ticket, nps, cancellation_notice)."},
    [SK_FEATURE] = {.type = KT_STRING,
                    .name = "feature",
                    .def = "",
                    .off = SOFF(feature),
                    .size = SSZ(feature),
                    .desc = "Only usage events of this feature (\"\" = any); needs events "
                            "[\"usage\"]."},
    [SK_AGG] = {.type = KT_ENUM,
                .name = "aggregation",
                .off = SOFF(agg),
                .enums = agg_names,
                .flags = KF_REQUIRED,
                .desc = "count events, sum/mean of the event value (usage: count, nps: score), "
                        "distinct users, distinct features (usage only)."},
    [SK_WINDOW] = {.type = KT_INT,
                   .name = "window_days",
                   .off = SOFF(window_days),
                   .min = 1,
                   .max = CW_MAX_RETENTION_DAYS,
                   .flags = KF_REQUIRED,
                   .desc = "Window length in days, ending at the as-of day (distinct "
                           "aggregations: window_days + baseline_days <= 52)."},
    [SK_BASELINE] = {.type = KT_INT,
                     .name = "baseline_days",
                     .off = SOFF(baseline_days),
                     .min = 1,
                     .max = CW_MAX_RETENTION_DAYS,
                     .flags = KF_COND,
                     .desc = "trend only (required): the baseline period right before the "
                             "window, days."},
    [SK_NORM] = {.type = KT_ENUM,
                 .name = "normalisation",
                 .off = SOFF(norm),
                 .enums = norm_names,
                 .flags = KF_REQUIRED,
                 .desc = "target: raw/target; seats: (raw/seats)/target; trend: "
                         "(raw/baseline scaled to the window)/target; range: (raw-min)/(max-min); "
                         "all clamped to [0,1]."},
    [SK_TARGET] = {.type = KT_DOUBLE,
                   .name = "target",
                   .off = SOFF(target),
                   .min = 0,
                   .max = 1e12,
                   .flags = KF_COND | KF_MINEXCL,
                   .desc = "target, seats, trend (required): the value that scores 1.0."},
    [SK_MIN] = {.type = KT_DOUBLE,
                .name = "min",
                .off = SOFF(range_min),
                .min = -1e12,
                .max = 1e12,
                .flags = KF_COND,
                .desc = "range only (required): scores 0."},
    [SK_MAX] = {.type = KT_DOUBLE,
                .name = "max",
                .off = SOFF(range_max),
                .min = -1e12,
                .max = 1e12,
                .flags = KF_COND,
                .desc = "range only (required, > min): scores 1.0."},
    [SK_WEIGHT] = {.type = KT_DOUBLE,
                   .name = "weight",
                   .off = SOFF(weight),
                   .min = 0,
                   .max = 1000,
                   .flags = KF_REQUIRED,
                   .desc = "Weight in the weighted mean; the weights need not sum to 100."},
    [SK_DIRECTION] = {.type = KT_ENUM,
                      .name = "direction",
                      .def = "up",
                      .off = SOFF(direction),
                      .enums = dir_names,
                      .enum_vals = dir_vals,
                      .desc = "up: more is healthier; down: more is worse (score = 1 - "
                              "normalised)."},
    [SK_MIN_BASELINE] = {.type = KT_DOUBLE,
                         .name = "min_baseline",
                         .def = "0",
                         .off = SOFF(min_baseline),
                         .min = 0,
                         .max = 1e12,
                         .desc = "trend only: below this baseline (per window) the signal is "
                                 "missing (not judged)."},
    [SK_DROP_SHARE] = {.type = KT_DOUBLE,
                       .name = "drop_share",
                       .def = "0",
                       .off = SOFF(drop_share),
                       .min = 0,
                       .max = 0.95,
                       .desc = "trend only: usage_drop alert when the ratio is <= 1 - "
                               "drop_share; 0 = off."},
    [SK_DESCRIPTION] = {.type = KT_STRING,
                        .name = "description",
                        .def = "",
                        .off = SOFF(description),
                        .size = SSZ(description),
                        .desc = "Why this signal matters (explain output, docs)."},
};

#define BOFF(f) offsetof(cw_bands_t, f)
enum { BK_DANGER_ENTER, BK_DANGER_EXIT, BK_CAUTION_ENTER, BK_CAUTION_EXIT, BK__COUNT };
static const cw_key_t band_keys[BK__COUNT] = {
    [BK_DANGER_ENTER] = {.type = KT_DOUBLE,
                         .name = "danger_enter",
                         .def = "40",
                         .off = BOFF(danger_enter),
                         .min = 0,
                         .max = 100,
                         .desc = "Score below this: danger."},
    [BK_DANGER_EXIT] = {.type = KT_DOUBLE,
                        .name = "danger_exit",
                        .def = "50",
                        .off = BOFF(danger_exit),
                        .min = 0,
                        .max = 100,
                        .desc = "A danger account leaves danger only at or above this (> "
                                "danger_enter)."},
    [BK_CAUTION_ENTER] = {.type = KT_DOUBLE,
                          .name = "caution_enter",
                          .def = "65",
                          .off = BOFF(caution_enter),
                          .min = 0,
                          .max = 100,
                          .desc = "Score below this: caution (> danger_enter)."},
    [BK_CAUTION_EXIT] = {.type = KT_DOUBLE,
                         .name = "caution_exit",
                         .def = "70",
                         .off = BOFF(caution_exit),
                         .min = 0,
                         .max = 100,
                         .desc = "A caution account becomes healthy only at or above this (> "
                                 "caution_enter)."},
};

static const char *const band_tiers[] = {"high", "low", "tech"}; /* index cw_tier_t */

/* kafka.properties that have their own churnwatch key. */
static const char *const kprops_reserved[][2] = {
    {"bootstrap.servers", "kafka.brokers"},
    {"metadata.broker.list", "kafka.brokers"},
    {"group.id", "kafka.group_id"},
};

/* ------------------------------------------------------------------ */
/* Error reporting                                                     */
/* ------------------------------------------------------------------ */

typedef struct pctx {
    char *err;          /* caller's errstr */
    size_t errsz;       /* its size (> 0) */
    const char *prefix; /* prepended to every message ("" or "default model: ") */
} pctx_t;

static int fail(pctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(pctx_t *c, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errsz, "%s%s", c->prefix, msg);
    return -1;
}

/* Printable copy of untrusted text (a JSON key or value), at most max bytes. */
static void sanitize(const char *s, char *out, size_t size, size_t max) {
    size_t o = 0;
    size_t i = 0;
    if (size == 0) {
        return;
    }
    for (; s[i] != '\0' && o + 1 < size && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[o++] = (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    out[o] = '\0';
    if (s[i] != '\0' && o + 4 < size) {
        memcpy(out + o, "...", 4);
    }
}

/* snprintf for display paths and messages built from them: truncation is
 * acceptable there (the text is only shown), so it is done knowingly. */
static void pathf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, size, fmt, ap);
    va_end(ap);
}

/* A number as docs and messages show it: integral values without exponent. */
static void fmtnum(double v, char *out, size_t size) {
    if (v == floor(v) && fabs(v) < 1e17) {
        snprintf(out, size, "%.0f", v);
    } else {
        snprintf(out, size, "%.15g", v);
    }
}

/* A text value for an error message: quoted, or hidden when it may be a secret. */
static void echo_text(const cw_key_t *row, const char *s, char *out, size_t size) {
    char safe[64];
    if ((row->flags & KF_SECRET) || strchr(s, '@') != NULL) {
        snprintf(out, size, "a value not shown here");
        return;
    }
    sanitize(s, safe, sizeof safe, 48);
    snprintf(out, size, "\"%s\"", safe);
}

/* A JSON value for an error message. */
static void echo_json(const cw_key_t *row, yajl_val v, char *out, size_t size) {
    int secret = row != NULL && (row->flags & KF_SECRET);
    if (YAJL_IS_STRING(v)) {
        if (row != NULL) {
            echo_text(row, YAJL_GET_STRING(v), out, size);
        } else {
            snprintf(out, size, "a string");
        }
    } else if (YAJL_IS_NUMBER(v)) {
        char safe[40];
        if (secret) {
            snprintf(out, size, "a number");
        } else {
            sanitize(v->u.number.r, safe, sizeof safe, 32);
            snprintf(out, size, "%s", safe);
        }
    } else if (YAJL_IS_TRUE(v)) {
        snprintf(out, size, "true");
    } else if (YAJL_IS_FALSE(v)) {
        snprintf(out, size, "false");
    } else if (YAJL_IS_OBJECT(v)) {
        snprintf(out, size, "an object");
    } else if (YAJL_IS_ARRAY(v)) {
        snprintf(out, size, "an array");
    } else {
        snprintf(out, size, "null");
    }
}

/* "integer in [1,100000]", "one of \"event\", \"wall\"", ... */
static void describe_expect(const cw_key_t *row, char *out, size_t size) {
    char lo[32], hi[32];
    fmtnum(row->min, lo, sizeof lo);
    fmtnum(row->max, hi, sizeof hi);
    switch (row->type) {
    case KT_INT:
    case KT_INT64:
        snprintf(out, size, "integer in %s%s,%s]", (row->flags & KF_MINEXCL) ? "(" : "[", lo, hi);
        break;
    case KT_DOUBLE:
        snprintf(out, size, "number in %s%s,%s]", (row->flags & KF_MINEXCL) ? "(" : "[", lo, hi);
        break;
    case KT_BOOL:
        snprintf(out, size, "true or false");
        break;
    case KT_ENUM: {
        size_t o = (size_t)snprintf(out, size, "one of");
        for (int i = 0; row->enums[i] != NULL && o < size; i++) {
            o += (size_t)snprintf(out + o, size - o, "%s \"%s\"", i ? "," : "", row->enums[i]);
        }
        break;
    }
    case KT_TIMESTAMP:
        snprintf(out, size, "an RFC 3339 timestamp (e.g. 2000-01-01T00:00:00Z)");
        break;
    case KT_STRING:
        snprintf(out, size, "a string");
        break;
    case KT_KPROPS:
    case KT_MODEL:
    case KT_BANDS:
        snprintf(out, size, "an object");
        break;
    case KT_EVENTS:
        snprintf(out, size, "an event type name or an array of them");
        break;
    case KT_STRLIST:
        snprintf(out, size, "an array of strings");
        break;
    case KT_SIGNALS:
        snprintf(out, size, "an array of objects");
        break;
    }
}

static int fail_expect(pctx_t *c, const cw_key_t *row, const char *where, const char *got) {
    char exp[160];
    describe_expect(row, exp, sizeof exp);
    return fail(c, "%s: expected %s, got %s", where, exp, got);
}

static int fail_expect_json(pctx_t *c, const cw_key_t *row, const char *where, yajl_val v) {
    char got[96];
    echo_json(row, v, got, sizeof got);
    return fail_expect(c, row, where, got);
}

/* A wrong JSON type for the key at path. */
static int fail_type(pctx_t *c, const cw_key_t *row, const char *path, yajl_val v) {
    char where[CW_PATH_MAX + 112];
    snprintf(where, sizeof where, "key \"%s\"", path);
    return fail_expect_json(c, row, where, v);
}

_Static_assert(sizeof(cw_time_mode_t) == sizeof(int), "KT_ENUM stores an int");
_Static_assert(sizeof(cw_agg_t) == sizeof(int), "KT_ENUM stores an int");
_Static_assert(sizeof(cw_norm_t) == sizeof(int), "KT_ENUM stores an int");

/* ------------------------------------------------------------------ */
/* Storing one value through a row                                     */
/* ------------------------------------------------------------------ */

static int store_string(pctx_t *c, const cw_key_t *row, void *base, const char *s,
                        const char *where) {
    size_t len = strlen(s);
    char why[160], got[96];
    if (len >= row->size) {
        return fail(c, "%s: longer than %zu bytes", where, row->size - 1);
    }
    if ((row->flags & KF_NONEMPTY) && len == 0) {
        return fail(c, "%s: must not be empty", where);
    }
    if (row->check != NULL && row->check(s, why, sizeof why) != 0) {
        echo_text(row, s, got, sizeof got);
        return fail(c, "%s: %s, got %s", where, why, got);
    }
    memcpy((char *)base + row->off, s, len + 1);
    return 0;
}

static int store_int(pctx_t *c, const cw_key_t *row, void *base, long long v, const char *got,
                     const char *where) {
    double d = (double)v;
    if (d > row->max || d < row->min || ((row->flags & KF_MINEXCL) && d == row->min)) {
        return fail_expect(c, row, where, got);
    }
    if (row->type == KT_INT64) {
        *(int64_t *)(void *)((char *)base + row->off) = (int64_t)v * (row->scale ? row->scale : 1);
    } else {
        *(int *)(void *)((char *)base + row->off) = (int)v;
    }
    return 0;
}

static int store_double(pctx_t *c, const cw_key_t *row, void *base, double v, const char *got,
                        const char *where) {
    if (!isfinite(v) || v > row->max || v < row->min ||
        ((row->flags & KF_MINEXCL) && v == row->min)) {
        return fail_expect(c, row, where, got);
    }
    *(double *)(void *)((char *)base + row->off) = v;
    return 0;
}

static int store_enum(pctx_t *c, const cw_key_t *row, void *base, const char *s,
                      const char *where) {
    char got[96];
    for (int i = 0; row->enums[i] != NULL; i++) {
        if (strcmp(row->enums[i], s) == 0) {
            if (row->size > 0) {
                memcpy((char *)base + row->off, s, strlen(s) + 1);
            } else {
                *(int *)(void *)((char *)base + row->off) = row->enum_vals ? row->enum_vals[i] : i;
            }
            return 0;
        }
    }
    echo_text(row, s, got, sizeof got);
    return fail_expect(c, row, where, got);
}

static int store_timestamp(pctx_t *c, const cw_key_t *row, void *base, const char *s,
                           const char *where) {
    int64_t ms;
    char got[96];
    if (cw_time_parse_rfc3339(s, strlen(s), &ms) != 0) {
        echo_text(row, s, got, sizeof got);
        return fail_expect(c, row, where, got);
    }
    *(int64_t *)(void *)((char *)base + row->off) = ms;
    return 0;
}

/* A scalar from text (a default or an environment variable). */
static int apply_text(pctx_t *c, const cw_key_t *row, void *base, const char *s,
                      const char *where) {
    char got[96];
    char *end = NULL;
    echo_text(row, s, got, sizeof got);
    switch (row->type) {
    case KT_STRING:
        return store_string(c, row, base, s, where);
    case KT_INT:
    case KT_INT64: {
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (s[0] == '\0' || isspace((unsigned char)s[0]) || *end != '\0' || errno != 0) {
            return fail_expect(c, row, where, got);
        }
        return store_int(c, row, base, v, got, where);
    }
    case KT_DOUBLE: {
        errno = 0;
        double v = strtod(s, &end);
        if (s[0] == '\0' || isspace((unsigned char)s[0]) || *end != '\0' || errno != 0) {
            return fail_expect(c, row, where, got);
        }
        return store_double(c, row, base, v, got, where);
    }
    case KT_BOOL:
        if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) {
            *(int *)(void *)((char *)base + row->off) = 1;
        } else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0) {
            *(int *)(void *)((char *)base + row->off) = 0;
        } else {
            return fail_expect(c, row, where, got);
        }
        return 0;
    case KT_ENUM:
        return store_enum(c, row, base, s, where);
    case KT_TIMESTAMP:
        return store_timestamp(c, row, base, s, where);
    case KT_STRLIST:
        /* only the empty list has a text form */
        if (s[0] != '\0') {
            return fail_expect(c, row, where, got);
        }
        *(int *)(void *)((char *)base + row->off2) = 0;
        return 0;
    case KT_KPROPS:
    case KT_MODEL:
    case KT_EVENTS:
    case KT_SIGNALS:
    case KT_BANDS:
        break;
    }
    return fail(c, "%s: cannot be set from text", where);
}

static int apply_defaults(pctx_t *c, const cw_key_t *tab, size_t n, void *base, const char *root) {
    for (size_t i = 0; i < n; i++) {
        char where[CW_PATH_MAX + 40];
        if (tab[i].def == NULL) {
            continue;
        }
        pathf(where, sizeof where, "default of key \"%s%s%s\"", root, root[0] ? "." : "",
              tab[i].name);
        if (apply_text(c, &tab[i], base, tab[i].def, where) != 0) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Walking a JSON object through a table                               */
/* ------------------------------------------------------------------ */

static int apply_json(pctx_t *c, const cw_key_t *row, void *base, yajl_val v, const char *path);

static const cw_key_t *find_row(const cw_key_t *tab, size_t n, const char *rel) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tab[i].name, rel) == 0) {
            return &tab[i];
        }
    }
    return NULL;
}

/* Is rel a section, i.e. a proper prefix (up to a dot) of some row's name? */
static int is_section(const cw_key_t *tab, size_t n, const char *rel) {
    size_t len = strlen(rel);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(tab[i].name, rel, len) == 0 && tab[i].name[len] == '.') {
            return 1;
        }
    }
    return 0;
}

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    size_t row[65];
    if (la > 64 || lb > 64) {
        return (size_t)-1;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
            if (up + 1 < best) {
                best = up + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The row name (or section of one) closest to a mistyped relative key. */
static void suggest(const cw_key_t *tab, size_t n, const char *rel, char *out, size_t size) {
    size_t best = (size_t)-1;
    size_t limit = strlen(rel) / 3 > 2 ? strlen(rel) / 3 : 2;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char cand[CW_PATH_MAX];
        cw_strlcpy(cand, tab[i].name, sizeof cand);
        /* the row itself and each of its sections */
        while (1) {
            size_t d = edit_distance(rel, cand);
            if (d <= limit && d < best) {
                best = d;
                cw_strlcpy(out, cand, size);
            }
            char *dot = strrchr(cand, '.');
            if (dot == NULL) {
                break;
            }
            *dot = '\0';
        }
    }
}

/*
 * Apply a JSON object to the rows of tab, storing into base. rel is the
 * table-relative prefix of obj ("" or "kafka"), root the display prefix of
 * the table ("" or "model.signals[2]"). seen[i] is set for each row given.
 */
static int walk(pctx_t *c, const cw_key_t *tab, size_t n, void *base, unsigned char *seen,
                yajl_val obj, const char *rel, const char *root) {
    for (size_t i = 0; i < obj->u.object.len; i++) {
        const char *k = obj->u.object.keys[i];
        yajl_val v = obj->u.object.values[i];
        char relk[CW_PATH_MAX], safe[80], path[CW_PATH_MAX + 96];
        sanitize(k, safe, sizeof safe, 64);
        snprintf(path, sizeof path, "%s%s%s%s%s", root, (root[0] && rel[0]) ? "." : "", rel,
                 (root[0] || rel[0]) ? "." : "", safe);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(obj->u.object.keys[j], k) == 0) {
                return fail(c, "duplicate key \"%s\"", path);
            }
        }
        const cw_key_t *row = NULL;
        int section = 0;
        if (strlen(k) < 64 && k[0] != '\0' && strchr(k, '.') == NULL) {
            snprintf(relk, sizeof relk, "%s%s%s", rel, rel[0] ? "." : "", k);
            row = find_row(tab, n, relk);
            section = row == NULL && is_section(tab, n, relk);
        }
        if (row != NULL) {
            size_t idx = (size_t)(row - tab);
            if (seen[idx]) {
                return fail(c, "duplicate key \"%s\"", path);
            }
            seen[idx] = 1;
            if (apply_json(c, row, base, v, path) != 0) {
                return -1;
            }
        } else if (section) {
            if (!YAJL_IS_OBJECT(v)) {
                char got[96];
                echo_json(NULL, v, got, sizeof got);
                return fail(c, "key \"%s\": expected an object, got %s", path, got);
            }
            if (walk(c, tab, n, base, seen, v, relk, root) != 0) {
                return -1;
            }
        } else if (strchr(k, '.') != NULL) {
            return fail(c, "unknown key \"%s\" (write nested objects, not dotted names)", path);
        } else {
            char hint[CW_PATH_MAX];
            char relsafe[CW_PATH_MAX];
            snprintf(relsafe, sizeof relsafe, "%s%s%s", rel, rel[0] ? "." : "", safe);
            suggest(tab, n, relsafe, hint, sizeof hint);
            if (hint[0] != '\0') {
                return fail(c, "unknown key \"%s\" (did you mean \"%s%s%s\"?)", path, root,
                            root[0] ? "." : "", hint);
            }
            return fail(c, "unknown key \"%s\"", path);
        }
    }
    return 0;
}

static int check_required(pctx_t *c, const cw_key_t *tab, size_t n, const unsigned char *seen,
                          const char *root) {
    for (size_t i = 0; i < n; i++) {
        if ((tab[i].flags & KF_REQUIRED) && !seen[i]) {
            return fail(c, "missing required key \"%s%s%s\"", root, root[0] ? "." : "",
                        tab[i].name);
        }
    }
    return 0;
}

/* ---- kafka.properties ---- */

static int parse_kprops(pctx_t *c, yajl_val v, cw_conf_t *conf, const char *path) {
    const cw_key_t *row = find_row(conf_keys, N_CONF_KEYS, "kafka.properties");
    if (!YAJL_IS_OBJECT(v)) {
        return fail_type(c, row, path, v);
    }
    if (v->u.object.len > CW_MAX_KPROPS) {
        return fail(c, "key \"%s\": at most %d properties, got %zu", path, CW_MAX_KPROPS,
                    v->u.object.len);
    }
    conf->n_kafka_props = 0;
    for (size_t i = 0; i < v->u.object.len; i++) {
        const char *k = v->u.object.keys[i];
        yajl_val x = v->u.object.values[i];
        cw_kprop_t *p = &conf->kafka_props[conf->n_kafka_props];
        char safe[80], kp[CW_PATH_MAX];
        const char *val;
        sanitize(k, safe, sizeof safe, 64);
        pathf(kp, sizeof kp, "%s.%s", path, safe);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v->u.object.keys[j], k) == 0) {
                return fail(c, "duplicate key \"%s\"", kp);
            }
        }
        if (k[0] == '\0' || strlen(k) >= sizeof p->name) {
            return fail(c, "key \"%s\": a property name must be 1..%zu bytes", kp,
                        sizeof p->name - 1);
        }
        for (const char *q = k; *q; q++) {
            if (!isalnum((unsigned char)*q) && *q != '.' && *q != '_' && *q != '-') {
                return fail(c, "key \"%s\": not a librdkafka property name", kp);
            }
        }
        for (size_t r = 0; r < sizeof kprops_reserved / sizeof kprops_reserved[0]; r++) {
            if (strcmp(k, kprops_reserved[r][0]) == 0) {
                return fail(c, "key \"%s\": set %s instead", kp, kprops_reserved[r][1]);
            }
        }
        if (YAJL_IS_STRING(x)) {
            val = YAJL_GET_STRING(x);
        } else if (YAJL_IS_NUMBER(x)) {
            val = x->u.number.r;
        } else if (YAJL_IS_TRUE(x)) {
            val = "true";
        } else if (YAJL_IS_FALSE(x)) {
            val = "false";
        } else {
            char got[32];
            echo_json(NULL, x, got, sizeof got); /* type only: values may be secrets */
            return fail(c, "key \"%s\": expected a string, number or boolean, got %s", kp, got);
        }
        if (strlen(val) >= sizeof p->value) {
            return fail(c, "key \"%s\": value longer than %zu bytes", kp, sizeof p->value - 1);
        }
        memcpy(p->name, k, strlen(k) + 1);
        memcpy(p->value, val, strlen(val) + 1);
        conf->n_kafka_props++;
    }
    return 0;
}

/* ---- model pieces ---- */

static int parse_events(pctx_t *c, const cw_key_t *row, yajl_val v, unsigned *mask,
                        const char *path) {
    size_t n = 1;
    *mask = 0;
    if (YAJL_IS_ARRAY(v)) {
        n = v->u.array.len;
        if (n == 0) {
            return fail(c, "key \"%s\": at least one event type is required", path);
        }
    } else if (!YAJL_IS_STRING(v)) {
        return fail_type(c, row, path, v);
    }
    for (size_t i = 0; i < n; i++) {
        yajl_val x = YAJL_IS_ARRAY(v) ? v->u.array.values[i] : v;
        char ep[CW_PATH_MAX + 16], safe[64];
        if (YAJL_IS_ARRAY(v)) {
            pathf(ep, sizeof ep, "%s[%zu]", path, i);
        } else {
            pathf(ep, sizeof ep, "%s", path);
        }
        if (!YAJL_IS_STRING(x)) {
            char got[96];
            echo_json(row, x, got, sizeof got);
            return fail(c, "key \"%s\": expected an event type name, got %s", ep, got);
        }
        const char *s = YAJL_GET_STRING(x);
        cw_ev_type_t t = cw_ev_type_parse(s, strlen(s));
        sanitize(s, safe, sizeof safe, 48);
        if (t == CW_EV_UNKNOWN) {
            return fail(c,
                        "key \"%s\": unknown event type \"%s\" (expected login, usage, account, "
                        "support_ticket, nps or cancellation_notice)",
                        ep, safe);
        }
        if (*mask & CW_EV_BIT(t)) {
            return fail(c, "key \"%s\": event type \"%s\" listed twice", ep, safe);
        }
        *mask |= CW_EV_BIT(t);
    }
    return 0;
}

static int parse_strlist(pctx_t *c, const cw_key_t *row, yajl_val v, void *base, const char *path) {
    char *arr = (char *)base + row->off;
    int *count = (int *)(void *)((char *)base + row->off2);
    if (!YAJL_IS_ARRAY(v)) {
        return fail_type(c, row, path, v);
    }
    if ((double)v->u.array.len > row->max) {
        return fail(c, "key \"%s\": at most %.0f entries, got %zu", path, row->max, v->u.array.len);
    }
    *count = 0;
    for (size_t i = 0; i < v->u.array.len; i++) {
        yajl_val x = v->u.array.values[i];
        char ep[CW_PATH_MAX + 16];
        pathf(ep, sizeof ep, "%s[%zu]", path, i);
        if (!YAJL_IS_STRING(x)) {
            char got[96];
            echo_json(row, x, got, sizeof got);
            return fail(c, "key \"%s\": expected a string, got %s", ep, got);
        }
        const char *s = YAJL_GET_STRING(x);
        size_t len = strlen(s);
        if (len == 0 || len >= row->size) {
            return fail(c, "key \"%s\": must be 1..%zu bytes", ep, row->size - 1);
        }
        for (int j = 0; j < *count; j++) {
            if (strcmp(arr + (size_t)j * row->size, s) == 0) {
                return fail(c, "key \"%s\": duplicate entry", ep);
            }
        }
        memcpy(arr + (size_t)*count * row->size, s, len + 1);
        (*count)++;
    }
    return 0;
}

static int fail_only_with(pctx_t *c, const char *root, int key, const char *what) {
    return fail(c, "key \"%s.%s\": only used with %s", root, signal_keys[key].name, what);
}

static int validate_signal(pctx_t *c, const cw_signal_def_t *s, const unsigned char *seen,
                           const char *root) {
    const int distinct = s->agg == CW_AGG_DISTINCT_USERS || s->agg == CW_AGG_DISTINCT_FEATURES;
    const int span = s->window_days + s->baseline_days;

    if (check_required(c, signal_keys, SK__COUNT, seen, root) != 0) {
        return -1;
    }
    if (s->feature[0] != '\0' && s->types != CW_EV_BIT(CW_EV_USAGE)) {
        return fail(c, "key \"%s.feature\": a feature filter needs events [\"usage\"] only", root);
    }
    if (s->agg == CW_AGG_DISTINCT_FEATURES) {
        if (s->types != CW_EV_BIT(CW_EV_USAGE)) {
            return fail(c,
                        "key \"%s.events\": aggregation \"distinct_features\" reads usage "
                        "events only; events must be [\"usage\"]",
                        root);
        }
        if (s->feature[0] != '\0') {
            return fail(c,
                        "key \"%s.feature\": not allowed with aggregation \"distinct_features\" "
                        "(it would count at most one feature)",
                        root);
        }
    }
    if (s->norm == CW_NORM_TREND) {
        if (!seen[SK_BASELINE]) {
            return fail(c,
                        "missing required key \"%s.baseline_days\" (normalisation \"trend\" "
                        "compares the window with the baseline before it)",
                        root);
        }
        if (s->agg == CW_AGG_MEAN) {
            return fail(c,
                        "key \"%s.normalisation\": \"trend\" is not supported with aggregation "
                        "\"mean\"",
                        root);
        }
    } else {
        if (seen[SK_BASELINE]) {
            return fail_only_with(c, root, SK_BASELINE, "normalisation \"trend\"");
        }
        if (seen[SK_MIN_BASELINE]) {
            return fail_only_with(c, root, SK_MIN_BASELINE, "normalisation \"trend\"");
        }
        if (seen[SK_DROP_SHARE]) {
            return fail_only_with(c, root, SK_DROP_SHARE, "normalisation \"trend\"");
        }
    }
    if (s->norm == CW_NORM_RANGE) {
        if (seen[SK_TARGET]) {
            return fail(c,
                        "key \"%s.target\": not used with normalisation \"range\" (use min "
                        "and max)",
                        root);
        }
        if (!seen[SK_MIN]) {
            return fail(c, "missing required key \"%s.min\" (normalisation \"range\")", root);
        }
        if (!seen[SK_MAX]) {
            return fail(c, "missing required key \"%s.max\" (normalisation \"range\")", root);
        }
        if (!(s->range_max > s->range_min)) {
            char lo[32];
            fmtnum(s->range_min, lo, sizeof lo);
            return fail(c, "key \"%s.max\": must be greater than min (%s)", root, lo);
        }
    } else {
        if (!seen[SK_TARGET]) {
            return fail(c, "missing required key \"%s.target\" (normalisation \"%s\")", root,
                        norm_names[s->norm]);
        }
        if (seen[SK_MIN]) {
            return fail_only_with(c, root, SK_MIN, "normalisation \"range\"");
        }
        if (seen[SK_MAX]) {
            return fail_only_with(c, root, SK_MAX, "normalisation \"range\"");
        }
    }
    if (s->norm == CW_NORM_SEATS && s->agg != CW_AGG_DISTINCT_USERS && s->agg != CW_AGG_COUNT) {
        return fail(c,
                    "key \"%s.normalisation\": \"seats\" needs aggregation \"distinct_users\" "
                    "or \"count\"",
                    root);
    }
    if (span > CW_MAX_RETENTION_DAYS) {
        return fail(c, "key \"%s.baseline_days\": window_days + baseline_days = %d exceeds %d",
                    root, span, CW_MAX_RETENTION_DAYS);
    }
    if (distinct && span > CW_MAX_WINDOW_DAYS) {
        if (s->baseline_days == 0) {
            return fail(c,
                        "key \"%s.window_days\": distinct aggregations cover at most %d days, "
                        "got %d",
                        root, CW_MAX_WINDOW_DAYS, s->window_days);
        }
        return fail(c,
                    "key \"%s.baseline_days\": distinct aggregations cover at most %d days, "
                    "window_days + baseline_days = %d",
                    root, CW_MAX_WINDOW_DAYS, span);
    }
    return 0;
}

static int parse_signals(pctx_t *c, const cw_key_t *row, yajl_val v, cw_model_t *m,
                         const char *path) {
    double wsum = 0;
    if (!YAJL_IS_ARRAY(v)) {
        return fail_type(c, row, path, v);
    }
    if (v->u.array.len == 0) {
        return fail(c, "key \"%s\": at least one signal is required", path);
    }
    if (v->u.array.len > CW_MAX_SIGNALS) {
        return fail(c, "key \"%s\": at most %d signals, got %zu", path, CW_MAX_SIGNALS,
                    v->u.array.len);
    }
    for (size_t i = 0; i < v->u.array.len; i++) {
        yajl_val x = v->u.array.values[i];
        cw_signal_def_t *s = &m->signals[i];
        unsigned char seen[SK__COUNT] = {0};
        char root[CW_PATH_MAX];
        pathf(root, sizeof root, "%s[%zu]", path, i);
        if (!YAJL_IS_OBJECT(x)) {
            char got[96];
            echo_json(NULL, x, got, sizeof got);
            return fail(c, "key \"%s\": expected an object, got %s", root, got);
        }
        memset(s, 0, sizeof *s);
        if (apply_defaults(c, signal_keys, SK__COUNT, s, root) != 0 ||
            walk(c, signal_keys, SK__COUNT, s, seen, x, "", root) != 0 ||
            validate_signal(c, s, seen, root) != 0) {
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(m->signals[j].name, s->name) == 0) {
                return fail(c, "key \"%s.name\": duplicate signal name \"%s\" (also %s[%zu])", root,
                            s->name, path, j);
            }
        }
        wsum += s->weight;
    }
    m->n_signals = (int)v->u.array.len;
    if (!(wsum > 0)) {
        return fail(c, "key \"%s\": the weights sum to 0; at least one signal needs weight > 0",
                    path);
    }
    return 0;
}

/* Band-line order inside one tier. The message names the key given in this
 * tier (seen; NULL = name the upper one), not one inherited from default. */
static int validate_bands(pctx_t *c, const cw_bands_t *b, const unsigned char *seen,
                          const char *root) {
    static const int rules[][2] = {
        {BK_DANGER_ENTER, BK_DANGER_EXIT},
        {BK_DANGER_ENTER, BK_CAUTION_ENTER},
        {BK_CAUTION_ENTER, BK_CAUTION_EXIT},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const cw_key_t *lo = &band_keys[rules[i][0]], *hi = &band_keys[rules[i][1]];
        double vlo = *(const double *)(const void *)((const char *)b + lo->off);
        double vhi = *(const double *)(const void *)((const char *)b + hi->off);
        char v[32];
        if (vlo < vhi) {
            continue;
        }
        if (seen != NULL && seen[rules[i][0]] && !seen[rules[i][1]]) {
            fmtnum(vhi, v, sizeof v);
            return fail(c, "key \"%s.%s\": must be less than %s (%s)", root, lo->name, hi->name, v);
        }
        fmtnum(vlo, v, sizeof v);
        return fail(c, "key \"%s.%s\": must be greater than %s (%s)", root, hi->name, lo->name, v);
    }
    return 0;
}

static int parse_bands(pctx_t *c, const cw_key_t *row, yajl_val v, cw_model_t *m,
                       const char *path) {
    cw_bands_t def;
    char root[CW_PATH_MAX + 16];
    yajl_val given[4] = {NULL, NULL, NULL, NULL}; /* default, high, low, tech */
    static const char *const names[4] = {"default", "high", "low", "tech"};

    if (!YAJL_IS_OBJECT(v)) {
        return fail_type(c, row, path, v);
    }
    for (size_t i = 0; i < v->u.object.len; i++) {
        const char *k = v->u.object.keys[i];
        char safe[80];
        int which = -1;
        sanitize(k, safe, sizeof safe, 64);
        for (int t = 0; t < 4; t++) {
            if (strcmp(k, names[t]) == 0) {
                which = t;
            }
        }
        if (which < 0) {
            return fail(c, "unknown key \"%s.%s\" (expected default, high, low or tech)", path,
                        safe);
        }
        if (given[which] != NULL) {
            return fail(c, "duplicate key \"%s.%s\"", path, safe);
        }
        given[which] = v->u.object.values[i];
        if (!YAJL_IS_OBJECT(given[which])) {
            char got[96];
            echo_json(NULL, given[which], got, sizeof got);
            return fail(c, "key \"%s.%s\": expected an object, got %s", path, safe, got);
        }
    }
    /* default first, whatever the order in the file; tiers override it per key */
    memset(&def, 0, sizeof def);
    pathf(root, sizeof root, "%s.default", path);
    if (apply_defaults(c, band_keys, BK__COUNT, &def, root) != 0) {
        return -1;
    }
    if (given[0] != NULL) {
        unsigned char seen[BK__COUNT] = {0};
        if (walk(c, band_keys, BK__COUNT, &def, seen, given[0], "", root) != 0 ||
            validate_bands(c, &def, seen, root) != 0) {
            return -1;
        }
    }
    for (int t = 0; t < 3; t++) {
        unsigned char seen[BK__COUNT] = {0};
        m->bands[t] = def;
        if (given[t + 1] == NULL) {
            continue;
        }
        pathf(root, sizeof root, "%s.%s", path, band_tiers[t]);
        if (walk(c, band_keys, BK__COUNT, &m->bands[t], seen, given[t + 1], "", root) != 0 ||
            validate_bands(c, &m->bands[t], seen, root) != 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_model(pctx_t *c, const cw_key_t *row, yajl_val v, cw_model_t *m,
                       const char *path) {
    unsigned char seen[N_MODEL_KEYS] = {0};
    cw_bands_t def;
    if (!YAJL_IS_OBJECT(v)) {
        return fail_type(c, row, path, v);
    }
    memset(m, 0, sizeof *m);
    memset(&def, 0, sizeof def);
    if (apply_defaults(c, model_keys, N_MODEL_KEYS, m, path) != 0 ||
        apply_defaults(c, band_keys, BK__COUNT, &def, "model.bands.default") != 0) {
        return -1;
    }
    for (int t = 0; t < 3; t++) {
        m->bands[t] = def;
    }
    if (walk(c, model_keys, N_MODEL_KEYS, m, seen, v, "", path) != 0 ||
        check_required(c, model_keys, N_MODEL_KEYS, seen, path) != 0) {
        return -1;
    }
    if (!(m->tier_high_arr > m->tier_low_arr)) {
        char lo[32];
        fmtnum(m->tier_low_arr, lo, sizeof lo);
        return fail(c, "key \"%s.tiers.high_arr\": must be greater than %s.tiers.low_arr (%s)",
                    path, path, lo);
    }
    return 0;
}

static int apply_json(pctx_t *c, const cw_key_t *row, void *base, yajl_val v, const char *path) {
    char where[CW_PATH_MAX + 112];
    char got[96];
    snprintf(where, sizeof where, "key \"%s\"", path);
    switch (row->type) {
    case KT_STRING:
        if (!YAJL_IS_STRING(v)) {
            return fail_expect_json(c, row, where, v);
        }
        return store_string(c, row, base, YAJL_GET_STRING(v), where);
    case KT_INT:
    case KT_INT64:
        if (!YAJL_IS_INTEGER(v)) {
            return fail_expect_json(c, row, where, v);
        }
        echo_json(row, v, got, sizeof got);
        return store_int(c, row, base, YAJL_GET_INTEGER(v), got, where);
    case KT_DOUBLE:
        if (!YAJL_IS_DOUBLE(v)) {
            return fail_expect_json(c, row, where, v);
        }
        echo_json(row, v, got, sizeof got);
        return store_double(c, row, base, YAJL_GET_DOUBLE(v), got, where);
    case KT_BOOL:
        if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) {
            return fail_expect_json(c, row, where, v);
        }
        *(int *)(void *)((char *)base + row->off) = YAJL_IS_TRUE(v) ? 1 : 0;
        return 0;
    case KT_ENUM:
        if (!YAJL_IS_STRING(v)) {
            return fail_expect_json(c, row, where, v);
        }
        return store_enum(c, row, base, YAJL_GET_STRING(v), where);
    case KT_TIMESTAMP:
        if (!YAJL_IS_STRING(v)) {
            return fail_expect_json(c, row, where, v);
        }
        return store_timestamp(c, row, base, YAJL_GET_STRING(v), where);
    case KT_KPROPS:
        return parse_kprops(c, v, (cw_conf_t *)base, path);
    case KT_MODEL:
        return parse_model(c, row, v, &((cw_conf_t *)base)->model, path);
    case KT_EVENTS:
        return parse_events(c, row, v, (unsigned *)(void *)((char *)base + row->off), path);
    case KT_STRLIST:
        return parse_strlist(c, row, v, base, path);
    case KT_SIGNALS:
        return parse_signals(c, row, v, (cw_model_t *)base, path);
    case KT_BANDS:
        return parse_bands(c, row, v, (cw_model_t *)base, path);
    }
    return fail(c, "%s: unsupported key type", where);
}

/* ------------------------------------------------------------------ */
/* JSON text, environment, whole-config checks                         */
/* ------------------------------------------------------------------ */

/*
 * Parse JSON text (comments allowed). On a syntax error, a second yajl pass
 * without callbacks finds the line and column; yajl's short message is used,
 * never its "verbose" excerpt of the text, which could show a password.
 */
static yajl_val parse_json(pctx_t *c, const char *text, const char *origin) {
    char tree_err[128] = "";
    size_t len = strlen(text);
    yajl_val root = yajl_tree_parse(text, tree_err, sizeof tree_err);
    if (root != NULL) {
        return root;
    }
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    if (h == NULL) {
        fail(c, "%s: cannot parse JSON: out of memory", origin);
        return NULL;
    }
    if (!yajl_config(h, yajl_allow_comments, 1)) {
        yajl_free(h);
        fail(c, "%s: cannot configure the JSON parser", origin);
        return NULL;
    }
    size_t off = len;
    yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
    if (st != yajl_status_ok) {
        off = yajl_get_bytes_consumed(h);
    } else {
        st = yajl_complete_parse(h); /* errors here are at the end of the text */
    }
    if (st == yajl_status_ok) {
        yajl_free(h);
        /* the tree builder failed although the text is well-formed: out of memory */
        fail(c, "%s: cannot parse JSON (%s)", origin, tree_err[0] ? "tree" : "out of memory");
        return NULL;
    }
    char msg[128] = "syntax error";
    unsigned char *e = yajl_get_error(h, 0, NULL, 0);
    if (e != NULL) {
        cw_strlcpy(msg, (const char *)e, sizeof msg);
        yajl_free_error(h, e);
    }
    yajl_free(h);
    for (char *p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = '\0';
            break;
        }
    }
    if (off > len) {
        off = len;
    }
    int line = 1;
    size_t col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    fail(c, "%s: invalid JSON at line %d, column %zu: %s", origin, line, col, msg);
    return NULL;
}

static void env_name(const cw_key_t *row, char *out, size_t size) {
    size_t o = (size_t)snprintf(out, size, "CW_");
    for (const char *p = row->name; *p && o + 1 < size; p++) {
        out[o++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    }
    out[o < size ? o : size - 1] = '\0';
}

static int apply_env(pctx_t *c, cw_conf_t *conf, unsigned char *seen) {
    for (size_t i = 0; i < N_CONF_KEYS; i++) {
        char name[CW_PATH_MAX], where[2 * CW_PATH_MAX + 48];
        if (conf_keys[i].flags & KF_NOENV) {
            continue;
        }
        env_name(&conf_keys[i], name, sizeof name);
        const char *val = getenv(name);
        if (val == NULL) {
            continue;
        }
        snprintf(where, sizeof where, "key \"%s\" (from environment variable %s)",
                 conf_keys[i].name, name);
        if (apply_text(c, &conf_keys[i], conf, val, where) != 0) {
            return -1;
        }
        seen[i] = 1;
    }
    return 0;
}

static int check_conf_required(pctx_t *c, const unsigned char *seen) {
    for (size_t i = 0; i < N_CONF_KEYS; i++) {
        if ((conf_keys[i].flags & KF_REQUIRED) && !seen[i]) {
            char name[CW_PATH_MAX];
            env_name(&conf_keys[i], name, sizeof name);
            return fail(c, "missing required key \"%s\" (set it in the file or with %s)",
                        conf_keys[i].name, name);
        }
    }
    return 0;
}

static int check_topics(pctx_t *c, const cw_conf_t *conf) {
    const struct {
        const char *key;
        const char *val;
    } t[] = {
        {"kafka.input_topic", conf->kafka_input_topic},
        {"kafka.alert_topic", conf->kafka_alert_topic},
        {"kafka.score_topic", conf->kafka_score_topic},
        {"kafka.dlq_topic", conf->kafka_dlq_topic},
    };
    for (size_t j = 1; j < sizeof t / sizeof t[0]; j++) {
        for (size_t i = 0; i < j; i++) {
            if (strcmp(t[i].val, t[j].val) == 0) {
                return fail(c,
                            "key \"%s\": topic \"%s\" is also %s; the input, alert, score and "
                            "dead-letter topics must all differ",
                            t[j].key, t[j].val, t[i].key);
            }
        }
    }
    return 0;
}

/* The embedded default model, {"model": {...}}, parsed into m. */
static int load_default_model(pctx_t *c, cw_model_t *m) {
    static const cw_key_t wrap[] = {
        {.type = KT_MODEL, .name = "model", .flags = KF_REQUIRED},
    };
    unsigned char seen[1] = {0};
    const char *saved = c->prefix;
    cw_conf_t *tmp = calloc(1, sizeof *tmp);
    int rc = -1;
    c->prefix = "default model (config/default-model.json): ";
    if (tmp == NULL) {
        fail(c, "out of memory");
    } else {
        yajl_val root = parse_json(c, cw_conf_default_model_json, "config/default-model.json");
        if (root != NULL) {
            if (!YAJL_IS_OBJECT(root)) {
                fail(c, "the top level must be a JSON object");
            } else if (walk(c, wrap, 1, tmp, seen, root, "", "") == 0 &&
                       check_required(c, wrap, 1, seen, "") == 0) {
                *m = tmp->model;
                rc = 0;
            }
            yajl_tree_free(root);
        }
        free(tmp);
    }
    c->prefix = saved;
    return rc;
}

static int derive_retention(const cw_model_t *m) {
    int r = 30; /* the explain windows need 30 days */
    for (int i = 0; i < m->n_signals; i++) {
        int span = m->signals[i].window_days + m->signals[i].baseline_days;
        if (span > r) {
            r = span;
        }
    }
    return r;
}

static cw_conf_t *conf_build(const char *text, const char *origin, char *errstr,
                             size_t errstr_size) {
    char dummy[8];
    unsigned char seen[N_CONF_KEYS] = {0};
    size_t model_idx = 0;
    int rc;
    if (errstr == NULL || errstr_size == 0) {
        errstr = dummy;
        errstr_size = sizeof dummy;
    }
    errstr[0] = '\0';
    pctx_t c = {.err = errstr, .errsz = errstr_size, .prefix = ""};
    cw_conf_t *conf = calloc(1, sizeof *conf);
    if (conf == NULL) {
        fail(&c, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < N_CONF_KEYS; i++) {
        if (conf_keys[i].type == KT_MODEL) {
            model_idx = i;
        }
    }
    rc = apply_defaults(&c, conf_keys, N_CONF_KEYS, conf, "");
    if (rc == 0 && text != NULL) {
        yajl_val root = parse_json(&c, text, origin);
        if (root == NULL) {
            rc = -1;
        } else if (!YAJL_IS_OBJECT(root)) {
            rc = fail(&c, "%s: the top level must be a JSON object", origin);
        } else {
            rc = walk(&c, conf_keys, N_CONF_KEYS, conf, seen, root, "", "");
        }
        yajl_tree_free(root); /* accepts NULL */
    }
    if (rc == 0) {
        rc = apply_env(&c, conf, seen);
    }
    if (rc == 0) {
        rc = check_conf_required(&c, seen);
    }
    if (rc == 0 && !seen[model_idx]) {
        rc = load_default_model(&c, &conf->model);
    }
    if (rc == 0) {
        rc = check_topics(&c, conf);
    }
    if (rc != 0) {
        free(conf);
        return NULL;
    }
    conf->retention_days = derive_retention(&conf->model);
    return conf;
}

cw_conf_t *cw_conf_parse(const char *json, char *errstr, size_t errstr_size) {
    if (json == NULL) {
        if (errstr != NULL && errstr_size > 0) {
            snprintf(errstr, errstr_size, "config: no JSON text");
        }
        return NULL;
    }
    return conf_build(json, "config", errstr, errstr_size);
}

cw_conf_t *cw_conf_load(const char *path, char *errstr, size_t errstr_size) {
    char dummy[8];
    if (errstr == NULL || errstr_size == 0) {
        errstr = dummy;
        errstr_size = sizeof dummy;
    }
    if (path == NULL) {
        return conf_build(NULL, "environment", errstr, errstr_size);
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    int oom = 0, too_big = 0;
    char *buf = malloc(cap);
    oom = buf == NULL;
    while (!oom && !too_big) {
        if (len + 1 >= cap) {
            if (cap >= CW_CONF_FILE_MAX) {
                too_big = 1;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                oom = 1;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) {
            break;
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (oom || too_big || rerr) {
        snprintf(errstr, errstr_size, "%s: %s", path,
                 rerr ? "read error" : (oom ? "out of memory" : "file too large"));
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(errstr, errstr_size, "%s: contains a NUL byte", path);
        free(buf);
        return NULL;
    }
    cw_conf_t *conf = conf_build(buf, path, errstr, errstr_size);
    free(buf);
    return conf;
}

void cw_conf_destroy(cw_conf_t *conf) {
    free(conf); /* plain struct: fixed arrays only */
}

/* ------------------------------------------------------------------ */
/* --help and docs/configuration.md                                    */
/* ------------------------------------------------------------------ */

static const char *type_name(const cw_key_t *row) {
    switch (row->type) {
    case KT_STRING:
        return "string";
    case KT_INT:
    case KT_INT64:
        return "integer";
    case KT_BOOL:
        return "boolean";
    case KT_ENUM:
        return "enum";
    case KT_DOUBLE:
        return "number";
    case KT_TIMESTAMP:
        return "timestamp";
    case KT_KPROPS:
    case KT_MODEL:
    case KT_BANDS:
        return "object";
    case KT_EVENTS:
        return "string or array";
    case KT_STRLIST:
        return "array of strings";
    case KT_SIGNALS:
        return "array of objects";
    }
    return "?";
}

/* What values are allowed, for docs and help (Markdown when md). */
static void describe_allowed(const cw_key_t *row, int md, char *out, size_t size) {
    char lo[32], hi[32];
    const char *q = md ? "`" : "";
    fmtnum(row->min, lo, sizeof lo);
    fmtnum(row->max, hi, sizeof hi);
    out[0] = '\0';
    switch (row->type) {
    case KT_INT:
    case KT_INT64:
    case KT_DOUBLE:
        snprintf(out, size, "%s%s .. %s", (row->flags & KF_MINEXCL) ? "> " : "", lo, hi);
        break;
    case KT_ENUM: {
        size_t o = 0;
        for (int i = 0; row->enums[i] != NULL && o < size; i++) {
            o +=
                (size_t)snprintf(out + o, size - o, "%s%s%s%s", i ? ", " : "", q, row->enums[i], q);
        }
        break;
    }
    case KT_BOOL:
        snprintf(out, size, "%strue%s, %sfalse%s", q, q, q, q);
        break;
    case KT_TIMESTAMP:
        snprintf(out, size, "RFC 3339");
        break;
    case KT_STRING:
        if (row->format != NULL) {
            snprintf(out, size, "%s", row->format);
        } else {
            snprintf(out, size, "up to %zu bytes", row->size - 1);
        }
        break;
    case KT_STRLIST:
        snprintf(out, size, "up to %.0f strings of 1..%zu bytes", row->max, row->size - 1);
        break;
    case KT_KPROPS:
        snprintf(out, size, "up to %d entries", CW_MAX_KPROPS);
        break;
    case KT_EVENTS:
    case KT_SIGNALS:
    case KT_BANDS:
    case KT_MODEL:
        break;
    }
}

static void describe_default(const cw_key_t *row, int md, char *out, size_t size) {
    const char *q = md ? "`" : "";
    if (row->flags & KF_REQUIRED) {
        snprintf(out, size, "%s", md ? "**required**" : "required");
    } else if (row->type == KT_KPROPS) {
        snprintf(out, size, "%s{}%s", q, q);
    } else if (row->type == KT_MODEL) {
        snprintf(out, size, "the default model");
    } else if (row->type == KT_BANDS) {
        snprintf(out, size, "see below");
    } else if (row->type == KT_STRLIST) {
        snprintf(out, size, "%s[]%s", q, q);
    } else if (row->def == NULL) {
        snprintf(out, size, "%s", md ? "—" : "-");
    } else if (row->type == KT_STRING || row->type == KT_ENUM || row->type == KT_TIMESTAMP) {
        snprintf(out, size, "%s\"%s\"%s", q, row->def, q);
    } else {
        snprintf(out, size, "%s%s%s", q, row->def, q);
    }
}

/* A Markdown table cell: '|' escaped. */
static void md_cell(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '|') {
            fputs("\\|", out);
        } else {
            fputc(*s, out);
        }
    }
}

static void md_key_table(FILE *out, const cw_key_t *tab, size_t n, const char *prefix,
                         int with_env) {
    fprintf(out, "| Key | Type | Default | Allowed | %sDescription |\n",
            with_env ? "Environment | " : "");
    fprintf(out, "|---|---|---|---|%s---|\n", with_env ? "---|" : "");
    for (size_t i = 0; i < n; i++) {
        const cw_key_t *row = &tab[i];
        char buf[CW_PATH_MAX];
        fprintf(out, "| `%s%s` | %s | ", prefix, row->name, type_name(row));
        describe_default(row, 1, buf, sizeof buf);
        md_cell(out, buf);
        fputs(" | ", out);
        describe_allowed(row, 1, buf, sizeof buf);
        md_cell(out, buf);
        fputs(" | ", out);
        if (with_env) {
            if (row->flags & KF_NOENV) {
                fputs("— | ", out);
            } else {
                env_name(row, buf, sizeof buf);
                fprintf(out, "`%s` | ", buf);
            }
        }
        md_cell(out, row->desc);
        fputs(" |\n", out);
    }
}

static void md_events(FILE *out, unsigned mask) {
    int first = 1;
    for (int t = 0; t < CW_EV__COUNT; t++) {
        if (mask & CW_EV_BIT(t)) {
            fprintf(out, "%s%s", first ? "" : ", ", ev_names[t]);
            first = 0;
        }
    }
}

static void md_default_model(FILE *out) {
    char err[512];
    pctx_t c = {.err = err, .errsz = sizeof err, .prefix = ""};
    cw_model_t *m = calloc(1, sizeof *m);
    if (m == NULL || load_default_model(&c, m) != 0) {
        fprintf(out, "(the default model could not be loaded: %s)\n", m ? err : "out of memory");
        free(m);
        return;
    }
    fputs("| Signal | Events | Aggregation | Window (days) | Normalisation | Weight | "
          "Direction | Why |\n",
          out);
    fputs("|---|---|---|---|---|---|---|---|\n", out);
    for (int i = 0; i < m->n_signals; i++) {
        const cw_signal_def_t *s = &m->signals[i];
        char a[32], b[32];
        fprintf(out, "| `%s` | ", s->name);
        md_events(out, s->types);
        if (s->feature[0] != '\0') {
            fprintf(out, " (feature `%s`)", s->feature);
        }
        fprintf(out, " | %s | %d", agg_names[s->agg], s->window_days);
        if (s->baseline_days > 0) {
            fprintf(out, " vs the %d before", s->baseline_days);
        }
        fprintf(out, " | %s (", norm_names[s->norm]);
        if (s->norm == CW_NORM_RANGE) {
            fmtnum(s->range_min, a, sizeof a);
            fmtnum(s->range_max, b, sizeof b);
            fprintf(out, "%s..%s", a, b);
        } else {
            fmtnum(s->target, a, sizeof a);
            fprintf(out, "target %s", a);
        }
        if (s->min_baseline > 0) {
            fmtnum(s->min_baseline, a, sizeof a);
            fprintf(out, ", min baseline %s", a);
        }
        if (s->drop_share > 0) {
            fmtnum(s->drop_share, a, sizeof a);
            fprintf(out, ", drop alert at %s", a);
        }
        fputs(")", out);
        fmtnum(s->weight, a, sizeof a);
        fprintf(out, " | %s | %s | ", a, s->direction < 0 ? "down" : "up");
        md_cell(out, s->description);
        fputs(" |\n", out);
    }
    fputs("\nBands of the default model:\n\n", out);
    fputs("| Tier | danger_enter | danger_exit | caution_enter | caution_exit |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (int t = 0; t < 3; t++) {
        char v[4][32];
        fmtnum(m->bands[t].danger_enter, v[0], sizeof v[0]);
        fmtnum(m->bands[t].danger_exit, v[1], sizeof v[1]);
        fmtnum(m->bands[t].caution_enter, v[2], sizeof v[2]);
        fmtnum(m->bands[t].caution_exit, v[3], sizeof v[3]);
        fprintf(out, "| %s | %s | %s | %s | %s |\n", band_tiers[t], v[0], v[1], v[2], v[3]);
    }
    {
        char hi[32], lo[32], sd[32];
        fmtnum(m->tier_high_arr, hi, sizeof hi);
        fmtnum(m->tier_low_arr, lo, sizeof lo);
        fmtnum(m->score_drop_share, sd, sizeof sd);
        fprintf(out,
                "\nTiers: high touch at ARR >= %s, low touch at ARR >= %s, tech touch below. "
                "Phases: onboarding %d days, renewal %d days before the renewal date. "
                "Key features:",
                hi, lo, m->onboarding_days, m->renewal_days);
        for (int i = 0; i < m->n_key_features; i++) {
            fprintf(out, "%s `%s`", i ? "," : "", m->key_features[i]);
        }
        fprintf(out,
                ". Alerts: inactive after %d days, cooldown %d days, warm-up %d days, "
                "score_drop_share %s, cancellation_forces_danger %s. Retention: %d days.\n",
                m->inactive_days, m->cooldown_days, m->warmup_days, sd,
                m->cancellation_forces_danger ? "true" : "false", derive_retention(m));
    }
    free(m);
}

void cw_conf_write_docs(FILE *out) {
    fputs("<!-- Generated by cw_conf_write_docs() from the key tables in config/cw_conf.c and\n"
          "     from config/default-model.json. Do not edit by hand: regenerate with\n"
          "     CW_UPDATE_DOCS=1 build/tests/test_conf  (tests/unit/test_conf.c checks that\n"
          "     this file is current). -->\n\n",
          out);
    fputs("# churnwatch configuration\n\n"
          "churnwatch reads one JSON file (`churnwatch run --config FILE`; check it with\n"
          "`churnwatch check-config FILE`). `/* */` and `//` comments are allowed. Keys are\n"
          "nested objects: `kafka.brokers` is `{\"kafka\": {\"brokers\": ...}}`. Every key is\n"
          "validated before any client is created; an unknown key, a wrong type or a value\n"
          "out of range stops the program with a message naming the full key, e.g.\n"
          "`unknown key \"kafka.brokrs\" (did you mean \"kafka.brokers\"?)` or\n"
          "`key \"kafka.batch_size\": expected integer in [1,100000], got \"abc\"`.\n\n"
          "Every scalar key can be overridden by an environment variable named `CW_` plus the\n"
          "key in upper case with dots replaced by underscores (`CW_KAFKA_BROKERS`,\n"
          "`CW_REDIS_URL`, `CW_REDIS_PASSWORD`, `CW_HTTP_LISTEN`); the environment wins over\n"
          "the file. Required keys may come from either.\n\n"
          "A minimal file, which runs the shipped default model:\n\n"
          "```json\n"
          "{\n"
          "  \"kafka\": { \"brokers\": \"127.0.0.1:9092\", \"input_topic\": \"events\" },\n"
          "  \"redis\": { \"url\": \"tcp://127.0.0.1:6379\" }\n"
          "}\n"
          "```\n\n"
          "## Keys\n\n",
          out);
    md_key_table(out, conf_keys, N_CONF_KEYS, "", 1);
    fputs("\nThe input, alert, score and dead-letter topics must all differ. The value of\n"
          "`redis.password` is never printed, not even in error messages.\n\n"
          "Derived, not a key: `retention_days`, how long per-day state is kept, is the\n"
          "longest `window_days + baseline_days` over the model's signals, and at least 30\n"
          "(the windows `explain` reports).\n\n"
          "## kafka.properties\n\n"
          "An object of librdkafka properties passed verbatim to the librdkafka clients,\n"
          "e.g. `{\"security.protocol\": \"ssl\", \"socket.timeout.ms\": 30000}`.\n"
          "Numbers and booleans are turned into their text. librdkafka itself checks the\n"
          "names and values when the clients are created and its message is reported.\n"
          "`bootstrap.servers`, `metadata.broker.list` and `group.id` are refused: use\n"
          "`kafka.brokers` and `kafka.group_id`. Values are never printed.\n\n"
          "They are applied over churnwatch's own settings. Consumer: offsets are stored\n"
          "only once a batch is durable (`enable.auto.offset.store` false, auto-commit every\n"
          "1000 ms), `auto.offset.reset` earliest, `fetch.wait.max.ms` 50,\n"
          "`session.timeout.ms` 10000 (bounds a stop with the broker gone), a bounded\n"
          "prefetch (`queued.max.messages.kbytes` 2048, `fetch.max.bytes` 1048576), kept\n"
          "filled by the fetch waker (`kafka.fetch_wake_ms`: librdkafka 2.0.2 fetches\n"
          "again after a full prefetch queue only when its broker thread wakes up, up to\n"
          "1 s later; see bench/README.md). Producer: `enable.idempotence` true,\n"
          "`message.timeout.ms` 0 (retried until delivered), `linger.ms` 5 and a bounded queue\n"
          "(`queue.buffering.max.kbytes` 4096). Overriding the offset settings gives up the\n"
          "at-least-once guarantee.\n\n"
          "## Model\n\n"
          "`model` holds the health-score model. Without it, churnwatch runs the shipped\n"
          "default model, `config/default-model.json` (compiled in; its comments explain\n"
          "each choice). A `model` in the file replaces the default model completely; keys\n"
          "it omits take the defaults below (so a model without `bands` uses the default\n"
          "band lines for every tier, and one without `key_features` has no\n"
          "onboarding_stalled check).\n\n"
          "The score is `100 * sum(weight * normalised) / sum(weight)` over the signals that\n"
          "are not missing, where each signal's normalised value is in [0,1] (for\n"
          "`direction: \"down\"`, 1 minus it).\n\n",
          out);
    md_key_table(out, model_keys, N_MODEL_KEYS, "model.", 0);
    fputs("\n### model.signals[]\n\n"
          "1 to 16 objects with these keys:\n\n",
          out);
    md_key_table(out, signal_keys, SK__COUNT, "model.signals[].", 0);
    fputs("\nRules, checked for every signal:\n\n"
          "- `name` is unique; at least one signal has `weight > 0`.\n"
          "- `distinct_features` reads `events: [\"usage\"]` only and takes no `feature`.\n"
          "- A `feature` filter needs `events: [\"usage\"]`.\n"
          "- `distinct_users` and `distinct_features` cover at most 52 days:\n"
          "  `window_days + baseline_days <= 52`.\n"
          "- `trend` needs `baseline_days`, is not available for `mean`, and is the only\n"
          "  normalisation that takes `baseline_days`, `min_baseline` and `drop_share`.\n"
          "- `target`, `seats` and `trend` need `target > 0`; `range` needs `min < max` and\n"
          "  takes no `target`.\n"
          "- `seats` is for `distinct_users` or `count`.\n"
          "- `window_days + baseline_days <= 400`.\n\n"
          "### model.bands\n\n"
          "`{\"default\": {...}, \"high\": {...}, \"low\": {...}, \"tech\": {...}}`; each tier\n"
          "starts from `default` and overrides it key by key. Hysteresis: an account enters a\n"
          "band below its `_enter` line and leaves it only at or above its `_exit` line. Each\n"
          "tier needs `danger_enter < danger_exit`, `danger_enter < caution_enter` and\n"
          "`caution_enter < caution_exit`.\n\n",
          out);
    md_key_table(out, band_keys, BK__COUNT, "model.bands.<tier>.", 0);
    fputs("\n### The default model\n\n", out);
    md_default_model(out);
}

void cw_conf_write_help(FILE *out) {
    fputs("Configuration keys (JSON file, comments allowed; the environment variable shown\n"
          "overrides the file). See docs/configuration.md for the model keys.\n\n",
          out);
    for (size_t i = 0; i < N_CONF_KEYS; i++) {
        const cw_key_t *row = &conf_keys[i];
        char def[CW_PATH_MAX], allowed[CW_PATH_MAX], env[CW_PATH_MAX];
        describe_default(row, 0, def, sizeof def);
        describe_allowed(row, 0, allowed, sizeof allowed);
        if (row->flags & KF_NOENV) {
            env[0] = '\0';
        } else {
            env_name(row, env, sizeof env);
        }
        fprintf(out, "  %-32s %s, %s%s%s%s%s%s\n      %s\n", row->name, type_name(row),
                (row->flags & KF_REQUIRED) ? "" : "default ", def, allowed[0] ? ", " : "", allowed,
                env[0] ? ", env " : "", env, row->desc);
    }
}
