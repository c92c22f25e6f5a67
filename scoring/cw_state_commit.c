/*
 * cw_state_commit.c — the commit of decisions: band, score, history, timers, outbox
 * (part of the state module: cw_state.h, cw_state_int.h).
 */
#include "cw_state_int.h"

#include <math.h>

/* ---- decisions ---- */

/* Entries a history keeps (state.history_len). */
static int64_t hist_cap(const cw_state_t *st) {
    return st->conf->history_len > 0 ? st->conf->history_len : 30;
}

/* 1 when an LPUSH onto the history read as rd may take it past its cap:
 * LTRIM then (it is unknown when the read did not list the history). */
static int hist_trim(const cw_state_t *st, const cm_read_t *rd) {
    return rd->hlen < 0 || rd->hlen + 1 > hist_cap(st);
}

/*
 * The history holds one point per UTC day, newest first: a decision of a
 * day that has a point replaces it (the day's last decision), any other is
 * inserted where its day belongs. Event-time decisions are day ends, in
 * order, so they push on top; a late event's re-decided day ends and the
 * two partitions of an account (whose timers fire by each partition's own
 * watermark) decide days out of order, and a wall-clock decision is made
 * as of every batch: neither reorders the points or pushes a day's worth
 * of them out of state.history_len (score_7d takes the first point at
 * least 7 days old).
 */
/* Where a decision as of asof goes in the history hist (LRANGE 0 -1). */
void cw_st_hist_locate(const redisReply *hist, int64_t asof, cm_read_t *rd) {
    size_t n = hist->elements;
    rd->hlen = (int64_t)n;
    rd->hpos = (int)n;
    rd->hsame = 0;
    rd->hpivot[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        const redisReply *e = hist->element[k];
        int64_t at = cw_st_rep_hist_asof(e);
        if (at == AP_NONE || cw_st_ap_day(at) > cw_st_ap_day(asof)) {
            continue;
        }
        rd->hpos = (int)k;
        rd->hsame = cw_st_ap_day(at) == cw_st_ap_day(asof);
        if (e->len < sizeof(rd->hpivot)) {
            memcpy(rd->hpivot, e->str, e->len);
            rd->hpivot[e->len] = '\0';
        } else if (!rd->hsame) {
            rd->hpos = 0; /* (not a stored point: goes on top) */
        }
        return;
    }
}

/* The history write of a decision after its read rd: CM_LPUSH, CM_LSET (at
 * hpos), CM_LINSERT, CM_RPUSH, or -1 (older than every point of a full
 * history). */
static int hist_op(const cw_state_t *st, const cm_read_t *rd) {
    if (rd->hlen <= 0 || (rd->hpos == 0 && !rd->hsame)) {
        return CM_LPUSH;
    }
    if (rd->hsame) {
        return CM_LSET;
    }
    if (rd->hpos < rd->hlen) {
        return CM_LINSERT;
    }
    return rd->hlen < hist_cap(st) ? CM_RPUSH : -1;
}

/* The stored form of a score ("%.15g"), into tmp; its length. A score is a
 * multiple of 0.1 (cw_model_score): the double nearest to k / 10. A decimal
 * of at most 6 significant digits is what "%.Pg" writes of its nearest
 * double for every P in 6..15 (P <= DBL_DIG), so cw_fmt_g at precision 6
 * (the fast path) gives the same bytes; anything else goes to snprintf. */
static int score_str(double score, char *tmp, size_t size) {
    if (size >= CW_G_MAX_CHARS && fabs(score) < 99999.0) {
        double k = floor(score * 10.0 + 0.5);
        if (k / 10.0 == score && !(k == 0.0 && signbit(score))) {
            return (int)cw_fmt_g(tmp, score, 6);
        }
    }
    return snprintf(tmp, size, "%.15g", score);
}

/* 1 when the stored score str[0..len) is score, as stored. */
static int score_stored_is(double score, const char *str, size_t len) {
    char tmp[40];
    return len == (size_t)score_str(score, tmp, sizeof(tmp)) && memcmp(str, tmp, len) == 0;
}

/* 1 when c's account has a stored score and it is c's, as stored. */
static int cm_same_score(const cw_commit_t *c) {
    char y[40];
    if (!c->acct->has_score) {
        return 0;
    }
    return score_stored_is(c->score, y, (size_t)score_str(c->acct->score, y, sizeof(y)));
}

