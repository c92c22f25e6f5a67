/*
 * cw_state_due.c — due timers and reads under WATCH (the due scan, the wall-mode read back)
 * (part of the state module: cw_state.h, cw_state_int.h).
 */
#include "cw_state_int.h"

/* ZRANGEBYSCORE ... WITHSCORES: [member, score, ...] into due_out. */
static cw_err_t reply_due_list(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    size_t n;
    (void)i;
    (void)ctx;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        return CW_ERROR;
    }
    n = r->elements / 2;
    st->n_due = 0;
    if (n == 0) {
        return CW_OK; /* nothing due (and realloc(p, 0) would free p) */
    }
    if (cw_st_grow((void **)&st->due_out, &st->due_cap, n, sizeof(*st->due_out)) != 0) {
        return CW_ERROR;
    }
    for (size_t k = 0; k < n; k++) {
        const redisReply *mem = r->element[2 * k];
        double score;
        if (mem->type != REDIS_REPLY_STRING || mem->len >= CW_FIELD_MAX ||
            cw_st_rep_dbl(r->element[2 * k + 1], &score) != 0) {
            return CW_ERROR;
        }
        memset(&st->due_out[k], 0, sizeof(st->due_out[k]));
        memcpy(st->due_out[k].account_id, mem->str, mem->len);
        st->due_out[k].account_id[mem->len] = '\0';
        st->due_out[k].due_ms = (int64_t)score;
    }
    st->n_due = n;
    return CW_OK;
}

/* Cleanup of due accounts that no longer exist: ZREM due, ZREM atrisk, SREM accounts. */
typedef struct due_gone_ctx {
    int partition;
    size_t *idx; /* indices into due_out of missing accounts */
    int unwatch; /* one more command: UNWATCH */
} due_gone_ctx_t;

static cw_err_t build_due_gone(cw_state_t *st, size_t i, void *vctx) {
    const due_gone_ctx_t *ctx = vctx;
    cw_st_args_reset(st);
    if (ctx->unwatch && i == 0) {
        cw_st_arg_str(st, "UNWATCH");
        return cw_st_args_send(st);
    }
    i -= (size_t)ctx->unwatch;
    const char *id = st->due_out[ctx->idx[i / 3]].account_id;
    switch (i % 3) {
    case 0:
        cw_st_arg_str(st, "ZREM");
        cw_st_arg_pkey(st, "due", ctx->partition);
        break;
    case 1:
        cw_st_arg_str(st, "ZREM");
        cw_st_arg_key(st, "atrisk", NULL, NULL);
        break;
    default:
        cw_st_arg_str(st, "SREM");
        cw_st_arg_key(st, "accounts", NULL, NULL);
        break;
    }
    cw_st_arg_str(st, id);
    return cw_st_args_send(st);
}

/*
 * The due scan and reads, under WATCH: WATCH P:fence:<p> and the
 * ZRANGEBYSCORE of the partition's timers in one round trip (the timers'
 * scores are then those the commit depends on: no ZSCORE per account),
 * then per account HGETALL a and LRANGE h as plain commands (no MULTI: its EXEC would end the
 * WATCH). The fence stays watched until the commit of these accounts, whose MULTI/EXEC then needs
 * no reads of its own (st->pre_rd): any other writer of the partition INCRs
 * the fence and aborts it, and the commit falls back to reading again. A
 * scan that finds nothing leaves the WATCH on: the next EXEC on this
 * connection ends it (if the fence moved meanwhile, that EXEC is aborted
 * once and recomputed, as for any other writer of the partition).
 */

static cw_err_t build_due_scan(cw_state_t *st, size_t i, void *vctx) {
    const wreads_ctx_t *ctx = vctx;
    cw_st_args_reset(st);
    if (i == 0) {
        cw_st_arg_str(st, "WATCH");
        cw_st_arg_pkey(st, "fence", ctx->partition);
        return cw_st_args_send(st);
    }
    cw_st_arg_str(st, "ZRANGEBYSCORE");
    cw_st_arg_pkey(st, "due", ctx->partition);
    cw_st_arg_str(st, "-inf");
    cw_st_arg_i64(st, ctx->upto);
    cw_st_arg_str(st, "LIMIT");
    cw_st_arg_str(st, "0");
    cw_st_arg_i64(st, ctx->max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)ctx->max);
    cw_st_arg_str(st, "WITHSCORES");
    return cw_st_args_send(st);
}

static cw_err_t reply_due_scan(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    if (i == 0) {
        st->pre_watch = 1; /* on, whatever the scan finds */
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    }
    return reply_due_list(st, i, r, vctx);
}

