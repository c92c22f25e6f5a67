/*
 * cw_view.c — an account as of a time from its raw Redis data (see cw_view.h).
 * The arithmetic mirrors what cw_state's apply stores (formats in
 * cw_state_int.h: "Stored formats"):
 * counters per day, 52-bit day masks per set member, history newest first.
 */
#include "cw_view.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"

int cw_sv_i64(cw_sv_t v, int64_t *out) {
    const char *s = v.p;
    size_t i = 0;
    int neg = 0;
    uint64_t x = 0;
    if (s == NULL || v.len == 0) {
        return -1;
    }
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == v.len || v.len - i > 18) {
        return -1; /* 18 digits never overflow */
    }
    for (; i < v.len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *out = neg ? -(int64_t)x : (int64_t)x;
    return 0;
}

int cw_sv_dbl(cw_sv_t v, double *out) {
    char tmp[64];
    char *end = NULL;
    double d;
    if (v.p == NULL || v.len == 0 || v.len >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, v.p, v.len);
    tmp[v.len] = '\0';
    errno = 0;
    d = strtod(tmp, &end);
    if (errno != 0 || end == tmp || *end != '\0') {
        return -1;
    }
    *out = d;
    return 0;
}

int cw_view_plan_build(const cw_conf_t *conf, const cw_layout_t *l, int slack_days,
                       cw_view_plan_t *plan, char *errstr, size_t errstr_size) {
    memset(plan, 0, sizeof(*plan));
    plan->max_retention =
        conf->retention_days > l->retention_days ? conf->retention_days : l->retention_days;
    if (l->n_counters < 0 || l->n_counters > CW_MAX_COUNTERS || l->n_sets < 0 ||
        l->n_sets > CW_MAX_SETS || l->n_queries < 0 || l->n_queries > CW_MAX_QUERIES) {
        snprintf(errstr, errstr_size, "state: layout out of range");
        return -1;
    }
    for (int j = 0; j < l->n_queries; j++) {
        const cw_query_def_t *q = &l->queries[j];
        int need = q->offset_days + q->len_days;
        if (q->len_days < 1 || q->offset_days < 0 || q->index < 0 ||
            q->index >= (q->is_set ? l->n_sets : l->n_counters)) {
            snprintf(errstr, errstr_size, "state: layout query %d out of range", j);
            return -1;
        }
        if (q->is_set) {
            if (need > CW_MAX_WINDOW_DAYS) {
                snprintf(errstr, errstr_size, "state: distinct window of %d days over %d", need,
                         CW_MAX_WINDOW_DAYS);
                return -1;
            }
            plan->sr[q->index] = need > plan->sr[q->index] ? need : plan->sr[q->index];
        } else {
            if (need > CW_MAX_RETENTION_DAYS) {
                snprintf(errstr, errstr_size, "state: window of %d days over %d", need,
                         CW_MAX_RETENTION_DAYS);
                return -1;
            }
            plan->cq[q->index] = need > plan->cq[q->index] ? need : plan->cq[q->index];
        }
    }
    for (int c = 0; c < l->n_counters; c++) {
        int r = l->counters[c].retention_days > plan->cq[c] ? l->counters[c].retention_days
                                                            : plan->cq[c];
        plan->cr[c] = r + slack_days;
        plan->max_retention = plan->cr[c] > plan->max_retention ? plan->cr[c] : plan->max_retention;
    }
    for (int s = 0; s < l->n_sets; s++) {
        plan->sr[s] = (plan->sr[s] > 0 ? plan->sr[s] : 1) + slack_days;
    }
    {
        int wq = l->win_q[CW_WIN_LOGINS_7D];
        plan->logins =
            wq >= 0 && wq < l->n_queries && !l->queries[wq].is_set ? l->queries[wq].index : -1;
    }
    return 0;
}

/* ---- the account hash ---- */

