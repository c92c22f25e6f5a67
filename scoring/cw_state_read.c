/*
 * cw_state_read.c — reads outside the hot path: one account, watermarks, the outbox, dashboards
 * (part of the state module: cw_state.h, cw_state_int.h).
 */
#include "cw_state_int.h"

/* ---- reads ---- */

static cw_err_t reply_wm(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    int64_t *wm = ctx;
    (void)st;
    (void)i;
    if (r->type == REDIS_REPLY_NIL) {
        *wm = -1;
        return CW_OK;
    }
    return cw_st_rep_i64(r, wm) == 0 ? CW_OK : CW_ERROR;
}

cw_err_t cw_state_watermark(cw_state_t *st, int partition, int64_t *wm_out) {
    char field[16];
    cw_err_t err = cw_state_connect(st);
    *wm_out = -1;
    if (err != CW_OK) {
        return err;
    }
    snprintf(field, sizeof(field), "%d", partition);
    cw_st_args_reset(st);
    cw_st_arg_str(st, "HGET");
    cw_st_arg_key(st, "wm", NULL, NULL);
    cw_st_arg_str(st, field);
    return cw_st_pipe_run(st, 1, cw_st_build_prepared, reply_wm, wm_out, "watermark");
}

/* HMGET a p lm → {partition, last event ms} (-1 each when absent). */
static cw_err_t reply_plm(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    int64_t *plm = vctx;
    (void)st;
    (void)i;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        return CW_ERROR;
    }
    for (size_t k = 0; k < 2; k++) {
        if (cw_st_rep_i64(r->element[k], &plm[k]) != 0) {
            plm[k] = -1;
        }
    }
    return CW_OK;
}

/* The account's "current time" in event mode: its partition's watermark, at
 * least its latest event (now when it has neither). */
static cw_err_t current_asof(cw_state_t *st, const char *account_id, int64_t *asof) {
    int64_t plm[2] = {-1, -1}, wm = -1;
    cw_err_t err;
    cw_st_args_reset(st);
    cw_st_arg_str(st, "HMGET");
    cw_st_arg_key(st, "a", account_id, NULL);
    cw_st_arg_str(st, "p");
    cw_st_arg_str(st, "lm");
    err = cw_st_pipe_run(st, 1, cw_st_build_prepared, reply_plm, plm, "read");
    if (err == CW_OK && plm[0] >= 0 && plm[0] <= INT32_MAX) {
        err = cw_state_watermark(st, (int)plm[0], &wm);
    }
    if (err != CW_OK) {
        return err;
    }
    *asof = wm >= 0 ? wm : plm[1] >= 0 ? plm[1] : cw_time_now_ms();
    if (plm[1] >= 0 && *asof < plm[1]) {
        *asof = plm[1];
    }
    return CW_OK;
}

cw_err_t cw_state_read(cw_state_t *st, const char *account_id, int64_t asof_ms,
                       cw_account_state_t *out) {
    cw_err_t err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    if (asof_ms < 0 && st->conf->time_mode == CW_TIME_WALL) {
        asof_ms = cw_time_now_ms();
    } else if (asof_ms < 0 && (err = current_asof(st, account_id, &asof_ms)) != CW_OK) {
        return err;
    }
    memset(out, 0, sizeof(*out));
    cw_strlcpy(out->account_id, account_id, sizeof(out->account_id));
    out->due_ms = -1;
    out->asof_ms = asof_ms;
    err = cw_st_read_accounts(st, out, 1, "read");
    if (err != CW_OK) {
        return err;
    }
    return st->read_miss[0] ? CW_NOENT : CW_OK;
}

/* ---- outbox ---- */

typedef struct scan_ctx {
    cw_outbox_cb *cb;
    void *opaque;
    char cursor[32];
} scan_ctx_t;

static cw_err_t reply_scan(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    scan_ctx_t *ctx = vctx;
    const redisReply *cur, *kv;
    char id[CW_FIELD_MAX];
    (void)st;
    (void)i;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        return CW_ERROR;
    }
    cur = r->element[0];
    kv = r->element[1];
    if (cur->type != REDIS_REPLY_STRING || cur->len >= sizeof(ctx->cursor) ||
        kv->type != REDIS_REPLY_ARRAY || kv->elements % 2 != 0) {
        return CW_ERROR;
    }
    memcpy(ctx->cursor, cur->str, cur->len);
    ctx->cursor[cur->len] = '\0';
    for (size_t k = 0; k + 1 < kv->elements; k += 2) {
        const redisReply *f = kv->element[k], *v = kv->element[k + 1];
        size_t n;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            return CW_ERROR;
        }
        n = f->len < sizeof(id) - 1 ? f->len : sizeof(id) - 1;
        memcpy(id, f->str, n);
        id[n] = '\0';
        ctx->cb(ctx->opaque, id, v->str, v->len); /* json valid during the call only */
    }
    return CW_OK;
}