/* 1 when the decision would store exactly what its read found (score as
 * stored, band, tier, phase, conditions, alert times; no alert, no
 * snapshot): only the timer has to move. Most day ends of a quiet account
 * are like that, and a timer move is two commands instead of a dozen. */
static int changes_only_timer(const cw_commit_t *c) {
    const cw_account_state_t *a = c->acct;
    if (!a->has_score || c->snapshot_json != NULL || c->n_alerts > 0 || c->band != a->band ||
        c->tier != a->tier || c->phase != a->phase || c->active_mask != a->active_mask ||
        c->last_alert_ms == NULL) {
        return 0;
    }
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        if (c->last_alert_ms[r] != a->last_alert_ms[r]) {
            return 0;
        }
    }
    return cm_same_score(c);
}

/*
 * COMMIT in plain commands, like the apply: phase 1 WATCHes the fences of
 * the chunk's partitions and reads what the writes depend on (the timer's
 * current score, the stored band, score and "p", the history; the
 * fence of the partition "p" names, when it is another, is watched and the
 * chunk read again); phase 2 writes
 * every decision in one MULTI/EXEC (and INCRs the fences). An aborted EXEC
 * (another writer of one of these partitions) is recomputed. Re-running a
 * commit whose EXEC reply was lost writes the same again: the band has
 * already moved, the history point of the same day is replaced, the timer
 * is already where the commit put it. (This was a Lua script; same rules,
 * same stored formats.)
 */
/* 1 when the read had an alert time for reason r that the decision drops
 * (its field is deleted). */
static int cm_alert_gone(const cw_commit_t *c, int r) {
    return c->acct->last_alert_ms[r] >= 0 && (c->last_alert_ms == NULL || c->last_alert_ms[r] < 0);
}

static int cm_partition(const cw_commit_t *c) {
    return c->acct->partition >= 0 && c->acct->partition < CW_STATE_MAX_PARTITIONS
               ? c->acct->partition
               : 0;
}

/* The partition whose apply wrote c's account last, when it is not c's own
 * (an account whose events arrive on two partitions); -1 otherwise. */
static int cm_home(const cw_commit_t *c) {
    int h = c->acct->home_partition;
    return h >= 0 && h < CW_STATE_MAX_PARTITIONS && h != cm_partition(c) ? h : -1;
}