/* Scalar fields the view reads (other than per-day counters). */
enum {
    F_P = 0,
    F_ARR,
    F_SEA,
    F_REN,
    F_PLN,
    F_FM,
    F_FL,
    F_LL,
    F_LM,
    F_KC,
    F_SC,
    F_BD,
    F_AM,
    F_LID,
    F_TI,
    F_PH,
    F_LT,
    F_A0,
    F_K0 = F_A0 + CW_REASON__COUNT,
    F__COUNT = F_K0 + CW_MAX_KEY_FEATURES
};

/* The scalar a field name stands for, -1 for anything else. Names are those
 * cw_state stores (cw_state_int.h: "Stored formats"). */
static int scalar_field(cw_sv_t f) {
    static const char *const names[] = {"p",  "arr", "sea", "ren", "pln", "fm", "fl", "ll", "lm",
                                        "kc", "sc",  "bd",  "am",  "lid", "ti", "ph", "lt"};
    const char *s = f.p;
    if (f.len == 2 && (s[0] == 'a' || s[0] == 'k') && s[1] >= '0' && s[1] <= '9') {
        int d = s[1] - '0';
        if (s[0] == 'a') {
            return d < CW_REASON__COUNT ? F_A0 + d : -1;
        }
        return d < CW_MAX_KEY_FEATURES ? F_K0 + d : -1;
    }
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        if (strlen(names[k]) == f.len && memcmp(names[k], s, f.len) == 0) {
            return (int)k;
        }
    }
    return -1;
}

/* "<day>:<counter>" → day and counter index; -1 when f is not one. */
static int counter_field(const cw_layout_t *l, cw_sv_t f, int64_t *day) {
    const char *colon = memchr(f.p, ':', f.len);
    cw_sv_t name;
    if (colon == NULL || colon == f.p || !(f.p[0] == '-' || (f.p[0] >= '0' && f.p[0] <= '9'))) {
        return -1;
    }
    if (cw_sv_i64((cw_sv_t){f.p, (size_t)(colon - f.p)}, day) != 0) {
        return -1;
    }
    name.p = colon + 1;
    name.len = f.len - (size_t)(name.p - f.p);
    for (int c = 0; c < l->n_counters; c++) {
        const char *cn = l->counters[c].name;
        if (strlen(cn) == name.len && memcmp(cn, name.p, name.len) == 0) {
            return c;
        }
    }
    return -1;
}

static int64_t sv_i64_or(cw_sv_t v, int64_t dflt) {
    int64_t x;
    return cw_sv_i64(v, &x) == 0 ? x : dflt;
}

/* The value part of an attribute "<ts>,<value>" (p NULL when absent). */
static cw_sv_t attr_value(cw_sv_t v) {
    const char *comma = v.p != NULL ? memchr(v.p, ',', v.len) : NULL;
    cw_sv_t out = {NULL, 0};
    if (comma != NULL) {
        out.p = comma + 1;
        out.len = v.len - (size_t)(out.p - v.p);
    }
    return out;
}

/* The first as-of day after day at which data of day e changes query q's
 * value (it enters the window at e + offset and leaves it at e + offset +
 * len) lowers *chg to it. */
static void note_change(int64_t *chg, int64_t day, int64_t e, const cw_query_def_t *q) {
    int64_t enter = e + q->offset_days, leave = enter + q->len_days;
    int64_t x = enter > day ? enter : leave;
    if (x > day && x < *chg) {
        *chg = x;
    }
}

/* "<a>,<b>" split at the first comma; -1 when there is none. */
static int split_pair(cw_sv_t v, cw_sv_t *a, cw_sv_t *b) {
    const char *comma = v.p != NULL ? memchr(v.p, ',', v.len) : NULL;
    if (comma == NULL) {
        return -1;
    }
    a->p = v.p;
    a->len = (size_t)(comma - v.p);
    *b = attr_value(v);
    return 0;
}

