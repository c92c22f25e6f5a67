/*
 * cw_model.c — the health-score model: the layout compiled from the
 * configured signals, the counter/set updates one event causes, and the
 * pure scoring of an account from its window query results.
 *
 * Why a layout: the Redis state must not know about signals. It keeps
 * generic per-day counters ("cl" = logins, "su" = usage quantity, ...) and
 * distinct sets ("U:lu" = users over login+usage), and answers generic
 * window queries (a counter summed, or a set counted, over a day range).
 * cw_layout_build derives, once at start-up, the smallest such set of
 * counters, sets and queries the model needs (deduplicated, so two signals
 * over the same data share storage), plus the fixed windows `explain`
 * reports. Names are derived from what is counted, not from signal order,
 * so state survives a config edit that reorders or renames signals.
 *
 * Scoring is a weighted mean of normalised signals over the signals that
 * have data ("missing" ones — unknown seats, too thin a trend baseline, a
 * mean over no events — are left out rather than scored as 0, so a young
 * or small account is not punished for what cannot be measured). When no
 * signal has data at all, the score is the neutral CW_MODEL_NEUTRAL_SCORE
 * (50): we know nothing, which is neither healthy nor danger.
 *
 * Everything here is pure and allocation-free; the hot path
 * (cw_layout_event_ops, cw_model_score) does no I/O.
 */
#include "cw_model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cw_common.h"

/* Score of an account none of whose signals has data (see file comment). */
#define CW_MODEL_NEUTRAL_SCORE 50.0
/* Retention floor: the explain windows reach back 30 days. */
#define CW_MODEL_MIN_RETENTION 30

static const char cw_type_chars[CW_EV__COUNT] = {'l', 'u', 'a', 't', 'n', 'x'};

static const char *const cw_win_names[CW_WIN__COUNT] = {
    "logins_7d", "logins_30d", "active_users_7d", "active_users_30d",
    "usage_7d",  "usage_30d",  "features_30d",
};

const char *cw_win_name(cw_win_t w) {
    if ((int)w < 0 || w >= CW_WIN__COUNT) {
        return NULL;
    }
    return cw_win_names[w];
}

/* ---- layout construction ---- */

/* Find or add a counter; returns its index or -1 when the table is full. */
static int layout_counter(cw_layout_t *l, cw_ev_type_t type, const char *feature, int sum) {
    char name[CW_KEYNAME_MAX];
    if (feature[0] != '\0') {
        snprintf(name, sizeof(name), "%c%c:%s", sum ? 's' : 'c', cw_type_chars[type], feature);
    } else {
        snprintf(name, sizeof(name), "%c%c", sum ? 's' : 'c', cw_type_chars[type]);
    }
    for (int i = 0; i < l->n_counters; i++) {
        if (strcmp(l->counters[i].name, name) == 0) {
            return i;
        }
    }
    if (l->n_counters >= CW_MAX_COUNTERS) {
        return -1;
    }
    cw_counter_def_t *c = &l->counters[l->n_counters];
    memset(c, 0, sizeof(*c));
    cw_strlcpy(c->name, name, sizeof(c->name));
    c->type = type;
    cw_strlcpy(c->feature, feature, sizeof(c->feature));
    c->sum = sum;
    c->retention_days = 0;
    return l->n_counters++;
}

/* Find or add a distinct set; returns its index or -1 when the table is full. */
static int layout_set(cw_layout_t *l, unsigned types, const char *feature, int of_users) {
    char name[CW_KEYNAME_MAX];
    char chars[CW_EV__COUNT + 1];
    int n = 0;
    for (int t = 0; t < CW_EV__COUNT; t++) {
        if (types & CW_EV_BIT(t)) {
            chars[n++] = cw_type_chars[t];
        }
    }
    chars[n] = '\0';
    if (feature[0] != '\0') {
        snprintf(name, sizeof(name), "%c:%s:%s", of_users ? 'U' : 'F', chars, feature);
    } else {
        snprintf(name, sizeof(name), "%c:%s", of_users ? 'U' : 'F', chars);
    }
    for (int i = 0; i < l->n_sets; i++) {
        if (strcmp(l->sets[i].name, name) == 0) {
            return i;
        }
    }
    if (l->n_sets >= CW_MAX_SETS) {
        return -1;
    }
    cw_set_def_t *s = &l->sets[l->n_sets];
    memset(s, 0, sizeof(*s));
    cw_strlcpy(s->name, name, sizeof(s->name));
    s->types = types;
    cw_strlcpy(s->feature, feature, sizeof(s->feature));
    s->of_users = of_users;
    return l->n_sets++;
}

