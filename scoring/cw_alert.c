/*
 * cw_alert.c — the alert decision and the JSON documents built from it.
 *
 * The decision is pure: from an account's previous decision state (band,
 * active conditions, last alert time per reason) and its new score it
 * derives the new band (with hysteresis per touch tier), the conditions
 * that hold at the as-of time, and which of them fire. Calm by design
 * (SPEC §1):
 *  - an alert fires only on the rising edge of its condition (the bit is
 *    set now and was not in the previous active_mask);
 *  - never within cooldown_days of the previous alert of the same reason.
 *    A rising edge held back by the cooldown is not recorded as active, so
 *    if the condition still holds once the cooldown is over it fires then
 *    (a persistent new situation is reported once, a flapping one is not
 *    repeated);
 *  - during the warm-up after an account's first activity, entered_danger,
 *    usage_drop and recovered are treated as false (not recorded), so a
 *    still-true condition fires when the warm-up ends;
 *  - a cancellation notice fires once per notice (no cooldown, no edge:
 *    its condition is "a notice newer than the last one announced"). When it
 *    forces the account into danger, the forced danger is not reported again
 *    as entered_danger;
 *  - recovered fires when an account whose entered_danger was announced
 *    leaves danger.
 *
 * It also says when the account must be rescored without new events: at
 * the next UTC day boundary (its windows roll), or never (-1) once the
 * account is quiescent — every window is empty, inactivity has already
 * been recorded and no deferred edge (warm-up, cooldown, onboarding
 * deadline, future-dated notice) can still change anything.
 *
 * Alert ids are stable: two differently seeded 64-bit FNV-1a hashes of
 * "account|reason|UTC day", as 32 hex chars, where the day is the as-of day
 * (for cancellation_notice: the notice's own day, so the same notice has
 * one id however late it is evaluated: a wall-clock run that reads it after
 * midnight, or after an outage, and an event-time replay agree); a replay
 * of the same finding yields the same id, which the outbox and consumers
 * deduplicate on.
 *
 * JSON: the alert, score-snapshot and explain documents are appended to a
 * caller-owned cw_buf_t; nothing is allocated here besides the buffer's
 * own growth.
 */
#include "cw_alert.h"

#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cw_common.h"

#define CW_MAX_DRIVERS 3
#define CW_SENTENCE_MAX 1024

static const char *const cw_reason_names[CW_REASON__COUNT] = {
    "entered_danger",     "usage_drop",          "inactive",
    "onboarding_stalled", "cancellation_notice", "recovered",
};

const char *cw_reason_name(cw_reason_t r) {
    if ((int)r < 0 || r >= CW_REASON__COUNT) {
        return "unknown";
    }
    return cw_reason_names[r];
}

/* ---- band ---- */

/* Band by plain thresholds, no history. */
static cw_band_t band_plain(const cw_bands_t *b, double score) {
    if (score < b->danger_enter) {
        return CW_BAND_DANGER;
    }
    if (score < b->caution_enter) {
        return CW_BAND_CAUTION;
    }
    return CW_BAND_HEALTHY;
}

cw_band_t cw_alert_band(const cw_model_t *model, cw_tier_t tier, double score, int has_previous,
                        cw_band_t previous) {
    const cw_bands_t *b = &model->bands[(int)tier >= 0 && tier <= CW_TIER_TECH ? tier : 0];
    if (!has_previous) {
        return band_plain(b, score);
    }
    switch (previous) {
    case CW_BAND_DANGER:
        if (score < b->danger_exit) {
            return CW_BAND_DANGER;
        }
        /* Leaving danger comes from below caution: healthy needs caution_exit. */
        return score >= b->caution_exit ? CW_BAND_HEALTHY : CW_BAND_CAUTION;
    case CW_BAND_CAUTION:
        if (score < b->danger_enter) {
            return CW_BAND_DANGER;
        }
        return score >= b->caution_exit ? CW_BAND_HEALTHY : CW_BAND_CAUTION;
    case CW_BAND_HEALTHY:
    default:
        return band_plain(b, score);
    }
}

/* ---- alert id ---- */