static cw_err_t cm_build(cw_state_t *st, size_t i, void *vctx) {
    const ap_cmd_t *cmd = &st->ap_cmd[i];
    const cw_commit_t *commits = vctx;
    const cw_commit_t *c = cmd->kind == AP_WATCH || cmd->kind == AP_FENCE ||
                                   cmd->kind == AP_MULTI || cmd->kind == AP_EXEC
                               ? NULL
                               : &commits[cmd->grp];
    const cw_account_state_t *a = c != NULL ? c->acct : NULL;
    const char *id = a != NULL ? a->account_id : "";
    int p = c != NULL ? cm_partition(c) : (int)cmd->grp;
    char tmp[64];
    int n;
    cw_st_args_reset(st);
    if (cw_st_tx_shared(st, cmd->kind, p, id)) {
        return cw_st_args_send(st);
    }
    switch (cmd->kind) {
    case CM_HMGET_BD:
        cw_st_arg_str(st, "HMGET");
        cw_st_arg_key(st, "a", id, NULL);
        cw_st_arg_str(st, "bd");
        cw_st_arg_str(st, "p");
        cw_st_arg_str(st, "sc");
        break;
    case CM_LRANGE_H:
        cw_st_arg_str(st, "LRANGE");
        cw_st_arg_key(st, "h", id, NULL);
        cw_st_arg_str(st, "0");
        cw_st_arg_str(st, "-1");
        break;
    case CM_SET_SNAP:
        cw_st_arg_str(st, "SET");
        cw_st_arg_key(st, "snap", id, NULL);
        cw_st_arg_str(st, c->snapshot_json);
        cw_st_arg_str(st, "EX");
        cw_st_arg_i64(st, (int64_t)(st->plan.max_retention + 2) * 86400);
        break;
    case CM_LSET:
    case CM_LPUSH:
    case CM_LINSERT:
    case CM_RPUSH:
        cw_st_arg_str(st, cmd->kind == CM_LSET      ? "LSET"
                          : cmd->kind == CM_LPUSH   ? "LPUSH"
                          : cmd->kind == CM_LINSERT ? "LINSERT"
                                                    : "RPUSH");
        cw_st_arg_key(st, "h", id, NULL);
        if (cmd->kind == CM_LSET) {
            cw_st_arg_i64(st, st->cm_rd[cmd->grp].hpos);
        } else if (cmd->kind == CM_LINSERT) {
            cw_st_arg_str(st, "BEFORE");
            cw_st_arg_str(st, st->cm_rd[cmd->grp].hpivot);
        }
        n = (int)cw_fmt_i64(tmp, a->asof_ms);
        cw_st_arg_begin(st);
        cw_st_arg_piece(st, tmp, (size_t)n);
        cw_st_arg_piece(st, ",", 1);
        n = score_str(c->score, tmp, sizeof(tmp));
        cw_st_arg_piece(st, tmp, (size_t)n);
        cw_st_arg_end(st);
        break;
    case CM_LTRIM:
        cw_st_arg_str(st, "LTRIM");
        cw_st_arg_key(st, "h", id, NULL);
        cw_st_arg_str(st, "0");
        cw_st_arg_i64(st, hist_cap(st) - 1);
        break;
    case CM_EXPIRE_H:
        cw_st_arg_str(st, "EXPIRE");
        cw_st_arg_key(st, "h", id, NULL);
        cw_st_arg_i64(st, (int64_t)(st->plan.max_retention + 2) * 86400);
        break;
    case CM_BAND_MOVE:
        cw_st_arg_str(st, "HINCRBY");
        cw_st_arg_key(st, "bands", NULL, NULL);
        cw_st_arg_i64(st, cmd->sub >= 0 ? c->band : -cmd->sub - 1); /* sub < 0: the old band */
        cw_st_arg_str(st, cmd->sub >= 0 ? "1" : "-1");
        break;
    case CM_HSET:
        cw_st_arg_str(st, "HSET");
        cw_st_arg_key(st, "a", id, NULL);
        cw_st_arg_str(st, "sc");
        n = score_str(c->score, tmp, sizeof(tmp));
        cw_st_arg_mem(st, tmp, (size_t)n);
        cw_st_arg_str(st, "bd");
        cw_st_arg_i64(st, c->band);
        cw_st_arg_str(st, "ti");
        cw_st_arg_i64(st, c->tier);
        cw_st_arg_str(st, "ph");
        cw_st_arg_i64(st, c->phase);
        cw_st_arg_str(st, "am");
        cw_st_arg_i64(st, c->active_mask);
        for (int r = 0; r < CW_REASON__COUNT; r++) {
            if (c->last_alert_ms != NULL && c->last_alert_ms[r] >= 0) {
                cw_st_arg_tagged(st, "a", r);
                cw_st_arg_i64(st, c->last_alert_ms[r]);
            }
        }
        if (c->last_alert_id != NULL && c->last_alert_id[0] != '\0') {
            cw_st_arg_str(st, "lid");
            cw_st_arg_str(st, c->last_alert_id);
        }
        break;
    case CM_HDEL:
        cw_st_arg_str(st, "HDEL");
        cw_st_arg_key(st, "a", id, NULL);
        for (int r = 0; r < CW_REASON__COUNT; r++) {
            if (cm_alert_gone(c, r)) {
                cw_st_arg_tagged(st, "a", r);
            }
        }
        break;
    case CM_ZADD_RISK:
        cw_st_arg_str(st, "ZADD");
        cw_st_arg_key(st, "atrisk", NULL, NULL);
        n = score_str(c->score, tmp, sizeof(tmp));
        cw_st_arg_mem(st, tmp, (size_t)n);
        cw_st_arg_str(st, id);
        break;
    case CM_TIMER_SET:
    case CM_TIMER_LT:
        cw_st_arg_str(st, "ZADD");
        cw_st_arg_pkey(st, "due", p);
        if (cmd->kind == CM_TIMER_LT) {
            cw_st_arg_str(st, "LT");
        }
        cw_st_arg_i64(st, c->next_due_ms);
        cw_st_arg_str(st, id);
        break;
    case CM_TIMER_DEL:
        cw_st_arg_str(st, "ZREM");
        cw_st_arg_pkey(st, "due", p);
        cw_st_arg_str(st, id);
        break;
    case CM_OUTBOX:
        cw_st_arg_str(st, "HSET");
        cw_st_arg_pkey(st, "outbox", p);
        cw_st_arg_str(st, c->alert_ids[cmd->sub]);
        cw_st_arg_str(st, c->alert_json[cmd->sub]);
        break;
    default:
        return CW_ERROR;
    }
    return cw_st_args_send(st);
}