void cw_view_eval(const cw_layout_t *l, const cw_view_plan_t *plan, int64_t asof_ms,
                  const cw_sv_t *hash, size_t n_hash, const cw_sv_t *const *sets,
                  const size_t *n_sets, const cw_sv_t *hist, size_t n_hist,
                  cw_account_state_t *out) {
    cw_sv_t sc[F__COUNT];
    int64_t day = cw_time_day(asof_ms);
    int64_t login_day = INT64_MIN; /* newest day <= day with logins (within retention) */
    int64_t fl, ll;
    cw_sv_t v;
    char id[CW_FIELD_MAX];
    int64_t due = out->due_ms;
    int64_t chg = INT64_MAX; /* out->inputs_change_day */

    cw_strlcpy(id, out->account_id, sizeof(id));
    memset(out, 0, sizeof(*out));
    cw_strlcpy(out->account_id, id, sizeof(out->account_id));
    out->due_ms = due;
    out->asof_ms = asof_ms;
    memset(sc, 0, sizeof(sc));

    /* one pass over the hash: scalars by name, counters into their queries */
    for (size_t i = 0; i + 1 < 2 * n_hash; i += 2) {
        cw_sv_t f = hash[i], val = hash[i + 1];
        int64_t d, k, amount;
        int c, s;
        if (f.p == NULL || f.len == 0) {
            continue;
        }
        s = scalar_field(f);
        if (s >= 0) {
            sc[s] = val;
            continue;
        }
        c = counter_field(l, f, &d);
        if (c < 0 || cw_sv_i64(val, &amount) != 0 || amount == 0) {
            continue;
        }
        k = day - d; /* days back from the as-of day */
        if (k >= 0 && c == plan->logins && amount > 0 && k < plan->cr[c] && d > login_day) {
            login_day = d;
        }
        for (int j = 0; j < l->n_queries; j++) {
            const cw_query_def_t *q = &l->queries[j];
            if (q->is_set || q->index != c) {
                continue;
            }
            note_change(&chg, day, d, q);
            if (k >= q->offset_days && k < q->offset_days + q->len_days) {
                out->q[j] += (double)amount;
            }
        }
    }

    /* distinct sets: a member counts in a window when its mask has a day in it */
    for (int s = 0; s < l->n_sets; s++) {
        size_t n = sets != NULL && n_sets != NULL ? n_sets[s] : 0;
        for (size_t m = 0; m < n; m++) {
            cw_sv_t a, b;
            int64_t L, M;
            if (split_pair(sets[s][m], &a, &b) != 0 || cw_sv_i64(a, &L) != 0 ||
                cw_sv_i64(b, &M) != 0 || M < 0) {
                continue;
            }
            for (int j = 0; j < l->n_queries; j++) {
                const cw_query_def_t *q = &l->queries[j];
                int64_t lo, hi;
                if (!q->is_set || q->index != s) {
                    continue;
                }
                for (uint64_t bits = (uint64_t)M & ((UINT64_C(1) << 52) - 1); bits != 0;
                     bits &= bits - 1) {
                    note_change(&chg, day, L - __builtin_ctzll(bits), q);
                }
                lo = L - (day - q->offset_days);
                hi = lo + q->len_days - 1;
                lo = lo < 0 ? 0 : lo;
                hi = hi > 51 ? 51 : hi;
                if (lo <= hi && (((uint64_t)M >> lo) & ((UINT64_C(1) << (hi - lo + 1)) - 1)) != 0) {
                    out->q[j] += 1;
                }
            }
        }
    }

    /* attributes and facts */
    out->partition = (int)sv_i64_or(sc[F_P], -1);
    out->arr = -1;
    if ((v = attr_value(sc[F_ARR])).p == NULL || cw_sv_dbl(v, &out->arr) != 0) {
        out->arr = -1;
    }
    out->seats = -1;
    if ((v = attr_value(sc[F_SEA])).p == NULL || cw_sv_i64(v, &out->seats) != 0) {
        out->seats = -1;
    }
    out->renewal_ms = -1;
    if ((v = attr_value(sc[F_REN])).p == NULL || cw_sv_i64(v, &out->renewal_ms) != 0) {
        out->renewal_ms = -1;
    }
    if ((v = attr_value(sc[F_PLN])).p != NULL) {
        size_t n = v.len < sizeof(out->plan) - 1 ? v.len : sizeof(out->plan) - 1;
        memcpy(out->plan, v.p, n);
        out->plan[n] = '\0';
    }
    out->first_ms = sv_i64_or(sc[F_FM], -1);
    out->last_event_ms = sv_i64_or(sc[F_LM], -1);
    out->cancel_ms = sv_i64_or(sc[F_KC], -1);
    for (int k = 0; k < CW_MAX_KEY_FEATURES; k++) {
        out->key_feature_first_ms[k] = sv_i64_or(sc[F_K0 + k], -1);
    }

    /* logins as of asof: a later login (applied before this read of an
     * earlier time) is replaced by the last day <= asof with logins — its
     * end, or asof itself — which is exact for day-end decisions */
    fl = sv_i64_or(sc[F_FL], -1);
    ll = sv_i64_or(sc[F_LL], -1);
    if (fl > asof_ms || ll > asof_ms || out->last_event_ms > asof_ms) {
        chg = day + 1; /* data newer than asof: no look-ahead */
    }
    if (plan->logins >= 0 && ll >= 0 && ll > asof_ms) {
        /* lt: the last login at or before the pending decision, kept by the
         * apply when a newer one came first; used when its day bucket is
         * gone (older than the logins' retention) */
        int64_t lt = sv_i64_or(sc[F_LT], -1);
        if (lt > asof_ms) {
            lt = -1;
        }
        if (login_day == day) {
            ll = asof_ms;
        } else if (login_day != INT64_MIN && (lt < 0 || cw_time_day(lt) <= login_day)) {
            ll = (login_day + 1) * CW_MS_PER_DAY - 1;
        } else if (lt >= 0) {
            ll = lt;
        } else if (fl < 0 || fl > asof_ms) {
            ll = -1;
        } else {
            /* logged in before the retention: the oldest day it can show */
            ll = (day - plan->cr[plan->logins] + 1) * CW_MS_PER_DAY - 1;
        }
    }
    out->first_login_ms = fl >= 0 && fl > asof_ms ? -1 : fl;
    out->last_login_ms = ll;

    /* the last decision */
    if (sc[F_SC].p != NULL && cw_sv_dbl(sc[F_SC], &out->score) == 0) {
        out->has_score = 1;
    }
    out->band = (int)sv_i64_or(sc[F_BD], 0);
    out->tier = (int)sv_i64_or(sc[F_TI], -1);
    out->phase = (int)sv_i64_or(sc[F_PH], -1);
    out->active_mask = (unsigned)sv_i64_or(sc[F_AM], 0);
    for (int k = 0; k < CW_REASON__COUNT; k++) {
        out->last_alert_ms[k] = sv_i64_or(sc[F_A0 + k], -1);
    }
    if (sc[F_LID].p != NULL) {
        size_t n = sc[F_LID].len < sizeof(out->last_alert_id) - 1 ? sc[F_LID].len
                                                                  : sizeof(out->last_alert_id) - 1;
        memcpy(out->last_alert_id, sc[F_LID].p, n);
        out->last_alert_id[n] = '\0';
    }

    /* the newest score at least 7 days before asof; a newer one takes its
     * place on the day it turns 7 days old */
    for (size_t k = 0; k < n_hist; k++) {
        cw_sv_t a, b;
        int64_t at;
        if (split_pair(hist[k], &a, &b) != 0 || b.len == 0 || cw_sv_i64(a, &at) != 0) {
            continue;
        }
        if (at <= asof_ms - 7 * CW_MS_PER_DAY) {
            if (cw_sv_dbl(b, &out->score_7d) == 0) {
                out->has_score_7d = 1;
            }
            break;
        }
        if (cw_time_day(at + 7 * CW_MS_PER_DAY) < chg) {
            chg = cw_time_day(at + 7 * CW_MS_PER_DAY);
        }
    }
    out->inputs_change_day = chg > day ? chg : day + 1;
}