void cw_alert_make_id(const char *account_id, cw_reason_t reason, int64_t day_ms,
                      char id[CW_ALERT_ID_MAX]) {
    static const char seed2[] = "churnwatch/alert-id/2";
    char day[24];
    const char *rname = cw_reason_name(reason);
    uint64_t h1 = CW_FNV_INIT;
    uint64_t h2 = cw_fnv1a(CW_FNV_INIT, seed2, sizeof(seed2) - 1);
    int dn = snprintf(day, sizeof(day), "%" PRId64, cw_time_day(day_ms));
    size_t alen = strlen(account_id);
    size_t rlen = strlen(rname);
    h1 = cw_fnv1a(h1, account_id, alen);
    h2 = cw_fnv1a(h2, account_id, alen);
    h1 = cw_fnv1a(h1, "|", 1);
    h2 = cw_fnv1a(h2, "|", 1);
    h1 = cw_fnv1a(h1, rname, rlen);
    h2 = cw_fnv1a(h2, rname, rlen);
    h1 = cw_fnv1a(h1, "|", 1);
    h2 = cw_fnv1a(h2, "|", 1);
    h1 = cw_fnv1a(h1, day, (size_t)dn);
    h2 = cw_fnv1a(h2, day, (size_t)dn);
    snprintf(id, CW_ALERT_ID_MAX, "%016" PRIx64 "%016" PRIx64, h1, h2);
}

/* ---- drivers ---- */

/* Points a signal loses against a perfect score, as a share of the whole
 * (weight share * (1 - normalised)); missing signals lose nothing. */
static double lost_share(const cw_score_t *score, int i, double wsum) {
    const cw_signal_value_t *v = &score->signals[i];
    if (v->missing || !(wsum > 0.0)) {
        return 0.0;
    }
    return v->weight / wsum * (1.0 - v->normalised);
}

/* Pick drivers: first the signals flagged in prefer[] (any loss), then, if
 * general, the other non-missing signals with a loss > 0; each group worst
 * first; at most CW_MAX_DRIVERS. */
static void pick_drivers(const cw_score_t *score, const int *prefer, int general, cw_alert_t *a) {
    double wsum = 0.0;
    double lost[CW_MAX_SIGNALS];
    int used[CW_MAX_SIGNALS] = {0};
    for (int i = 0; i < score->n_signals; i++) {
        if (!score->signals[i].missing) {
            wsum += score->signals[i].weight;
        }
    }
    for (int i = 0; i < score->n_signals; i++) {
        lost[i] = lost_share(score, i, wsum);
    }
    a->n_drivers = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0 && prefer == NULL) {
            continue;
        }
        if (pass == 1 && !general) {
            break;
        }
        while (a->n_drivers < CW_MAX_DRIVERS) {
            int best = -1;
            for (int i = 0; i < score->n_signals; i++) {
                int eligible =
                    pass == 0 ? prefer[i] : (!score->signals[i].missing && lost[i] > 0.0);
                if (!eligible || used[i]) {
                    continue;
                }
                if (best < 0 || lost[i] > lost[best]) {
                    best = i;
                }
            }
            if (best < 0) {
                break;
            }
            used[best] = 1;
            a->drivers[a->n_drivers++] = best;
        }
    }
}

/* ---- decision ---- */

static int cooldown_passed(const cw_model_t *model, const cw_account_state_t *acct, cw_reason_t r) {
    int64_t last = acct->last_alert_ms[r];
    if (last < 0) {
        return 1;
    }
    return acct->asof_ms - last >= (int64_t)model->cooldown_days * CW_MS_PER_DAY;
}

/* Onboarding deadline: first login (or first activity) + onboarding_days. */
static int64_t onboarding_deadline(const cw_model_t *model, const cw_account_state_t *acct) {
    int64_t start = acct->first_login_ms >= 0 ? acct->first_login_ms : acct->first_ms;
    return start + (int64_t)model->onboarding_days * CW_MS_PER_DAY;
}

/* 1 when key feature k was not used by the onboarding deadline. */
static int key_feature_late(const cw_account_state_t *acct, int k, int64_t deadline) {
    int64_t f = acct->key_feature_first_ms[k];
    return f < 0 || f > deadline;
}

/* 1 when signal i dropped (usage_drop). */
static int signal_dropped(const cw_model_t *model, const cw_score_t *score, int i) {
    const cw_signal_value_t *v = &score->signals[i];
    double share = model->signals[i].drop_share;
    return !v->missing && share > 0.0 && v->ratio <= 1.0 - share;
}

static int score_dropped(const cw_model_t *model, const cw_account_state_t *acct,
                         const cw_score_t *score) {
    double share = model->score_drop_share;
    return share > 0.0 && acct->has_score_7d && acct->score_7d > 0.0 &&
           score->score <= acct->score_7d * (1.0 - share);
}

/* Reference time for inactivity: last login, or first activity. */
static int64_t inactivity_since(const cw_account_state_t *acct) {
    return acct->last_login_ms >= 0 ? acct->last_login_ms : acct->first_ms;
}