cw_err_t cw_st_build_wreads(cw_state_t *st, size_t i, void *vctx) {
    const wreads_ctx_t *ctx = vctx;
    cw_st_args_reset(st);
    if (i < ctx->n_watch) {
        cw_st_tx_shared(st, AP_WATCH, ctx->watch[i], NULL);
        return cw_st_args_send(st);
    }
    i -= ctx->n_watch;
    size_t acct = i / ctx->per, k = i % ctx->per;
    const char *id = ctx->a[acct].account_id;
    if (ctx->per > READ_CMDS) {
        if (k == 0) {
            cw_st_tx_shared(st, AP_ZSCORE, st->bat->groups[acct].partition, id);
            return cw_st_args_send(st);
        }
        k--;
    }
    return cw_st_build_read_cmd(st, id, k);
}

/* Replies of cw_st_build_wreads: held until an account's last one arrives. */
cw_err_t cw_st_reply_wreads(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const wreads_ctx_t *ctx = vctx;
    if (i < ctx->n_watch) {
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    }
    i -= ctx->n_watch;
    size_t acct = i / ctx->per, k = i % ctx->per;
    if (k == 0) {
        cw_st_held_free(st); /* an account whose replies were short (an error reply) */
    }
    st->held[st->n_held++] = (redisReply *)r;
    st->hold = 1;
    if (k + 1 < ctx->per) {
        return CW_OK;
    }
    cm_read_t *rd = &st->pre_rd[acct];
    cw_err_t err = CW_ERROR;
    if (st->n_held == ctx->per) {
        size_t z = ctx->per - READ_CMDS; /* 1: held[0] is the timer's ZSCORE */
        const redisReply *hash = st->held[z], *hist = st->held[z + 1];
        rd->home = -1;
        if (z == 0) {
            rd->due = ctx->a[acct].due_ms; /* the scan's score, under the WATCH */
        } else if (cw_st_rep_timer(st->held[0], &rd->due) != CW_OK) {
            cw_st_held_free(st);
            return CW_ERROR;
        }
        err = cw_st_eval_account(st, hash, hist, &ctx->a[acct], &st->read_miss[acct]);
        if (z == 1) {
            /* the timer as it is: the commit replaces it (the apply did not
             * read it) */
            ctx->a[acct].due_ms = rd->due == AP_NONE ? -1 : rd->due;
        }
        /* what the commit's own reads (HMGET bd p sc, LRANGE h) would find */
        rd->band = -1;
        for (size_t f = 0; err == CW_OK && f + 1 < hash->elements; f += 2) {
            const redisReply *name = hash->element[f];
            if (name->type == REDIS_REPLY_STRING && name->len == 2 &&
                memcmp(name->str, "bd", 2) == 0) {
                rd->band = cw_st_rep_band(hash->element[f + 1]);
            }
        }
        cw_st_hist_locate(hist, ctx->a[acct].asof_ms, rd); /* LRANGE 0 -1: all of it */
    }
    cw_st_held_free(st);
    return err;
}

