/*
 * test_alert.c — unit tests of scoring/cw_alert.c: band lines per tier at
 * their exact edges, hysteresis over score paths, every alert reason's
 * rising edge and non-repetition, cooldown (re-entry within and after it),
 * warm-up suppression and firing once it ends, cancellation forcing
 * danger, stable and distinct alert ids, driver selection, the next
 * rescoring time (including quiescence), and the alert / snapshot / explain
 * JSON documents (parsed back with yajl_tree).
 *
 * The decision only reads the score struct, so most tests build a
 * cw_score_t by hand and replay the decision's write-back into the account
 * state themselves (what cw_state_commit persists), day after day.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "cw_alert.h"

#define DAY CW_MS_PER_DAY
#define HOUR INT64_C(3600000)
#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */

#define BIT(r) (1u << (r))
#define E BIT(CW_REASON_ENTERED_DANGER)
#define UD BIT(CW_REASON_USAGE_DROP)
#define IN BIT(CW_REASON_INACTIVE)
#define OS BIT(CW_REASON_ONBOARDING_STALLED)
#define CX BIT(CW_REASON_CANCELLATION_NOTICE)
#define R BIT(CW_REASON_RECOVERED)

#define D CW_BAND_DANGER
#define C CW_BAND_CAUTION
#define H CW_BAND_HEALTHY

/* ---- fixtures ---- */

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
    snprintf(s->description, sizeof(s->description), "about %s", name);
    return s;
}

static void set_bands(cw_bands_t *b, double de, double dx, double ce, double cx) {
    b->danger_enter = de;
    b->danger_exit = dx;
    b->caution_enter = ce;
    b->caution_exit = cx;
}

/* The shipped default model, by hand (no loader). */
static void default_model(cw_model_t *m) {
    const unsigned l = CW_EV_BIT(CW_EV_LOGIN), u = CW_EV_BIT(CW_EV_USAGE);
    cw_signal_def_t *s;
    memset(m, 0, sizeof(*m));
    add_sig(m, "active_user_rate", l | u, CW_AGG_DISTINCT_USERS, 30, CW_NORM_SEATS, 0.7, 30);
    s = add_sig(m, "login_trend", l, CW_AGG_COUNT, 7, CW_NORM_TREND, 1.0, 25);
    s->baseline_days = 28;
    s->min_baseline = 2;
    s->drop_share = 0.5;
    add_sig(m, "feature_breadth", u, CW_AGG_DISTINCT_FEATURES, 30, CW_NORM_TARGET, 5, 15);
    add_sig(m, "usage_volume", u, CW_AGG_SUM, 30, CW_NORM_TARGET, 60, 10);
    s = add_sig(m, "support_load", CW_EV_BIT(CW_EV_SUPPORT_TICKET), CW_AGG_COUNT, 30,
                CW_NORM_TARGET, 6, 10);
    s->direction = -1;
    s = add_sig(m, "nps", CW_EV_BIT(CW_EV_NPS), CW_AGG_MEAN, 90, CW_NORM_RANGE, 0, 10);
    s->range_max = 10;
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

static void build(const cw_model_t *m, cw_layout_t *l) {
    char err[256];
    cr_assert_eq(cw_layout_build(m, l, err, sizeof(err)), 0, "layout: %s", err);
}

/* An account that has been around for a long time and is active now. */
static void old_account(cw_account_state_t *a, int64_t asof) {
    memset(a, 0, sizeof(*a));
    strcpy(a->account_id, "acme");
    a->partition = 0;
    a->asof_ms = asof;
    a->due_ms = -1;
    a->arr = -1;
    a->seats = -1;
    a->renewal_ms = -1;
    a->first_ms = T0 - 400 * DAY;
    a->first_login_ms = a->first_ms;
    a->last_login_ms = asof;
    a->last_event_ms = asof;
    a->cancel_ms = -1;
    for (int k = 0; k < CW_MAX_KEY_FEATURES; k++) {
        a->key_feature_first_ms[k] = a->first_ms; /* onboarded long ago */
    }
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        a->last_alert_ms[r] = -1;
    }
    a->q[0] = 3; /* some activity in the windows */
}

/* old_account, last scored at score in band. */
static void old_scored(cw_account_state_t *a, int64_t asof, double score, int band) {
    old_account(a, asof);
    a->has_score = 1;
    a->score = score;
    a->band = band;
}

/* A score with every signal judged and perfect, then overridden by the test. */
static void plain_score(const cw_model_t *m, cw_score_t *s, double score) {
    memset(s, 0, sizeof(*s));
    s->score = score;
    s->tier = CW_TIER_TECH;
    s->phase = CW_PHASE_ADOPTION;
    s->n_signals = m->n_signals;
    for (int i = 0; i < m->n_signals; i++) {
        s->signals[i].raw = 1;
        s->signals[i].ratio = 1;
        s->signals[i].normalised = 1;
        s->signals[i].weight = m->signals[i].weight;
        s->signals[i].contribution = m->signals[i].weight;
    }
}

/* Decide at asof and write the decision back as the state store would.
 * Returns the mask of reasons that fired. */
static unsigned step(const cw_model_t *m, const cw_layout_t *l, cw_account_state_t *a, int64_t asof,
                     const cw_score_t *s, cw_decision_t *d) {
    unsigned fired = 0;
    a->asof_ms = asof;
    cw_alert_decide(m, l, a, s, d);
    for (int i = 0; i < d->n_alerts; i++) {
        fired |= BIT(d->alerts[i].reason);
        cr_expect_eq(d->last_alert_ms[d->alerts[i].reason], asof);
        cr_expect(d->active_mask & BIT(d->alerts[i].reason), "a fired reason is active");
    }
    a->has_score = 1;
    a->score = s->score;
    a->band = d->band;
    a->tier = s->tier;
    a->phase = s->phase;
    a->active_mask = d->active_mask;
    memcpy(a->last_alert_ms, d->last_alert_ms, sizeof(a->last_alert_ms));
    if (d->n_alerts > 0) {
        strcpy(a->last_alert_id, d->alerts[d->n_alerts - 1].alert_id);
    }
    return fired;
}

static char band_char(cw_band_t b) {
    return b == D ? 'D' : b == C ? 'C' : 'H';
}

/* ---- bands ---- */

Test(alert, band_edges_per_tier) {
    static const struct {
        cw_tier_t tier;
        double score;
        int has_prev;
        cw_band_t prev, want;
    } rows[] = {
        /* no previous: plain lines (default 40/65, high 45/70) */
        {CW_TIER_TECH, 39.9, 0, H, D},
        {CW_TIER_TECH, 40, 0, H, C},
        {CW_TIER_TECH, 64.9, 0, H, C},
        {CW_TIER_TECH, 65, 0, H, H},
        {CW_TIER_LOW, 39.9, 0, H, D},
        {CW_TIER_LOW, 65, 0, H, H},
        {CW_TIER_HIGH, 44.9, 0, H, D},
        {CW_TIER_HIGH, 45, 0, H, C},
        {CW_TIER_HIGH, 69.9, 0, H, C},
        {CW_TIER_HIGH, 70, 0, H, H},
        {CW_TIER_TECH, 0, 0, H, D},
        {CW_TIER_TECH, 100, 0, H, H},
        /* previous danger: exit at 50 (high 55); healthy only at caution_exit */
        {CW_TIER_TECH, 49.9, 1, D, D},
        {CW_TIER_TECH, 50, 1, D, C},
        {CW_TIER_TECH, 69.9, 1, D, C},
        {CW_TIER_TECH, 70, 1, D, H},
        {CW_TIER_LOW, 49.9, 1, D, D},
        {CW_TIER_LOW, 50, 1, D, C},
        {CW_TIER_HIGH, 54.9, 1, D, D},
        {CW_TIER_HIGH, 55, 1, D, C},
        {CW_TIER_HIGH, 74.9, 1, D, C},
        {CW_TIER_HIGH, 75, 1, D, H},
        /* previous caution: danger below 40 (45), healthy at 70 (75) */
        {CW_TIER_TECH, 39.9, 1, C, D},
        {CW_TIER_TECH, 40, 1, C, C},
        {CW_TIER_TECH, 69.9, 1, C, C},
        {CW_TIER_TECH, 70, 1, C, H},
        {CW_TIER_HIGH, 44.9, 1, C, D},
        {CW_TIER_HIGH, 45, 1, C, C},
        {CW_TIER_HIGH, 74.9, 1, C, C},
        {CW_TIER_HIGH, 75, 1, C, H},
        /* previous healthy: plain lines */
        {CW_TIER_TECH, 64.9, 1, H, C},
        {CW_TIER_TECH, 65, 1, H, H},
        {CW_TIER_TECH, 39.9, 1, H, D},
        {CW_TIER_HIGH, 69.9, 1, H, C},
        {CW_TIER_HIGH, 70, 1, H, H},
        {CW_TIER_HIGH, 44.9, 1, H, D},
    };
    cw_model_t m;
    default_model(&m);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_band_t b =
            cw_alert_band(&m, rows[i].tier, rows[i].score, rows[i].has_prev, rows[i].prev);
        cr_expect_eq(b, rows[i].want, "row %zu: tier %d score %.1f prev %c: got %c want %c", i,
                     rows[i].tier, rows[i].score, rows[i].has_prev ? band_char(rows[i].prev) : '-',
                     band_char(b), band_char(rows[i].want));
    }
}

