/*
 * cw_gen.c — `churnwatch gen`, a deterministic traffic generator for
 * tests, benchmarks and demos.
 *
 * Model. There are N accounts over D days ("slots" of 24 h ending at
 * --end). Each account gets attributes drawn from its own random stream:
 * ARR log-uniform in 100,000..20,000,000 yen (so all three touch tiers
 * occur), seats derived from ARR (5..200), a plan, a renewal date (about a
 * third within 90 days of --end), a pool of regular users (60-90% of
 * seats) and 3-8 features it uses. Activity is proportional to seats and
 * averages --events-per-day events per account and day, more on weekdays
 * (JST) than at weekends, mostly in JST business hours; --zipf S skews
 * activity further across accounts for benchmarks. A day's events are
 * roughly 45% logins, 50% usage (count 1..20), 2% support tickets and 1%
 * NPS answers. Profiles shape that baseline:
 *
 *   steady   from day 0; uses "reports" and "integrations" on its first day
 *   decline  like steady until a change day X in [0.55 D, 0.75 D], then 20-30%
 *            of the activity from a smaller group of users, lower NPS
 *   silent   like steady until X, then nothing at all
 *   stalled  first active on a day in [0, D-35] (day 0 when D < 40), logs in
 *            and works normally but never uses the key features
 *   cancel   steady, plus one cancellation_notice on day X
 *
 * Profiles are assigned by exact quota (largest remainder) and shuffled,
 * so shares are as asked up to rounding. Every account has an "account"
 * event on its first day. One account in eight sends epoch-millisecond
 * timestamps instead of RFC 3339 strings, as some real SDKs do.
 *
 * Generation runs day by day: each account's day comes from a random
 * stream seeded by (seed, account, day), the day's events are sorted by
 * time, numbered (event ids "e-<seed>-<n>") and written, so memory is one
 * day of events and output is sorted overall. After each valid event a
 * malformed line follows with probability share/(1-share), derived from it;
 * kinds rotate evenly: not_json (truncated), missing_account_id,
 * missing_ts, wrong_type (count as a string), oversized (> 65536 bytes),
 * absurd_ts_1970, absurd_ts_2999, long_event_id. The PRNG is our own
 * (splitmix64 seeding xoshiro256**), so output is byte-identical for the
 * same seed and arguments on any libc.
 *
 * Outputs: JSON lines to --out (default stdout) and/or straight to Kafka
 * (--brokers/--topic, key = account id, delivery awaited); --truth gets one
 * line per account and a summary line; a one-line JSON summary goes to
 * stderr. --live first writes the history ending now, then keeps emitting
 * events stamped with the wall clock at --rate per second (the accounts in
 * their end-of-window state) until --duration passes or SIGINT/SIGTERM.
 */
#include "cw_gen.h"

#include "cw_buf.h"
#include "cw_common.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEN_COMP "gen"
#define GEN_HOUR_MS INT64_C(3600000)
#define GEN_MIN_MS INT64_C(60000)
#define GEN_OVERSIZE_PAD 66000 /* bytes of padding in an oversized line */
#define GEN_LONG_ID_LEN 200    /* event_id length of a long_event_id line */

/* ---- random numbers: splitmix64 seeding xoshiro256** ---- */

typedef struct gen_rng {
    uint64_t s[4];
} gen_rng_t;