/* Find or add a query; keeps counter and layout retention up to date.
 * Returns its index or -1 when the table is full. */
static int layout_query(cw_layout_t *l, int is_set, int index, int offset, int len) {
    int reach = offset + len;
    if (!is_set && l->counters[index].retention_days < reach) {
        l->counters[index].retention_days = reach;
    }
    if (l->retention_days < reach) {
        l->retention_days = reach;
    }
    for (int i = 0; i < l->n_queries; i++) {
        const cw_query_def_t *q = &l->queries[i];
        if (q->is_set == is_set && q->index == index && q->offset_days == offset &&
            q->len_days == len) {
            return i;
        }
    }
    if (l->n_queries >= CW_MAX_QUERIES) {
        return -1;
    }
    cw_query_def_t *q = &l->queries[l->n_queries];
    q->is_set = is_set;
    q->index = index;
    q->offset_days = offset;
    q->len_days = len;
    return l->n_queries++;
}

/* Counter query over (offset, len); -1 when a table is full. */
static int layout_counter_query(cw_layout_t *l, cw_ev_type_t type, const char *feature, int sum,
                                int offset, int len) {
    int c = layout_counter(l, type, feature, sum);
    if (c < 0) {
        return -1;
    }
    return layout_query(l, 0, c, offset, len);
}

/* Set query over (offset, len); -1 when a table is full. */
static int layout_set_query(cw_layout_t *l, unsigned types, const char *feature, int of_users,
                            int offset, int len) {
    int s = layout_set(l, types, feature, of_users);
    if (s < 0) {
        return -1;
    }
    return layout_query(l, 1, s, offset, len);
}

/* Add the queries of one signal term (window or baseline) to a plan list.
 * Returns 0, or -1 when a table is full. */
static int layout_term(cw_layout_t *l, const cw_signal_def_t *sig, int sum, int offset, int len,
                       int *qs, int *n_qs) {
    *n_qs = 0;
    if (sig->agg == CW_AGG_DISTINCT_USERS || sig->agg == CW_AGG_DISTINCT_FEATURES) {
        int q = layout_set_query(l, sig->types, sig->feature, sig->agg == CW_AGG_DISTINCT_USERS,
                                 offset, len);
        if (q < 0) {
            return -1;
        }
        qs[(*n_qs)++] = q;
        return 0;
    }
    for (int t = 0; t < CW_EV__COUNT; t++) {
        if (!(sig->types & CW_EV_BIT(t))) {
            continue;
        }
        int q = layout_counter_query(l, (cw_ev_type_t)t, sig->feature, sum, offset, len);
        if (q < 0) {
            return -1;
        }
        qs[(*n_qs)++] = q; /* at most CW_EV__COUNT == CW_MAX_TERMS entries */
    }
    return 0;
}

/* Check one signal definition against the layout's limits. */
static int layout_check_signal(const cw_signal_def_t *sig, char *errstr, size_t errstr_size) {
    unsigned all = (1u << CW_EV__COUNT) - 1u;
    int is_set = sig->agg == CW_AGG_DISTINCT_USERS || sig->agg == CW_AGG_DISTINCT_FEATURES;
    int trend = sig->norm == CW_NORM_TREND;
    int reach = sig->window_days + (trend ? sig->baseline_days : 0);
    if (sig->types == 0 || (sig->types & ~all) != 0) {
        snprintf(errstr, errstr_size, "signal %s: no or unknown event types", sig->name);
        return -1;
    }
    if ((int)sig->agg < CW_AGG_COUNT || sig->agg > CW_AGG_DISTINCT_FEATURES) {
        snprintf(errstr, errstr_size, "signal %s: unknown aggregation", sig->name);
        return -1;
    }
    if ((int)sig->norm < CW_NORM_TARGET || sig->norm > CW_NORM_RANGE) {
        snprintf(errstr, errstr_size, "signal %s: unknown normalisation", sig->name);
        return -1;
    }
    if (sig->window_days < 1) {
        snprintf(errstr, errstr_size, "signal %s: window_days must be >= 1", sig->name);
        return -1;
    }
    if (trend && sig->baseline_days < 1) {
        snprintf(errstr, errstr_size, "signal %s: a trend needs baseline_days >= 1", sig->name);
        return -1;
    }
    if (trend && sig->agg == CW_AGG_MEAN) {
        snprintf(errstr, errstr_size, "signal %s: a trend over a mean is not supported", sig->name);
        return -1;
    }
    if (is_set && reach > CW_MAX_WINDOW_DAYS) {
        snprintf(errstr, errstr_size, "signal %s: distinct window%s of %d days exceeds %d days",
                 sig->name, trend ? " plus baseline" : "", reach, CW_MAX_WINDOW_DAYS);
        return -1;
    }
    if (reach > CW_MAX_RETENTION_DAYS) {
        snprintf(errstr, errstr_size, "signal %s: window%s of %d days exceeds %d days", sig->name,
                 trend ? " plus baseline" : "", reach, CW_MAX_RETENTION_DAYS);
        return -1;
    }
    return 0;
}