Test(alert, hysteresis_paths) {
    static const struct {
        cw_tier_t tier;
        double path[12];
        int n;
        const char *bands;
    } rows[] = {
        {CW_TIER_TECH, {60, 38, 45, 49.9, 50, 66, 70, 66, 64, 30}, 10, "CDDDCCHHCD"},
        {CW_TIER_TECH, {70, 64.9, 67, 69.9, 70, 65}, 6, "HCCCHH"},
        {CW_TIER_TECH, {30, 69, 39, 41, 39.9}, 5, "DCDDD"},
        {CW_TIER_TECH, {30, 80, 64, 40, 39}, 5, "DHCCD"},
        {CW_TIER_HIGH, {60, 44, 54, 55, 74, 75, 69}, 7, "CDDCCHC"},
        {CW_TIER_LOW, {65, 64.9, 40, 39.9, 49.9, 50}, 6, "HCCDDC"},
    };
    cw_model_t m;
    default_model(&m);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char got[16];
        cw_band_t prev = H;
        for (int k = 0; k < rows[i].n; k++) {
            prev = cw_alert_band(&m, rows[i].tier, rows[i].path[k], k > 0, prev);
            got[k] = band_char(prev);
        }
        got[rows[i].n] = '\0';
        cr_expect_str_eq(got, rows[i].bands, "path %zu: %s want %s", i, got, rows[i].bands);
    }
}

/* ---- entered_danger / recovered: cooldown and warm-up sequences ---- */

typedef struct {
    int64_t at; /* ms after T0 */
    double score;
    unsigned fired;
    cw_band_t band;
} seq_step_t;

typedef struct {
    const char *what;
    int warmup, cooldown;
    int64_t first; /* first activity, ms after T0 */
    seq_step_t steps[12];
    int n;
} seq_row_t;

Test(alert, danger_sequences) {
    static const seq_row_t rows[] = {
        {"re-entry within cooldown is held, fires once cooldown is over",
         0,
         7,
         -400 * DAY,
         {{0, 30, E, D},
          {1 * DAY, 60, R, C},
          {3 * DAY, 30, 0, D},
          {5 * DAY, 30, 0, D},
          {7 * DAY, 30, E, D},
          {8 * DAY, 60, R, C},
          {9 * DAY, 60, 0, C}},
         7},
        {"re-entry after cooldown fires",
         0,
         7,
         -400 * DAY,
         {{0, 30, E, D}, {1 * DAY, 60, R, C}, {10 * DAY, 30, E, D}, {11 * DAY, 80, R, H}},
         4},
        {"no repeat while in danger; hysteresis on the way out",
         0,
         7,
         -400 * DAY,
         {{0, 30, E, D},
          {1 * DAY, 20, 0, D},
          {2 * DAY, 45, 0, D},
          {3 * DAY, 49.9, 0, D},
          {4 * DAY, 50, R, C},
          {5 * DAY, 75, 0, H}},
         6},
        {"recovered within its cooldown is dropped",
         0,
         7,
         -400 * DAY,
         {{0, 30, E, D},
          {1 * DAY, 60, R, C},
          {7 * DAY, 30, E, D},
          {7 * DAY + 12 * HOUR, 60, 0, C},
          {8 * DAY, 60, 0, C},
          {9 * DAY, 30, 0, D}},
         6},
        {"warm-up suppresses entered_danger; fires when it ends",
         30,
         7,
         0,
         {{0, 30, 0, D},
          {5 * DAY, 30, 0, D},
          {30 * DAY - 1, 30, 0, D},
          {30 * DAY, 30, E, D},
          {31 * DAY, 60, R, C}},
         5},
        {"no recovered for a danger never announced",
         30,
         7,
         0,
         {{0, 30, 0, D},
          {10 * DAY, 60, 0, C},
          {20 * DAY, 30, 0, D},
          {35 * DAY, 60, 0, C},
          {40 * DAY, 30, E, D}},
         5},
        {"first scoring healthy, then danger",
         0,
         0,
         -400 * DAY,
         {{0, 90, 0, H},
          {1 * DAY, 10, E, D},
          {1 * DAY + HOUR, 60, R, C},
          {1 * DAY + 2 * HOUR, 10, E, D}},
         4},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    m.n_key_features = 0;
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const seq_row_t *r = &rows[i];
        cw_account_state_t a;
        m.warmup_days = r->warmup;
        m.cooldown_days = r->cooldown;
        old_account(&a, T0);
        a.first_ms = T0 + r->first;
        a.first_login_ms = a.first_ms;
        for (int k = 0; k < r->n; k++) {
            const seq_step_t *st = &r->steps[k];
            cw_score_t s;
            cw_decision_t d;
            plain_score(&m, &s, st->score);
            a.last_login_ms = T0 + st->at;
            unsigned fired = step(&m, &l, &a, T0 + st->at, &s, &d);
            cr_expect_eq(fired, st->fired, "%s: step %d: fired 0x%x want 0x%x", r->what, k, fired,
                         st->fired);
            cr_expect_eq(d.band, st->band, "%s: step %d: band %c want %c", r->what, k,
                         band_char(d.band), band_char(st->band));
        }
    }
}

/* ---- usage_drop ---- */

Test(alert, usage_drop_sequence) {
    static const struct {
        int64_t at;
        double ratio;
        int missing;
        unsigned fired;
        unsigned active; /* expected usage_drop bit afterwards */
    } steps[] = {
        {0, 0.4, 0, UD, UD},        /* dropped below half */
        {1 * DAY, 0.45, 0, 0, UD},  /* still dropped: no repeat */
        {2 * DAY, 0.6, 0, 0, 0},    /* back above: clears */
        {3 * DAY, 0.5, 0, 0, 0},    /* exactly 1 - drop_share: dropped, but within cooldown */
        {4 * DAY, 0.5, 0, 0, 0},    /* held back, not recorded */
        {7 * DAY, 0.5, 0, UD, UD},  /* cooldown over: fires */
        {8 * DAY, 0.0, 1, 0, 0},    /* missing trend is not a drop */
        {20 * DAY, 0.2, 0, UD, UD}, /* new drop after cooldown */
    };
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    default_model(&m);
    build(&m, &l);
    old_account(&a, T0);
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        cw_score_t s;
        cw_decision_t d;
        plain_score(&m, &s, 80);
        s.signals[1].ratio = steps[k].ratio;
        s.signals[1].normalised = steps[k].ratio;
        s.signals[1].missing = steps[k].missing;
        a.last_login_ms = T0 + steps[k].at;
        unsigned fired = step(&m, &l, &a, T0 + steps[k].at, &s, &d);
        cr_expect_eq(fired, steps[k].fired, "step %zu: fired 0x%x", k, fired);
        cr_expect_eq(d.active_mask & UD, steps[k].active, "step %zu: active", k);
        if (fired & UD) {
            cr_expect_geq(d.alerts[0].n_drivers, 1);
            cr_expect_eq(d.alerts[0].drivers[0], 1, "the dropped trend drives the alert");
        }
    }
}