cw_err_t cw_state_outbox_scan(cw_state_t *st, int partition, cw_outbox_cb *cb, void *opaque) {
    scan_ctx_t ctx;
    cw_err_t err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    ctx.cb = cb;
    ctx.opaque = opaque;
    cw_strlcpy(ctx.cursor, "0", sizeof(ctx.cursor));
    do {
        char cursor[32];
        cw_strlcpy(cursor, ctx.cursor, sizeof(cursor));
        cw_st_args_reset(st);
        cw_st_arg_str(st, "HSCAN");
        cw_st_arg_pkey(st, "outbox", partition);
        cw_st_arg_str(st, cursor);
        cw_st_arg_str(st, "COUNT");
        cw_st_arg_str(st, CW_STATE_SCAN_COUNT);
        err = cw_st_pipe_run(st, 1, cw_st_build_prepared, reply_scan, &ctx, "outbox scan");
        if (err != CW_OK) {
            return err;
        }
    } while (strcmp(ctx.cursor, "0") != 0);
    return CW_OK;
}

typedef struct ack_ctx {
    const int *partitions;
    const char *const *ids;
} ack_ctx_t;

static cw_err_t build_ack(cw_state_t *st, size_t i, void *vctx) {
    const ack_ctx_t *ctx = vctx;
    cw_st_args_reset(st);
    cw_st_arg_str(st, "HDEL");
    cw_st_arg_pkey(st, "outbox", ctx->partitions[i]);
    cw_st_arg_str(st, ctx->ids[i]);
    return cw_st_args_send(st);
}

cw_err_t cw_state_outbox_ack(cw_state_t *st, const int *partitions, const char *const *alert_ids,
                             size_t n) {
    ack_ctx_t ctx = {partitions, alert_ids};
    cw_err_t err;
    if (n == 0) {
        return CW_OK;
    }
    err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    return cw_st_pipe_run(st, n, build_ack, cw_st_reply_ignore, &ctx, "outbox ack");
}

/* ---- dashboards ---- */

/* "<cmd> P:<kind>[:{id}] 0 <limit - 1> [WITHSCORES]" (limit > 0): the first
 * limit entries of a list or sorted set, in one round trip. */
static cw_err_t range_run(cw_state_t *st, const char *cmd, const char *kind, const char *id,
                          size_t limit, int withscores, pipe_reply_t on_reply, void *ctx,
                          const char *what) {
    cw_err_t err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    cw_st_args_reset(st);
    cw_st_arg_str(st, cmd);
    cw_st_arg_key(st, kind, id, NULL);
    cw_st_arg_str(st, "0");
    cw_st_arg_i64(st, limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit - 1);
    if (withscores) {
        cw_st_arg_str(st, "WITHSCORES");
    }
    return cw_st_pipe_run(st, 1, cw_st_build_prepared, on_reply, ctx, what);
}

typedef struct risk_ctx {
    char (*ids)[CW_FIELD_MAX];
    double *scores;
    size_t limit;
    size_t n;
} risk_ctx_t;

static cw_err_t reply_risk(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    risk_ctx_t *ctx = vctx;
    (void)st;
    (void)i;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        return CW_ERROR;
    }
    for (size_t k = 0; k + 1 < r->elements && ctx->n < ctx->limit; k += 2) {
        const redisReply *m = r->element[k];
        size_t n;
        if (m->type != REDIS_REPLY_STRING ||
            cw_st_rep_dbl(r->element[k + 1], &ctx->scores[ctx->n])) {
            return CW_ERROR;
        }
        n = m->len < CW_FIELD_MAX - 1 ? m->len : CW_FIELD_MAX - 1;
        memcpy(ctx->ids[ctx->n], m->str, n);
        ctx->ids[ctx->n][n] = '\0';
        ctx->n++;
    }
    return CW_OK;
}

cw_err_t cw_state_at_risk(cw_state_t *st, size_t limit, char (*ids)[CW_FIELD_MAX], double *scores,
                          size_t *n_out) {
    risk_ctx_t ctx = {ids, scores, limit, 0};
    cw_err_t err;
    *n_out = 0;
    if (limit == 0) {
        return CW_OK;
    }
    err = range_run(st, "ZRANGE", "atrisk", NULL, limit, 1, reply_risk, &ctx, "at risk");
    *n_out = ctx.n;
    return err;
}