/* The decision at acct's as-of time, rescoring it at the next day end. */
static void decide_at(const cw_model_t *model, const cw_layout_t *layout,
                      const cw_account_state_t *acct, const cw_score_t *score, cw_decision_t *out) {
    const int64_t asof = acct->asof_ms;
    const int has_prev = acct->has_score != 0;
    const cw_band_t prev_band = (acct->band >= CW_BAND_HEALTHY && acct->band <= CW_BAND_DANGER)
                                    ? (cw_band_t)acct->band
                                    : CW_BAND_HEALTHY;
    int cond[CW_REASON__COUNT] = {0};
    int dropped[CW_MAX_SIGNALS] = {0};
    int login_sig[CW_MAX_SIGNALS] = {0};
    int warm, pending = 0, any_dropped = 0;
    int64_t deadline = onboarding_deadline(model, acct);

    memset(out, 0, sizeof(*out));
    out->band = score->forced_danger
                    ? CW_BAND_DANGER
                    : cw_alert_band(model, score->tier, score->score, has_prev, prev_band);
    out->previous_band = has_prev ? prev_band : out->band;
    out->previous_score = has_prev ? acct->score : -1.0;
    out->score_changed =
        !has_prev || fabs(score->score - acct->score) >= 0.05 || out->band != prev_band;
    memcpy(out->last_alert_ms, acct->last_alert_ms, sizeof(out->last_alert_ms));

    warm =
        acct->first_ms < 0 || asof - acct->first_ms < (int64_t)model->warmup_days * CW_MS_PER_DAY;

    /* Conditions at the as-of time. */
    cond[CW_REASON_ENTERED_DANGER] = out->band == CW_BAND_DANGER && !score->forced_danger;
    /* Recovered: an announced danger (its bit still set) is over. Keyed on
     * the bit, not on the previous band, because an evaluation that was not
     * allowed to decide (suppress_mask) may have updated the band since. */
    cond[CW_REASON_RECOVERED] =
        (acct->active_mask & (1u << CW_REASON_ENTERED_DANGER)) && out->band != CW_BAND_DANGER;
    for (int i = 0; i < score->n_signals && i < model->n_signals; i++) {
        dropped[i] = signal_dropped(model, score, i);
        any_dropped |= dropped[i];
        login_sig[i] = (model->signals[i].types & CW_EV_BIT(CW_EV_LOGIN)) != 0;
    }
    cond[CW_REASON_USAGE_DROP] = any_dropped || score_dropped(model, acct, score);
    if (model->inactive_days > 0 && acct->first_ms >= 0) {
        cond[CW_REASON_INACTIVE] =
            asof - inactivity_since(acct) >= (int64_t)model->inactive_days * CW_MS_PER_DAY;
    }
    if (model->n_key_features > 0 && acct->first_ms >= 0) {
        int late = 0;
        for (int k = 0; k < model->n_key_features && k < CW_MAX_KEY_FEATURES; k++) {
            late |= key_feature_late(acct, k, deadline);
        }
        if (late && asof >= deadline) {
            cond[CW_REASON_ONBOARDING_STALLED] = 1;
        } else if (late) {
            pending = 1; /* the deadline is still ahead */
        }
    }
    cond[CW_REASON_CANCELLATION_NOTICE] =
        acct->cancel_ms >= 0 && acct->cancel_ms <= asof &&
        acct->cancel_ms > acct->last_alert_ms[CW_REASON_CANCELLATION_NOTICE];
    if (acct->cancel_ms > asof) {
        pending = 1; /* a notice dated after this as-of */
    }
    if (warm) {
        static const cw_reason_t held[] = {CW_REASON_ENTERED_DANGER, CW_REASON_USAGE_DROP,
                                           CW_REASON_RECOVERED};
        for (size_t j = 0; j < sizeof(held) / sizeof(held[0]); j++) {
            /* recovered cannot outlive its transition; the others can. */
            pending |= cond[held[j]] && held[j] != CW_REASON_RECOVERED;
            cond[held[j]] = 0;
        }
    }

    /* Edges, cooldowns, alerts. */
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        unsigned bit = 1u << r;
        cw_alert_t *a;
        if (acct->suppress_mask & bit) {
            /* not this evaluation's decision: keep the previous state */
            out->active_mask |= acct->active_mask & bit;
            pending |= cond[r];
            continue;
        }
        if (!cond[r]) {
            continue;
        }
        if (r != CW_REASON_CANCELLATION_NOTICE) {
            if (acct->active_mask & bit) {
                out->active_mask |= bit; /* still holding: already announced */
                continue;
            }
            if (!cooldown_passed(model, acct, (cw_reason_t)r)) {
                pending = 1; /* held back: re-evaluated once the cooldown is over */
                continue;
            }
        }
        out->active_mask |= bit;
        a = &out->alerts[out->n_alerts++];
        a->reason = (cw_reason_t)r;
        /* The finding of a cancellation alert is the notice itself: its id
         * is keyed on the notice's day, whenever it is evaluated. */
        cw_alert_make_id(acct->account_id, (cw_reason_t)r,
                         r == CW_REASON_CANCELLATION_NOTICE ? acct->cancel_ms : asof, a->alert_id);
        if (r == CW_REASON_USAGE_DROP) {
            pick_drivers(score, dropped, 1, a);
        } else if (r == CW_REASON_INACTIVE) {
            pick_drivers(score, login_sig, 0, a);
            if (a->n_drivers == 0) {
                pick_drivers(score, NULL, 1, a);
            }
        } else {
            pick_drivers(score, NULL, 1, a);
        }
        out->last_alert_ms[r] = asof;
    }

    /* Next rescoring: the end (last millisecond) of the as-of day — windows
     * are whole days, so that is when they are final and roll — or of the
     * next day when this already is a day-end evaluation; never when nothing
     * can change any more. */
    {
        int all_zero = 1;
        for (int i = 0; i < layout->n_queries && i < CW_MAX_QUERIES; i++) {
            if (acct->q[i] != 0.0) {
                all_zero = 0;
                break;
            }
        }
        /* events after the as-of time already applied (a batch crossed
         * this day end) need their own day-end decisions: this timer is
         * their only mark (the apply did not move an earlier timer), so the
         * chain of day ends goes on until it reaches them */
        if (all_zero && (out->active_mask & (1u << CW_REASON_INACTIVE)) && !warm && !pending &&
            acct->last_event_ms <= asof) {
            out->next_due_ms = -1;
        } else {
            int64_t day_end = (cw_time_day(asof) + 1) * CW_MS_PER_DAY - 1;
            out->next_due_ms = asof < day_end ? day_end : day_end + CW_MS_PER_DAY;
        }
    }
}