Test(alert, usage_drop_score_share) {
    static const struct {
        double share, score_7d;
        int has_7d;
        double score;
        int fires;
    } rows[] = {
        {0.2, 80, 1, 64, 1},  {0.2, 80, 1, 64.1, 0}, {0.2, 80, 0, 10, 0}, {0.2, 0, 1, 0, 0},
        {0.2, 100, 1, 75, 1}, {0, 80, 1, 10, 0},     {0.5, 90, 1, 45, 1}, {0.5, 90, 1, 45.1, 0},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        m.score_drop_share = rows[i].share;
        old_account(&a, T0);
        a.has_score_7d = rows[i].has_7d;
        a.score_7d = rows[i].score_7d;
        plain_score(&m, &s, rows[i].score);
        unsigned fired = step(&m, &l, &a, T0, &s, &d);
        cr_expect_eq((fired & UD) != 0, rows[i].fires, "row %zu", i);
    }
}

Test(alert, usage_drop_warmup) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;
    default_model(&m);
    m.n_key_features = 0;
    build(&m, &l);
    old_account(&a, T0);
    a.first_ms = T0 - 10 * DAY; /* in warm-up */
    plain_score(&m, &s, 80);
    s.signals[1].ratio = 0.3;
    s.signals[1].normalised = 0.3;
    cr_expect_eq(step(&m, &l, &a, T0, &s, &d), 0u);
    cr_expect_eq(d.active_mask & UD, 0u, "suppressed condition is not recorded");
    cr_expect_neq(d.next_due_ms, -1);
    a.last_login_ms = T0 + 19 * DAY;
    cr_expect_eq(step(&m, &l, &a, T0 + 19 * DAY, &s, &d), 0u);
    a.last_login_ms = T0 + 20 * DAY;
    cr_expect_eq(step(&m, &l, &a, T0 + 20 * DAY, &s, &d), UD, "fires when warm-up ends");
}

/* ---- inactive ---- */

Test(alert, inactive_table) {
    static const struct {
        int64_t last_login_ago; /* -1: never logged in */
        int64_t first_ago;
        int fires;
    } rows[] = {
        {14 * DAY, 400 * DAY, 1},
        {14 * DAY - 1, 400 * DAY, 0},
        {30 * DAY, 400 * DAY, 1},
        {0, 400 * DAY, 0},
        {-1, 14 * DAY, 1},
        {-1, 14 * DAY - 1, 0},
        {-1, 0, 0},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    m.n_key_features = 0;
    m.warmup_days = 0;
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        int64_t asof = T0 + 10 * HOUR;
        old_account(&a, asof);
        a.first_ms = asof - rows[i].first_ago;
        a.last_login_ms = rows[i].last_login_ago < 0 ? -1 : asof - rows[i].last_login_ago;
        a.first_login_ms = a.last_login_ms;
        plain_score(&m, &s, 80);
        s.signals[0].normalised = 0.5; /* login-related driver */
        s.signals[2].normalised = 0.1; /* worse, but not login-related */
        unsigned fired = step(&m, &l, &a, asof, &s, &d);
        cr_expect_eq((fired & IN) != 0, rows[i].fires, "row %zu", i);
        if (rows[i].fires) {
            cr_expect_eq(d.alerts[0].reason, CW_REASON_INACTIVE);
            cr_expect_eq(d.alerts[0].n_drivers, 2, "login-related signals only");
            cr_expect_eq(d.alerts[0].drivers[0], 0);
            cr_expect_eq(d.alerts[0].drivers[1], 1);
            /* a day later, still inactive: no repeat */
            fired = step(&m, &l, &a, asof + DAY, &s, &d);
            cr_expect_eq(fired & IN, 0u, "row %zu: repeated", i);
            cr_expect(d.active_mask & IN);
            /* a login clears it; inactivity 14 days later fires again (cooldown passed) */
            a.last_login_ms = asof + 2 * DAY;
            fired = step(&m, &l, &a, asof + 2 * DAY, &s, &d);
            cr_expect_eq(d.active_mask & IN, 0u);
            fired = step(&m, &l, &a, asof + 16 * DAY, &s, &d);
            cr_expect_eq(fired & IN, IN, "row %zu: second inactivity", i);
        }
    }
}

/* ---- onboarding_stalled ---- */

Test(alert, onboarding_table) {
    const int64_t NEVER = INT64_MIN;
    static const struct {
        int has_login;    /* first_login_ms known (else first activity counts) */
        int64_t asof;     /* after first login/activity */
        int64_t kf0, kf1; /* first use after first login; NEVER */
        int fires;
    } rows[] = {
        {1, 29 * DAY, INT64_MIN, INT64_MIN, 0},  /* deadline not reached */
        {1, 30 * DAY, INT64_MIN, INT64_MIN, 1},  /* at the deadline */
        {1, 30 * DAY, 1 * DAY, 2 * DAY, 0},      /* both used in time */
        {1, 30 * DAY, 1 * DAY, INT64_MIN, 1},    /* one never used */
        {1, 40 * DAY, 1 * DAY, 30 * DAY, 0},     /* used exactly at the deadline */
        {1, 40 * DAY, 1 * DAY, 30 * DAY + 1, 1}, /* used just after it */
        {0, 30 * DAY, INT64_MIN, 5 * DAY, 1},    /* no login: from first activity */
        {0, 29 * DAY, INT64_MIN, 5 * DAY, 0},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        int64_t start = T0;
        old_account(&a, start + rows[i].asof);
        a.first_ms = start;
        a.first_login_ms = rows[i].has_login ? start : -1;
        a.last_login_ms = rows[i].has_login ? a.asof_ms : -1;
        if (!rows[i].has_login) {
            m.inactive_days = 0; /* keep inactivity out of this table */
        } else {
            m.inactive_days = 14;
        }
        a.key_feature_first_ms[0] = rows[i].kf0 == NEVER ? -1 : start + rows[i].kf0;
        a.key_feature_first_ms[1] = rows[i].kf1 == NEVER ? -1 : start + rows[i].kf1;
        plain_score(&m, &s, 80);
        unsigned fired = step(&m, &l, &a, a.asof_ms, &s, &d);
        cr_expect_eq(fired, rows[i].fires ? OS : 0u, "row %zu: fired 0x%x", i, fired);
        if (rows[i].fires) {
            fired = step(&m, &l, &a, a.asof_ms + 20 * DAY, &s, &d);
            cr_expect_eq(fired & OS, 0u, "row %zu: onboarding alert repeated", i);
        }
    }
    /* no key features: never stalled */
    {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        m.n_key_features = 0;
        m.inactive_days = 14;
        old_account(&a, T0 + 60 * DAY);
        a.first_ms = a.first_login_ms = T0;
        a.key_feature_first_ms[0] = a.key_feature_first_ms[1] = -1;
        plain_score(&m, &s, 80);
        cr_expect_eq(step(&m, &l, &a, a.asof_ms, &s, &d), 0u);
    }
}

/* ---- cancellation ---- */

Test(alert, cancellation_sequence) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;
    default_model(&m);
    build(&m, &l);
    old_account(&a, T0);

    plain_score(&m, &s, 85);
    cr_expect_eq(step(&m, &l, &a, T0, &s, &d), 0u);
    cr_expect_eq(d.band, H);

    /* notice: alert, forced danger, no separate entered_danger */
    a.cancel_ms = T0 + DAY - HOUR;
    plain_score(&m, &s, 85);
    s.forced_danger = 1;
    cr_expect_eq(step(&m, &l, &a, T0 + DAY, &s, &d), CX);
    cr_expect_eq(d.band, D);
    cr_expect_eq(d.previous_band, H);
    cr_expect_eq(d.score_changed, 1, "band change is a change");

    /* the day after: nothing new */
    cr_expect_eq(step(&m, &l, &a, T0 + 2 * DAY, &s, &d), 0u);
    cr_expect_eq(d.band, D);

    /* a second notice within the cooldown still fires */
    a.cancel_ms = T0 + 3 * DAY - HOUR;
    cr_expect_eq(step(&m, &l, &a, T0 + 3 * DAY, &s, &d), CX);

    /* a notice dated after the as-of is not seen yet */
    a.cancel_ms = T0 + 5 * DAY;
    cr_expect_eq(step(&m, &l, &a, T0 + 4 * DAY, &s, &d), 0u);
    cr_expect_neq(d.next_due_ms, -1);
    cr_expect_eq(step(&m, &l, &a, T0 + 5 * DAY, &s, &d), CX);

    /* not forcing: the notice alone does not move the band, and fires during warm-up too */
    old_account(&a, T0);
    a.first_ms = T0 - DAY;
    a.cancel_ms = T0 - HOUR;
    plain_score(&m, &s, 85);
    cr_expect_eq(step(&m, &l, &a, T0, &s, &d), CX);
    cr_expect_eq(d.band, H);
}