static uint64_t gen_splitmix64(uint64_t *x) {
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* An independent stream for (seed, a, b, c): each component is folded in
 * through splitmix64 so nearby tuples give unrelated streams. */
static void gen_rng_seed(gen_rng_t *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = seed;
    uint64_t h = gen_splitmix64(&x);
    x = h ^ a;
    h = gen_splitmix64(&x);
    x = h ^ b;
    h = gen_splitmix64(&x);
    x = h ^ c;
    for (int i = 0; i < 4; i++) {
        r->s[i] = gen_splitmix64(&x);
    }
}

static inline uint64_t gen_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t gen_rng_next(gen_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = gen_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = gen_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double gen_unif(gen_rng_t *r) {
    return (double)(gen_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [lo, hi). */
static double gen_unif_range(gen_rng_t *r, double lo, double hi) {
    return lo + (hi - lo) * gen_unif(r);
}

/* Uniform integer in [0, n), unbiased (rejection); n > 0. */
static uint64_t gen_below(gen_rng_t *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = gen_rng_next(r);
    } while (x >= lim);
    return x % n;
}

/* Uniform integer in [lo, hi]; hi >= lo. */
static int64_t gen_int(gen_rng_t *r, int64_t lo, int64_t hi) {
    return lo + (int64_t)gen_below(r, (uint64_t)(hi - lo) + 1);
}

static double gen_normal(gen_rng_t *r) {
    double u1 = 1.0 - gen_unif(r); /* (0, 1] */
    double u2 = gen_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static int64_t gen_poisson(gen_rng_t *r, double lambda) {
    if (lambda <= 0) {
        return 0;
    }
    if (lambda < 30) {
        double limit = exp(-lambda);
        double p = 1.0;
        int64_t k = -1;
        do {
            k++;
            p *= gen_unif(r);
        } while (p > limit);
        return k;
    }
    double x = lambda + sqrt(lambda) * gen_normal(r);
    return x < 0 ? 0 : (int64_t)(x + 0.5);
}

/* ---- domain tables ---- */

typedef enum {
    GEN_P_STEADY = 0,
    GEN_P_DECLINE,
    GEN_P_SILENT,
    GEN_P_STALLED,
    GEN_P_CANCEL,
    GEN_P__COUNT
} gen_profile_t;

static const char *const gen_profile_names[GEN_P__COUNT] = {"steady", "decline", "silent",
                                                            "stalled", "cancel"};
static const double gen_profile_default[GEN_P__COUNT] = {0.70, 0.10, 0.08, 0.07, 0.05};

/* Event types, same names as SPEC §2. */
typedef enum {
    GEN_T_LOGIN = 0,
    GEN_T_USAGE,
    GEN_T_ACCOUNT,
    GEN_T_SUPPORT,
    GEN_T_NPS,
    GEN_T_CANCEL,
    GEN_T__COUNT
} gen_type_t;

static const char *const gen_type_names[GEN_T__COUNT] = {
    "login", "usage", "account", "support_ticket", "nps", "cancellation_notice"};

/* Share of an account-day's events per type (login, usage, -, support, nps). */
#define GEN_MIX_LOGIN 0.45
#define GEN_MIX_USAGE 0.50
#define GEN_MIX_SUPPORT 0.02
#define GEN_MIX_NPS 0.012

typedef enum {
    GEN_M_NOT_JSON = 0,
    GEN_M_MISSING_ACCOUNT,
    GEN_M_MISSING_TS,
    GEN_M_WRONG_TYPE,
    GEN_M_OVERSIZED,
    GEN_M_TS_1970,
    GEN_M_TS_2999,
    GEN_M_LONG_ID,
    GEN_M__COUNT
} gen_malformed_t;

static const char *const gen_malformed_names[GEN_M__COUNT] = {
    "not_json",  "missing_account_id", "missing_ts",     "wrong_type",
    "oversized", "absurd_ts_1970",     "absurd_ts_2999", "long_event_id"};

/* Features 0 and 1 are the key features of the default model. */
static const char *const gen_features[] = {"reports",   "integrations", "dashboards", "export",
                                           "workflows", "api",          "alerts",     "search",
                                           "sharing",   "billing",      "forms",      "calendar"};
#define GEN_N_FEATURES ((int)(sizeof(gen_features) / sizeof(gen_features[0])))
#define GEN_N_KEY_FEATURES 2
#define GEN_MAX_ACCT_FEATURES 8

/* ---- accounts and events ---- */

typedef struct gen_acct {
    gen_profile_t profile;
    int first_day;       /* first active day (slot index) */
    int change_day;      /* decline/silent/cancel: day X; else -1 */
    int64_t change_ms;   /* start of day X (cancel: the notice time); else -1 */
    int64_t arr;         /* yen */
    int seats;           /* 5..200 */
    int pool;            /* regular users (1..pool) */
    int pool_after;      /* decline: regular users after X */
    double after_factor; /* decline: activity multiplier after X */
    double weight;       /* activity weight, mean 1 over all accounts */
    int64_t renewal_ms;  /* renewal date (UTC midnight) */
    int epoch_ts;        /* 1: this account's SDK sends epoch-ms timestamps */
    int n_features;
    uint8_t features[GEN_MAX_ACCT_FEATURES]; /* indexes into gen_features */
    double feat_cum[GEN_MAX_ACCT_FEATURES];  /* cumulative pick weights, last = 1 */
} gen_acct_t;

typedef struct gen_ev {
    int64_t ts;      /* epoch ms */
    uint32_t acct;   /* account index */
    uint32_t seq;    /* creation order within the account-day (total sort order) */
    uint16_t user;   /* user number (1-based), 0 = none */
    uint8_t type;    /* gen_type_t */
    uint8_t feature; /* usage: index into gen_features */
    uint16_t val;    /* usage count, nps score */
} gen_ev_t;

typedef struct gen_vec {
    gen_ev_t *v;
    size_t n, cap;
} gen_vec_t;

/* ---- options ---- */

typedef struct gen_opts {
    uint64_t seed;
    long accounts;
    int days;
    int64_t end_ms;
    int end_given;
    double events_per_day;
    double malformed_share;
    double zipf;
    const char *out_path;
    const char *truth_path;
    const char *brokers;
    const char *topic;
    int live;
    double rate;
    double duration;
    double shares[GEN_P__COUNT];
} gen_opts_t;

/* ---- run state ---- */

typedef struct gen_kafka {
    rd_kafka_t *rk;
    char topic[256];
    size_t produced;
    size_t delivered; /* updated by the delivery callback */
    size_t failed;
} gen_kafka_t;

typedef struct gen {
    gen_opts_t o;
    gen_acct_t *accts; /* o.accounts entries */
    int64_t start_ms;  /* start of slot 0 */
    FILE *out;         /* NULL when only producing to Kafka */
    int out_is_stdout;
    gen_kafka_t kafka; /* kafka.rk NULL when not producing */
    gen_rng_t mal_rng; /* decides where malformed lines go */
    uint64_t next_id;  /* next event number */
    size_t profile_count[GEN_P__COUNT];
    size_t type_count[GEN_T__COUNT];
    size_t mal_count[GEN_M__COUNT];
    size_t mal_total;
    size_t live_events;
    cw_buf_t line; /* the line being rendered (reused) */
    cw_buf_t aux;  /* scratch */
    int write_error;
} gen_t;

static volatile sig_atomic_t gen_stop_signal = 0;

static void gen_on_signal(int sig) {
    gen_stop_signal = sig;
}

/* ---- option parsing ---- */

static void gen_usage(FILE *out) {
    fputs("usage: churnwatch gen [options]\n"
          "\n"
          "Writes realistic, deterministic B2B SaaS usage events as JSON lines.\n"
          "\n"
          "  --seed S              random seed (default 1); same seed+args = same bytes\n"
          "  --accounts N          number of accounts (default 1000)\n"
          "  --days D              days of history ending at --end (default 30)\n"
          "  --end TIME            RFC 3339 time, YYYY-MM-DD or \"now\" (default: today 00:00Z)\n"
          "  --events-per-day F    average events per account and day (default 4.0);\n"
          "                        bigger accounts (more seats) are more active\n"
          "  --malformed-share X   share of malformed lines, 0..0.5 (default 0.01)\n"
          "  --zipf S              extra Zipf skew of activity across accounts (default 0)\n"
          "  --profiles LIST       profile shares (default\n"
          "                        steady=0.7,decline=0.1,silent=0.08,stalled=0.07,cancel=0.05)\n"
          "  --out FILE            write events here (default stdout unless --brokers)\n"
          "  --truth FILE          write per-account ground truth and a summary here\n"
          "  --brokers B --topic T produce to Kafka (key = account id), wait for delivery\n"
          "  --live                after the history, keep emitting events stamped now\n"
          "  --rate EV/S           live event rate (default 50)\n"
          "  --duration SECONDS    live run time (default 0 = until SIGINT/SIGTERM)\n"
          "  --help                this text\n"
          "\n"
          "Profiles: steady; decline (activity drops to 20-30% at a day in [0.55D,0.75D]);\n"
          "silent (stops at that day); stalled (never uses reports/integrations);\n"
          "cancel (steady + a cancellation_notice). Malformed kinds: not_json,\n"
          "missing_account_id, missing_ts, wrong_type, oversized, absurd_ts_1970,\n"
          "absurd_ts_2999, long_event_id. A JSON summary line goes to stderr.\n",
          out);
}

static int gen_opt(int argc, char **argv, int *i, const char *name, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) {
        return 0;
    }
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') {
        return 0;
    }
    if (*i + 1 >= argc) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "option %s needs a value", name);
        return -1;
    }
    (*i)++;
    *val = argv[*i];
    return 1;
}

static int gen_parse_double(const char *name, const char *s, double lo, double hi, double *out) {
    char *end = NULL;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "%s must be a number in [%g, %g], not '%s'", name, lo, hi,
               s);
        return -1;
    }
    *out = v;
    return 0;
}