/* 1 when the decision stores nothing new: the same score, band, tier, phase
 * and conditions as the account's last decision, no alert. */
static int decision_is_noop(const cw_account_state_t *a, const cw_score_t *s,
                            const cw_decision_t *d) {
    if (!a->has_score || a->suppress_mask != 0 || d->n_alerts != 0 || d->score_changed ||
        (int)d->band != a->band || (int)s->tier != a->tier || (int)s->phase != a->phase ||
        d->active_mask != a->active_mask || s->score != a->score) {
        return 0;
    }
    return memcmp(d->last_alert_ms, a->last_alert_ms, sizeof(d->last_alert_ms)) == 0;
}

/*
 * Quiet days. A day-end decision that stores nothing new would be repeated
 * unchanged on every following day end until something it depends on
 * changes: the inputs read from Redis (acct->inputs_change_day: a window
 * rolls over a day with data, a 7-day-old score is replaced) or the time
 * alone (phase, warm-up, inactivity, the onboarding deadline, a cooldown, a
 * dated notice). The inputs are fixed until inputs_change_day, so the
 * decisions of the days before it are computed here, on the same inputs,
 * and the timer goes to the first day end whose decision would store
 * something, or remove the timer; or to inputs_change_day. An event in
 * between moves the timer back to its own day end (the apply's ZADD LT).
 * What is stored and published is the same as with a decision every day;
 * the day-end reads of quiet days are saved.
 */
void cw_alert_decide(const cw_model_t *model, const cw_layout_t *layout,
                     const cw_account_state_t *acct, const cw_score_t *score, cw_decision_t *out) {
    const int64_t day = cw_time_day(acct->asof_ms);
    int64_t last, x;
    cw_account_state_t probe;
    cw_score_t ps;
    cw_decision_t pd;

    decide_at(model, layout, acct, score, out);
    if (out->next_due_ms < 0 || acct->asof_ms != (day + 1) * CW_MS_PER_DAY - 1 ||
        acct->inputs_change_day <= day + 1 || !decision_is_noop(acct, score, out)) {
        return;
    }
    last = acct->inputs_change_day - 1;
    if (last > day + CW_ALERT_LOOKAHEAD_DAYS) {
        last = day + CW_ALERT_LOOKAHEAD_DAYS;
    }
    probe = *acct;
    for (x = day + 1; x <= last; x++) {
        probe.asof_ms = (x + 1) * CW_MS_PER_DAY - 1;
        cw_model_score(model, layout, &probe, &ps);
        decide_at(model, layout, &probe, &ps, &pd);
        if (pd.next_due_ms < 0 || !decision_is_noop(&probe, &ps, &pd)) {
            break;
        }
    }
    out->next_due_ms = (x + 1) * CW_MS_PER_DAY - 1;
}

/* ---- JSON helpers ---- */

static void j_key(cw_buf_t *b, int *first, const char *key) {
    if (!*first) {
        cw_buf_puts(b, ",");
    }
    *first = 0;
    cw_buf_json_str(b, key, strlen(key));
    cw_buf_puts(b, ":");
}

static void j_str(cw_buf_t *b, const char *s) {
    cw_buf_json_str(b, s, strlen(s));
}