typedef struct snap_ctx {
    cw_buf_t *buf;
    int found;
} snap_ctx_t;

static cw_err_t reply_snap(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    snap_ctx_t *ctx = vctx;
    (void)st;
    (void)i;
    if (r->type == REDIS_REPLY_NIL) {
        return CW_OK;
    }
    if (r->type != REDIS_REPLY_STRING) {
        return CW_ERROR;
    }
    cw_buf_reset(ctx->buf);
    cw_buf_append(ctx->buf, r->str, r->len);
    ctx->found = 1;
    return ctx->buf->oom ? CW_ERROR : CW_OK;
}

cw_err_t cw_state_snapshot(cw_state_t *st, const char *account_id, cw_buf_t *buf) {
    snap_ctx_t ctx = {buf, 0};
    cw_err_t err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    cw_st_args_reset(st);
    cw_st_arg_str(st, "GET");
    cw_st_arg_key(st, "snap", account_id, NULL);
    err = cw_st_pipe_run(st, 1, cw_st_build_prepared, reply_snap, &ctx, "snapshot");
    if (err != CW_OK) {
        return err;
    }
    return ctx.found ? CW_OK : CW_NOENT;
}

/* ---- observers and dashboard reads ---- */

void cw_state_set_rtt_cb(cw_state_t *st, cw_state_rtt_cb *cb, void *opaque) {
    st->rtt_cb = cb;
    st->rtt_opaque = opaque;
}

static cw_err_t reply_bands(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    uint64_t *counts = vctx;
    (void)st;
    (void)i;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        return CW_ERROR;
    }
    for (size_t b = 0; b < 3; b++) {
        int64_t v = 0;
        if (r->element[b]->type != REDIS_REPLY_NIL && cw_st_rep_i64(r->element[b], &v) != 0) {
            return CW_ERROR;
        }
        counts[b] = v > 0 ? (uint64_t)v : 0;
    }
    return CW_OK;
}

cw_err_t cw_state_band_counts(cw_state_t *st, uint64_t counts[3]) {
    cw_err_t err = cw_state_connect(st);
    counts[0] = counts[1] = counts[2] = 0;
    if (err != CW_OK) {
        return err;
    }
    cw_st_args_reset(st);
    cw_st_arg_str(st, "HMGET");
    cw_st_arg_key(st, "bands", NULL, NULL);
    cw_st_arg_str(st, "0");
    cw_st_arg_str(st, "1");
    cw_st_arg_str(st, "2");
    return cw_st_pipe_run(st, 1, cw_st_build_prepared, reply_bands, counts, "band counts");
}

typedef struct hist_ctx {
    int64_t *asof_ms;
    double *scores;
    size_t max;
    size_t n;
} hist_ctx_t;

static cw_err_t reply_history(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    hist_ctx_t *ctx = vctx;
    (void)st;
    (void)i;
    if (r->type != REDIS_REPLY_ARRAY) {
        return CW_ERROR;
    }
    for (size_t k = 0; k < r->elements && ctx->n < ctx->max; k++) {
        const redisReply *e = r->element[k];
        char tmp[64];
        long long asof = 0;
        double score = 0;
        if (e->type != REDIS_REPLY_STRING || e->len >= sizeof(tmp)) {
            return CW_ERROR;
        }
        memcpy(tmp, e->str, e->len);
        tmp[e->len] = '\0';
        if (sscanf(tmp, "%lld,%lf", &asof, &score) != 2) {
            return CW_ERROR;
        }
        ctx->asof_ms[ctx->n] = (int64_t)asof;
        ctx->scores[ctx->n] = score;
        ctx->n++;
    }
    return CW_OK;
}

cw_err_t cw_state_history(cw_state_t *st, const char *account_id, size_t max, int64_t *asof_ms,
                          double *scores, size_t *n_out) {
    hist_ctx_t ctx = {asof_ms, scores, max, 0};
    cw_err_t err;
    *n_out = 0;
    if (max == 0) {
        return CW_OK;
    }
    err = range_run(st, "LRANGE", "h", account_id, max, 0, reply_history, &ctx, "history");
    if (err != CW_OK) {
        return err;
    }
    *n_out = ctx.n;
    return ctx.n > 0 ? CW_OK : CW_NOENT;
}