static int gen_parse_long(const char *name, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "%s must be an integer in [%ld, %ld], not '%s'", name, lo,
               hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int gen_parse_profiles(const char *s, double shares[GEN_P__COUNT]) {
    double sum = 0;
    const char *p = s;
    for (int k = 0; k < GEN_P__COUNT; k++) {
        shares[k] = 0;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char num[64];
        int found = -1;
        double v;
        if (!eq || (size_t)(p + len - eq - 1) >= sizeof(num)) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP, "--profiles: expected name=share, got '%.*s'", (int)len,
                   p);
            return -1;
        }
        for (int k = 0; k < GEN_P__COUNT; k++) {
            if (strlen(gen_profile_names[k]) == (size_t)(eq - p) &&
                memcmp(gen_profile_names[k], p, (size_t)(eq - p)) == 0) {
                found = k;
            }
        }
        if (found < 0) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP,
                   "--profiles: unknown profile '%.*s' (steady, decline, silent, stalled, cancel)",
                   (int)(eq - p), p);
            return -1;
        }
        memcpy(num, eq + 1, (size_t)(p + len - eq - 1));
        num[p + len - eq - 1] = '\0';
        if (gen_parse_double("--profiles share", num, 0, 1e9, &v) != 0) {
            return -1;
        }
        shares[found] = v;
        sum += v;
        p = comma ? comma + 1 : p + len;
    }
    if (!(sum > 0)) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "--profiles: shares must add up to more than 0");
        return -1;
    }
    for (int k = 0; k < GEN_P__COUNT; k++) {
        shares[k] /= sum;
    }
    return 0;
}

static int gen_parse_time(const char *s, int64_t *ms) {
    char buf[64];
    if (strcmp(s, "now") == 0) {
        *ms = cw_time_now_ms();
        return 0;
    }
    if (strlen(s) == 10) { /* YYYY-MM-DD */
        snprintf(buf, sizeof(buf), "%sT00:00:00Z", s);
        s = buf;
    }
    if (cw_time_parse_rfc3339(s, strlen(s), ms) != 0) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "--end must be RFC 3339, YYYY-MM-DD or \"now\", not '%s'",
               s);
        return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int gen_parse(int argc, char **argv, gen_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->seed = 1;
    o->accounts = 1000;
    o->days = 30;
    o->events_per_day = 4.0;
    o->malformed_share = 0.01;
    o->rate = 50;
    memcpy(o->shares, gen_profile_default, sizeof(o->shares));

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        long l;
        int r;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            gen_usage(stdout);
            return 1;
        }
        if (strcmp(argv[i], "--live") == 0) {
            o->live = 1;
            continue;
        }
#define GEN_OPT(name)                                                                              \
    if ((r = gen_opt(argc, argv, &i, name, &v)) < 0) {                                             \
        return -1;                                                                                 \
    } else if (r > 0)
        GEN_OPT("--seed") {
            char *end = NULL;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || v[0] == '-') {
                CW_LOG(CW_LOG_ERROR, GEN_COMP, "--seed must be an unsigned integer, not '%s'", v);
                return -1;
            }
            continue;
        }
        GEN_OPT("--accounts") {
            if (gen_parse_long("--accounts", v, 1, 10000000, &o->accounts) != 0) {
                return -1;
            }
            continue;
        }
        GEN_OPT("--days") {
            if (gen_parse_long("--days", v, 0, 3650, &l) != 0) {
                return -1;
            }
            o->days = (int)l;
            continue;
        }
        GEN_OPT("--end") {
            if (gen_parse_time(v, &o->end_ms) != 0) {
                return -1;
            }
            o->end_given = 1;
            continue;
        }
        GEN_OPT("--events-per-day") {
            if (gen_parse_double("--events-per-day", v, 1e-6, 1e6, &o->events_per_day) != 0) {
                return -1;
            }
            continue;
        }
        GEN_OPT("--malformed-share") {
            if (gen_parse_double("--malformed-share", v, 0, 0.5, &o->malformed_share) != 0) {
                return -1;
            }
            continue;
        }
        GEN_OPT("--zipf") {
            if (gen_parse_double("--zipf", v, 0, 5, &o->zipf) != 0) {
                return -1;
            }
            continue;
        }
        GEN_OPT("--profiles") {
            if (gen_parse_profiles(v, o->shares) != 0) {
                return -1;
            }
            continue;
        }
        GEN_OPT("--out") {
            o->out_path = v;
            continue;
        }
        GEN_OPT("--truth") {
            o->truth_path = v;
            continue;
        }
        GEN_OPT("--brokers") {
            o->brokers = v;
            continue;
        }
        GEN_OPT("--topic") {
            o->topic = v;
            continue;
        }
        GEN_OPT("--rate") {
            if (gen_parse_double("--rate", v, 1e-3, 1e7, &o->rate) != 0) {
                return -1;
            }
            continue;
        }
        GEN_OPT("--duration") {
            if (gen_parse_double("--duration", v, 0, 1e9, &o->duration) != 0) {
                return -1;
            }
            continue;
        }
#undef GEN_OPT
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "unknown argument '%s' (see gen --help)", argv[i]);
        return -1;
    }
    if ((o->brokers == NULL) != (o->topic == NULL)) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "--brokers and --topic go together");
        return -1;
    }
    if (o->topic && (strlen(o->topic) == 0 || strlen(o->topic) > 249)) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "--topic must be 1..249 characters");
        return -1;
    }
    if (o->days == 0 && !o->live) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "--days 0 makes sense only with --live");
        return -1;
    }
    if (!o->end_given) {
        int64_t now = cw_time_now_ms();
        /* Live history ends now; a batch ends at today's UTC midnight. */
        o->end_ms = o->live ? now : cw_time_day(now) * CW_MS_PER_DAY;
    }
    return 0;
}

/* ---- account setup ---- */

static int gen_change_day(gen_rng_t *r, int days) {
    int lo = (int)ceil(days * 0.55);
    int hi = (int)floor(days * 0.75);
    if (hi < lo) {
        hi = lo;
    }
    if (hi > days - 1) {
        hi = days - 1;
    }
    if (lo > hi) {
        lo = hi;
    }
    if (lo < 0) {
        lo = hi = 0;
    }
    return (int)gen_int(r, lo, hi);
}

/* A time of day: three quarters in JST business hours (00:00-10:00 UTC). */
static int64_t gen_time_of_day(gen_rng_t *r) {
    if (gen_unif(r) < 0.75) {
        return (int64_t)gen_below(r, (uint64_t)(10 * GEN_HOUR_MS));
    }
    return (int64_t)gen_below(r, (uint64_t)CW_MS_PER_DAY);
}

static int64_t gen_slot_ms(const gen_t *g, int day) {
    return g->start_ms + (int64_t)day * CW_MS_PER_DAY;
}