/* String or null when empty. */
static void j_str_or_null(cw_buf_t *b, const char *s) {
    if (s == NULL || s[0] == '\0') {
        cw_buf_puts(b, "null");
    } else {
        j_str(b, s);
    }
}

static void j_num(cw_buf_t *b, double v) {
    cw_buf_json_num(b, v); /* null when not finite */
}

static void j_int(cw_buf_t *b, int64_t v) {
    char tmp[CW_I64_MAX_CHARS];
    cw_buf_append(b, tmp, cw_fmt_i64(tmp, v));
}

static void j_time(cw_buf_t *b, int64_t ms) {
    char t[40];
    cw_time_format(ms, t, sizeof(t));
    j_str(b, t);
}

/* "YYYY-MM-DD" of a time, or null when < 0. */
static void j_date_or_null(cw_buf_t *b, int64_t ms) {
    char t[40];
    if (ms < 0) {
        cw_buf_puts(b, "null");
        return;
    }
    cw_time_format(ms, t, sizeof(t));
    t[10] = '\0';
    j_str(b, t);
}

static void date_str(int64_t ms, char *out, size_t size) {
    char t[40];
    cw_time_format(ms, t, sizeof(t));
    t[10] = '\0';
    cw_strlcpy(out, t, size);
}

/* Bounded append to a fixed sentence buffer. */
static void s_add(char *s, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_add(char *s, size_t size, const char *fmt, ...) {
    size_t len = strlen(s);
    va_list ap;
    if (len + 1 >= size) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(s + len, size - len, fmt, ap);
    va_end(ap);
}

/* A short phrase describing one signal's value, e.g.
 * "login_trend at 0.31 of its 28-day baseline". */
static void s_signal(char *s, size_t size, const cw_signal_def_t *sig, const cw_signal_value_t *v) {
    if (v->missing) {
        s_add(s, size, "%s has no data", sig->name);
        return;
    }
    switch (sig->norm) {
    case CW_NORM_TREND:
        s_add(s, size, "%s at %.2f of its %d-day baseline", sig->name, v->ratio,
              sig->baseline_days);
        break;
    case CW_NORM_SEATS:
        s_add(s, size, "%s %.0f%% of seats", sig->name, v->ratio * 100.0);
        break;
    case CW_NORM_RANGE:
        s_add(s, size, "%s %.3g (range %g to %g)", sig->name, v->raw, sig->range_min,
              sig->range_max);
        break;
    case CW_NORM_TARGET:
    default:
        if (sig->direction < 0) {
            s_add(s, size, "%s %.4g (lower is better, 0 points at %g)", sig->name, v->raw,
                  sig->target);
        } else {
            s_add(s, size, "%s %.4g of target %g", sig->name, v->raw, sig->target);
        }
        break;
    }
}

/* Phrases of a list of drivers, ", "-separated. */
static void s_drivers(char *s, size_t size, const cw_model_t *model, const cw_score_t *score,
                      const int *idx, int n) {
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            s_add(s, size, ", ");
        }
        s_signal(s, size, &model->signals[idx[i]], &score->signals[idx[i]]);
    }
}