int cw_layout_build(const cw_model_t *model, cw_layout_t *layout, char *errstr,
                    size_t errstr_size) {
    static const struct {
        int is_set, sum, days;
        unsigned types;
        int of_users;
    } wins[CW_WIN__COUNT] = {
        [CW_WIN_LOGINS_7D] = {0, 0, 7, CW_EV_BIT(CW_EV_LOGIN), 0},
        [CW_WIN_LOGINS_30D] = {0, 0, 30, CW_EV_BIT(CW_EV_LOGIN), 0},
        [CW_WIN_ACTIVE_USERS_7D] = {1, 0, 7, CW_EV_BIT(CW_EV_LOGIN) | CW_EV_BIT(CW_EV_USAGE), 1},
        [CW_WIN_ACTIVE_USERS_30D] = {1, 0, 30, CW_EV_BIT(CW_EV_LOGIN) | CW_EV_BIT(CW_EV_USAGE), 1},
        [CW_WIN_USAGE_7D] = {0, 1, 7, CW_EV_BIT(CW_EV_USAGE), 0},
        [CW_WIN_USAGE_30D] = {0, 1, 30, CW_EV_BIT(CW_EV_USAGE), 0},
        [CW_WIN_FEATURES_30D] = {1, 0, 30, CW_EV_BIT(CW_EV_USAGE), 0},
    };
    memset(layout, 0, sizeof(*layout));
    if (errstr != NULL && errstr_size > 0) {
        errstr[0] = '\0';
    }
    if (model->n_signals < 0 || model->n_signals > CW_MAX_SIGNALS) {
        snprintf(errstr, errstr_size, "model: %d signals (at most %d)", model->n_signals,
                 CW_MAX_SIGNALS);
        return -1;
    }
    /* The explain windows first: they use the most common counters, which
     * thereby get the lowest indices whatever the model. */
    for (int w = 0; w < CW_WIN__COUNT; w++) {
        int q;
        if (wins[w].is_set) {
            q = layout_set_query(layout, wins[w].types, "", wins[w].of_users, 0, wins[w].days);
        } else {
            cw_ev_type_t t = (wins[w].types & CW_EV_BIT(CW_EV_LOGIN)) ? CW_EV_LOGIN : CW_EV_USAGE;
            q = layout_counter_query(layout, t, "", wins[w].sum, 0, wins[w].days);
        }
        if (q < 0) {
            snprintf(errstr, errstr_size, "layout: tables too small for the explain windows");
            return -1;
        }
        layout->win_q[w] = q;
    }
    for (int i = 0; i < model->n_signals; i++) {
        const cw_signal_def_t *sig = &model->signals[i];
        cw_signal_plan_t *p = &layout->plans[i];
        int w = sig->window_days;
        int sum = sig->agg == CW_AGG_SUM || sig->agg == CW_AGG_MEAN;
        int rc;
        if (layout_check_signal(sig, errstr, errstr_size) != 0) {
            return -1;
        }
        rc = layout_term(layout, sig, sum, 0, w, p->win_q, &p->n_win_q);
        if (rc == 0 && sig->norm == CW_NORM_TREND) {
            rc = layout_term(layout, sig, sum, w, sig->baseline_days, p->base_q, &p->n_base_q);
        }
        if (rc == 0 && sig->agg == CW_AGG_MEAN) {
            rc = layout_term(layout, sig, 0, 0, w, p->cnt_q, &p->n_cnt_q);
        }
        if (rc != 0) {
            snprintf(errstr, errstr_size,
                     "signal %s: too many counters, sets or queries (limits %d/%d/%d)", sig->name,
                     CW_MAX_COUNTERS, CW_MAX_SETS, CW_MAX_QUERIES);
            return -1;
        }
    }
    if (layout->retention_days < CW_MODEL_MIN_RETENTION) {
        layout->retention_days = CW_MODEL_MIN_RETENTION;
    }
    layout->key_feature_of_usage = model->n_key_features > 0;
    return 0;
}

