/*
 * test_model.c — unit tests of scoring/cw_model.c: the layout compiled
 * from signals (names, deduplication, retention, limits), the counter/set
 * updates of each event type, every normalisation and its clamps, the
 * missing-data rules, trend baselines, the weighted score over non-missing
 * signals, touch tiers and lifecycle phases at their exact edges.
 *
 * Models are built by hand here (the shipped default model's values), so
 * these tests do not depend on the config loader. Table-driven throughout.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "cw_model.h"

#define DAY CW_MS_PER_DAY
#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */

/* ---- model builders ---- */

static cw_signal_def_t *add_sig(cw_model_t *m, const char *name, unsigned types, cw_agg_t agg,
                                int window, cw_norm_t norm, double target, double weight) {
    cw_signal_def_t *s = &m->signals[m->n_signals++];
    memset(s, 0, sizeof(*s));
    strcpy(s->name, name);
    s->types = types;
    s->agg = agg;
    s->window_days = window;
    s->norm = norm;
    s->target = target;
    s->weight = weight;
    s->direction = 1;
    return s;
}

static void set_bands(cw_bands_t *b, double de, double dx, double ce, double cx) {
    b->danger_enter = de;
    b->danger_exit = dx;
    b->caution_enter = ce;
    b->caution_exit = cx;
}

/* An empty model with the default non-signal settings. */
static void base_model(cw_model_t *m) {
    memset(m, 0, sizeof(*m));
    set_bands(&m->bands[CW_TIER_HIGH], 45, 55, 70, 75);
    set_bands(&m->bands[CW_TIER_LOW], 40, 50, 65, 70);
    set_bands(&m->bands[CW_TIER_TECH], 40, 50, 65, 70);
    m->tier_high_arr = 5000000;
    m->tier_low_arr = 500000;
    m->onboarding_days = 30;
    m->renewal_days = 90;
    strcpy(m->key_features[0], "reports");
    strcpy(m->key_features[1], "integrations");
    m->n_key_features = 2;
    m->inactive_days = 14;
    m->cooldown_days = 7;
    m->warmup_days = 30;
    m->cancellation_forces_danger = 1;
}

#define L CW_EV_BIT(CW_EV_LOGIN)
#define U CW_EV_BIT(CW_EV_USAGE)

/* The shipped default model, by hand. */
static void default_model(cw_model_t *m) {
    cw_signal_def_t *s;
    base_model(m);
    add_sig(m, "active_user_rate", L | U, CW_AGG_DISTINCT_USERS, 30, CW_NORM_SEATS, 0.7, 30);
    s = add_sig(m, "login_trend", L, CW_AGG_COUNT, 7, CW_NORM_TREND, 1.0, 25);
    s->baseline_days = 28;
    s->min_baseline = 2;
    s->drop_share = 0.5;
    add_sig(m, "feature_breadth", U, CW_AGG_DISTINCT_FEATURES, 30, CW_NORM_TARGET, 5, 15);
    add_sig(m, "usage_volume", U, CW_AGG_SUM, 30, CW_NORM_TARGET, 60, 10);
    s = add_sig(m, "support_load", CW_EV_BIT(CW_EV_SUPPORT_TICKET), CW_AGG_COUNT, 30,
                CW_NORM_TARGET, 6, 10);
    s->direction = -1;
    s = add_sig(m, "nps", CW_EV_BIT(CW_EV_NPS), CW_AGG_MEAN, 90, CW_NORM_RANGE, 0, 10);
    s->range_min = 0;
    s->range_max = 10;
}

static void build(const cw_model_t *m, cw_layout_t *l) {
    char err[256];
    int rc = cw_layout_build(m, l, err, sizeof(err));
    cr_assert_eq(rc, 0, "layout build failed: %s", err);
}