static cw_err_t cm_reply_reads(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const ap_cmd_t *cmd = &st->ap_cmd[i];
    cm_read_t *rd = &st->cm_rd[cmd->grp];
    switch (cmd->kind) {
    case AP_WATCH:
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    case AP_ZSCORE:
        return cw_st_rep_timer(r, &rd->due);
    case CM_HMGET_BD: {
        const cw_commit_t *c = &((const cw_commit_t *)vctx)[cmd->grp];
        const redisReply *sc;
        int home;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
            return CW_ERROR;
        }
        sc = r->element[2];
        rd->same_score =
            sc->type == REDIS_REPLY_STRING && score_stored_is(c->score, sc->str, sc->len);
        rd->band = cw_st_rep_band(r->element[0]);
        home = cw_st_rep_partition(r->element[1]);
        if (home >= 0 && home != cm_partition(c) && home != rd->home) {
            /* another partition's apply wrote the account last: its fence
             * must be watched before this read counts */
            rd->home = home;
            st->cm_rewatch = 1;
        }
        return CW_OK;
    }
    case CM_LRANGE_H:
        if (r->type != REDIS_REPLY_ARRAY) {
            return CW_ERROR;
        }
        cw_st_hist_locate(r, ((const cw_commit_t *)vctx)[cmd->grp].acct->asof_ms, rd);
        return CW_OK;
    default:
        return CW_ERROR;
    }
}

/* The timer write of commit c after its read rd: CM_TIMER_SET, CM_TIMER_LT,
 * CM_TIMER_DEL, or -1 for none. The timer is replaced when it is still the
 * one the read saw (or there is none); otherwise only moved earlier, so a
 * newer earlier timer is kept. */
static int cm_timer_op(const cm_read_t *rd, const cw_commit_t *c) {
    int64_t dm = c->acct->due_ms;
    if (rd->due == AP_NONE || (dm >= 0 && rd->due == dm)) {
        if (c->next_due_ms >= 0) {
            return rd->due == c->next_due_ms ? -1 : CM_TIMER_SET; /* (already there) */
        }
        return rd->due != AP_NONE ? CM_TIMER_DEL : -1;
    }
    return c->next_due_ms >= 0 && c->next_due_ms < rd->due ? CM_TIMER_LT : -1;
}

/* The account's timer after that write (AP_NONE: none). */
static int64_t cm_due_after(const cm_read_t *rd, const cw_commit_t *c) {
    switch (cm_timer_op(rd, c)) {
    case CM_TIMER_SET:
        return c->next_due_ms;
    case CM_TIMER_DEL:
        return AP_NONE;
    case CM_TIMER_LT:
        return c->next_due_ms < rd->due ? c->next_due_ms : rd->due;
    default:
        return rd->due;
    }
}

/* After a successful commit: the timers of the committed accounts that
 * the apply cache holds. An account committed twice in one call (the
 * pipeline's chunks never do) is left with an unknown timer rather than
 * a guess (due_known 2 marks "moved by this call"). */
static void cm_cache_store(cw_state_t *st, const cw_commit_t *commits, size_t n) {
    for (int pass = 0; st->acache != NULL && pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const cw_account_state_t *a = commits[i].acct;
            ac_rec_t *r = a->partition == cm_partition(&commits[i])
                              ? cw_acache_get(st->acache, a->partition, a->account_id)
                              : NULL; /* (no partition: not the apply's key) */
            if (r == NULL || r->due_known == 0) {
                continue;
            }
            if (pass == 1) {
                r->due_known = r->due_known == 2 ? 1 : 0;
            } else if (r->due_known >= 2) {
                r->due_known = 3; /* twice: unknown after pass 1 */
            } else {
                r->due = cm_due_after(&st->cm_rd[i], &commits[i]);
                r->due_known = 2;
            }
        }
    }
}