/* Each reason fires on its rising edge only, once. */
Test(alert, rising_edge_table) {
    static const struct {
        cw_reason_t reason;
    } rows[] = {{CW_REASON_ENTERED_DANGER},
                {CW_REASON_USAGE_DROP},
                {CW_REASON_INACTIVE},
                {CW_REASON_ONBOARDING_STALLED},
                {CW_REASON_CANCELLATION_NOTICE}};
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_reason_t r = rows[i].reason;
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        old_account(&a, T0);
        plain_score(&m, &s, 80);
        /* already held at the previous scoring: no alert (cancellation: already announced) */
        a.has_score = 1;
        a.score = 80;
        a.band = H;
        a.active_mask = BIT(r);
        a.last_alert_ms[r] = T0 - 30 * DAY;
        switch (r) {
        case CW_REASON_ENTERED_DANGER:
            s.score = 10;
            a.band = D;
            a.score = 10;
            break;
        case CW_REASON_USAGE_DROP:
            s.signals[1].ratio = 0.1;
            break;
        case CW_REASON_INACTIVE:
            a.last_login_ms = T0 - 20 * DAY;
            break;
        case CW_REASON_ONBOARDING_STALLED:
            a.key_feature_first_ms[1] = -1;
            break;
        case CW_REASON_CANCELLATION_NOTICE:
            a.cancel_ms = T0 - 31 * DAY;
            s.forced_danger = 1;
            break;
        default:
            break;
        }
        cw_alert_decide(&m, &l, &a, &s, &d);
        cr_expect_eq(d.n_alerts, 0, "%s: held condition re-alerted", cw_reason_name(r));
        cr_expect(d.active_mask & BIT(r) || r == CW_REASON_CANCELLATION_NOTICE,
                  "%s: held condition dropped", cw_reason_name(r));
        /* not held before: the rising edge fires */
        a.active_mask = 0;
        if (r == CW_REASON_CANCELLATION_NOTICE) {
            a.cancel_ms = T0 - HOUR;
        }
        cw_alert_decide(&m, &l, &a, &s, &d);
        cr_assert_eq(d.n_alerts, 1, "%s: edge did not fire (%d alerts)", cw_reason_name(r),
                     d.n_alerts);
        cr_expect_eq(d.alerts[0].reason, r);
        cr_expect_eq(d.last_alert_ms[r], T0);
        for (int o = 0; o < CW_REASON__COUNT; o++) {
            if (o != (int)r) {
                cr_expect_eq(d.last_alert_ms[o], a.last_alert_ms[o], "%s: other reason touched",
                             cw_reason_name(r));
            }
        }
    }
}

/* ---- ids ---- */

static int is_lower_hex(const char *s) {
    for (; *s; s++) {
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

Test(alert, id_stable_and_distinct) {
    static const char *const accounts[] = {"acme", "acme2", "b", "", "acme|entered_danger"};
    static const int64_t days[] = {0, 1, 2, 400};
    enum { NA = 5, ND = 4, N = NA * CW_REASON__COUNT * ND };
    static char ids[N][CW_ALERT_ID_MAX];
    int n = 0;
    for (int a = 0; a < NA; a++) {
        for (int r = 0; r < CW_REASON__COUNT; r++) {
            for (int d = 0; d < ND; d++) {
                char again[CW_ALERT_ID_MAX];
                int64_t t = T0 + days[d] * DAY;
                cw_alert_make_id(accounts[a], (cw_reason_t)r, t + 5 * HOUR, ids[n]);
                cr_expect_eq(strlen(ids[n]), 32u);
                cr_expect(is_lower_hex(ids[n]), "%s", ids[n]);
                /* same finding, same day, another hour: same id */
                cw_alert_make_id(accounts[a], (cw_reason_t)r, t + 23 * HOUR + 59 * 60000, again);
                cr_expect_str_eq(again, ids[n]);
                cw_alert_make_id(accounts[a], (cw_reason_t)r, t, again);
                cr_expect_str_eq(again, ids[n]);
                n++;
            }
        }
    }
    /* each 64-bit half alone already tells every finding apart */
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            cr_expect(strncmp(ids[i], ids[j], 16) != 0, "ids %d and %d: first halves collide", i,
                      j);
            cr_expect(strcmp(ids[i] + 16, ids[j] + 16) != 0, "ids %d and %d: second halves collide",
                      i, j);
        }
    }
    /* the two halves are different hashes */
    cr_expect(strncmp(ids[0], ids[0] + 16, 16) != 0);
}

Test(alert, reason_names) {
    static const char *const want[CW_REASON__COUNT] = {
        "entered_danger",     "usage_drop",          "inactive",
        "onboarding_stalled", "cancellation_notice", "recovered"};
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        cr_expect_str_eq(cw_reason_name((cw_reason_t)r), want[r]);
    }
    cr_expect_str_eq(cw_reason_name(CW_REASON__COUNT), "unknown");
}

/* ---- drivers ---- */

Test(alert, drivers_table) {
    static const struct {
        const char *what;
        double n[6];
        int missing[6];
        cw_reason_t reason;
        double trend_ratio;
        int drivers[3];
        int n_drivers;
    } rows[] = {
        /* lost: rate .3*.8=.24, feature .15*.5=.075, trend .25*.1=.025 */
        {"worst first", {0.2, 0.9, 0.5, 1, 1, 1}, {0}, CW_REASON_ENTERED_DANGER, 0.9, {0, 2, 1}, 3},
        {"at most three", {0, 0, 0, 0, 0, 0.5}, {0}, CW_REASON_ENTERED_DANGER, 1, {0, 1, 2}, 3},
        {"no loss, no driver", {1, 1, 1, 1, 0.5, 1}, {0}, CW_REASON_ENTERED_DANGER, 1, {4}, 1},
        {"missing never drives",
         {0, 0.5, 1, 1, 1, 1},
         {1, 0, 0, 0, 0, 0},
         CW_REASON_ENTERED_DANGER,
         0.5,
         {1},
         1},
        {"dropped trend first",
         {0, 0.4, 0.2, 1, 1, 1},
         {0},
         CW_REASON_USAGE_DROP,
         0.4,
         {1, 0, 2},
         3},
        {"inactive: login signals",
         {0.5, 0.5, 0, 0, 0, 1},
         {0},
         CW_REASON_INACTIVE,
         0.5,
         {0, 1},
         2},
        {"weights matter", {0.5, 1, 0.2, 1, 1, 1}, {0}, CW_REASON_ENTERED_DANGER, 1, {0, 2}, 2},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    m.n_key_features = 0;
    m.warmup_days = 0;
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        old_account(&a, T0);
        plain_score(&m, &s, 80);
        for (int k = 0; k < 6; k++) {
            s.signals[k].normalised = rows[i].n[k];
            s.signals[k].missing = rows[i].missing[k];
            s.signals[k].ratio = k == 1 ? rows[i].trend_ratio : rows[i].n[k];
        }
        if (rows[i].reason == CW_REASON_ENTERED_DANGER) {
            s.score = 10;
        } else if (rows[i].reason == CW_REASON_INACTIVE) {
            a.last_login_ms = T0 - 15 * DAY;
        }
        cw_alert_decide(&m, &l, &a, &s, &d);
        const cw_alert_t *al = NULL;
        for (int k = 0; k < d.n_alerts; k++) {
            if (d.alerts[k].reason == rows[i].reason) {
                al = &d.alerts[k];
            }
        }
        cr_assert_not_null(al, "%s: no alert", rows[i].what);
        cr_expect_eq(al->n_drivers, rows[i].n_drivers, "%s: %d drivers", rows[i].what,
                     al->n_drivers);
        for (int k = 0; k < rows[i].n_drivers && k < al->n_drivers; k++) {
            cr_expect_eq(al->drivers[k], rows[i].drivers[k], "%s: driver %d is %d", rows[i].what, k,
                         al->drivers[k]);
        }
    }
}

