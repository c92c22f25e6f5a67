/*
 * cw_alert.h — the alert decision, pure: given an account's previous
 * decision state and its new score, which band it is in (with hysteresis),
 * which alert reasons fire (edge-triggered, with a per-reason cooldown), and
 * when the account must be rescored next even if it sends nothing (its
 * windows roll at the next day boundary; inactivity thresholds).
 *
 * Calm by design (SPEC §1): an alert fires on the rising edge of a
 * condition only, never twice for one situation within cooldown_days, and
 * danger is left only above a higher line than the one that entered it.
 *
 * Also renders the alert and score-snapshot JSON documents (SPEC §3).
 * Alert ids are stable: hex of a hash of (account, reason, day), the day
 * being the as-of day, or the notice's day for cancellation_notice, so a
 * replay of the same finding gives the same id.
 * Ownership: all structs are caller-owned; JSON goes into a caller cw_buf_t.
 */
#ifndef CW_ALERT_H
#define CW_ALERT_H

#include "cw_account.h"
#include "cw_buf.h"
#include "cw_model.h"

#define CW_ALERT_ID_MAX 40

typedef struct cw_alert {
    cw_reason_t reason;
    char alert_id[CW_ALERT_ID_MAX]; /* 32 hex chars */
    int drivers[CW_MAX_SIGNALS];    /* signal indices that drove it, worst first */
    int n_drivers;
} cw_alert_t;

typedef struct cw_decision {
    cw_band_t band;                          /* new band */
    cw_band_t previous_band;                 /* band before (== band for a first scoring) */
    double previous_score;                   /* score before (-1 for a first scoring) */
    int score_changed;                       /* 1: emit a score snapshot */
    unsigned active_mask;                    /* conditions holding now (bit per reason) */
    int64_t last_alert_ms[CW_REASON__COUNT]; /* updated with this decision's alerts */
    cw_alert_t alerts[CW_REASON__COUNT];
    int n_alerts;
    int64_t next_due_ms; /* when to rescore without events; -1 none */
} cw_decision_t;

/** @brief Band for a score given the previous band (hysteresis) and tier. */
cw_band_t cw_alert_band(const cw_model_t *model, cw_tier_t tier, double score, int has_previous,
                        cw_band_t previous);

/** @brief Stable alert id of (account, reason, UTC day of day_ms): 32
 * lowercase hex chars + NUL into id. */
void cw_alert_make_id(const char *account_id, cw_reason_t reason, int64_t day_ms,
                      char id[CW_ALERT_ID_MAX]);

/* Day ends a quiet decision looks ahead at most (see cw_alert_decide). */
#define CW_ALERT_LOOKAHEAD_DAYS 31

/**
 * @brief Decide band, alerts and next due time for one scored account. A
 * day-end decision that stores nothing new looks ahead over the following
 * day ends on the same inputs (up to acct->inputs_change_day and
 * CW_ALERT_LOOKAHEAD_DAYS) and sets next_due_ms to the first one whose
 * decision would store something: quiet days need no rescoring.
 */
void cw_alert_decide(const cw_model_t *model, const cw_layout_t *layout,
                     const cw_account_state_t *acct, const cw_score_t *score, cw_decision_t *out);

/** @brief Append the alert JSON (SPEC §3) for alerts[i] of a decision. */
void cw_alert_json(const cw_model_t *model, const cw_account_state_t *acct, const cw_score_t *score,
                   const cw_decision_t *dec, int i, cw_buf_t *out);

/** @brief Append the score snapshot JSON (score topic / dashboards). */
void cw_alert_snapshot_json(const cw_model_t *model, const cw_account_state_t *acct,
                            const cw_score_t *score, const cw_decision_t *dec, cw_buf_t *out);

/**
 * @brief Append the `explain` JSON (SPEC §4): account_id, as_of, score, band,
 * tier, phase, signals[{name,raw,normalised,weight,contribution,...}],
 * windows{logins_7d,...}, last_alert.
 */
void cw_alert_explain_json(const cw_model_t *model, const cw_layout_t *layout,
                           const cw_account_state_t *acct, const cw_score_t *score, cw_band_t band,
                           cw_buf_t *out);

#endif