static int gen_setup_accounts(gen_t *g) {
    const gen_opts_t *o = &g->o;
    size_t n = (size_t)o->accounts;
    uint8_t *prof = malloc(n);
    uint32_t *perm = NULL;
    size_t quota[GEN_P__COUNT];
    double rem[GEN_P__COUNT];
    size_t assigned = 0;
    gen_rng_t r;
    double wsum = 0;

    g->accts = calloc(n, sizeof(*g->accts));
    if (!prof || !g->accts) {
        free(prof);
        return -1;
    }

    /* Exact quotas by largest remainder, then a seeded shuffle. */
    for (int k = 0; k < GEN_P__COUNT; k++) {
        double q = o->shares[k] * (double)n;
        quota[k] = (size_t)floor(q);
        rem[k] = q - floor(q);
        assigned += quota[k];
    }
    while (assigned < n) {
        int best = 0;
        for (int k = 1; k < GEN_P__COUNT; k++) {
            if (rem[k] > rem[best]) {
                best = k;
            }
        }
        quota[best]++;
        rem[best] = -1;
        assigned++;
    }
    for (int k = 0, pos = 0; k < GEN_P__COUNT; k++) {
        for (size_t j = 0; j < quota[k]; j++) {
            prof[pos++] = (uint8_t)k;
        }
    }
    gen_rng_seed(&r, o->seed, 0, 0, 1);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)gen_below(&r, i + 1);
        uint8_t t = prof[i];
        prof[i] = prof[j];
        prof[j] = t;
    }

    for (size_t i = 0; i < n; i++) {
        gen_acct_t *a = &g->accts[i];
        double share, fw[GEN_N_FEATURES];
        int avail[GEN_N_FEATURES], n_avail = 0, k;

        gen_rng_seed(&r, o->seed, i + 1, 0, 7);
        a->profile = (gen_profile_t)prof[i];
        g->profile_count[a->profile]++;
        a->arr = (int64_t)llround(exp(gen_unif_range(&r, log(1e5), log(2e7))) / 1000.0) * 1000;
        a->seats = (int)llround((double)a->arr / gen_unif_range(&r, 25000, 120000));
        a->seats = a->seats < 5 ? 5 : a->seats > 200 ? 200 : a->seats;
        share = gen_unif_range(&r, 0.6, 0.9);
        a->pool = (int)llround(a->seats * share);
        a->pool = a->pool < 1 ? 1 : a->pool;
        a->pool_after = (int)llround(a->pool * gen_unif_range(&r, 0.3, 0.5));
        a->pool_after = a->pool_after < 1 ? 1 : a->pool_after;
        a->after_factor = gen_unif_range(&r, 0.2, 0.3);
        a->epoch_ts = gen_below(&r, 8) == 0;
        {
            int64_t end_day = cw_time_day(o->end_ms);
            int64_t off = gen_unif(&r) < 0.35 ? gen_int(&r, 1, 90) : gen_int(&r, 91, 365);
            a->renewal_ms = (end_day + off) * CW_MS_PER_DAY;
        }

        a->first_day = 0;
        a->change_day = -1;
        a->change_ms = -1;
        if (a->profile == GEN_P_STALLED && o->days >= 40) {
            a->first_day = (int)gen_int(&r, 0, o->days - 35);
        }
        if ((a->profile == GEN_P_DECLINE || a->profile == GEN_P_SILENT ||
             a->profile == GEN_P_CANCEL) &&
            o->days > 0) {
            a->change_day = gen_change_day(&r, o->days);
            a->change_ms = gen_slot_ms(g, a->change_day);
            if (a->profile == GEN_P_CANCEL) {
                a->change_ms += gen_time_of_day(&r);
            }
        }

        /* Features: 3..8; the key ones always, except for stalled accounts. */
        a->n_features = (int)gen_int(&r, 3, GEN_MAX_ACCT_FEATURES);
        k = 0;
        if (a->profile != GEN_P_STALLED) {
            for (; k < GEN_N_KEY_FEATURES; k++) {
                a->features[k] = (uint8_t)k;
                fw[k] = gen_unif_range(&r, 0.75, 3.0);
            }
        }
        for (int f = GEN_N_KEY_FEATURES; f < GEN_N_FEATURES; f++) {
            avail[n_avail++] = f;
        }
        for (; k < a->n_features; k++) {
            int j = (int)gen_below(&r, (uint64_t)n_avail);
            a->features[k] = (uint8_t)avail[j];
            avail[j] = avail[--n_avail];
            fw[k] = gen_unif_range(&r, 0.5, 2.0);
        }
        {
            double s = 0, c = 0;
            for (k = 0; k < a->n_features; k++) {
                s += fw[k];
            }
            for (k = 0; k < a->n_features; k++) {
                c += fw[k] / s;
                a->feat_cum[k] = c;
            }
            a->feat_cum[a->n_features - 1] = 1.0;
        }
        a->weight = a->seats;
    }

    /* Optional Zipf skew over a seeded ranking of the accounts. */
    if (o->zipf > 0) {
        perm = malloc(n * sizeof(*perm));
        if (!perm) {
            free(prof);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            perm[i] = (uint32_t)i;
        }
        gen_rng_seed(&r, o->seed, 0, 0, 3);
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = (size_t)gen_below(&r, i + 1);
            uint32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (size_t rank = 0; rank < n; rank++) {
            g->accts[perm[rank]].weight *= pow((double)(rank + 1), -o->zipf);
        }
        free(perm);
    }
    for (size_t i = 0; i < n; i++) {
        wsum += g->accts[i].weight;
    }
    for (size_t i = 0; i < n; i++) {
        g->accts[i].weight *= (double)n / wsum;
    }
    free(prof);
    return 0;
}

/* ---- per account-day generation ---- */

static int gen_vec_push(gen_vec_t *v, const gen_ev_t *e) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4096;
        gen_ev_t *nv = realloc(v->v, cap * sizeof(*nv));
        if (!nv) {
            return -1;
        }
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = *e;
    return 0;
}

static int gen_pick_feature(gen_rng_t *r, const gen_acct_t *a) {
    double u = gen_unif(r);
    for (int k = 0; k < a->n_features; k++) {
        if (u < a->feat_cum[k]) {
            return a->features[k];
        }
    }
    return a->features[a->n_features - 1];
}

/* A user: mostly from the regular pool, now and then an occasional one. */
static int gen_pick_user(gen_rng_t *r, const gen_acct_t *a, int pool) {
    if (a->seats > pool && gen_unif(r) < 0.03) {
        return (int)gen_int(r, pool + 1, a->seats);
    }
    return (int)gen_int(r, 1, pool);
}

static int gen_usage_count(gen_rng_t *r) {
    double c = 1.0 + floor(-log(1.0 - gen_unif(r)) * 3.5);
    return c > 20 ? 20 : (int)c;
}

/* The activity multiplier of account a on day d (0 = nothing). */
static double gen_day_factor(const gen_acct_t *a, int d) {
    if (d < a->first_day) {
        return 0;
    }
    if (a->profile == GEN_P_SILENT && d >= a->change_day) {
        return 0;
    }
    if (a->profile == GEN_P_DECLINE && d >= a->change_day) {
        return a->after_factor;
    }
    return 1;
}