/* Phase 2: every commit's writes, from its read. */
static int cm_plan_writes(cw_state_t *st, const cw_commit_t *commits, size_t n) {
    unsigned char seen[CW_STATE_MAX_PARTITIONS] = {0};
    st->ap_n_cmd = 0;
    if (cw_st_ap_cmd_push(st, 0, AP_MULTI, 0)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const cw_commit_t *c = &commits[i];
        const cm_read_t *rd = &st->cm_rd[i];
        uint32_t k = (uint32_t)i;
        int p = cm_partition(c);
        if (!rd->timer_only) {
            int ndel = 0;
            /* TTLs: SET ... EX gives the snapshot one; the history gets one
             * when this LPUSH creates it; the apply refreshes every key's
             * TTL once a wall-clock day (HSET/LPUSH keep a key's TTL) */
            if (c->snapshot_json != NULL) {
                int op = hist_op(st, rd);
                if (cw_st_ap_cmd_push(st, k, CM_SET_SNAP, 0) ||
                    (op >= 0 && cw_st_ap_cmd_push(st, k, op, 0)) ||
                    ((op == CM_LPUSH || op == CM_LINSERT) && hist_trim(st, rd) &&
                     cw_st_ap_cmd_push(st, k, CM_LTRIM, 0)) ||
                    (rd->hlen == 0 && cw_st_ap_cmd_push(st, k, CM_EXPIRE_H, 0))) {
                    return -1;
                }
            }
            if (rd->band != c->band &&
                ((rd->band >= 0 && cw_st_ap_cmd_push(st, k, CM_BAND_MOVE, -rd->band - 1)) ||
                 cw_st_ap_cmd_push(st, k, CM_BAND_MOVE, 0))) {
                return -1;
            }
            for (int r = 0; r < CW_REASON__COUNT; r++) {
                ndel += cm_alert_gone(c, r);
            }
            if (cw_st_ap_cmd_push(st, k, CM_HSET, 0) ||
                (ndel > 0 && cw_st_ap_cmd_push(st, k, CM_HDEL, 0)) ||
                (!rd->same_score && cw_st_ap_cmd_push(st, k, CM_ZADD_RISK, 0))) {
                return -1;
            }
        }
        /* the timer */
        {
            int op = cm_timer_op(rd, c);
            if (op >= 0 && cw_st_ap_cmd_push(st, k, op, 0)) {
                return -1;
            }
        }
        if (!rd->timer_only) {
            int na = c->n_alerts < 0                  ? 0
                     : c->n_alerts > CW_REASON__COUNT ? CW_REASON__COUNT
                                                      : c->n_alerts;
            for (int x = 0; x < na; x++) {
                if (cw_st_ap_cmd_push(st, k, CM_OUTBOX, x)) {
                    return -1;
                }
            }
        }
        if (!seen[p]) {
            seen[p] = 1;
            if (cw_st_ap_cmd_push(st, (uint32_t)p, AP_FENCE, 0)) {
                return -1;
            }
        }
        if (rd->home >= 0 && !seen[rd->home]) {
            seen[rd->home] = 1;
            if (cw_st_ap_cmd_push(st, (uint32_t)rd->home, AP_FENCE, 0)) {
                return -1;
            }
        }
    }
    return cw_st_ap_cmd_push(st, 0, AP_EXEC, 0);
}