/* ---- event operations ---- */

/* The amount a SUM counter adds for an event. Same rule as cw_event_value()
 * (usage -> count, nps -> score, else 1), computed here so the pure scoring
 * library does not link against the consumer; keep the two in step. */
static int64_t model_event_value(const cw_event_t *ev) {
    switch (ev->type) {
    case CW_EV_USAGE:
        return ev->count >= 1 ? ev->count : 1;
    case CW_EV_NPS:
        return ev->score >= 0 ? ev->score : 0;
    default:
        return 1;
    }
}

void cw_layout_event_ops(const cw_layout_t *layout, const cw_model_t *model, const cw_event_t *ev,
                         cw_event_ops_t *ops) {
    ops->n_counters = 0;
    ops->n_sets = 0;
    ops->key_feature = -1;
    if ((int)ev->type < 0 || ev->type >= CW_EV__COUNT) {
        return;
    }
    for (int i = 0; i < layout->n_counters; i++) {
        const cw_counter_def_t *c = &layout->counters[i];
        int64_t amount;
        if (c->type != ev->type) {
            continue;
        }
        if (c->feature[0] != '\0' && strcmp(c->feature, ev->feature) != 0) {
            continue;
        }
        amount = c->sum ? model_event_value(ev) : 1;
        if (amount == 0) {
            continue; /* adding 0 changes nothing; spare the store the write */
        }
        ops->counter[ops->n_counters] = i;
        ops->amount[ops->n_counters] = amount;
        ops->n_counters++;
    }
    for (int i = 0; i < layout->n_sets; i++) {
        const cw_set_def_t *s = &layout->sets[i];
        const char *member = s->of_users ? ev->user_id : ev->feature;
        if (!(s->types & CW_EV_BIT(ev->type))) {
            continue;
        }
        if (s->feature[0] != '\0' && strcmp(s->feature, ev->feature) != 0) {
            continue;
        }
        if (member[0] == '\0') {
            continue;
        }
        ops->set[ops->n_sets++] = i;
    }
    if (ev->type == CW_EV_USAGE && ev->feature[0] != '\0') {
        for (int k = 0; k < model->n_key_features && k < CW_MAX_KEY_FEATURES; k++) {
            if (strcmp(model->key_features[k], ev->feature) == 0) {
                ops->key_feature = k;
                break;
            }
        }
    }
}

/* ---- scoring ---- */

static double clamp01(double v) {
    if (!(v > 0.0)) { /* also catches NaN */
        return 0.0;
    }
    return v > 1.0 ? 1.0 : v;
}

double cw_model_normalise(const cw_signal_def_t *sig, double ratio) {
    double n;
    if (sig->norm == CW_NORM_RANGE) {
        double span = sig->range_max - sig->range_min;
        if (span > 0.0) {
            n = clamp01((ratio - sig->range_min) / span);
        } else {
            n = ratio >= sig->range_max ? 1.0 : 0.0;
        }
    } else if (sig->target > 0.0) {
        n = clamp01(ratio / sig->target);
    } else {
        n = 1.0; /* a non-positive target is always met */
    }
    if (sig->direction < 0) {
        n = 1.0 - n;
    }
    return n;
}

cw_tier_t cw_model_tier(const cw_model_t *model, double arr) {
    if (!(arr >= 0.0)) {
        return CW_TIER_TECH;
    }
    if (arr >= model->tier_high_arr) {
        return CW_TIER_HIGH;
    }
    if (arr >= model->tier_low_arr) {
        return CW_TIER_LOW;
    }
    return CW_TIER_TECH;
}