static int counter_idx(const cw_layout_t *l, const char *name) {
    for (int i = 0; i < l->n_counters; i++) {
        if (strcmp(l->counters[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

static int set_idx(const cw_layout_t *l, const char *name) {
    for (int i = 0; i < l->n_sets; i++) {
        if (strcmp(l->sets[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* Index of the query over counter/set `name` at (offset, len); -1 if none. */
static int query_idx(const cw_layout_t *l, const char *name, int offset, int len) {
    int is_set = name[0] == 'U' || name[0] == 'F';
    int idx = is_set ? set_idx(l, name) : counter_idx(l, name);
    for (int i = 0; i < l->n_queries; i++) {
        const cw_query_def_t *q = &l->queries[i];
        if (q->is_set == is_set && q->index == idx && q->offset_days == offset &&
            q->len_days == len) {
            return i;
        }
    }
    return -1;
}

static void set_q(const cw_layout_t *l, cw_account_state_t *a, const char *name, int offset,
                  int len, double v) {
    int q = query_idx(l, name, offset, len);
    cr_assert_geq(q, 0, "no query %s(%d,%d)", name, offset, len);
    a->q[q] = v;
}

static void blank_account(cw_account_state_t *a) {
    memset(a, 0, sizeof(*a));
    strcpy(a->account_id, "acme");
    a->asof_ms = T0 + 60 * DAY + 3600000;
    a->due_ms = -1;
    a->arr = -1;
    a->seats = -1;
    a->renewal_ms = -1;
    a->first_ms = T0;
    a->first_login_ms = T0;
    a->last_login_ms = a->asof_ms;
    a->last_event_ms = a->asof_ms;
    a->cancel_ms = -1;
    for (int k = 0; k < CW_MAX_KEY_FEATURES; k++) {
        a->key_feature_first_ms[k] = -1;
    }
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        a->last_alert_ms[r] = -1;
    }
}

/* ---- normalisation ---- */

typedef struct {
    cw_norm_t norm;
    double target, rmin, rmax;
    int direction;
    double ratio;
    double expect;
} norm_row_t;

Test(model, normalise_table) {
    static const norm_row_t rows[] = {
        /* TARGET: ratio / target, clamped to [0,1] */
        {CW_NORM_TARGET, 5, 0, 0, 1, 0, 0.0},
        {CW_NORM_TARGET, 5, 0, 0, 1, 2.5, 0.5},
        {CW_NORM_TARGET, 5, 0, 0, 1, 5, 1.0},
        {CW_NORM_TARGET, 5, 0, 0, 1, 10, 1.0},
        {CW_NORM_TARGET, 5, 0, 0, 1, -1, 0.0},
        {CW_NORM_TARGET, 60, 0, 0, 1, 15, 0.25},
        {CW_NORM_TARGET, 0, 0, 0, 1, 0, 1.0}, /* non-positive target: always met */
        /* direction down: 1 - n */
        {CW_NORM_TARGET, 6, 0, 0, -1, 0, 1.0},
        {CW_NORM_TARGET, 6, 0, 0, -1, 3, 0.5},
        {CW_NORM_TARGET, 6, 0, 0, -1, 6, 0.0},
        {CW_NORM_TARGET, 6, 0, 0, -1, 12, 0.0},
        /* SEATS: the ratio is the rate already */
        {CW_NORM_SEATS, 0.7, 0, 0, 1, 0.35, 0.5},
        {CW_NORM_SEATS, 0.7, 0, 0, 1, 0.7, 1.0},
        {CW_NORM_SEATS, 0.7, 0, 0, 1, 1.2, 1.0},
        {CW_NORM_SEATS, 0.7, 0, 0, 1, 0, 0.0},
        /* TREND */
        {CW_NORM_TREND, 1, 0, 0, 1, 0.31, 0.31},
        {CW_NORM_TREND, 1, 0, 0, 1, 1.5, 1.0},
        {CW_NORM_TREND, 0.8, 0, 0, 1, 0.4, 0.5},
        {CW_NORM_TREND, 1, 0, 0, -1, 0.25, 0.75},
        /* RANGE */
        {CW_NORM_RANGE, 0, 0, 10, 1, 5, 0.5},
        {CW_NORM_RANGE, 0, 0, 10, 1, 7.5, 0.75},
        {CW_NORM_RANGE, 0, 0, 10, 1, -2, 0.0},
        {CW_NORM_RANGE, 0, 0, 10, 1, 12, 1.0},
        {CW_NORM_RANGE, 0, 2, 4, 1, 3, 0.5},
        {CW_NORM_RANGE, 0, 0, 10, -1, 2, 0.8},
        {CW_NORM_RANGE, 0, 5, 5, 1, 5, 1.0}, /* degenerate range: a step at max */
        {CW_NORM_RANGE, 0, 5, 5, 1, 4.9, 0.0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_signal_def_t s;
        memset(&s, 0, sizeof(s));
        strcpy(s.name, "x");
        s.norm = rows[i].norm;
        s.target = rows[i].target;
        s.range_min = rows[i].rmin;
        s.range_max = rows[i].rmax;
        s.direction = rows[i].direction;
        double n = cw_model_normalise(&s, rows[i].ratio);
        cr_expect(fabs(n - rows[i].expect) < 1e-9, "row %zu: normalise(%g) = %g, want %g", i,
                  rows[i].ratio, n, rows[i].expect);
    }
}

/* ---- tiers and phases ---- */

Test(model, tier_edges) {
    static const struct {
        double arr;
        cw_tier_t tier;
    } rows[] = {
        {-1, CW_TIER_TECH},      {0, CW_TIER_TECH},        {499999.99, CW_TIER_TECH},
        {500000, CW_TIER_LOW},   {500000.01, CW_TIER_LOW}, {4999999.99, CW_TIER_LOW},
        {5000000, CW_TIER_HIGH}, {1e9, CW_TIER_HIGH},      {NAN, CW_TIER_TECH},
    };
    cw_model_t m;
    base_model(&m);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cr_expect_eq(cw_model_tier(&m, rows[i].arr), rows[i].tier, "row %zu: arr %f", i,
                     rows[i].arr);
    }
}

Test(model, phase_edges) {
    const int64_t asof = T0 + 100 * DAY;
    static const struct {
        int64_t first_ago;  /* asof - first_ms; -1: first_ms unknown */
        int64_t renewal_in; /* renewal_ms - asof; INT64_MIN: no renewal date */
        cw_phase_t phase;
    } rows[] = {
        {0, INT64_MIN, CW_PHASE_ONBOARDING},
        {30 * DAY - 1, INT64_MIN, CW_PHASE_ONBOARDING},
        {30 * DAY, INT64_MIN, CW_PHASE_ADOPTION},
        {99 * DAY, INT64_MIN, CW_PHASE_ADOPTION},
        {-1, INT64_MIN, CW_PHASE_ONBOARDING},
        {99 * DAY, 0, CW_PHASE_RENEWAL},
        {99 * DAY, 90 * DAY, CW_PHASE_RENEWAL},
        {99 * DAY, 90 * DAY + 1, CW_PHASE_ADOPTION},
        {99 * DAY, -1, CW_PHASE_ADOPTION}, /* renewal date just passed */
        {99 * DAY, -200 * DAY, CW_PHASE_ADOPTION},
        {5 * DAY, 10 * DAY, CW_PHASE_RENEWAL}, /* renewal wins over onboarding */
        {5 * DAY, 91 * DAY, CW_PHASE_ONBOARDING},
    };
    cw_model_t m;
    base_model(&m);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        blank_account(&a);
        a.asof_ms = asof;
        a.first_ms = rows[i].first_ago < 0 ? -1 : asof - rows[i].first_ago;
        a.renewal_ms = rows[i].renewal_in == INT64_MIN ? -1 : asof + rows[i].renewal_in;
        cr_expect_eq(cw_model_phase(&m, &a), rows[i].phase, "row %zu: got %d want %d", i,
                     cw_model_phase(&m, &a), rows[i].phase);
    }
}

Test(model, win_names) {
    static const char *const want[CW_WIN__COUNT] = {
        "logins_7d", "logins_30d", "active_users_7d", "active_users_30d",
        "usage_7d",  "usage_30d",  "features_30d"};
    for (int w = 0; w < CW_WIN__COUNT; w++) {
        cr_expect_str_eq(cw_win_name((cw_win_t)w), want[w]);
    }
    cr_expect_null(cw_win_name(CW_WIN__COUNT));
}

/* ---- layout ---- */

Test(model, layout_default) {
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    static const struct {
        const char *name;
        cw_ev_type_t type;
        int sum;
        int retention;
    } counters[] = {
        {"cl", CW_EV_LOGIN, 0, 35}, {"su", CW_EV_USAGE, 1, 30}, {"ct", CW_EV_SUPPORT_TICKET, 0, 30},
        {"sn", CW_EV_NPS, 1, 90},   {"cn", CW_EV_NPS, 0, 90},
    };
    cr_assert_eq(l.n_counters, 5);
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        int c = counter_idx(&l, counters[i].name);
        cr_assert_geq(c, 0, "counter %s missing", counters[i].name);
        cr_expect_eq(l.counters[c].type, counters[i].type, "%s type", counters[i].name);
        cr_expect_eq(l.counters[c].sum, counters[i].sum, "%s sum", counters[i].name);
        cr_expect_eq(l.counters[c].retention_days, counters[i].retention, "%s retention %d",
                     counters[i].name, l.counters[c].retention_days);
    }
    cr_assert_eq(l.n_sets, 2);
    int su = set_idx(&l, "U:lu");
    int sf = set_idx(&l, "F:u");
    cr_assert_geq(su, 0);
    cr_assert_geq(sf, 0);
    cr_expect_eq(l.sets[su].of_users, 1);
    cr_expect_eq(l.sets[su].types, L | U);
    cr_expect_eq(l.sets[sf].of_users, 0);
    cr_expect_eq(l.sets[sf].types, U);
    /* 7 explain windows + trend baseline + support + nps sum + nps count */
    cr_expect_eq(l.n_queries, 11, "queries %d", l.n_queries);
    cr_expect_eq(l.retention_days, 90);
    cr_expect_eq(l.key_feature_of_usage, 1);

    /* explain windows */
    static const struct {
        cw_win_t w;
        const char *name;
        int len;
    } wins[] = {
        {CW_WIN_LOGINS_7D, "cl", 7},         {CW_WIN_LOGINS_30D, "cl", 30},
        {CW_WIN_ACTIVE_USERS_7D, "U:lu", 7}, {CW_WIN_ACTIVE_USERS_30D, "U:lu", 30},
        {CW_WIN_USAGE_7D, "su", 7},          {CW_WIN_USAGE_30D, "su", 30},
        {CW_WIN_FEATURES_30D, "F:u", 30},
    };
    for (size_t i = 0; i < sizeof(wins) / sizeof(wins[0]); i++) {
        cr_expect_eq(l.win_q[wins[i].w], query_idx(&l, wins[i].name, 0, wins[i].len), "win %s",
                     cw_win_name(wins[i].w));
    }
    /* plans share the windows' queries */
    cr_expect_eq(l.plans[0].n_win_q, 1);
    cr_expect_eq(l.plans[0].win_q[0], l.win_q[CW_WIN_ACTIVE_USERS_30D]);
    cr_expect_eq(l.plans[1].n_win_q, 1);
    cr_expect_eq(l.plans[1].win_q[0], l.win_q[CW_WIN_LOGINS_7D]);
    cr_expect_eq(l.plans[1].n_base_q, 1);
    cr_expect_eq(l.plans[1].base_q[0], query_idx(&l, "cl", 7, 28));
    cr_expect_eq(l.plans[2].win_q[0], l.win_q[CW_WIN_FEATURES_30D]);
    cr_expect_eq(l.plans[3].win_q[0], l.win_q[CW_WIN_USAGE_30D]);
    cr_expect_eq(l.plans[5].n_win_q, 1);
    cr_expect_eq(l.plans[5].win_q[0], query_idx(&l, "sn", 0, 90));
    cr_expect_eq(l.plans[5].n_cnt_q, 1);
    cr_expect_eq(l.plans[5].cnt_q[0], query_idx(&l, "cn", 0, 90));
    cr_expect_eq(l.plans[0].n_base_q, 0);
    cr_expect_eq(l.plans[0].n_cnt_q, 0);
}

/* Layouts of one-signal models: names, dedup against the windows, retention. */
typedef struct {
    const char *what;
    unsigned types;
    const char *feature;
    cw_agg_t agg;
    int window, baseline;
    cw_norm_t norm;
    int n_counters, n_sets, n_queries, retention;
    const char *name;   /* a counter or set the signal must have created/used */
    int name_retention; /* its retention (counters), 0 to skip */
    int n_win_q, n_base_q, n_cnt_q;
} layout_row_t;

Test(model, layout_table) {
    static const layout_row_t rows[] = {
        /* counts over two types: one counter per type, queries summed */
        {"count lu 10d", L | U, "", CW_AGG_COUNT, 10, 0, CW_NORM_TARGET, 3, 2, 9, 30, "cu", 10, 2,
         0, 0},
        /* same window as logins_7d: fully deduplicated */
        {"count l 7d", L, "", CW_AGG_COUNT, 7, 0, CW_NORM_TARGET, 2, 2, 7, 30, "cl", 30, 1, 0, 0},
        /* a long trend raises the counter's and the layout's retention */
        {"trend l 14/56", L, "", CW_AGG_COUNT, 14, 56, CW_NORM_TREND, 2, 2, 9, 70, "cl", 70, 1, 1,
         0},
        /* feature-filtered sets and counters get their own names */
        {"users of export", U, "export", CW_AGG_DISTINCT_USERS, 30, 0, CW_NORM_TARGET, 2, 3, 8, 30,
         "U:u:export", 0, 1, 0, 0},
        {"sum export", U, "export", CW_AGG_SUM, 30, 0, CW_NORM_TARGET, 3, 2, 8, 30, "su:export", 30,
         1, 0, 0},
        {"count export", U, "export", CW_AGG_COUNT, 45, 0, CW_NORM_TARGET, 3, 2, 8, 45, "cu:export",
         45, 1, 0, 0},
        /* mean: sum and count counters */
        {"mean nps 120", CW_EV_BIT(CW_EV_NPS), "", CW_AGG_MEAN, 120, 0, CW_NORM_RANGE, 4, 2, 9, 120,
         "cn", 120, 1, 0, 1},
        /* distinct features over usage 30d = features_30d */
        {"features 30", U, "", CW_AGG_DISTINCT_FEATURES, 30, 0, CW_NORM_TARGET, 2, 2, 7, 30, "F:u",
         0, 1, 0, 0},
        /* distinct users trend within 52 days */
        {"users trend 7/45", L | U, "", CW_AGG_DISTINCT_USERS, 7, 45, CW_NORM_TREND, 2, 2, 8, 52,
         "U:lu", 0, 1, 1, 0},
        /* all six types summed */
        {"count all", 0x3f, "", CW_AGG_COUNT, 30, 0, CW_NORM_TARGET, 7, 2, 12, 30, "cx", 30, 6, 0,
         0},
        /* account events as a sum: value 1 each */
        {"sum account", CW_EV_BIT(CW_EV_ACCOUNT), "", CW_AGG_SUM, 3, 0, CW_NORM_TARGET, 3, 2, 8, 30,
         "sa", 3, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const layout_row_t *r = &rows[i];
        cw_model_t m;
        cw_layout_t l;
        base_model(&m);
        cw_signal_def_t *s = add_sig(&m, "sig", r->types, r->agg, r->window, r->norm, 1, 1);
        strcpy(s->feature, r->feature);
        s->baseline_days = r->baseline;
        s->range_max = 10;
        build(&m, &l);
        cr_expect_eq(l.n_counters, r->n_counters, "%s: counters %d", r->what, l.n_counters);
        cr_expect_eq(l.n_sets, r->n_sets, "%s: sets %d", r->what, l.n_sets);
        cr_expect_eq(l.n_queries, r->n_queries, "%s: queries %d", r->what, l.n_queries);
        cr_expect_eq(l.retention_days, r->retention, "%s: retention %d", r->what, l.retention_days);
        int c = counter_idx(&l, r->name);
        int st = set_idx(&l, r->name);
        cr_expect(c >= 0 || st >= 0, "%s: %s missing", r->what, r->name);
        if (c >= 0 && r->name_retention > 0) {
            cr_expect_eq(l.counters[c].retention_days, r->name_retention, "%s: %s retention %d",
                         r->what, r->name, l.counters[c].retention_days);
        }
        cr_expect_eq(l.plans[0].n_win_q, r->n_win_q, "%s: win_q", r->what);
        cr_expect_eq(l.plans[0].n_base_q, r->n_base_q, "%s: base_q", r->what);
        cr_expect_eq(l.plans[0].n_cnt_q, r->n_cnt_q, "%s: cnt_q", r->what);
        /* every counter's retention covers every query on it */
        for (int q = 0; q < l.n_queries; q++) {
            const cw_query_def_t *qd = &l.queries[q];
            if (!qd->is_set) {
                cr_expect_geq(l.counters[qd->index].retention_days, qd->offset_days + qd->len_days,
                              "%s: q%d", r->what, q);
            }
            cr_expect_geq(l.retention_days, qd->offset_days + qd->len_days);
        }
    }
}

Test(model, layout_dedup_identical_signals) {
    cw_model_t m;
    cw_layout_t one, two;
    default_model(&m);
    build(&m, &one);
    /* the same signals again under other names: nothing new to store or query */
    int n = m.n_signals;
    for (int i = 0; i < n; i++) {
        m.signals[n + i] = m.signals[i];
        snprintf(m.signals[n + i].name, CW_NAME_MAX, "copy_%d", i);
    }
    m.n_signals = 2 * n;
    build(&m, &two);
    cr_expect_eq(two.n_counters, one.n_counters);
    cr_expect_eq(two.n_sets, one.n_sets);
    cr_expect_eq(two.n_queries, one.n_queries);
    for (int i = 0; i < n; i++) {
        cr_expect_eq(memcmp(&two.plans[n + i], &one.plans[i], sizeof(cw_signal_plan_t)), 0,
                     "plan %d", i);
    }
}

/* Limits: every error names the signal. */
Test(model, layout_errors) {
    static const struct {
        const char *what;
        unsigned types;
        cw_agg_t agg;
        int window, baseline;
        cw_norm_t norm;
        int copies; /* signals, each with its own feature (or window), to exhaust tables */
        int vary_window;
    } rows[] = {
        {"distinct 53d", U, CW_AGG_DISTINCT_USERS, 53, 0, CW_NORM_TARGET, 1, 0},
        {"distinct trend 30+28", U, CW_AGG_DISTINCT_FEATURES, 30, 28, CW_NORM_TREND, 1},
        {"window 0", L, CW_AGG_COUNT, 0, 0, CW_NORM_TARGET, 1},
        {"trend no baseline", L, CW_AGG_COUNT, 7, 0, CW_NORM_TREND, 1},
        {"retention 401", L, CW_AGG_COUNT, 300, 101, CW_NORM_TREND, 1},
        {"no types", 0, CW_AGG_COUNT, 7, 0, CW_NORM_TARGET, 1},
        {"mean trend", CW_EV_BIT(CW_EV_NPS), CW_AGG_MEAN, 30, 30, CW_NORM_TREND, 1},
        {"too many counters", L | U, CW_AGG_COUNT, 7, 0, CW_NORM_TARGET, 16},
        {"too many sets", U, CW_AGG_DISTINCT_USERS, 7, 0, CW_NORM_TARGET, 7},
        {"too many queries", L | U, CW_AGG_COUNT, 7, 7, CW_NORM_TREND, 16, 1},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_model_t m;
        cw_layout_t l;
        char err[256] = "";
        char last[CW_NAME_MAX] = "";
        base_model(&m);
        for (int k = 0; k < rows[i].copies; k++) {
            char name[32];
            snprintf(name, sizeof(name), "bad_%d", k);
            cw_signal_def_t *s =
                add_sig(&m, name, rows[i].types, rows[i].agg, rows[i].window, rows[i].norm, 1, 1);
            s->baseline_days = rows[i].baseline;
            if (rows[i].vary_window) {
                s->window_days += k;
            } else if (rows[i].copies > 1) {
                snprintf(s->feature, sizeof(s->feature), "f%d", k);
            }
            strcpy(last, name);
        }
        int rc = cw_layout_build(&m, &l, err, sizeof(err));
        cr_expect_eq(rc, -1, "%s: accepted", rows[i].what);
        cr_expect(strstr(err, "bad_") != NULL, "%s: errstr '%s' does not name the signal",
                  rows[i].what, err);
        if (rows[i].copies == 1) {
            cr_expect(strstr(err, last) != NULL, "%s: errstr '%s'", rows[i].what, err);
        }
    }
}

Test(model, layout_limits_ok_at_edge) {
    /* exactly 52 days of distinct window+baseline and 400 days of counter are fine */
    cw_model_t m;
    cw_layout_t l;
    base_model(&m);
    cw_signal_def_t *s = add_sig(&m, "u", U, CW_AGG_DISTINCT_USERS, 7, CW_NORM_TREND, 1, 1);
    s->baseline_days = 45;
    s = add_sig(&m, "c", L, CW_AGG_COUNT, 100, CW_NORM_TREND, 1, 1);
    s->baseline_days = 300;
    build(&m, &l);
    cr_expect_eq(l.retention_days, 400);
    cr_expect_eq(l.counters[counter_idx(&l, "cl")].retention_days, 400);
}

/* ---- event operations ---- */

typedef struct {
    const char *what;
    cw_ev_type_t type;
    const char *user, *feature;
    int64_t count;
    int score;
    const char *counters; /* "name=amount name=amount" in layout order */
    const char *sets;     /* "name name" */
    int key_feature;
} ops_row_t;

static void ops_string(const cw_layout_t *l, const cw_event_ops_t *ops, char *cbuf, size_t cs,
                       char *sbuf, size_t ss) {
    cbuf[0] = sbuf[0] = '\0';
    for (int i = 0; i < ops->n_counters; i++) {
        size_t n = strlen(cbuf);
        snprintf(cbuf + n, cs - n, "%s%s=%lld", i ? " " : "", l->counters[ops->counter[i]].name,
                 (long long)ops->amount[i]);
    }
    for (int i = 0; i < ops->n_sets; i++) {
        size_t n = strlen(sbuf);
        snprintf(sbuf + n, ss - n, "%s%s", i ? " " : "", l->sets[ops->set[i]].name);
    }
}

Test(model, event_ops_table) {
    static const ops_row_t rows[] = {
        {"login", CW_EV_LOGIN, "u1", "", 1, -1, "cl=1", "U:lu", -1},
        {"login no user", CW_EV_LOGIN, "", "", 1, -1, "cl=1", "", -1},
        {"usage reports x5", CW_EV_USAGE, "u1", "reports", 5, -1, "su=5", "U:lu F:u", 0},
        {"usage integrations", CW_EV_USAGE, "u2", "integrations", 1, -1, "su=1", "U:lu F:u", 1},
        {"usage export x3", CW_EV_USAGE, "u2", "export", 3, -1, "su=3 cu:export=1",
         "U:lu F:u U:u:export", -1},
        {"usage export no user", CW_EV_USAGE, "", "export", 2, -1, "su=2 cu:export=1", "F:u", -1},
        {"usage no feature", CW_EV_USAGE, "u1", "", 2, -1, "su=2", "U:lu", -1},
        {"support ticket", CW_EV_SUPPORT_TICKET, "", "", 1, -1, "ct=1", "", -1},
        {"nps 8", CW_EV_NPS, "u1", "", 1, 8, "sn=8 cn=1", "", -1},
        {"nps 0", CW_EV_NPS, "u1", "", 1, 0, "cn=1", "", -1},
        {"account", CW_EV_ACCOUNT, "", "", 1, -1, "", "", -1},
        {"cancellation", CW_EV_CANCELLATION, "", "", 1, -1, "", "", -1},
        {"unknown", CW_EV_UNKNOWN, "u1", "reports", 1, -1, "", "", -1},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    add_sig(&m, "export_users", U, CW_AGG_DISTINCT_USERS, 30, CW_NORM_TARGET, 3, 5);
    strcpy(m.signals[m.n_signals - 1].feature, "export");
    add_sig(&m, "export_uses", U, CW_AGG_COUNT, 30, CW_NORM_TARGET, 3, 5);
    strcpy(m.signals[m.n_signals - 1].feature, "export");
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const ops_row_t *r = &rows[i];
        cw_event_t ev;
        cw_event_ops_t ops;
        char cbuf[256], sbuf[256], want[256];
        memset(&ev, 0, sizeof(ev));
        ev.type = r->type;
        strcpy(ev.account_id, "acme");
        strcpy(ev.user_id, r->user);
        strcpy(ev.feature, r->feature);
        ev.count = r->count;
        ev.score = r->score;
        ev.arr = -1;
        ev.seats = -1;
        ev.renewal_ms = -1;
        memset(&ops, 0x55, sizeof(ops));
        cw_layout_event_ops(&l, &m, &ev, &ops);
        ops_string(&l, &ops, cbuf, sizeof(cbuf), sbuf, sizeof(sbuf));
        strcpy(want, r->counters);
        cr_expect_str_eq(cbuf, want, "%s: counters '%s' want '%s'", r->what, cbuf, want);
        cr_expect_str_eq(sbuf, r->sets, "%s: sets '%s' want '%s'", r->what, sbuf, r->sets);
        cr_expect_eq(ops.key_feature, r->key_feature, "%s: key feature %d", r->what,
                     ops.key_feature);
    }
}

/* ---- scoring ---- */

/* Query inputs of the default model. */
typedef struct {
    const char *what;
    int64_t seats;
    double users30, logins7, logins_base, features30, usage30, tickets30, nps_sum, nps_cnt;
    double score;
    int missing[6]; /* per signal */
} score_row_t;

Test(model, score_table) {
    static const score_row_t rows[] = {
        {"all perfect", 10, 7, 10, 40, 5, 60, 0, 100, 10, 100.0, {0, 0, 0, 0, 0, 0}},
        {"nps 9", 10, 7, 10, 40, 5, 60, 0, 18, 2, 99.0, {0, 0, 0, 0, 0, 0}},
        /* 69 of 70 points with active_user_rate out */
        {"seats unknown", -1, 7, 10, 40, 5, 60, 0, 18, 2, 98.6, {1, 0, 0, 0, 0, 0}},
        {"seats zero", 0, 7, 10, 40, 5, 60, 0, 18, 2, 98.6, {1, 0, 0, 0, 0, 0}},
        /* baseline 7 logins / 28 days = 1.75 per week < 2: trend missing */
        {"thin baseline", 10, 7, 0, 7, 5, 60, 0, 18, 2, 98.7, {0, 1, 0, 0, 0, 0}},
        /* baseline exactly 2/week: judged; 1 login = ratio .5 */
        {"baseline at min", 10, 7, 1, 8, 5, 60, 0, 18, 2, 86.5, {0, 0, 0, 0, 0, 0}},
        {"no nps answers", 10, 7, 10, 40, 5, 60, 0, 0, 0, 100.0, {0, 0, 0, 0, 0, 1}},
        /* only the never-missing target signals judged: support 1, others 0 */
        {"empty, seats unknown", -1, 0, 0, 0, 0, 0, 0, 0, 0, 28.6, {1, 1, 0, 0, 0, 1}},
        /* seats known, nothing used: 10 of 65 points (support) */
        {"empty, seats known", 25, 0, 0, 0, 0, 0, 0, 0, 0, 15.4, {0, 1, 0, 0, 0, 1}},
        /* mid values: .5*30 + .3*25 + .4*15 + .25*10 + .5*10 + .6*10 = 42 */
        {"mid", 20, 7, 3, 40, 2, 15, 3, 12, 2, 42.0, {0, 0, 0, 0, 0, 0}},
        /* over-target values clamp at 1, over-ceiling tickets at 0 */
        {"clamps", 5, 50, 100, 40, 40, 6000, 60, 10, 1, 90.0, {0, 0, 0, 0, 0, 0}},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const score_row_t *r = &rows[i];
        cw_account_state_t a;
        cw_score_t s;
        blank_account(&a);
        a.seats = r->seats;
        set_q(&l, &a, "U:lu", 0, 30, r->users30);
        set_q(&l, &a, "cl", 0, 7, r->logins7);
        set_q(&l, &a, "cl", 7, 28, r->logins_base);
        set_q(&l, &a, "F:u", 0, 30, r->features30);
        set_q(&l, &a, "su", 0, 30, r->usage30);
        set_q(&l, &a, "ct", 0, 30, r->tickets30);
        set_q(&l, &a, "sn", 0, 90, r->nps_sum);
        set_q(&l, &a, "cn", 0, 90, r->nps_cnt);
        cw_model_score(&m, &l, &a, &s);
        cr_expect_eq(s.n_signals, 6);
        cr_expect(fabs(s.score - r->score) < 1e-9, "%s: score %.4f want %.1f", r->what, s.score,
                  r->score);
        double csum = 0, wsum = 0;
        for (int k = 0; k < 6; k++) {
            cr_expect_eq(s.signals[k].missing, r->missing[k], "%s: signal %s missing=%d", r->what,
                         m.signals[k].name, s.signals[k].missing);
            cr_expect_eq(s.signals[k].weight, m.signals[k].weight);
            cr_expect(s.signals[k].normalised >= 0 && s.signals[k].normalised <= 1);
            if (s.signals[k].missing) {
                cr_expect_eq(s.signals[k].contribution, 0.0, "%s: missing contributes", r->what);
            } else {
                wsum += s.signals[k].weight;
            }
            csum += s.signals[k].contribution;
        }
        for (int k = 0; k < 6; k++) {
            if (!s.signals[k].missing) {
                cr_expect(fabs(s.signals[k].contribution -
                               100.0 * s.signals[k].weight * s.signals[k].normalised / wsum) < 1e-9,
                          "%s: contribution of %s", r->what, m.signals[k].name);
            }
        }
        cr_expect(fabs(csum - s.score) <= 0.05 + 1e-9, "%s: contributions %.4f vs score %.1f",
                  r->what, csum, s.score);
        cr_expect_eq(s.forced_danger, 0);
    }
}

Test(model, score_raw_and_ratio_values) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    default_model(&m);
    build(&m, &l);
    blank_account(&a);
    a.seats = 20;
    set_q(&l, &a, "U:lu", 0, 30, 7);
    set_q(&l, &a, "cl", 0, 7, 3);
    set_q(&l, &a, "cl", 7, 28, 24);
    set_q(&l, &a, "sn", 0, 90, 21);
    set_q(&l, &a, "cn", 0, 90, 3);
    cw_model_score(&m, &l, &a, &s);
    /* seats: raw distinct users, ratio the rate */
    cr_expect_eq(s.signals[0].raw, 7);
    cr_expect(fabs(s.signals[0].ratio - 0.35) < 1e-12);
    cr_expect(fabs(s.signals[0].normalised - 0.5) < 1e-12);
    /* trend: baseline 24 * 7/28 = 6 per window, ratio .5 */
    cr_expect_eq(s.signals[1].raw, 3);
    cr_expect(fabs(s.signals[1].baseline - 6) < 1e-12);
    cr_expect(fabs(s.signals[1].ratio - 0.5) < 1e-12);
    /* mean */
    cr_expect(fabs(s.signals[5].raw - 7) < 1e-12);
    cr_expect(fabs(s.signals[5].normalised - 0.7) < 1e-12);
}

/* Trend with various baselines: W=7, B=28, target 1. */
Test(model, trend_table) {
    static const struct {
        double min_baseline, raw, base;
        int missing;
        double ratio, normalised;
    } rows[] = {
        {2, 10, 40, 0, 1.0, 1.0}, {2, 5, 40, 0, 0.5, 0.5}, {2, 20, 40, 0, 2.0, 1.0},
        {2, 0, 40, 0, 0.0, 0.0},  {2, 3, 7, 1, 0, 0},      {2, 3, 8, 0, 1.5, 1.0},
        {2, 1, 8, 0, 0.5, 0.5},   {2, 0, 0, 1, 0, 0},      {0, 1, 0, 1, 0, 0},
        {0, 1, 4, 0, 1.0, 1.0},   {10, 9, 39.9, 1, 0, 0},  {10, 9, 40, 0, 0.9, 0.9},
        {0.5, 0, 2, 0, 0.0, 0.0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_model_t m;
        cw_layout_t l;
        cw_account_state_t a;
        cw_score_t s;
        base_model(&m);
        cw_signal_def_t *sig = add_sig(&m, "t", L, CW_AGG_COUNT, 7, CW_NORM_TREND, 1, 1);
        sig->baseline_days = 28;
        sig->min_baseline = rows[i].min_baseline;
        build(&m, &l);
        blank_account(&a);
        set_q(&l, &a, "cl", 0, 7, rows[i].raw);
        set_q(&l, &a, "cl", 7, 28, rows[i].base);
        cw_model_score(&m, &l, &a, &s);
        cr_expect_eq(s.signals[0].missing, rows[i].missing, "row %zu: missing", i);
        if (!rows[i].missing) {
            cr_expect(fabs(s.signals[0].ratio - rows[i].ratio) < 1e-9, "row %zu: ratio %g", i,
                      s.signals[0].ratio);
            cr_expect(fabs(s.signals[0].normalised - rows[i].normalised) < 1e-9,
                      "row %zu: normalised %g", i, s.signals[0].normalised);
            cr_expect(fabs(s.score - 100 * rows[i].normalised) < 0.05 + 1e-9);
        } else {
            cr_expect_eq(s.score, 50.0, "row %zu: only signal missing -> neutral", i);
        }
    }
}

/* Weighting with missing signals and multi-type sums. */
Test(model, score_weighting_and_terms) {
    static const struct {
        const char *what;
        double q_login, q_usage; /* counts over 30 days (cl, cu) */
        int64_t seats;
        double score;
    } rows[] = {
        /* sig A: count login+usage target 10 (w 3); sig B: seats (w 1) */
        {"sum of types", 4, 6, 1, 100.0},
        {"half", 2, 3, -1, 50.0},      /* B missing: only A counts */
        {"low rate", 2, 3, 100, 38.0}, /* A .5*3 + B 2/100 users per seat: 1.52 of 4 */
        {"zero", 0, 0, -1, 0.0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_model_t m;
        cw_layout_t l;
        cw_account_state_t a;
        cw_score_t s;
        base_model(&m);
        add_sig(&m, "a", L | U, CW_AGG_COUNT, 30, CW_NORM_TARGET, 10, 3);
        add_sig(&m, "b", L | U, CW_AGG_DISTINCT_USERS, 30, CW_NORM_SEATS, 1, 1);
        build(&m, &l);
        cr_assert_eq(l.plans[0].n_win_q, 2);
        blank_account(&a);
        a.seats = rows[i].seats;
        set_q(&l, &a, "cl", 0, 30, rows[i].q_login);
        set_q(&l, &a, "cu", 0, 30, rows[i].q_usage);
        /* distinct users: equal to the login count here (one login each) */
        set_q(&l, &a, "U:lu", 0, 30, rows[i].q_login);
        cw_model_score(&m, &l, &a, &s);
        cr_expect_eq(s.signals[0].raw, rows[i].q_login + rows[i].q_usage, "%s: raw", rows[i].what);
        cr_expect(fabs(s.score - rows[i].score) < 1e-9, "%s: score %g want %g", rows[i].what,
                  s.score, rows[i].score);
    }
}

Test(model, score_all_missing_is_neutral) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    base_model(&m);
    add_sig(&m, "rate", L | U, CW_AGG_DISTINCT_USERS, 30, CW_NORM_SEATS, 0.7, 1);
    add_sig(&m, "nps", CW_EV_BIT(CW_EV_NPS), CW_AGG_MEAN, 90, CW_NORM_RANGE, 0, 1)->range_max = 10;
    build(&m, &l);
    blank_account(&a);
    cw_model_score(&m, &l, &a, &s);
    cr_expect(s.signals[0].missing && s.signals[1].missing);
    cr_expect_eq(s.score, 50.0);
    /* zero weights everywhere: same neutral score */
    base_model(&m);
    add_sig(&m, "z", L, CW_AGG_COUNT, 7, CW_NORM_TARGET, 1, 0);
    build(&m, &l);
    cw_model_score(&m, &l, &a, &s);
    cr_expect_eq(s.score, 50.0);
}

Test(model, rounding_to_tenth) {
    static const struct {
        double raw; /* of target 3, weight 1 */
        double score;
    } rows[] = {{1, 33.3}, {2, 66.7}, {0.1, 3.3}, {0.0016, 0.1}, {0.0014, 0.0}, {2.999, 100.0}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_model_t m;
        cw_layout_t l;
        cw_account_state_t a;
        cw_score_t s;
        base_model(&m);
        add_sig(&m, "v", U, CW_AGG_SUM, 30, CW_NORM_TARGET, 3, 1);
        build(&m, &l);
        blank_account(&a);
        set_q(&l, &a, "su", 0, 30, rows[i].raw);
        cw_model_score(&m, &l, &a, &s);
        cr_expect(fabs(s.score - rows[i].score) < 1e-9, "raw %g: score %.6f want %.1f", rows[i].raw,
                  s.score, rows[i].score);
    }
}

Test(model, forced_danger_by_cancellation) {
    static const struct {
        int forces;
        int64_t cancel_offset; /* cancel_ms - asof; INT64_MIN none */
        int forced;
    } rows[] = {
        {1, -DAY, 1}, {1, 0, 1}, {1, 1, 0}, {1, INT64_MIN, 0}, {0, -DAY, 0},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s, plain;
        blank_account(&a);
        a.seats = 10;
        set_q(&l, &a, "U:lu", 0, 30, 7);
        cw_model_score(&m, &l, &a, &plain);
        m.cancellation_forces_danger = rows[i].forces;
        a.cancel_ms = rows[i].cancel_offset == INT64_MIN ? -1 : a.asof_ms + rows[i].cancel_offset;
        cw_model_score(&m, &l, &a, &s);
        cr_expect_eq(s.forced_danger, rows[i].forced, "row %zu", i);
        cr_expect_eq(s.score, plain.score, "row %zu: score must not change", i);
    }
}

Test(model, tier_and_phase_in_score) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    default_model(&m);
    build(&m, &l);
    blank_account(&a);
    a.arr = 5000000;
    a.renewal_ms = a.asof_ms + 30 * DAY;
    cw_model_score(&m, &l, &a, &s);
    cr_expect_eq(s.tier, CW_TIER_HIGH);
    cr_expect_eq(s.phase, CW_PHASE_RENEWAL);
    a.arr = 499999;
    a.renewal_ms = -1;
    a.first_ms = a.asof_ms - DAY;
    cw_model_score(&m, &l, &a, &s);
    cr_expect_eq(s.tier, CW_TIER_TECH);
    cr_expect_eq(s.phase, CW_PHASE_ONBOARDING);
}