/* ---- next due, score_changed ---- */

Test(alert, next_due_table) {
    static const struct {
        const char *what;
        int zero_q;
        int64_t last_login_ago;
        unsigned prev_mask;
        int64_t first_ago;
        int64_t cancel_ago;              /* INT64_MIN none; negative: future */
        int64_t inactive_last_alert_ago; /* -1: never */
        int quiescent;
    } rows[] = {
        {"active account", 0, 0, 0, 400 * DAY, INT64_MIN, -1, 0},
        {"quiet, inactivity recorded", 1, 40 * DAY, IN, 400 * DAY, INT64_MIN, -1, 1},
        {"quiet, inactivity fires now", 1, 40 * DAY, 0, 400 * DAY, INT64_MIN, -1, 1},
        {"quiet but not yet inactive", 1, 10 * DAY, 0, 400 * DAY, INT64_MIN, -1, 0},
        {"quiet, inactivity held by cooldown", 1, 40 * DAY, 0, 400 * DAY, INT64_MIN, 2 * DAY, 0},
        {"windows not empty", 0, 40 * DAY, IN, 400 * DAY, INT64_MIN, -1, 0},
        {"in warm-up", 1, 20 * DAY, IN, 20 * DAY, INT64_MIN, -1, 0},
        {"future cancellation", 1, 40 * DAY, IN, 400 * DAY, -DAY, -1, 0},
        {"past cancellation announced", 1, 40 * DAY, IN, 400 * DAY, 50 * DAY, -1, 1},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    m.n_key_features = 0;
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        int64_t asof = T0 + 5 * DAY + 3 * HOUR;
        old_account(&a, asof);
        if (rows[i].zero_q) {
            memset(a.q, 0, sizeof(a.q));
        }
        a.first_ms = asof - rows[i].first_ago;
        a.last_login_ms = asof - rows[i].last_login_ago;
        a.has_score = 1;
        a.score = 80;
        a.band = H;
        a.active_mask = rows[i].prev_mask;
        if (rows[i].inactive_last_alert_ago >= 0) {
            a.last_alert_ms[CW_REASON_INACTIVE] = asof - rows[i].inactive_last_alert_ago;
        }
        if (rows[i].cancel_ago != INT64_MIN) {
            a.cancel_ms = asof - rows[i].cancel_ago;
            if (a.cancel_ms <= asof) {
                a.last_alert_ms[CW_REASON_CANCELLATION_NOTICE] = a.cancel_ms + HOUR;
            }
        }
        plain_score(&m, &s, 80);
        cw_alert_decide(&m, &l, &a, &s, &d);
        if (rows[i].quiescent) {
            cr_expect_eq(d.next_due_ms, -1, "%s: due %lld", rows[i].what, (long long)d.next_due_ms);
        } else {
            cr_expect_eq(d.next_due_ms, T0 + 6 * DAY - 1, "%s: due %lld", rows[i].what,
                         (long long)d.next_due_ms);
        }
    }
    /* the due time is the last millisecond of the as-of day (windows are
     * final then); a day-end evaluation schedules the next day's end */
    {
        static const struct {
            int64_t asof, due;
        } ends[] = {
            {T0, T0 + DAY - 1},           {T0 + 1, T0 + DAY - 1},
            {T0 + DAY - 2, T0 + DAY - 1}, {T0 + DAY - 1, T0 + 2 * DAY - 1},
            {T0 + DAY, T0 + 2 * DAY - 1},
        };
        for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
            cw_account_state_t a;
            cw_score_t s;
            cw_decision_t d;
            old_account(&a, ends[i].asof);
            plain_score(&m, &s, 80);
            cw_alert_decide(&m, &l, &a, &s, &d);
            cr_expect_eq(d.next_due_ms, ends[i].due, "asof %lld: due %lld, want %lld",
                         (long long)ends[i].asof, (long long)d.next_due_ms, (long long)ends[i].due);
        }
    }
}

/* An evaluation with a suppress mask decides only the reasons it may; the
 * others keep their previous active bits, fire nothing, and are decided by
 * the next evaluation that may (event-time mode: the day end). */
Test(alert, suppress_mask_defers_to_day_end) {
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    m.n_key_features = 0;
    build(&m, &l);
    const unsigned all = (1u << CW_REASON__COUNT) - 1;
    const unsigned only_cancel = all & ~(1u << CW_REASON_CANCELLATION_NOTICE);
    int64_t asof = T0 + 5 * DAY + 3 * HOUR;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;

    /* 1. event-triggered: the account is in danger, but entered_danger waits */
    old_scored(&a, asof, 80, H);
    a.suppress_mask = only_cancel;
    plain_score(&m, &s, 20);
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_expect_eq(d.band, CW_BAND_DANGER);
    cr_expect_eq(d.n_alerts, 0);
    cr_expect_eq(d.active_mask & (1u << CW_REASON_ENTERED_DANGER), 0);

    /* 2. the day end, with the band already danger from (1): now it fires */
    old_account(&a, T0 + 6 * DAY - 1);
    a.has_score = 1;
    a.score = 20;
    a.band = CW_BAND_DANGER;
    a.suppress_mask = 0;
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_assert_eq(d.n_alerts, 1);
    cr_expect_eq(d.alerts[0].reason, CW_REASON_ENTERED_DANGER);

    /* 3. event-triggered recovery while suppressed keeps the danger bit... */
    old_account(&a, T0 + 6 * DAY + HOUR);
    a.has_score = 1;
    a.score = 20;
    a.band = CW_BAND_DANGER;
    a.active_mask = 1u << CW_REASON_ENTERED_DANGER;
    a.last_alert_ms[CW_REASON_ENTERED_DANGER] = T0 + 6 * DAY - 1;
    a.suppress_mask = only_cancel;
    plain_score(&m, &s, 90);
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_expect_neq(d.band, CW_BAND_DANGER);
    cr_expect_eq(d.n_alerts, 0);
    cr_expect_neq(d.active_mask & (1u << CW_REASON_ENTERED_DANGER), 0);

    /* 4. ...so the day end announces `recovered` although the stored band
     * is no longer danger (cooldown of recovered counts from its own alerts) */
    old_account(&a, T0 + 7 * DAY - 1);
    a.has_score = 1;
    a.score = 90;
    a.band = d.band;
    a.active_mask = d.active_mask;
    a.last_alert_ms[CW_REASON_ENTERED_DANGER] = T0 + 6 * DAY - 1;
    a.suppress_mask = 0;
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_assert_eq(d.n_alerts, 1);
    cr_expect_eq(d.alerts[0].reason, CW_REASON_RECOVERED);
    cr_expect_eq(d.active_mask & (1u << CW_REASON_ENTERED_DANGER), 0);

    /* 5. a cancellation notice is never suppressed */
    old_account(&a, asof);
    a.cancel_ms = asof - HOUR;
    a.suppress_mask = only_cancel;
    plain_score(&m, &s, 80);
    s.forced_danger = 1;
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_assert_eq(d.n_alerts, 1);
    cr_expect_eq(d.alerts[0].reason, CW_REASON_CANCELLATION_NOTICE);
}

Test(alert, score_changed_table) {
    static const struct {
        int has_prev;
        double prev_score;
        cw_band_t prev_band;
        double score;
        int changed;
        double previous_score;
    } rows[] = {
        {0, 0, H, 80, 1, -1},                             /* first scoring */
        {1, 80, H, 80, 0, 80},                            /* same */
        {1, 80, H, 80.1, 1, 80},                          /* a tenth is a change */
        {1, 80.1, H, 80, 1, 80.1}, {1, 72, C, 72, 1, 72}, /* caution -> healthy at the same score */
        {1, 45, D, 45, 0, 45},                            /* stays danger */
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        old_account(&a, T0);
        a.has_score = rows[i].has_prev;
        a.score = rows[i].prev_score;
        a.band = rows[i].prev_band;
        a.active_mask = rows[i].prev_band == D ? E : 0;
        plain_score(&m, &s, rows[i].score);
        cw_alert_decide(&m, &l, &a, &s, &d);
        cr_expect_eq(d.score_changed, rows[i].changed, "row %zu", i);
        cr_expect_eq(d.previous_score, rows[i].previous_score, "row %zu", i);
        cr_expect_eq(d.previous_band, rows[i].has_prev ? rows[i].prev_band : d.band, "row %zu", i);
    }
}