cw_phase_t cw_model_phase(const cw_model_t *model, const cw_account_state_t *acct) {
    int64_t asof = acct->asof_ms;
    if (acct->renewal_ms >= 0) {
        int64_t until = acct->renewal_ms - asof;
        if (until >= 0 && until <= (int64_t)model->renewal_days * CW_MS_PER_DAY) {
            return CW_PHASE_RENEWAL;
        }
    }
    if (acct->first_ms < 0 ||
        asof - acct->first_ms < (int64_t)model->onboarding_days * CW_MS_PER_DAY) {
        return CW_PHASE_ONBOARDING;
    }
    return CW_PHASE_ADOPTION;
}

/* Sum of the query results listed in qs. */
static double sum_queries(const cw_account_state_t *acct, const int *qs, int n) {
    double v = 0.0;
    for (int i = 0; i < n; i++) {
        if (qs[i] >= 0 && qs[i] < CW_MAX_QUERIES) {
            v += acct->q[qs[i]];
        }
    }
    return v;
}

/* Raw value, ratio and missing flag of one signal. */
static void score_signal(const cw_signal_def_t *sig, const cw_signal_plan_t *p,
                         const cw_account_state_t *acct, cw_signal_value_t *v) {
    double win = sum_queries(acct, p->win_q, p->n_win_q);
    memset(v, 0, sizeof(*v));
    v->weight = sig->weight > 0.0 ? sig->weight : 0.0;
    v->raw = win;
    if (sig->agg == CW_AGG_MEAN) {
        double cnt = sum_queries(acct, p->cnt_q, p->n_cnt_q);
        if (cnt > 0.0) {
            v->raw = win / cnt;
        } else {
            v->raw = 0.0;
            v->missing = 1;
        }
    }
    v->ratio = v->raw;
    switch (sig->norm) {
    case CW_NORM_SEATS:
        if (acct->seats > 0) {
            v->ratio = v->raw / (double)acct->seats;
        } else {
            v->ratio = 0.0;
            v->missing = 1;
        }
        break;
    case CW_NORM_TREND: {
        double base = sum_queries(acct, p->base_q, p->n_base_q);
        v->baseline = sig->baseline_days > 0
                          ? base * (double)sig->window_days / (double)sig->baseline_days
                          : 0.0;
        if (v->baseline < sig->min_baseline || !(v->baseline > 0.0)) {
            v->ratio = 0.0;
            v->missing = 1;
        } else {
            v->ratio = v->raw / v->baseline;
        }
        break;
    }
    case CW_NORM_TARGET:
    case CW_NORM_RANGE:
    default:
        break;
    }
    if (!v->missing) {
        v->normalised = cw_model_normalise(sig, v->ratio);
    }
}

void cw_model_score(const cw_model_t *model, const cw_layout_t *layout,
                    const cw_account_state_t *acct, cw_score_t *out) {
    double wsum = 0.0;
    double points = 0.0;
    int n = model->n_signals;
    if (n < 0) {
        n = 0;
    }
    if (n > CW_MAX_SIGNALS) {
        n = CW_MAX_SIGNALS;
    }
    out->n_signals = n;
    for (int i = 0; i < n; i++) {
        cw_signal_value_t *v = &out->signals[i];
        score_signal(&model->signals[i], &layout->plans[i], acct, v);
        if (!v->missing) {
            wsum += v->weight;
        }
    }
    for (int i = 0; i < n; i++) {
        cw_signal_value_t *v = &out->signals[i];
        if (!v->missing && wsum > 0.0) {
            v->contribution = 100.0 * v->weight * v->normalised / wsum;
            points += v->contribution;
        } else {
            v->contribution = 0.0;
        }
    }
    out->score = wsum > 0.0 ? floor(points * 10.0 + 0.5) / 10.0 : CW_MODEL_NEUTRAL_SCORE;
    if (out->score > 100.0) {
        out->score = 100.0;
    }
    out->tier = cw_model_tier(model, acct->arr);
    out->phase = cw_model_phase(model, acct);
    /* A notice counts from its own time on (an as-of before it does not see it). */
    out->forced_danger = model->cancellation_forces_danger && acct->cancel_ms >= 0 &&
                         acct->cancel_ms <= acct->asof_ms;
}