static void s_explanation(char *s, size_t size, const cw_model_t *model,
                          const cw_account_state_t *acct, const cw_score_t *score,
                          const cw_decision_t *dec, const cw_alert_t *a) {
    const char *band = cw_band_name(dec->band);
    const int64_t asof = acct->asof_ms;
    char date[16];
    s[0] = '\0';
    switch (a->reason) {
    case CW_REASON_ENTERED_DANGER:
        /* "fell" only when it did: not for a first scoring, nor for an alert
         * released after warm-up or cooldown while already in danger. */
        if (acct->has_score && dec->previous_band != CW_BAND_DANGER) {
            s_add(s, size, "Score fell to %.1f (%s) from %.1f", score->score, band,
                  dec->previous_score);
        } else {
            s_add(s, size, "Score is %.1f (%s)", score->score, band);
        }
        if (a->n_drivers > 0) {
            s_add(s, size, ": ");
            s_drivers(s, size, model, score, a->drivers, a->n_drivers);
        }
        s_add(s, size, ".");
        break;
    case CW_REASON_USAGE_DROP: {
        int dropped[CW_MAX_SIGNALS];
        int n = 0;
        for (int i = 0; i < a->n_drivers; i++) {
            if (signal_dropped(model, score, a->drivers[i])) {
                dropped[n++] = a->drivers[i];
            }
        }
        s_add(s, size, "Usage dropped: ");
        if (n > 0) {
            s_drivers(s, size, model, score, dropped, n);
        }
        if (score_dropped(model, acct, score)) {
            s_add(s, size, "%sscore fell from %.1f to %.1f within 7 days", n > 0 ? "; " : "",
                  acct->score_7d, score->score);
        }
        s_add(s, size, " (score %.1f, %s).", score->score, band);
        break;
    }
    case CW_REASON_INACTIVE: {
        int64_t since = inactivity_since(acct);
        int64_t days = (asof - since) / CW_MS_PER_DAY;
        date_str(since, date, sizeof(date));
        if (acct->last_login_ms >= 0) {
            s_add(s, size, "No login for %" PRId64 " days, since %s (score %.1f, %s).", days, date,
                  score->score, band);
        } else {
            s_add(s, size,
                  "No login in the %" PRId64 " days since first activity on %s (score %.1f, %s).",
                  days, date, score->score, band);
        }
        break;
    }
    case CW_REASON_ONBOARDING_STALLED: {
        int64_t deadline = onboarding_deadline(model, acct);
        int n = 0;
        s_add(s, size, "Onboarding stalled: key feature");
        for (int k = 0; k < model->n_key_features && k < CW_MAX_KEY_FEATURES; k++) {
            if (key_feature_late(acct, k, deadline)) {
                n++;
            }
        }
        s_add(s, size, "%s ", n > 1 ? "s" : "");
        for (int k = 0, j = 0; k < model->n_key_features && k < CW_MAX_KEY_FEATURES; k++) {
            if (key_feature_late(acct, k, deadline)) {
                s_add(s, size, "%s%s", j++ > 0 ? ", " : "", model->key_features[k]);
            }
        }
        s_add(s, size, " not used within %d days of first %s (score %.1f, %s).",
              model->onboarding_days, acct->first_login_ms >= 0 ? "login" : "activity",
              score->score, band);
        break;
    }
    case CW_REASON_CANCELLATION_NOTICE:
        date_str(acct->cancel_ms, date, sizeof(date));
        if (score->forced_danger) {
            s_add(s, size,
                  "Cancellation notice received on %s; account placed in danger (score %.1f).",
                  date, score->score);
        } else {
            s_add(s, size, "Cancellation notice received on %s (score %.1f, %s).", date,
                  score->score, band);
        }
        break;
    case CW_REASON_RECOVERED:
        s_add(s, size, "Score recovered to %.1f (%s) from danger", score->score, band);
        if (dec->previous_score >= 0.0) {
            s_add(s, size, " (was %.1f)", dec->previous_score);
        }
        s_add(s, size, ".");
        break;
    default:
        s_add(s, size, "Score %.1f (%s).", score->score, band);
        break;
    }
}

/* {"name","raw","ratio","normalised","weight","contribution","missing"} of signal i. */
static void j_signal(cw_buf_t *b, const cw_model_t *model, const cw_score_t *score, int i,
                     int with_description) {
    const cw_signal_value_t *v = &score->signals[i];
    int first = 1;
    cw_buf_puts(b, "{");
    j_key(b, &first, "name");
    j_str(b, model->signals[i].name);
    j_key(b, &first, "raw");
    j_num(b, v->raw);
    j_key(b, &first, "ratio");
    if (v->missing) {
        cw_buf_puts(b, "null");
    } else {
        j_num(b, v->ratio);
    }
    j_key(b, &first, "normalised");
    j_num(b, v->normalised);
    j_key(b, &first, "weight");
    j_num(b, v->weight);
    j_key(b, &first, "contribution");
    j_num(b, v->contribution);
    j_key(b, &first, "missing");
    cw_buf_puts(b, v->missing ? "true" : "false");
    if (with_description) {
        j_key(b, &first, "description");
        j_str(b, model->signals[i].description);
    }
    cw_buf_puts(b, "}");
}

/* Attribute facts shared by alerts and explain. */
static void j_attributes(cw_buf_t *b, int *first, const cw_account_state_t *acct) {
    j_key(b, first, "arr");
    if (acct->arr >= 0.0) {
        j_num(b, acct->arr);
    } else {
        cw_buf_puts(b, "null");
    }
    j_key(b, first, "seats");
    if (acct->seats >= 0) {
        j_int(b, acct->seats);
    } else {
        cw_buf_puts(b, "null");
    }
    j_key(b, first, "plan");
    j_str_or_null(b, acct->plan);
    j_key(b, first, "renewal_date");
    j_date_or_null(b, acct->renewal_ms);
}