/* ---- JSON ---- */

static yajl_val parse(const cw_buf_t *b) {
    char err[256];
    cr_assert_not_null(b->data);
    cr_assert_eq(b->oom, 0);
    yajl_val v = yajl_tree_parse(b->data, err, sizeof(err));
    cr_assert_not_null(v, "JSON does not parse: %s\n%s", err, b->data);
    return v;
}

static yajl_val get(yajl_val v, const char *k1, const char *k2) {
    const char *path[3] = {k1, k2, NULL};
    return yajl_tree_get(v, path, yajl_t_any);
}

static const char *get_str(yajl_val v, const char *k1, const char *k2) {
    yajl_val x = get(v, k1, k2);
    cr_assert(x != NULL && YAJL_IS_STRING(x), "%s.%s is not a string", k1, k2 ? k2 : "");
    return YAJL_GET_STRING(x);
}

static double get_num(yajl_val v, const char *k1, const char *k2) {
    yajl_val x = get(v, k1, k2);
    cr_assert(x != NULL && YAJL_IS_NUMBER(x), "%s.%s is not a number", k1, k2 ? k2 : "");
    return YAJL_GET_DOUBLE(x);
}

static int is_null(yajl_val v, const char *k1, const char *k2) {
    yajl_val x = get(v, k1, k2);
    return x != NULL && YAJL_IS_NULL(x);
}

/* A realistic scored account (default model, real cw_model_score). */
static void scored_account(const cw_model_t *m, const cw_layout_t *l, cw_account_state_t *a,
                           cw_score_t *s) {
    old_account(a, T0 + 10 * DAY + 5 * HOUR);
    strcpy(a->account_id, "ac\"me\\1");
    memset(a->q, 0, sizeof(a->q));
    a->seats = 50;
    a->arr = 1200000;
    strcpy(a->plan, "pro");
    a->renewal_ms = T0 + 200 * DAY;
    for (int w = 0; w < CW_WIN__COUNT; w++) {
        a->q[l->win_q[w]] = 10 + w; /* distinct per window */
    }
    a->q[l->plans[1].base_q[0]] = 400; /* login baseline 100/week vs 10 now: dropped */
    a->q[l->plans[4].win_q[0]] = 6;    /* support tickets at the ceiling */
    cw_model_score(m, l, a, s);
}

Test(alert, alert_json_entered_danger) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;
    cw_buf_t b = CW_BUF_INIT;
    default_model(&m);
    build(&m, &l);
    scored_account(&m, &l, &a, &s);
    cr_assert_lt(s.score, 40, "fixture should be in danger (%.1f)", s.score);
    a.last_login_ms = a.asof_ms - 3 * DAY;
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_assert_eq(d.n_alerts, 2);
    cr_assert_eq(d.alerts[0].reason, CW_REASON_ENTERED_DANGER);
    cr_assert_eq(d.alerts[1].reason, CW_REASON_USAGE_DROP);
    cw_alert_json(&m, &a, &s, &d, 0, &b);
    yajl_val v = parse(&b);
    cr_expect_str_eq(get_str(v, "alert_id", NULL), d.alerts[0].alert_id);
    cr_expect_str_eq(get_str(v, "account_id", NULL), "ac\"me\\1");
    cr_expect_str_eq(get_str(v, "reason", NULL), "entered_danger");
    cr_expect(fabs(get_num(v, "score", NULL) - s.score) < 1e-6);
    cr_expect(is_null(v, "previous_score", NULL));
    cr_expect(is_null(v, "previous_band", NULL));
    cr_expect_str_eq(get_str(v, "band", NULL), "danger");
    cr_expect_str_eq(get_str(v, "tier", NULL), "low");
    cr_expect_str_eq(get_str(v, "phase", NULL), "adoption");
    cr_expect_str_eq(get_str(v, "event_time", NULL), "2026-01-11T05:00:00.000Z");
    cr_expect_eq((int64_t)get_num(v, "as_of_ms", NULL), a.asof_ms);
    yajl_val sig = get(v, "signals", NULL);
    cr_assert(YAJL_IS_ARRAY(sig));
    cr_expect_eq((int)sig->u.array.len, d.alerts[0].n_drivers);
    cr_assert_geq(sig->u.array.len, 1u);
    {
        yajl_val first = sig->u.array.values[0];
        int di = d.alerts[0].drivers[0];
        cr_expect_str_eq(get_str(first, "name", NULL), m.signals[di].name);
        cr_expect(fabs(get_num(first, "raw", NULL) - s.signals[di].raw) < 1e-6);
        cr_expect(fabs(get_num(first, "normalised", NULL) - s.signals[di].normalised) < 1e-5);
        cr_expect(fabs(get_num(first, "weight", NULL) - s.signals[di].weight) < 1e-9);
        cr_expect(get(first, "contribution", NULL) != NULL);
        cr_expect(get(first, "ratio", NULL) != NULL);
    }
    cr_expect_eq(get_num(v, "facts", "days_since_login"), 3);
    cr_expect_eq(get_num(v, "facts", "arr"), 1200000);
    cr_expect_eq(get_num(v, "facts", "seats"), 50);
    cr_expect_str_eq(get_str(v, "facts", "plan"), "pro");
    const char *ex = get_str(v, "explanation", NULL);
    /* first scoring: nothing "fell" */
    cr_expect(strstr(ex, "Score is") != NULL && strstr(ex, "(danger)") != NULL, "%s", ex);
    cr_expect(strstr(ex, m.signals[d.alerts[0].drivers[0]].name) != NULL, "%s", ex);
    yajl_tree_free(v);
    cw_buf_free(&b);
}

/* Every reason renders a parseable alert with its reason and a sentence. */
Test(alert, alert_json_every_reason) {
    static const struct {
        cw_reason_t reason;
        const char *phrase; /* must appear in the explanation */
        const char *fact;   /* must appear in facts (NULL: none) */
    } rows[] = {
        {CW_REASON_ENTERED_DANGER, "Score fell to 20.0 (danger) from 80.0", NULL},
        {CW_REASON_USAGE_DROP, "Usage dropped", NULL},
        {CW_REASON_INACTIVE, "No login for 20 days", "days_since_login"},
        {CW_REASON_ONBOARDING_STALLED, "integrations", "missing_key_features"},
        {CW_REASON_CANCELLATION_NOTICE, "Cancellation notice", "cancel_time"},
        {CW_REASON_RECOVERED, "recovered to", NULL},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    m.warmup_days = 0;
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        cw_buf_t b = CW_BUF_INIT;
        cw_reason_t r = rows[i].reason;
        old_account(&a, T0 + 40 * DAY);
        a.has_score = 1;
        a.score = 80;
        a.band = H;
        plain_score(&m, &s, 80);
        switch (r) {
        case CW_REASON_ENTERED_DANGER:
            s.score = 20;
            s.signals[0].normalised = 0.1;
            break;
        case CW_REASON_USAGE_DROP:
            s.signals[1].ratio = 0.25;
            s.signals[1].normalised = 0.25;
            break;
        case CW_REASON_INACTIVE:
            a.last_login_ms = a.asof_ms - 20 * DAY;
            break;
        case CW_REASON_ONBOARDING_STALLED:
            a.first_ms = a.first_login_ms = T0;
            a.key_feature_first_ms[0] = T0 + DAY;
            a.key_feature_first_ms[1] = -1;
            break;
        case CW_REASON_CANCELLATION_NOTICE:
            a.cancel_ms = a.asof_ms - HOUR;
            s.forced_danger = 1;
            break;
        case CW_REASON_RECOVERED:
            a.band = D;
            a.score = 35;
            a.active_mask = E;
            s.score = 72;
            break;
        default:
            break;
        }
        cw_alert_decide(&m, &l, &a, &s, &d);
        cr_assert_eq(d.n_alerts, 1, "%s: %d alerts", cw_reason_name(r), d.n_alerts);
        cw_alert_json(&m, &a, &s, &d, 0, &b);
        yajl_val v = parse(&b);
        cr_expect_str_eq(get_str(v, "reason", NULL), cw_reason_name(r));
        cr_expect_eq(get_num(v, "previous_score", NULL), a.score);
        cr_expect_str_eq(get_str(v, "previous_band", NULL), cw_band_name((cw_band_t)a.band));
        const char *ex = get_str(v, "explanation", NULL);
        cr_expect(strstr(ex, rows[i].phrase) != NULL, "%s: '%s'", cw_reason_name(r), ex);
        cr_expect(ex[strlen(ex) - 1] == '.', "%s: one sentence: '%s'", cw_reason_name(r), ex);
        if (rows[i].fact != NULL) {
            cr_expect_not_null(get(v, "facts", rows[i].fact), "%s: fact %s", cw_reason_name(r),
                               rows[i].fact);
        }
        yajl_tree_free(v);
        cw_buf_free(&b);
    }
}