static cw_err_t cm_run(cw_state_t *st, const cw_commit_t *commits, size_t n, int *aborted) {
    cw_err_t err;
    *aborted = 0;
    if (cw_st_grow((void **)&st->cm_rd, &st->cm_rd_cap, n, sizeof(*st->cm_rd)) != 0) {
        return CW_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        const cw_commit_t *c = &commits[i];
        st->cm_rd[i].timer_only = c->reschedule_only || changes_only_timer(c);
        st->cm_rd[i].home = st->cm_rd[i].timer_only ? -1 : cm_home(c);
    }
    /* A read that finds an account written last by another partition than
     * the one watched for it (cm_reply_reads) is read again once that
     * partition's fence is watched too: WATCH before the read. */
    for (int round = 0;; round++) {
        unsigned char seen[CW_STATE_MAX_PARTITIONS] = {0};
        st->ap_n_cmd = 0;
        for (size_t i = 0; i < n; i++) {
            const int ps[2] = {cm_partition(&commits[i]), st->cm_rd[i].home};
            for (int j = 0; j < 2; j++) {
                if (ps[j] >= 0 && !seen[ps[j]]) {
                    seen[ps[j]] = 1;
                    if (cw_st_ap_cmd_push(st, (uint32_t)ps[j], AP_WATCH, 0)) {
                        return CW_ERROR;
                    }
                }
            }
        }
        for (size_t i = 0; i < n; i++) {
            const cw_commit_t *c = &commits[i];
            cm_read_t *rd = &st->cm_rd[i];
            uint32_t k = (uint32_t)i;
            rd->due = AP_NONE;
            rd->band = -1;
            rd->hlen = -1;
            rd->hpos = 0;
            rd->hsame = 0;
            rd->same_score = 0;
            if (cw_st_ap_cmd_push(st, k, AP_ZSCORE, 0) ||
                (!rd->timer_only && cw_st_ap_cmd_push(st, k, CM_HMGET_BD, 0)) ||
                (!rd->timer_only && c->snapshot_json != NULL &&
                 cw_st_ap_cmd_push(st, k, CM_LRANGE_H, 0))) {
                return CW_ERROR;
            }
        }
        st->cm_rewatch = 0;
        err = cw_st_pipe_run(st, st->ap_n_cmd, cm_build, cm_reply_reads, (void *)commits,
                             "commit read");
        if (err != CW_OK) {
            return err;
        }
        if (!st->cm_rewatch) {
            break;
        }
        if (round == 4) {
            *aborted = 1; /* accounts moving between partitions all the time */
            return CW_OK;
        }
    }
    if (cm_plan_writes(st, commits, n) != 0) {
        return CW_ERROR;
    }
    st->tx_aborted = 0;
    err = cw_st_pipe_run(st, st->ap_n_cmd, cm_build, cw_st_ap_reply_writes, (void *)commits,
                         "commit");
    *aborted = st->tx_aborted;
    return err;
}

/* The fast path: commits of accounts that the last cw_state_due read
 * under a WATCH that is still on (one partition); their reads are
 * st->pre_rd. 1 when it applies. */
static int cm_prefetched(cw_state_t *st, const cw_commit_t *commits, size_t n) {
    if (!st->pre_watch) {
        return 0;
    }
    if (cw_st_grow((void **)&st->cm_rd, &st->cm_rd_cap, n, sizeof(*st->cm_rd)) != 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t tag = commits[i].acct->read_tag, idx = tag & ((UINT64_C(1) << 20) - 1);
        if (tag >> 20 != st->watch_gen || idx >= st->n_pre) {
            return 0;
        }
        st->cm_rd[i] = st->pre_rd[idx];
        st->cm_rd[i].timer_only = commits[i].reschedule_only || changes_only_timer(&commits[i]);
        st->cm_rd[i].home = -1;
        /* the read under the WATCH is the state the decision was made on */
        st->cm_rd[i].same_score = cm_same_score(&commits[i]);
        if (!st->cm_rd[i].timer_only && cm_home(&commits[i]) >= 0) {
            return 0; /* written last by another partition: cm_run watches its fence too */
        }
    }
    return 1;
}

cw_err_t cw_state_commit(cw_state_t *st, const cw_commit_t *commits, size_t n) {
    cw_err_t err;
    int aborted = 0;
    if (n == 0) {
        return CW_OK;
    }
    if (cm_prefetched(st, commits, n)) {
        st->pre_watch = 0; /* EXEC ends the WATCH, whatever happens */
        if (cm_plan_writes(st, commits, n) != 0) {
            return CW_ERROR;
        }
        st->tx_aborted = 0;
        err = cw_st_pipe_run(st, st->ap_n_cmd, cm_build, cw_st_ap_reply_writes, (void *)commits,
                             "commit");
        if (err != CW_OK) {
            if (st->acache != NULL) {
                cw_acache_clear(st->acache); /* some of it may have run */
            }
            return err;
        }
        if (!st->tx_aborted) {
            cm_cache_store(st, commits, n);
            return CW_OK;
        }
        /* another writer of the partition since the read: read again below */
    }
    st->pre_watch = 0;
    for (int attempt = 0;; attempt++) {
        err = cw_state_connect(st);
        if (err != CW_OK) {
            return err;
        }
        err = cm_run(st, commits, n, &aborted);
        if (err != CW_OK || aborted) {
            cw_st_drop(st, err != CW_OK ? "commit failed" : "commit aborted");
        }
        if (err != CW_OK) {
            return err;
        }
        if (!aborted) {
            cm_cache_store(st, commits, n);
            return CW_OK;
        }
        if (attempt == 4) {
            CW_LOG(CW_LOG_WARN, CW_STATE_COMP,
                   "commit: partitions written by another writer 5 times in a row; retrying later");
            return CW_RETRY;
        }
    }
}