cw_err_t cw_state_due(cw_state_t *st, int partition, int64_t upto_ms, size_t max,
                      cw_account_state_t **out, size_t *n_out) {
    int64_t now = cw_time_now_ms();
    size_t n_gone = 0, k = 0;
    cw_err_t err;
    *out = NULL;
    *n_out = 0;
    st->n_due = 0;
    if (max == 0) {
        return CW_OK;
    }
    err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    wreads_ctx_t wctx = {partition, upto_ms, max, NULL, READ_CMDS, 0, NULL};
    st->pre_watch = 0;
    err = cw_st_pipe_run(st, 2, build_due_scan, reply_due_scan, &wctx, "due");
    if (err != CW_OK || st->n_due == 0) {
        return err;
    }
    for (size_t i = 0; i < st->n_due; i++) {
        cw_account_state_t *a = &st->due_out[i];
        a->asof_ms = st->conf->time_mode == CW_TIME_WALL ? now : a->due_ms;
    }
    if (cw_st_grow((void **)&st->read_miss, &st->read_miss_cap, st->n_due, 1) != 0 ||
        cw_st_grow((void **)&st->pre_rd, &st->pre_rd_cap, st->n_due, sizeof(*st->pre_rd)) != 0) {
        return CW_ERROR;
    }
    memset(st->read_miss, 1, st->n_due);
    st->pre_watch = 0;
    wctx.a = st->due_out;
    err = cw_st_pipe_run(st, st->n_due * READ_CMDS, cw_st_build_wreads, cw_st_reply_wreads, &wctx,
                         "due read");
    cw_st_held_free(st);
    if (err != CW_OK) {
        return err;
    }
    st->pre_watch = 1;
    for (size_t i = 0; i < st->n_due; i++) {
        /* a missing account (read_miss) has its timer dropped below; the
         * others' timers live in this partition's zset: commit must update
         * it there */
        st->due_out[i].partition = partition;
        n_gone += st->read_miss[i];
    }
    if (n_gone > 0) {
        due_gone_ctx_t gctx = {partition, NULL, 0};
        size_t m = 0;
        gctx.idx = malloc(n_gone * sizeof(*gctx.idx));
        if (gctx.idx == NULL) {
            return CW_ERROR;
        }
        for (size_t i = 0; i < st->n_due; i++) {
            if (st->read_miss[i]) {
                gctx.idx[m++] = i;
            }
        }
        gctx.unwatch = n_gone == st->n_due; /* no commit will follow: end the WATCH */
        for (size_t i = 0; st->acache != NULL && i < n_gone; i++) {
            /* their timers go without a fence INCR */
            cw_acache_drop(st->acache, partition, st->due_out[gctx.idx[i]].account_id);
        }
        err = cw_st_pipe_run(st, 3 * n_gone + (size_t)gctx.unwatch, build_due_gone,
                             cw_st_reply_ignore, &gctx, "due cleanup");
        free(gctx.idx);
        if (err != CW_OK) {
            return err;
        }
        for (size_t i = 0; i < st->n_due; i++) { /* compact */
            if (!st->read_miss[i]) {
                if (k != i) {
                    st->due_out[k] = st->due_out[i];
                    st->pre_rd[k] = st->pre_rd[i];
                }
                k++;
            }
        }
        st->n_due = k;
        st->pre_watch = k > 0;
    }
    /* tag each account with its read (the caller may reorder or copy them) */
    st->watch_gen++;
    st->n_pre = st->n_due;
    for (size_t i = 0; i < st->n_due; i++) {
        st->due_out[i].read_tag = st->watch_gen << 20 | (uint64_t)i;
    }
    *out = st->due_out;
    *n_out = st->n_due;
    return CW_OK;
}

/*
 * Wall mode: the accounts of the batch just applied are read back, as of
 * now, in the apply's own write pipeline right after its EXEC: a WATCH of
 * the batch's fences, then per account the ZSCORE of its timer (the EXEC
 * ended the apply's WATCH, so the timer is read again under this one),
 * HGETALL and LRANGE, like cw_state_due's reads. The first cw_state_commit
 * of (some of) these accounts on this cw_state_t then needs no reads of its
 * own; another writer of the partitions in between INCRs a fence, aborts
 * that commit's EXEC, and it falls back to reading.
 */
/* The reads' context (watch: the caller's array of CW_STATE_MAX_PARTITIONS);
 * returns their number of commands, 0 when out of memory. */
size_t cw_st_read_back_plan(cw_state_t *st, wreads_ctx_t *ctx, int *watch) {
    const size_t n = st->bat->n_groups;
    unsigned char seen[CW_STATE_MAX_PARTITIONS] = {0};
    size_t n_watch = 0;
    for (size_t i = 0; i < n; i++) {
        int p = st->bat->groups[i].partition;
        if (!seen[p]) {
            seen[p] = 1;
            watch[n_watch++] = p;
        }
    }
    if (cw_st_grow((void **)&st->read_miss, &st->read_miss_cap, n, 1) != 0 ||
        cw_st_grow((void **)&st->pre_rd, &st->pre_rd_cap, n, sizeof(*st->pre_rd)) != 0) {
        return 0;
    }
    memset(st->read_miss, 1, n);
    *ctx = (wreads_ctx_t){-1, 0, 0, st->exec_out, READ_CMDS + 1, n_watch, watch};
    st->pre_watch = 0;
    st->n_pre = 0;
    return n_watch + n * (READ_CMDS + 1);
}

/* After the apply (and its read back) succeeded: the WATCH is on. */
void cw_st_read_back_done(cw_state_t *st) {
    const size_t n = st->bat->n_groups;
    st->pre_watch = 1;
    st->n_pre = n;
    st->watch_gen++;
    for (size_t i = 0; i < n; i++) {
        cw_account_state_t *a = &st->exec_out[i];
        int p = st->bat->groups[i].partition;
        if (a->partition < 0 || st->read_miss[i]) {
            a->partition = p;
        }
        /* the commit of an account whose hash names another partition
         * (written by that partition since this apply) watches that one's
         * fence: it reads for itself */
        a->read_tag = a->partition == p ? st->watch_gen << 20 | (uint64_t)i : 0;
    }
}