static int gen_account_day(gen_t *g, uint32_t ai, int d, gen_vec_t *vec) {
    const gen_acct_t *a = &g->accts[ai];
    int64_t s = gen_slot_ms(g, d);
    double f = gen_day_factor(a, d);
    int after = a->profile == GEN_P_DECLINE && d >= a->change_day;
    int pool = after ? a->pool_after : a->pool;
    uint32_t seq = 0;
    gen_rng_t r;
    gen_ev_t e;
    double lambda;
    int64_t jst_day, wd, n;

    if (f <= 0) {
        return 0;
    }
    gen_rng_seed(&r, g->o.seed, ai + 1, (uint64_t)d + 1, 11);
    jst_day = cw_time_day(s + 9 * GEN_HOUR_MS);
    wd = ((jst_day % 7) + 7 + 4) % 7; /* 0 = Sunday; 1970-01-01 was a Thursday */
    lambda = g->o.events_per_day * a->weight * f * (wd == 0 || wd == 6 ? 0.375 : 1.25) *
             gen_unif_range(&r, 0.8, 1.2);

    memset(&e, 0, sizeof(e));
    e.acct = ai;
    if (d == a->first_day) {
        int64_t t0 = s + (int64_t)gen_below(&r, (uint64_t)(10 * GEN_MIN_MS));
        e.type = GEN_T_ACCOUNT;
        e.ts = t0;
        e.seq = seq++;
        if (gen_vec_push(vec, &e) != 0) {
            return -1;
        }
        if (a->profile != GEN_P_STALLED) {
            /* Onboarding: the admin logs in and sets up the key features. */
            int64_t tl = t0 + gen_int(&r, 1, 30) * GEN_MIN_MS;
            e.type = GEN_T_LOGIN;
            e.user = 1;
            e.ts = tl;
            e.seq = seq++;
            if (gen_vec_push(vec, &e) != 0) {
                return -1;
            }
            for (int k = 0; k < GEN_N_KEY_FEATURES; k++) {
                e.type = GEN_T_USAGE;
                e.feature = (uint8_t)k;
                e.val = (uint16_t)gen_usage_count(&r);
                e.ts = tl + gen_int(&r, 1, 120) * GEN_MIN_MS;
                e.seq = seq++;
                if (gen_vec_push(vec, &e) != 0) {
                    return -1;
                }
            }
        }
    }

    e.feature = 0;
    e.val = 0;
    n = gen_poisson(&r, lambda * GEN_MIX_LOGIN);
    for (int64_t k = 0; k < n; k++) {
        e.type = GEN_T_LOGIN;
        e.user = (uint16_t)gen_pick_user(&r, a, pool);
        e.ts = s + gen_time_of_day(&r);
        e.seq = seq++;
        if (gen_vec_push(vec, &e) != 0) {
            return -1;
        }
    }
    n = gen_poisson(&r, lambda * GEN_MIX_USAGE);
    for (int64_t k = 0; k < n; k++) {
        e.type = GEN_T_USAGE;
        e.user = (uint16_t)gen_pick_user(&r, a, pool);
        e.feature = (uint8_t)gen_pick_feature(&r, a);
        e.val = (uint16_t)gen_usage_count(&r);
        e.ts = s + gen_time_of_day(&r);
        e.seq = seq++;
        if (gen_vec_push(vec, &e) != 0) {
            return -1;
        }
    }
    e.feature = 0;
    n = gen_poisson(&r, lambda * GEN_MIX_SUPPORT);
    for (int64_t k = 0; k < n; k++) {
        e.type = GEN_T_SUPPORT;
        e.user = (uint16_t)gen_pick_user(&r, a, pool);
        e.val = 0;
        e.ts = s + gen_time_of_day(&r);
        e.seq = seq++;
        if (gen_vec_push(vec, &e) != 0) {
            return -1;
        }
    }
    n = gen_poisson(&r, lambda * GEN_MIX_NPS);
    for (int64_t k = 0; k < n; k++) {
        e.type = GEN_T_NPS;
        e.user = (uint16_t)gen_pick_user(&r, a, pool);
        e.val = (uint16_t)(after ? gen_int(&r, 3, 7) : gen_int(&r, 7, 10));
        e.ts = s + gen_time_of_day(&r);
        e.seq = seq++;
        if (gen_vec_push(vec, &e) != 0) {
            return -1;
        }
    }
    if (a->profile == GEN_P_CANCEL && d == a->change_day) {
        e.type = GEN_T_CANCEL;
        e.user = 0;
        e.val = 0;
        e.ts = a->change_ms;
        e.seq = seq++;
        if (gen_vec_push(vec, &e) != 0) {
            return -1;
        }
    }
    return 0;
}