void cw_alert_json(const cw_model_t *model, const cw_account_state_t *acct, const cw_score_t *score,
                   const cw_decision_t *dec, int i, cw_buf_t *out) {
    const cw_alert_t *a;
    char sentence[CW_SENTENCE_MAX];
    int first = 1;
    if (i < 0 || i >= dec->n_alerts) {
        return;
    }
    a = &dec->alerts[i];
    cw_buf_puts(out, "{");
    j_key(out, &first, "alert_id");
    j_str(out, a->alert_id);
    j_key(out, &first, "account_id");
    j_str(out, acct->account_id);
    j_key(out, &first, "reason");
    j_str(out, cw_reason_name(a->reason));
    j_key(out, &first, "score");
    j_num(out, score->score);
    j_key(out, &first, "previous_score");
    if (acct->has_score) {
        j_num(out, dec->previous_score);
    } else {
        cw_buf_puts(out, "null");
    }
    j_key(out, &first, "band");
    j_str(out, cw_band_name(dec->band));
    j_key(out, &first, "previous_band");
    if (acct->has_score) {
        j_str(out, cw_band_name(dec->previous_band));
    } else {
        cw_buf_puts(out, "null");
    }
    j_key(out, &first, "tier");
    j_str(out, cw_tier_name(score->tier));
    j_key(out, &first, "phase");
    j_str(out, cw_phase_name(score->phase));
    j_key(out, &first, "event_time");
    j_time(out, acct->asof_ms);
    j_key(out, &first, "as_of_ms");
    j_int(out, acct->asof_ms);
    j_key(out, &first, "signals");
    cw_buf_puts(out, "[");
    for (int d = 0; d < a->n_drivers; d++) {
        if (d > 0) {
            cw_buf_puts(out, ",");
        }
        j_signal(out, model, score, a->drivers[d], 0);
    }
    cw_buf_puts(out, "]");

    /* facts */
    j_key(out, &first, "facts");
    {
        int ff = 1;
        cw_buf_puts(out, "{");
        j_key(out, &ff, "days_since_login");
        if (acct->last_login_ms >= 0) {
            j_int(out, (acct->asof_ms - acct->last_login_ms) / CW_MS_PER_DAY);
        } else {
            cw_buf_puts(out, "null");
        }
        j_key(out, &ff, "days_since_first_activity");
        if (acct->first_ms >= 0) {
            j_int(out, (acct->asof_ms - acct->first_ms) / CW_MS_PER_DAY);
        } else {
            cw_buf_puts(out, "null");
        }
        j_attributes(out, &ff, acct);
        j_key(out, &ff, "forced_danger");
        cw_buf_puts(out, score->forced_danger ? "true" : "false");
        if (acct->cancel_ms >= 0 && acct->cancel_ms <= acct->asof_ms) {
            /* a notice dated after the as-of time is not a fact of it (and
             * is known or not depending on where batches fell) */
            j_key(out, &ff, "cancel_time");
            j_time(out, acct->cancel_ms);
        }
        if (a->reason == CW_REASON_USAGE_DROP && acct->has_score_7d) {
            j_key(out, &ff, "score_7d");
            j_num(out, acct->score_7d);
        }
        if (a->reason == CW_REASON_ONBOARDING_STALLED) {
            int64_t deadline = onboarding_deadline(model, acct);
            int fk = 1;
            j_key(out, &ff, "onboarding_deadline");
            j_time(out, deadline);
            j_key(out, &ff, "missing_key_features");
            cw_buf_puts(out, "[");
            for (int k = 0; k < model->n_key_features && k < CW_MAX_KEY_FEATURES; k++) {
                if (key_feature_late(acct, k, deadline)) {
                    if (!fk) {
                        cw_buf_puts(out, ",");
                    }
                    fk = 0;
                    j_str(out, model->key_features[k]);
                }
            }
            cw_buf_puts(out, "]");
        }
        cw_buf_puts(out, "}");
    }
    s_explanation(sentence, sizeof(sentence), model, acct, score, dec, a);
    j_key(out, &first, "explanation");
    j_str(out, sentence);
    cw_buf_puts(out, "}");
}

void cw_alert_snapshot_json(const cw_model_t *model, const cw_account_state_t *acct,
                            const cw_score_t *score, const cw_decision_t *dec, cw_buf_t *out) {
    int first = 1;
    int fr = 1;
    const char *last_id =
        dec->n_alerts > 0 ? dec->alerts[dec->n_alerts - 1].alert_id : acct->last_alert_id;
    cw_buf_puts(out, "{");
    j_key(out, &first, "account_id");
    j_str(out, acct->account_id);
    j_key(out, &first, "as_of");
    j_time(out, acct->asof_ms);
    j_key(out, &first, "as_of_ms");
    j_int(out, acct->asof_ms);
    j_key(out, &first, "score");
    j_num(out, score->score);
    j_key(out, &first, "band");
    j_str(out, cw_band_name(dec->band));
    j_key(out, &first, "tier");
    j_str(out, cw_tier_name(score->tier));
    j_key(out, &first, "phase");
    j_str(out, cw_phase_name(score->phase));
    j_key(out, &first, "signals");
    cw_buf_puts(out, "{");
    for (int i = 0; i < score->n_signals && i < model->n_signals; i++) {
        const cw_signal_value_t *v = &score->signals[i];
        int fs = 1;
        if (i > 0) {
            cw_buf_puts(out, ",");
        }
        j_str(out, model->signals[i].name);
        cw_buf_puts(out, ":{");
        j_key(out, &fs, "raw");
        j_num(out, v->raw);
        j_key(out, &fs, "normalised");
        j_num(out, v->normalised);
        j_key(out, &fs, "contribution");
        j_num(out, v->contribution);
        j_key(out, &fs, "missing");
        cw_buf_puts(out, v->missing ? "true" : "false");
        cw_buf_puts(out, "}");
    }
    cw_buf_puts(out, "}");
    j_key(out, &first, "active_reasons");
    cw_buf_puts(out, "[");
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        if (dec->active_mask & (1u << r)) {
            if (!fr) {
                cw_buf_puts(out, ",");
            }
            fr = 0;
            j_str(out, cw_reason_name((cw_reason_t)r));
        }
    }
    cw_buf_puts(out, "]");
    j_key(out, &first, "last_alert_id");
    j_str_or_null(out, last_id);
    cw_buf_puts(out, "}");
}