Test(alert, snapshot_json) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;
    cw_buf_t b = CW_BUF_INIT;
    default_model(&m);
    build(&m, &l);
    scored_account(&m, &l, &a, &s);
    cw_alert_decide(&m, &l, &a, &s, &d);
    cw_alert_snapshot_json(&m, &a, &s, &d, &b);
    yajl_val v = parse(&b);
    cr_expect_str_eq(get_str(v, "account_id", NULL), a.account_id);
    cr_expect_str_eq(get_str(v, "as_of", NULL), "2026-01-11T05:00:00.000Z");
    cr_expect_eq((int64_t)get_num(v, "as_of_ms", NULL), a.asof_ms);
    cr_expect(fabs(get_num(v, "score", NULL) - s.score) < 1e-6);
    cr_expect_str_eq(get_str(v, "band", NULL), cw_band_name(d.band));
    cr_expect_str_eq(get_str(v, "tier", NULL), "low");
    cr_expect_str_eq(get_str(v, "phase", NULL), "adoption");
    yajl_val sig = get(v, "signals", NULL);
    cr_assert(YAJL_IS_OBJECT(sig));
    cr_expect_eq(sig->u.object.len, (size_t)m.n_signals);
    for (int i = 0; i < m.n_signals; i++) {
        yajl_val one = get(sig, m.signals[i].name, NULL);
        cr_assert_not_null(one, "signal %s", m.signals[i].name);
        cr_expect(fabs(get_num(one, "raw", NULL) - s.signals[i].raw) < 1e-6);
        cr_expect(fabs(get_num(one, "contribution", NULL) - s.signals[i].contribution) < 1e-4);
        yajl_val miss = get(one, "missing", NULL);
        cr_expect(s.signals[i].missing ? YAJL_IS_TRUE(miss) : YAJL_IS_FALSE(miss));
    }
    cr_expect_str_eq(get_str(v, "last_alert_id", NULL), d.alerts[d.n_alerts - 1].alert_id);
    yajl_tree_free(v);

    /* no alert in this decision and none on record: last_alert_id null */
    cw_buf_reset(&b);
    a.has_score = 1;
    a.score = s.score;
    a.band = d.band;
    a.active_mask = d.active_mask;
    memcpy(a.last_alert_ms, d.last_alert_ms, sizeof(a.last_alert_ms));
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_expect_eq(d.n_alerts, 0);
    cw_alert_snapshot_json(&m, &a, &s, &d, &b);
    v = parse(&b);
    cr_expect(is_null(v, "last_alert_id", NULL));
    yajl_tree_free(v);
    cw_buf_free(&b);
}

Test(alert, explain_json) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_buf_t b = CW_BUF_INIT;
    default_model(&m);
    build(&m, &l);
    scored_account(&m, &l, &a, &s);
    cw_alert_explain_json(&m, &l, &a, &s, CW_BAND_DANGER, &b);
    yajl_val v = parse(&b);
    cr_expect_str_eq(get_str(v, "account_id", NULL), a.account_id);
    cr_expect_str_eq(get_str(v, "band", NULL), "danger");
    cr_expect_str_eq(get_str(v, "as_of", NULL), "2026-01-11T05:00:00.000Z");
    cr_expect(fabs(get_num(v, "score", NULL) - s.score) < 1e-6);
    yajl_val sig = get(v, "signals", NULL);
    cr_assert(YAJL_IS_ARRAY(sig));
    cr_assert_eq(sig->u.array.len, (size_t)m.n_signals);
    for (int i = 0; i < m.n_signals; i++) {
        yajl_val one = sig->u.array.values[i];
        cr_expect_str_eq(get_str(one, "name", NULL), m.signals[i].name);
        cr_expect(fabs(get_num(one, "weight", NULL) - m.signals[i].weight) < 1e-9);
        cr_expect_str_eq(get_str(one, "description", NULL), m.signals[i].description);
        cr_expect_not_null(get(one, "normalised", NULL));
        cr_expect_not_null(get(one, "contribution", NULL));
        cr_expect_not_null(get(one, "missing", NULL));
    }
    for (int w = 0; w < CW_WIN__COUNT; w++) {
        yajl_val x = get(v, "windows", cw_win_name((cw_win_t)w));
        cr_assert(x != NULL && YAJL_IS_INTEGER(x), "window %s", cw_win_name((cw_win_t)w));
        cr_expect_eq(YAJL_GET_INTEGER(x), 10 + w, "window %s", cw_win_name((cw_win_t)w));
    }
    cr_expect_eq(get_num(v, "attributes", "arr"), 1200000);
    cr_expect_eq(get_num(v, "attributes", "seats"), 50);
    cr_expect_str_eq(get_str(v, "attributes", "plan"), "pro");
    cr_expect_str_eq(get_str(v, "attributes", "renewal_date"), "2026-07-20");
    cr_expect(is_null(v, "last_alert", NULL));
    yajl_tree_free(v);

    /* unknown attributes are null; the last alert is the latest one */
    cw_buf_reset(&b);
    a.arr = -1;
    a.seats = -1;
    a.plan[0] = '\0';
    a.renewal_ms = -1;
    a.last_alert_ms[CW_REASON_INACTIVE] = T0 + DAY;
    a.last_alert_ms[CW_REASON_USAGE_DROP] = T0 + 2 * DAY;
    cw_alert_make_id(a.account_id, CW_REASON_USAGE_DROP, T0 + 2 * DAY, a.last_alert_id);
    cw_alert_explain_json(&m, &l, &a, &s, CW_BAND_CAUTION, &b);
    v = parse(&b);
    cr_expect(is_null(v, "attributes", "arr"));
    cr_expect(is_null(v, "attributes", "seats"));
    cr_expect(is_null(v, "attributes", "plan"));
    cr_expect(is_null(v, "attributes", "renewal_date"));
    cr_expect_str_eq(get_str(v, "last_alert", "alert_id"), a.last_alert_id);
    cr_expect_str_eq(get_str(v, "last_alert", "reason"), "usage_drop");
    cr_expect_str_eq(get_str(v, "last_alert", "as_of"), "2026-01-03T00:00:00.000Z");
    yajl_tree_free(v);
    cw_buf_free(&b);
}

/* The id of a cancellation alert is keyed on the notice's day, so the same
 * notice has one id whenever it is evaluated; the other reasons are keyed
 * on the as-of day. */