static int gen_ev_cmp(const void *pa, const void *pb) {
    const gen_ev_t *a = pa, *b = pb;
    if (a->ts != b->ts) {
        return a->ts < b->ts ? -1 : 1;
    }
    if (a->acct != b->acct) {
        return a->acct < b->acct ? -1 : 1;
    }
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* ---- rendering ---- */

static void gen_acct_id(char *buf, size_t size, uint32_t ai) {
    snprintf(buf, size, "acct-%05u", ai + 1);
}

static void gen_put_ts(gen_t *g, cw_buf_t *b, const gen_acct_t *a, int64_t ts) {
    (void)g;
    if (a->epoch_ts) {
        cw_buf_printf(b, "\"ts\":%lld", (long long)ts);
    } else {
        char t[40];
        cw_time_format(ts, t, sizeof(t));
        cw_buf_printf(b, "\"ts\":\"%s\"", t);
    }
}

/* Render a valid event (without newline) into g->line. */
static void gen_render(gen_t *g, const gen_ev_t *e, uint64_t id) {
    const gen_acct_t *a = &g->accts[e->acct];
    cw_buf_t *b = &g->line;
    char acct[32];

    gen_acct_id(acct, sizeof(acct), e->acct);
    cw_buf_reset(b);
    cw_buf_printf(b, "{\"event_id\":\"e-%llu-%llu\",\"type\":\"%s\",\"account_id\":\"%s\",",
                  (unsigned long long)g->o.seed, (unsigned long long)id, gen_type_names[e->type],
                  acct);
    if (e->user > 0) {
        cw_buf_printf(b, "\"user_id\":\"u-%05u-%u\",", e->acct + 1, (unsigned)e->user);
    }
    gen_put_ts(g, b, a, e->ts);
    switch ((gen_type_t)e->type) {
    case GEN_T_USAGE:
        cw_buf_printf(b, ",\"feature\":\"%s\",\"count\":%u", gen_features[e->feature],
                      (unsigned)e->val);
        break;
    case GEN_T_ACCOUNT: {
        char rd[40];
        static const char *const plans[] = {"starter", "pro", "enterprise"};
        int plan = a->arr < 500000 ? 0 : a->arr < 5000000 ? 1 : 2;
        cw_time_format(a->renewal_ms, rd, sizeof(rd));
        rd[10] = '\0';
        cw_buf_printf(b, ",\"arr\":%lld,\"seats\":%d,\"plan\":\"%s\",\"renewal_date\":\"%s\"",
                      (long long)a->arr, a->seats, plans[plan], rd);
        break;
    }
    case GEN_T_NPS:
        cw_buf_printf(b, ",\"score\":%u", (unsigned)e->val);
        break;
    default:
        break;
    }
    cw_buf_puts(b, "}");
}

/* Render a malformed line of kind k derived from event e into g->line.
 * Sets *has_key when the line still carries the account id. */
static void gen_render_malformed(gen_t *g, const gen_ev_t *e, gen_malformed_t k, uint64_t id,
                                 int *has_key) {
    cw_buf_t *b = &g->line;
    char acct[32];
    char user[48];
    char ts[40];

    gen_acct_id(acct, sizeof(acct), e->acct);
    snprintf(user, sizeof(user), "u-%05u-%u", e->acct + 1, e->user ? (unsigned)e->user : 1u);
    cw_time_format(e->ts, ts, sizeof(ts));
    *has_key = 1;
    cw_buf_reset(b);
    switch (k) {
    case GEN_M_NOT_JSON:
        /* A line cut short in transit: it stops inside the timestamp. */
        cw_buf_printf(b,
                      "{\"event_id\":\"e-%llu-%llu\",\"type\":\"login\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\",\"ts\":\"%.13s",
                      (unsigned long long)g->o.seed, (unsigned long long)id, acct, user, ts);
        break;
    case GEN_M_MISSING_ACCOUNT:
        *has_key = 0;
        cw_buf_printf(b,
                      "{\"event_id\":\"e-%llu-%llu\",\"type\":\"login\",\"user_id\":\"%s\","
                      "\"ts\":\"%s\"}",
                      (unsigned long long)g->o.seed, (unsigned long long)id, user, ts);
        break;
    case GEN_M_MISSING_TS:
        cw_buf_printf(b,
                      "{\"event_id\":\"e-%llu-%llu\",\"type\":\"login\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\"}",
                      (unsigned long long)g->o.seed, (unsigned long long)id, acct, user);
        break;
    case GEN_M_WRONG_TYPE:
        cw_buf_printf(b,
                      "{\"event_id\":\"e-%llu-%llu\",\"type\":\"usage\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\",\"ts\":\"%s\",\"feature\":\"%s\",\"count\":\"%d\"}",
                      (unsigned long long)g->o.seed, (unsigned long long)id, acct, user, ts,
                      gen_features[GEN_N_KEY_FEATURES], 3);
        break;
    case GEN_M_OVERSIZED:
        cw_buf_printf(b,
                      "{\"event_id\":\"e-%llu-%llu\",\"type\":\"login\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\",\"ts\":\"%s\",\"padding\":\"",
                      (unsigned long long)g->o.seed, (unsigned long long)id, acct, user, ts);
        cw_buf_reset(&g->aux);
        for (int i = 0; i < GEN_OVERSIZE_PAD / 64; i++) {
            cw_buf_puts(&g->aux,
                        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        }
        cw_buf_append(b, g->aux.data, g->aux.len);
        cw_buf_puts(b, "\"}");
        break;
    case GEN_M_TS_1970:
    case GEN_M_TS_2999:
        cw_buf_printf(b,
                      "{\"event_id\":\"e-%llu-%llu\",\"type\":\"login\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\",\"ts\":\"%s\"}",
                      (unsigned long long)g->o.seed, (unsigned long long)id, acct, user,
                      k == GEN_M_TS_1970 ? "1970-01-01T00:00:01.000Z" : "2999-12-31T23:59:59.000Z");
        break;
    case GEN_M_LONG_ID: {
        char eid[GEN_LONG_ID_LEN + 1];
        int len = snprintf(eid, sizeof(eid), "e-%llu-%llu-", (unsigned long long)g->o.seed,
                           (unsigned long long)id);
        for (int i = len; i < GEN_LONG_ID_LEN; i++) {
            eid[i] = 'x';
        }
        eid[GEN_LONG_ID_LEN] = '\0';
        cw_buf_printf(b,
                      "{\"event_id\":\"%s\",\"type\":\"login\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\",\"ts\":\"%s\"}",
                      eid, acct, user, ts);
        break;
    }
    case GEN_M__COUNT:
        break;
    }
}

/* ---- output ---- */

static void gen_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    gen_kafka_t *k = opaque;
    (void)rk;
    if (m->err) {
        if (k->failed == 0) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP, "delivery failed: %s", rd_kafka_err2str(m->err));
        }
        k->failed++;
    } else {
        k->delivered++;
    }
}

static void gen_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    cw_log_level_t l = level <= 3   ? CW_LOG_ERROR
                       : level == 4 ? CW_LOG_WARN
                       : level <= 6 ? CW_LOG_INFO
                                    : CW_LOG_DEBUG;
    (void)rk;
    CW_LOG(l, "rdkafka", "%s: %s", fac, buf);
}

static int gen_kafka_open(gen_kafka_t *k, const char *brokers, const char *topic) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    const char *props[][2] = {{"bootstrap.servers", brokers},
                              {"linger.ms", "20"},
                              {"queue.buffering.max.messages", "500000"},
                              {"message.max.bytes", "2000000"},
                              {"message.timeout.ms", "30000"}, /* fail before the flush gives up */
                              {"client.id", "churnwatch-gen"}};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP, "kafka config %s: %s", props[i][0], errstr);
            rd_kafka_conf_destroy(conf);
            return -1;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, gen_dr_cb);
    rd_kafka_conf_set_log_cb(conf, gen_log_cb);
    rd_kafka_conf_set_opaque(conf, k);
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!k->rk) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "cannot create producer: %s", errstr);
        rd_kafka_conf_destroy(conf); /* not taken on failure */
        return -1;
    }
    cw_strlcpy(k->topic, topic, sizeof(k->topic));
    return 0;
}

static int gen_kafka_produce(gen_kafka_t *k, const char *key, size_t key_len, const char *val,
                             size_t len) {
    size_t klen = key ? key_len : 0; /* librdkafka's macros do not parenthesise arguments */
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(k->rk, RD_KAFKA_V_TOPIC(k->topic), RD_KAFKA_V_KEY(key, klen),
                              RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            k->produced++;
            rd_kafka_poll(k->rk, 0);
            return 0;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP, "produce to %s failed: %s", k->topic,
                   rd_kafka_err2str(err));
            return -1;
        }
        rd_kafka_poll(k->rk, 100); /* queue full: serve delivery reports, retry */
    }
}