/* The reason of the account's last alert (last_alert_id): the reason whose
 * id it is (ids are recomputed from the account, reason and day); failing
 * that, the latest last_alert_ms, a tie going to the higher reason (one
 * decision's alerts are made in reason order, and the last one is kept).
 * -1 when there is none. */
static int last_alert_reason(const cw_account_state_t *acct) {
    int last = -1;
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        char id[CW_ALERT_ID_MAX];
        int64_t day_ms =
            r == CW_REASON_CANCELLATION_NOTICE ? acct->cancel_ms : acct->last_alert_ms[r];
        if (acct->last_alert_ms[r] < 0 || day_ms < 0) {
            continue;
        }
        cw_alert_make_id(acct->account_id, (cw_reason_t)r, day_ms, id);
        if (strcmp(id, acct->last_alert_id) == 0) {
            return r;
        }
    }
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        if (acct->last_alert_ms[r] >= 0 &&
            (last < 0 || acct->last_alert_ms[r] >= acct->last_alert_ms[last])) {
            last = r;
        }
    }
    return last;
}

void cw_alert_explain_json(const cw_model_t *model, const cw_layout_t *layout,
                           const cw_account_state_t *acct, const cw_score_t *score, cw_band_t band,
                           cw_buf_t *out) {
    int first = 1;
    cw_buf_puts(out, "{");
    j_key(out, &first, "account_id");
    j_str(out, acct->account_id);
    j_key(out, &first, "as_of");
    j_time(out, acct->asof_ms);
    j_key(out, &first, "as_of_ms");
    j_int(out, acct->asof_ms);
    j_key(out, &first, "score");
    j_num(out, score->score);
    j_key(out, &first, "band");
    j_str(out, cw_band_name(band));
    j_key(out, &first, "tier");
    j_str(out, cw_tier_name(score->tier));
    j_key(out, &first, "phase");
    j_str(out, cw_phase_name(score->phase));
    j_key(out, &first, "signals");
    cw_buf_puts(out, "[");
    for (int i = 0; i < score->n_signals && i < model->n_signals; i++) {
        if (i > 0) {
            cw_buf_puts(out, ",");
        }
        j_signal(out, model, score, i, 1);
    }
    cw_buf_puts(out, "]");
    j_key(out, &first, "windows");
    {
        int fw = 1;
        cw_buf_puts(out, "{");
        for (int w = 0; w < CW_WIN__COUNT; w++) {
            int q = layout->win_q[w];
            double v = (q >= 0 && q < CW_MAX_QUERIES) ? acct->q[q] : 0.0;
            j_key(out, &fw, cw_win_name((cw_win_t)w));
            j_int(out, (int64_t)llround(v));
        }
        cw_buf_puts(out, "}");
    }
    j_key(out, &first, "attributes");
    {
        int fa = 1;
        cw_buf_puts(out, "{");
        j_attributes(out, &fa, acct);
        cw_buf_puts(out, "}");
    }
    j_key(out, &first, "last_alert");
    if (acct->last_alert_id[0] == '\0') {
        cw_buf_puts(out, "null");
    } else {
        int fl = 1;
        int last = last_alert_reason(acct);
        cw_buf_puts(out, "{");
        j_key(out, &fl, "alert_id");
        j_str(out, acct->last_alert_id);
        j_key(out, &fl, "reason");
        if (last >= 0) {
            j_str(out, cw_reason_name((cw_reason_t)last));
        } else {
            cw_buf_puts(out, "null");
        }
        j_key(out, &fl, "as_of");
        if (last >= 0) {
            j_time(out, acct->last_alert_ms[last]);
        } else {
            cw_buf_puts(out, "null");
        }
        cw_buf_puts(out, "}");
    }
    cw_buf_puts(out, "}");
}