Test(alert, cancellation_id_keyed_on_notice_day) {
    static const struct {
        int64_t notice; /* from T0 */
        int64_t asof;   /* from T0 */
    } rows[] = {
        {0, 0},
        {HOUR, HOUR},
        {HOUR, DAY - 1},
        {HOUR, DAY + HOUR},
        {DAY - 1, 3 * DAY},
        {10 * HOUR, 40 * DAY},
    };
    cw_model_t m;
    cw_layout_t l;
    char want[CW_ALERT_ID_MAX], next_day[CW_ALERT_ID_MAX];
    default_model(&m);
    build(&m, &l);
    cw_alert_make_id("acme", CW_REASON_CANCELLATION_NOTICE, T0, want);
    cw_alert_make_id("acme", CW_REASON_CANCELLATION_NOTICE, T0 + DAY, next_day);
    cr_expect_str_neq(want, next_day, "a notice on another day is another finding");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_decision_t d;
        char inactive[CW_ALERT_ID_MAX];
        old_account(&a, T0 + rows[i].asof);
        a.cancel_ms = T0 + rows[i].notice;
        a.last_login_ms = a.asof_ms - 20 * DAY; /* and inactive, keyed on the as-of day */
        plain_score(&m, &s, 80);
        s.forced_danger = 1;
        cw_alert_decide(&m, &l, &a, &s, &d);
        cr_assert_eq(d.n_alerts, 2, "row %zu: %d alerts", i, d.n_alerts);
        cr_expect_eq(d.alerts[0].reason, CW_REASON_INACTIVE);
        cr_expect_eq(d.alerts[1].reason, CW_REASON_CANCELLATION_NOTICE);
        cw_alert_make_id("acme", CW_REASON_INACTIVE, a.asof_ms, inactive);
        cr_expect_str_eq(d.alerts[0].alert_id, inactive, "row %zu", i);
        cr_expect_str_eq(d.alerts[1].alert_id, want, "row %zu", i);
        cr_expect_eq(d.last_alert_ms[CW_REASON_CANCELLATION_NOTICE], a.asof_ms, "row %zu", i);
    }
}

/* explain's last_alert names the reason of last_alert_id, also when two
 * reasons fired in one decision (same as-of time). */
Test(alert, explain_last_alert_reason_table) {
    static const struct {
        cw_reason_t id_of;  /* last_alert_id is this reason's alert */
        int64_t inactive;   /* last_alert_ms of inactive, from T0 (-1 never) */
        int64_t cancel;     /* last_alert_ms of cancellation_notice, from T0 (-1 never) */
        int64_t notice;     /* cancel_ms, from T0 (-1 none) */
        const char *reason; /* expected */
        int64_t as_of;      /* expected, from T0 */
    } rows[] = {
        /* one decision fired both: the id tells which one was kept last */
        {CW_REASON_CANCELLATION_NOTICE, DAY, DAY, HOUR, "cancellation_notice", DAY},
        {CW_REASON_INACTIVE, DAY, DAY, HOUR, "inactive", DAY},
        /* different times */
        {CW_REASON_INACTIVE, 3 * DAY, DAY, HOUR, "inactive", 3 * DAY},
        {CW_REASON_CANCELLATION_NOTICE, DAY, 3 * DAY, 2 * DAY, "cancellation_notice", 3 * DAY},
        /* an id that matches nothing (older scheme): the latest, ties to the higher reason */
        {CW_REASON__COUNT, DAY, DAY, HOUR, "cancellation_notice", DAY},
        {CW_REASON__COUNT, 2 * DAY, DAY, HOUR, "inactive", 2 * DAY},
    };
    cw_model_t m;
    cw_layout_t l;
    default_model(&m);
    build(&m, &l);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cw_account_state_t a;
        cw_score_t s;
        cw_buf_t b = CW_BUF_INIT;
        char want_asof[40];
        old_account(&a, T0 + 5 * DAY);
        a.cancel_ms = rows[i].notice < 0 ? -1 : T0 + rows[i].notice;
        a.last_alert_ms[CW_REASON_INACTIVE] = rows[i].inactive < 0 ? -1 : T0 + rows[i].inactive;
        a.last_alert_ms[CW_REASON_CANCELLATION_NOTICE] =
            rows[i].cancel < 0 ? -1 : T0 + rows[i].cancel;
        if (rows[i].id_of == CW_REASON_CANCELLATION_NOTICE) {
            cw_alert_make_id(a.account_id, rows[i].id_of, a.cancel_ms, a.last_alert_id);
        } else if (rows[i].id_of == CW_REASON_INACTIVE) {
            cw_alert_make_id(a.account_id, rows[i].id_of, a.last_alert_ms[CW_REASON_INACTIVE],
                             a.last_alert_id);
        } else {
            strcpy(a.last_alert_id, "00000000000000000000000000000000");
        }
        plain_score(&m, &s, 80);
        cw_alert_explain_json(&m, &l, &a, &s, H, &b);
        yajl_val v = parse(&b);
        cr_expect_str_eq(get_str(v, "last_alert", "alert_id"), a.last_alert_id, "row %zu", i);
        cr_expect_str_eq(get_str(v, "last_alert", "reason"), rows[i].reason, "row %zu", i);
        cw_time_format(T0 + rows[i].as_of, want_asof, sizeof(want_asof));
        cr_expect_str_eq(get_str(v, "last_alert", "as_of"), want_asof, "row %zu", i);
        yajl_tree_free(v);
        cw_buf_free(&b);
    }
}

/* Quiet days: a day-end decision that stores nothing new schedules the
 * first later day end whose decision would store something, looking ahead
 * on the same inputs up to inputs_change_day (and CW_ALERT_LOOKAHEAD_DAYS). */
static void settled(const cw_model_t *m, const cw_layout_t *l, cw_account_state_t *a, cw_score_t *s,
                    cw_decision_t *d) {
    /* decide once and store it, as the commit would; then the same inputs
     * decide nothing new */
    cw_model_score(m, l, a, s);
    step(m, l, a, a->asof_ms, s, d);
    cw_model_score(m, l, a, s);
    cw_alert_decide(m, l, a, s, d);
    cr_assert_eq(d->n_alerts, 0);
    cr_assert_eq(d->score_changed, 0);
}

Test(alert, quiet_days_look_ahead) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;
    const int64_t day = T0 / DAY + 10, end = (day + 1) * DAY - 1;
    default_model(&m);
    build(&m, &l);

    /* inputs fixed for 20 days; the last login 2 days ago: inactivity
     * (14 days) begins on day + 12, and that decision would alert */
    old_account(&a, end);
    a.last_login_ms = end - 2 * DAY;
    a.inputs_change_day = day + 20;
    settled(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, (day + 13) * DAY - 1, "due day %lld",
                 (long long)(d.next_due_ms / DAY - day));
    a.asof_ms = d.next_due_ms;
    cw_model_score(&m, &l, &a, &s);
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_expect_eq(d.n_alerts, 1);
    cr_expect_eq(d.alerts[0].reason, CW_REASON_INACTIVE);

    /* a window rolls first: decide that day */
    old_account(&a, end);
    a.last_login_ms = end - 2 * DAY;
    a.inputs_change_day = day + 5;
    settled(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, (day + 6) * DAY - 1);

    /* nothing changes: at most CW_ALERT_LOOKAHEAD_DAYS ahead */
    m.inactive_days = 0;
    old_account(&a, end);
    a.inputs_change_day = INT64_MAX;
    settled(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, (day + CW_ALERT_LOOKAHEAD_DAYS + 2) * DAY - 1);

    /* no look-ahead: inputs unknown, or not a day end */
    old_account(&a, end);
    a.inputs_change_day = 0;
    settled(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, end + DAY);
    old_account(&a, end - HOUR);
    a.inputs_change_day = INT64_MAX;
    settled(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, end);

    /* a decision that stores something: the next day end */
    old_account(&a, end);
    a.inputs_change_day = INT64_MAX;
    cw_model_score(&m, &l, &a, &s);
    cw_alert_decide(&m, &l, &a, &s, &d); /* first scoring */
    cr_expect_eq(d.next_due_ms, end + DAY);
}

/* A quiet account that would drop its timer keeps it while events after
 * the as-of time are applied already (a batch crossed this day end): the
 * timer is the only mark of their day-end decisions, so dropping it lost
 * them in replays whose batches crossed (and not in others). */
Test(alert, quiescent_keeps_timer_for_events_applied_later) {
    cw_model_t m;
    cw_layout_t l;
    cw_account_state_t a;
    cw_score_t s;
    cw_decision_t d;
    const int64_t asof = T0 + 5 * DAY - 1; /* a day end */
    default_model(&m);
    m.n_key_features = 0;
    build(&m, &l);
    old_scored(&a, asof, 80, H);
    memset(a.q, 0, sizeof(a.q));
    a.last_login_ms = asof - 40 * DAY;
    a.last_event_ms = asof - 40 * DAY;
    a.active_mask = IN;
    plain_score(&m, &s, 80);
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, -1, "nothing newer: quiescent");
    a.last_event_ms = asof + 6 * DAY + HOUR; /* applied before this day end was decided */
    cw_alert_decide(&m, &l, &a, &s, &d);
    cr_expect_eq(d.next_due_ms, asof + DAY);
}