/* Flush and report; returns 0 when everything was delivered. */
static int gen_kafka_close(gen_kafka_t *k) {
    int rc = 0;
    if (!k->rk) {
        return 0;
    }
    rd_kafka_flush(k->rk, 60000);
    if (rd_kafka_outq_len(k->rk) > 0) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "%d messages still undelivered after 60 s",
               rd_kafka_outq_len(k->rk));
        rc = -1;
    }
    if (k->failed > 0 || k->delivered != k->produced) {
        rc = -1;
    }
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    return rc;
}

/* Write g->line (one line) to the outputs, keyed by key (NULL = no key). */
static int gen_emit_line(gen_t *g, const char *key) {
    if (g->line.oom) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "out of memory");
        return -1;
    }
    if (g->out) {
        if (fwrite(g->line.data, 1, g->line.len, g->out) != g->line.len ||
            fputc('\n', g->out) == EOF) {
            if (!g->write_error) {
                CW_LOG(CW_LOG_ERROR, GEN_COMP, "write failed: %s", strerror(errno));
            }
            g->write_error = 1;
            return -1;
        }
    }
    if (g->kafka.rk) {
        return gen_kafka_produce(&g->kafka, key, key ? strlen(key) : 0, g->line.data, g->line.len);
    }
    return 0;
}

/* Emit one valid event, then maybe a malformed line derived from it. */
static int gen_emit(gen_t *g, const gen_ev_t *e) {
    char acct[32];
    double p = g->o.malformed_share / (1.0 - g->o.malformed_share);

    gen_acct_id(acct, sizeof(acct), e->acct);
    gen_render(g, e, g->next_id++);
    if (gen_emit_line(g, acct) != 0) {
        return -1;
    }
    g->type_count[e->type]++;
    if (p > 0 && gen_unif(&g->mal_rng) < p) {
        gen_malformed_t k = (gen_malformed_t)(g->mal_total % GEN_M__COUNT);
        int has_key = 0;
        gen_render_malformed(g, e, k, g->next_id++, &has_key);
        if (gen_emit_line(g, has_key ? acct : NULL) != 0) {
            return -1;
        }
        g->mal_count[k]++;
        g->mal_total++;
    }
    return 0;
}

static int gen_history(gen_t *g) {
    gen_vec_t vec = {NULL, 0, 0};
    int rc = 0;
    for (int d = 0; d < g->o.days && rc == 0; d++) {
        vec.n = 0;
        for (uint32_t ai = 0; ai < (uint32_t)g->o.accounts && rc == 0; ai++) {
            if (gen_account_day(g, ai, d, &vec) != 0) {
                CW_LOG(CW_LOG_ERROR, GEN_COMP, "out of memory");
                rc = -1;
            }
        }
        if (rc == 0) {
            qsort(vec.v, vec.n, sizeof(*vec.v), gen_ev_cmp);
        }
        for (size_t i = 0; i < vec.n && rc == 0; i++) {
            rc = gen_emit(g, &vec.v[i]);
        }
    }
    free(vec.v);
    return rc;
}

/* ---- live mode ---- */

static void gen_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int gen_live(gen_t *g) {
    size_t n = (size_t)g->o.accounts;
    double *cum = malloc(n * sizeof(*cum));
    double total = 0;
    int last_day = g->o.days > 0 ? g->o.days - 1 : 0;
    gen_rng_t r;
    int64_t t0 = cw_time_mono_ms();
    uint64_t done = 0;
    uint32_t seq = 0;
    int rc = 0;
    const double mix[] = {GEN_MIX_LOGIN, GEN_MIX_USAGE, 0, GEN_MIX_SUPPORT, GEN_MIX_NPS};
    const double mix_sum = GEN_MIX_LOGIN + GEN_MIX_USAGE + GEN_MIX_SUPPORT + GEN_MIX_NPS;

    if (!cum) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "out of memory");
        return -1;
    }
    gen_rng_seed(&r, g->o.seed, 0, 0, 4);
    for (size_t i = 0; i < n; i++) {
        /* Accounts as they are at the end of the window (stalled accounts
         * that have not started yet are treated as started). */
        const gen_acct_t *a = &g->accts[i];
        double f = g->o.days > 0 ? gen_day_factor(a, last_day) : 1.0;
        total += a->weight * f;
        cum[i] = total;
    }
    if (g->o.days == 0) {
        /* No history: introduce every account first. */
        for (uint32_t ai = 0; ai < n && rc == 0; ai++) {
            gen_ev_t e = {cw_time_now_ms(), ai, seq++, 0, GEN_T_ACCOUNT, 0, 0};
            rc = gen_emit(g, &e);
        }
    }
    CW_LOG(CW_LOG_INFO, GEN_COMP, "live: %.1f events/s%s", g->o.rate,
           g->o.duration > 0 ? "" : " until SIGINT/SIGTERM");
    while (rc == 0 && !gen_stop_signal && total > 0) {
        double elapsed = (double)(cw_time_mono_ms() - t0) / 1000.0;
        uint64_t due;
        if (g->o.duration > 0 && elapsed >= g->o.duration) {
            break;
        }
        due = (uint64_t)(elapsed * g->o.rate);
        while (done < due && rc == 0) {
            double u = gen_unif(&r) * total;
            size_t lo = 0, hi = n - 1;
            gen_ev_t e;
            const gen_acct_t *a;
            int after;
            double t = gen_unif(&r) * mix_sum;
            int type = 0;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (cum[mid] > u) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            a = &g->accts[lo];
            after = a->profile == GEN_P_DECLINE && g->o.days > 0;
            while (type < 4 && t >= mix[type]) {
                t -= mix[type];
                type++;
            }
            memset(&e, 0, sizeof(e));
            e.acct = (uint32_t)lo;
            e.seq = seq++;
            e.type = (uint8_t)type;
            e.user = (uint16_t)gen_pick_user(&r, a, after ? a->pool_after : a->pool);
            if (type == GEN_T_USAGE) {
                e.feature = (uint8_t)gen_pick_feature(&r, a);
                e.val = (uint16_t)gen_usage_count(&r);
            } else if (type == GEN_T_NPS) {
                e.val = (uint16_t)(after ? gen_int(&r, 3, 7) : gen_int(&r, 7, 10));
            }
            e.ts = cw_time_now_ms();
            rc = gen_emit(g, &e);
            done++;
            g->live_events++;
        }
        if (g->out) {
            fflush(g->out);
        }
        if (g->kafka.rk) {
            rd_kafka_poll(g->kafka.rk, 0);
        }
        gen_sleep_ms(10);
    }
    free(cum);
    return rc;
}

/* ---- truth and summary ---- */

static void gen_summary(gen_t *g, cw_buf_t *b) {
    char t0[40], t1[40];
    size_t events = 0;
    cw_time_format(g->start_ms, t0, sizeof(t0));
    cw_time_format(g->o.end_ms, t1, sizeof(t1));
    for (int k = 0; k < GEN_T__COUNT; k++) {
        events += g->type_count[k];
    }
    cw_buf_printf(b,
                  "{\"summary\":{\"seed\":%llu,\"accounts\":%ld,\"days\":%d,\"start\":\"%s\","
                  "\"end\":\"%s\",\"start_ms\":%lld,\"end_ms\":%lld,\"profiles\":{",
                  (unsigned long long)g->o.seed, g->o.accounts, g->o.days, t0, t1,
                  (long long)g->start_ms, (long long)g->o.end_ms);
    for (int k = 0; k < GEN_P__COUNT; k++) {
        cw_buf_printf(b, "%s\"%s\":%zu", k ? "," : "", gen_profile_names[k], g->profile_count[k]);
    }
    cw_buf_printf(b, "},\"events\":%zu,\"by_type\":{", events);
    for (int k = 0; k < GEN_T__COUNT; k++) {
        cw_buf_printf(b, "%s\"%s\":%zu", k ? "," : "", gen_type_names[k], g->type_count[k]);
    }
    cw_buf_printf(b, "},\"malformed\":{\"total\":%zu", g->mal_total);
    for (int k = 0; k < GEN_M__COUNT; k++) {
        cw_buf_printf(b, ",\"%s\":%zu", gen_malformed_names[k], g->mal_count[k]);
    }
    cw_buf_printf(b, "},\"lines\":%zu", events + g->mal_total);
    if (g->o.live) {
        cw_buf_printf(b, ",\"live_events\":%zu", g->live_events);
    }
    if (g->o.brokers) {
        cw_buf_puts(b, ",\"kafka\":{\"topic\":");
        cw_buf_json_str(b, g->o.topic, strlen(g->o.topic));
        cw_buf_printf(b, ",\"produced\":%zu,\"delivered\":%zu,\"failed\":%zu}", g->kafka.produced,
                      g->kafka.delivered, g->kafka.failed);
    }
    cw_buf_puts(b, "}}");
}

static int gen_write_truth(gen_t *g, const char *summary) {
    FILE *f = fopen(g->o.truth_path, "w");
    int rc = 0;
    if (!f) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "cannot open %s: %s", g->o.truth_path, strerror(errno));
        return -1;
    }
    for (long i = 0; i < g->o.accounts; i++) {
        const gen_acct_t *a = &g->accts[i];
        char rd[40], ct[40];
        cw_time_format(a->renewal_ms, rd, sizeof(rd));
        rd[10] = '\0';
        fprintf(f, "{\"account_id\":\"acct-%05ld\",\"profile\":\"%s\",", i + 1,
                gen_profile_names[a->profile]);
        if (a->change_day >= 0) {
            cw_time_format(a->change_ms, ct, sizeof(ct));
            fprintf(f, "\"change_ms\":%lld,\"change_day\":%d,\"change_ts\":\"%s\",",
                    (long long)a->change_ms, a->change_day, ct);
        } else {
            fputs("\"change_ms\":null,\"change_day\":null,\"change_ts\":null,", f);
        }
        fprintf(f,
                "\"first_day\":%d,\"first_ms\":%lld,\"arr\":%lld,\"seats\":%d,"
                "\"renewal_date\":\"%s\",\"weight\":%.4f}\n",
                a->first_day, (long long)gen_slot_ms(g, a->first_day), (long long)a->arr, a->seats,
                rd, a->weight);
    }
    fprintf(f, "%s\n", summary);
    if (ferror(f)) {
        rc = -1;
    }
    if (fclose(f) != 0) {
        rc = -1;
    }
    if (rc != 0) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "writing %s failed", g->o.truth_path);
    }
    return rc;
}

int cw_gen_main(int argc, char **argv) {
    gen_t *g = calloc(1, sizeof(*g));
    cw_buf_t summary = CW_BUF_INIT;
    struct sigaction sa, old_int, old_term;
    int rc = 0, pr;

    if (!g) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "out of memory");
        return 1;
    }
    pr = gen_parse(argc, argv, &g->o);
    if (pr != 0) {
        free(g);
        return pr > 0 ? 0 : 2;
    }
    g->start_ms = g->o.end_ms - (int64_t)g->o.days * CW_MS_PER_DAY;
    g->next_id = 1;
    gen_rng_seed(&g->mal_rng, g->o.seed, 0, 0, 2);

    if (gen_setup_accounts(g) != 0) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "out of memory");
        free(g->accts);
        free(g);
        return 1;
    }
    if (g->o.out_path && strcmp(g->o.out_path, "-") != 0) {
        g->out = fopen(g->o.out_path, "w");
        if (!g->out) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP, "cannot open %s: %s", g->o.out_path, strerror(errno));
            free(g->accts);
            free(g);
            return 1;
        }
    } else if (g->o.out_path || !g->o.brokers) {
        g->out = stdout;
        g->out_is_stdout = 1;
    }
    if (g->o.brokers && gen_kafka_open(&g->kafka, g->o.brokers, g->o.topic) != 0) {
        rc = -1;
    }

    if (g->o.live) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = gen_on_signal;
        sigemptyset(&sa.sa_mask);
        gen_stop_signal = 0;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    if (rc == 0) {
        rc = gen_history(g);
    }
    if (rc == 0 && g->o.live) {
        rc = gen_live(g);
    }
    if (g->o.live) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }

    if (g->out) {
        if (fflush(g->out) != 0 || ferror(g->out)) {
            g->write_error = 1;
        }
        if (!g->out_is_stdout && fclose(g->out) != 0) {
            g->write_error = 1;
        }
        if (g->write_error) {
            CW_LOG(CW_LOG_ERROR, GEN_COMP, "writing %s failed",
                   g->out_is_stdout ? "stdout" : g->o.out_path);
            rc = -1;
        }
    }
    if (gen_kafka_close(&g->kafka) != 0) {
        CW_LOG(CW_LOG_ERROR, GEN_COMP, "kafka: %zu produced, %zu delivered, %zu failed",
               g->kafka.produced, g->kafka.delivered, g->kafka.failed);
        rc = -1;
    }
    gen_summary(g, &summary);
    if (g->o.truth_path && gen_write_truth(g, summary.data) != 0) {
        rc = -1;
    }
    fprintf(stderr, "%s\n", summary.data);
    cw_buf_free(&summary);
    cw_buf_free(&g->line);
    cw_buf_free(&g->aux);
    free(g->accts);
    free(g);
    return rc == 0 ? 0 : 1;
}
