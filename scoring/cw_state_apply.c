/*
 * cw_state_apply.c — the apply of a batch: one optimistic transaction over its accounts
 * (part of the state module: cw_state.h, cw_state_int.h).
 */
#include "cw_state_int.h"

/* ---- apply: WATCH and read, compute in C, MULTI ... EXEC ----
 *
 * One batch is one optimistic transaction over the touched accounts.
 * Phase 1 WATCHes the fence key P:fence:<p> of each partition in the batch
 * (every apply of a partition INCRs it in its transaction) and reads what
 * the update needs: HMGET of its facts, attributes, prune marks, the last
 * offset applied from this partition and the day buckets its events add
 * to; HMGET of the set members its events mark; ZSCORE of its timer.
 * Phase 2, only for accounts crossing a prune point, reads the whole set
 * (HGETALL) or the field names (HKEYS) to delete; and it claims the
 * accounts whose hash phase 1 found without "p" (new accounts, whose fence
 * is not known) for this partition with HSETNX, or reads the batch again
 * when another partition's apply wrote "p" first. Phase 3 writes everything
 * in one MULTI/EXEC; if another apply of one of these partitions committed
 * meanwhile (a second consumer of the partition during a rebalance) EXEC
 * aborts and the batch is recomputed. The fields
 * the apply reads are written only by applies (COMMIT writes the decision
 * fields), so the fence covers them. An account whose events arrive on two
 * partitions (producers that changed keying) must not be in one batch
 * under both (its two groups would read the same values; the pipeline
 * cuts its step there); two applies of it from two partitions are
 * serialized by the fence of the partition that wrote it last (cw_state.h:
 * "Accounts on two partitions"). Events at or below the account's last
 * applied offset of their partition are skipped, so re-running a batch
 * whose EXEC reply was lost changes nothing.
 *
 * The arithmetic and the stored formats are those documented in
 * cw_state_int.h, "Stored formats" (it was a Lua script: ~180 us of Redis CPU per account;
 * bench/README.md has the figures). Nothing is allocated per event: the
 * scratch arrays (cw_state_int.h: ap_grp_t, ap_cnt_t, ...) grow to the
 * largest batch and are reused.
 */

static const char *const ap_fact[AP_NF] = {"fm", "lm", "fl", "ll", "kc", "k0", "k1",
                                           "k2", "k3", "k4", "k5", "k6", "k7", "lt"};
static const char *const ap_attr[4] = {"arr", "sea", "pln", "ren"};
#define AP_PRUNE_SCAN_DAYS 400 /* a counter gap wider than this is pruned via HKEYS */

static size_t ac_rec_size(const cw_layout_t *l) {
    return sizeof(ac_rec_t) + sizeof(int32_t) * (size_t)(l->n_counters + 2 * l->n_sets);
}

int64_t cw_st_ap_day(int64_t ms) {
    return cw_time_day(ms);
}

/* A day bucket's field name, "<day>:<counter>", into out
 * (AP_DAY_FIELD_MAX bytes, counter names are shorter than
 * CW_KEYNAME_MAX); its length. */
#define AP_DAY_FIELD_MAX (CW_I64_MAX_CHARS + 1 + CW_KEYNAME_MAX)
static size_t ap_day_field(char *out, int64_t day, const char *name) {
    size_t n = cw_fmt_i64(out, day), nl = strlen(name);
    out[n++] = ':';
    memcpy(out + n, name, nl + 1);
    return n + nl;
}

static void ap_arg_field(cw_state_t *st, int64_t day, const char *name) {
    char tmp[AP_DAY_FIELD_MAX];
    cw_st_arg_mem(st, tmp, ap_day_field(tmp, day, name));
}

static const char *ap_id(const cw_state_t *st, size_t g) {
    return cw_st_ev_str(st->bat, st->bat->groups[g].id);
}

/* The timer this apply sets for group g (ZADD LT): now in wall mode, the
 * end of its earliest in-retention event's day in event mode; -1 none. */
static int64_t ap_timer(const cw_state_t *st, const ap_grp_t *g) {
    if (g->applied == 0) {
        return -1;
    }
    if (st->conf->time_mode == CW_TIME_WALL) {
        return -1; /* the decision that follows in the same step sets it */
    }
    return g->wmin == AP_NONE ? -1 : (cw_st_ap_day(g->wmin) + 1) * CW_MS_PER_DAY - 1;
}

int cw_st_ap_cmd_push(cw_state_t *st, uint32_t grp, int kind, int sub) {
    if (cw_st_grow((void **)&st->ap_cmd, &st->ap_cmd_cap, st->ap_n_cmd + 1, sizeof(*st->ap_cmd)) !=
        0) {
        return -1;
    }
    st->ap_cmd[st->ap_n_cmd].grp = grp;
    st->ap_cmd[st->ap_n_cmd].kind = (int16_t)kind;
    st->ap_cmd[st->ap_n_cmd].sub = (int16_t)sub;
    st->ap_n_cmd++;
    return 0;
}

static int ap_del_push(cw_state_t *st, uint32_t grp, const char *p, size_t len) {
    ap_del_t *d;
    if (cw_st_grow((void **)&st->ap_del, &st->ap_del_cap, st->ap_n_del + 1, sizeof(*st->ap_del)) !=
        0) {
        return -1;
    }
    d = &st->ap_del[st->ap_n_del++];
    d->grp = grp;
    d->off = (uint32_t)st->ap_dbuf.len;
    d->len = (uint32_t)len;
    cw_buf_append(&st->ap_dbuf, p, len);
    return st->ap_dbuf.oom ? -1 : 0;
}

/* The group's member entry for (set, member), added when absent; NULL on OOM. */
static ap_mem_t *ap_mem_find(cw_state_t *st, ap_grp_t *g, int set, const char *member, int add) {
    for (uint32_t k = 0; k < g->n_mem; k++) {
        ap_mem_t *m = &st->ap_mem[g->mem0 + k];
        if (m->set == set && strcmp(m->member, member) == 0) {
            return m;
        }
    }
    if (!add || cw_st_grow((void **)&st->ap_mem, &st->ap_mem_cap, st->ap_n_mem + 1,
                           sizeof(*st->ap_mem)) != 0) {
        return NULL;
    }
    /* a group's entries are contiguous: groups are filled one at a time */
    st->ap_mem[st->ap_n_mem].member = member;
    st->ap_mem[st->ap_n_mem].set = set;
    st->ap_mem[st->ap_n_mem].touched = 0;
    st->ap_mem[st->ap_n_mem].L = AP_NONE;
    st->ap_mem[st->ap_n_mem].M = AP_NONE;
    st->ap_n_mem++;
    g->n_mem++;
    return &st->ap_mem[st->ap_n_mem - 1];
}

/* The member of set s of an event ("" when the event has none). */
static const char *ap_member(const cw_state_t *st, const cw_bev_t *b, int set) {
    return cw_st_ev_str(st->bat, st->layout->sets[set].of_users ? b->user : b->feature);
}

/* The counter and set updates of an event (worked out at add). */
static void ap_event_ops(const cw_state_t *st, const cw_bev_t *b, cw_event_ops_t *ops) {
    ops->n_counters = 0;
    ops->n_sets = 0;
    ops->key_feature = b->key_feature;
    for (uint32_t m = b->counters; m != 0; m &= m - 1) {
        int c = __builtin_ctz(m);
        ops->counter[ops->n_counters] = c;
        ops->amount[ops->n_counters++] = st->layout->counters[c].sum ? b->sum_amount : 1;
    }
    for (unsigned m = b->sets; m != 0; m &= m - 1) {
        ops->set[ops->n_sets++] = __builtin_ctz(m);
    }
}

/* The facts (bits of AP_*) and attributes (*at) the events of a group can
 * change, which are all its read needs of them: first/last event, last
 * login and lt always (the day, timer, retention and new-account logic
 * read them), the first login with a login, the cancellation with one, a
 * key feature's first use with a use of it, the attributes with an account
 * event. Asking Redis for the other 13 of 18 for every group cost it a
 * listpack scan each (HMGET was its costliest command, bench/README.md). */
static unsigned ap_read_fields(const cw_state_t *st, int32_t head, int *at) {
    unsigned f = 1u << AP_FM | 1u << AP_LM | 1u << AP_LL | 1u << AP_LT;
    *at = 0;
    for (int32_t e = head; e >= 0; e = st->bat->evs[e].next) {
        const cw_bev_t *ev = &st->bat->evs[e];
        if (ev->type == CW_EV_LOGIN) {
            f |= 1u << AP_FL;
        } else if (ev->type == CW_EV_CANCELLATION) {
            f |= 1u << AP_KC;
        } else if (ev->type == CW_EV_ACCOUNT) {
            *at = 1;
        }
        if (ev->key_feature >= 0 && ev->key_feature < CW_MAX_KEY_FEATURES) {
            f |= 1u << (AP_K0 + ev->key_feature);
        }
    }
    return f;
}

/* The group's counter entry for (c, day); with add, appended when absent
 * (plan time only: a group's entries are contiguous). NULL: not found, or
 * out of memory. */
static ap_cnt_t *ap_cnt_find(cw_state_t *st, ap_grp_t *g, int c, int64_t day, int add) {
    for (uint32_t x = 0; x < g->n_cnt; x++) {
        ap_cnt_t *ce = &st->ap_cnt[g->cnt0 + x];
        if (ce->c == c && ce->day == day) {
            return ce;
        }
    }
    if (!add || cw_st_grow((void **)&st->ap_cnt, &st->ap_cnt_cap, st->ap_n_cnt + 1,
                           sizeof(*st->ap_cnt)) != 0) {
        return NULL;
    }
    ap_cnt_t *ce = &st->ap_cnt[st->ap_n_cnt++];
    ce->c = c;
    ce->day = day;
    ce->amount = 0;
    ce->base = 0;
    g->n_cnt++;
    return ce;
}

/* WATCH of the fences of the batch's partitions (before anything is
 * read), each with its GET when the cache needs the value (kind AP_GETF),
 * and the HGET of the partition's watermark (AP_WMGET): only applies of
 * the partition write it, and each INCRs the fence, so the value read
 * stays current until this apply's EXEC, which raises it with a plain
 * HSET (it was a Lua maximum, EVALed in the transaction). */
static int ap_push_watches(cw_state_t *st, int with_get) {
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        int p = st->bat->groups[gi].partition;
        if (!st->ap_watched[p]) {
            st->ap_watched[p] = 1;
            st->ap_wm[p] = AP_NONE;
            if (cw_st_ap_cmd_push(st, (uint32_t)p, AP_WATCH, 0) ||
                (with_get && cw_st_ap_cmd_push(st, (uint32_t)p, AP_GETF, 0)) ||
                cw_st_ap_cmd_push(st, (uint32_t)p, AP_WMGET, 0)) {
                return -1;
            }
        }
    }
    return 0;
}

/* Replies of the WATCHes, and of the cache's fence check: the fences'
 * values (nil: never INCRed, 0), which keep or drop each partition's
 * records. They come first in the read's pipeline, whose reads of cached
 * accounts relied on the records: those of a dropped partition are then
 * stale (ap_reply_reads) and the batch is read again. */
static cw_err_t ap_reply_fences(cw_state_t *st, const ap_cmd_t *c, const redisReply *r) {
    int64_t v = 0;
    if (c->kind == AP_WATCH) {
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    }
    if (r->type != REDIS_REPLY_NIL && cw_st_rep_i64(r, &v) != 0) {
        return CW_ERROR;
    }
    if (!cw_acache_fence_seen(st->acache, (int)c->grp, v)) {
        st->ap_fence_moved[c->grp] = 1;
    }
    return CW_OK;
}

/* Group gi's facts, marks, x, o:<p> and timer from the cache when it holds
 * a current record of the account (see ac_rec_t); g->rq_f then asks only
 * for the facts it lacks. */
static void ap_cache_load(cw_state_t *st, size_t gi, int64_t today) {
    const cw_layout_t *l = st->layout;
    ap_grp_t *g = &st->ap_grp[gi];
    const ac_rec_t *r = NULL;
    for (int k = 0; k < AP_NF; k++) {
        g->f[k] = AP_NONE;
    }
    for (int k = 0; k < 4; k++) {
        g->at[k] = AP_NONE;
    }
    g->due = AP_NONE;
    if (st->acache == NULL) {
        return;
    }
    r = cw_acache_get(st->acache, st->bat->groups[gi].partition, ap_id(st, gi));
    if (r == NULL || r->x != today) {
        st->ac_misses++;
        return;
    }
    st->ac_hits++;
    g->hit = 1;
    g->known = r->known;
    g->due_known = r->due_known;
    for (int k = 0; k < AP_NF; k++) {
        if (r->known & (1u << k)) {
            g->f[k] = r->f[k];
        }
    }
    g->rq_f &= ~r->known;
    for (int c = 0; c < l->n_counters; c++) {
        g->mc[c] = r->mark[c];
    }
    for (int s = 0; s < l->n_sets; s++) {
        g->ms[s] = r->mark[l->n_counters + s];
        g->ns[s] = r->mark[l->n_counters + l->n_sets + s];
    }
    g->x = r->x;
    g->last = r->last;
    g->due = r->due_known ? r->due : AP_NONE;
}

/* Phase 1 plan: the reads of every group, and its member and counter
 * entries. */
static int ap_plan_reads(cw_state_t *st) {
    cw_event_ops_t ops;
    int64_t today = cw_st_ap_day(cw_time_now_ms());
    st->ap_n_cmd = 0;
    st->ap_n_mem = 0;
    /* the fences first; with the cache, their values too: the records
     * used below count only if the fences did not move (ap_reply_fences) */
    if (ap_push_watches(st, st->acache != NULL) != 0) {
        return -1;
    }
    /* the partitions that wrote accounts of the batch last, found by the
     * previous read (ap_reply_reads): watched before this read */
    for (int p = 0; p < CW_STATE_MAX_PARTITIONS; p++) {
        if (st->ap_watched[p] == 2) {
            st->ap_watched[p] = 1;
            if (cw_st_ap_cmd_push(st, (uint32_t)p, AP_WATCH, 0)) {
                return -1;
            }
        }
    }
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        ap_grp_t *g = &st->ap_grp[gi];
        memset(g, 0, sizeof(*g));
        g->mem0 = (uint32_t)st->ap_n_mem;
        g->cnt0 = (uint32_t)st->ap_n_cnt;
        g->rq_f = ap_read_fields(st, st->bat->groups[gi].head, &g->rq_at);
        ap_cache_load(st, gi, today);
        for (int32_t e = st->bat->groups[gi].head; e >= 0; e = st->bat->evs[e].next) {
            const cw_bev_t *ev = &st->bat->evs[e];
            ap_event_ops(st, ev, &ops);
            /* every day bucket an event may add to (the compute skips
             * redeliveries and days out of the retention) */
            for (int k = 0; k < ops.n_counters; k++) {
                if (ap_cnt_find(st, g, ops.counter[k], cw_st_ap_day(ev->ts_ms), 1) == NULL) {
                    return -1;
                }
            }
            for (int k = 0; k < ops.n_sets; k++) {
                const char *mem = ap_member(st, ev, ops.set[k]);
                if (mem[0] != '\0') {
                    if (ap_mem_find(st, g, ops.set[k], mem, 1) == NULL) {
                        return -1;
                    }
                }
            }
        }
        if (cw_st_ap_cmd_push(st, (uint32_t)gi, AP_HMGET_A, 0)) {
            return -1;
        }
        /* (wall mode sets no timer here: its read back reads it) */
        if (!g->due_known && st->conf->time_mode != CW_TIME_WALL &&
            cw_st_ap_cmd_push(st, (uint32_t)gi, AP_ZSCORE, 0)) {
            return -1;
        }
    }
    return 0;
}

/* ZSCORE of a timer: *due = its score, AP_NONE for none (nil). */
cw_err_t cw_st_rep_timer(const redisReply *r, int64_t *due) {
    double d;
    *due = AP_NONE;
    if (r->type == REDIS_REPLY_STRING && cw_sv_dbl((cw_sv_t){r->str, r->len}, &d) == 0) {
        *due = (int64_t)d;
        return CW_OK;
    }
    return r->type == REDIS_REPLY_NIL ? CW_OK : CW_ERROR;
}

/* The commands shared by the apply and commit transactions: WATCH or INCR
 * of a partition's fence, MULTI, EXEC, and ZSCORE of an account's timer
 * (id). 1 when kind is one of them (built). */
int cw_st_tx_shared(cw_state_t *st, int kind, int p, const char *id) {
    if (kind == AP_EXEC) {
        st->pre_watch = 0; /* EXEC ends every WATCH */
    }
    switch (kind) {
    case AP_ZSCORE:
        cw_st_arg_str(st, "ZSCORE");
        cw_st_arg_pkey(st, "due", p);
        cw_st_arg_str(st, id);
        return 1;
    case AP_WATCH:
        /* one fence per partition, not the accounts' keys: WATCH checks a
         * client's watched keys linearly (~90 us a call at 10,000 keys) */
        cw_st_arg_str(st, "WATCH");
        cw_st_arg_pkey(st, "fence", p);
        return 1;
    case AP_FENCE:
        cw_st_arg_str(st, "INCR");
        cw_st_arg_pkey(st, "fence", p);
        return 1;
    case AP_MULTI:
        cw_st_arg_str(st, "MULTI");
        return 1;
    case AP_EXEC:
        cw_st_arg_str(st, "EXEC");
        return 1;
    default:
        return 0;
    }
}

static cw_err_t ap_build(cw_state_t *st, size_t i, void *vctx) {
    const ap_cmd_t *c = &st->ap_cmd[i];
    const cw_layout_t *l = st->layout;
    /* grp is a group index, except for AP_WATCH, AP_GETF, AP_WMGET, AP_WMAX
     * and AP_FENCE (a partition) and AP_MULTI/AP_EXEC (unused) */
    int per_group = c->kind != AP_WATCH && c->kind != AP_GETF && c->kind != AP_WMGET &&
                    c->kind != AP_WMAX && c->kind != AP_FENCE && c->kind != AP_MULTI &&
                    c->kind != AP_EXEC;
    const ap_grp_t *g = per_group ? &st->ap_grp[c->grp] : NULL;
    const char *id = per_group ? ap_id(st, c->grp) : "";
    int p = per_group ? st->bat->groups[c->grp].partition : (int)c->grp;
    char tmp[64];
    int n;
    (void)vctx;
    cw_st_args_reset(st);
    if (cw_st_tx_shared(st, c->kind, p, id)) {
        return cw_st_args_send(st);
    }
    switch (c->kind) {
    case AP_HMGET_A:
        cw_st_arg_str(st, "HMGET");
        cw_st_arg_key(st, "a", id, NULL);
        cw_st_arg_str(st, "p"); /* the partition of the hash's last apply */
        for (int k = 0; k < AP_NF; k++) {
            if (g->rq_f & (1u << k)) {
                cw_st_arg_str(st, ap_fact[k]);
            }
        }
        for (int k = 0; g->rq_at && k < 4; k++) {
            cw_st_arg_str(st, ap_attr[k]);
        }
        for (int k = 0; !g->hit && k < l->n_counters; k++) {
            cw_st_arg_mark(st, "m:", l->counters[k].name);
        }
        for (int s = 0; !g->hit && s < l->n_sets; s++) {
            cw_st_arg_mark(st, "m:", l->sets[s].name);
        }
        for (int s = 0; !g->hit && s < l->n_sets; s++) {
            cw_st_arg_mark(st, "n:", l->sets[s].name);
        }
        if (!g->hit) {
            cw_st_arg_str(st, "x");
            cw_st_arg_tagged(st, "o:", p);
        }
        for (uint32_t x = 0; x < g->n_cnt; x++) {
            const ap_cnt_t *e = &st->ap_cnt[g->cnt0 + x];
            ap_arg_field(st, e->day, l->counters[e->c].name);
        }
        for (uint32_t k = 0; k < g->n_mem; k++) {
            const ap_mem_t *m = &st->ap_mem[g->mem0 + k];
            cw_st_arg_member(st, m->set, m->member, strlen(m->member));
        }
        break;
    case AP_GETF:
        cw_st_arg_str(st, "GET");
        cw_st_arg_pkey(st, "fence", p);
        break;
    case AP_WMGET:
        cw_st_arg_str(st, "HGET");
        cw_st_arg_key(st, "wm", NULL, NULL);
        cw_st_arg_i64(st, p);
        break;
    case AP_HKEYS:
        cw_st_arg_str(st, "HKEYS");
        cw_st_arg_key(st, "a", id, NULL);
        break;
    case AP_HGETALL_A:
        cw_st_arg_str(st, "HGETALL");
        cw_st_arg_key(st, "a", id, NULL);
        break;
    case AP_CLAIM:
        cw_st_arg_str(st, "HSETNX");
        cw_st_arg_key(st, "a", id, NULL);
        cw_st_arg_str(st, "p");
        cw_st_arg_i64(st, p);
        break;
    case AP_HDEL_A:
        cw_st_arg_str(st, "HDEL");
        cw_st_arg_key(st, "a", id, NULL);
        for (uint32_t k = 0; k < g->n_del; k++) {
            const ap_del_t *d = &st->ap_del[g->del0 + k];
            cw_st_arg_mem(st, st->ap_dbuf.data + d->off, d->len);
        }
        break;
    case AP_HSET_A:
        cw_st_arg_str(st, "HSET");
        cw_st_arg_key(st, "a", id, NULL);
        if (!g->hit) { /* a hit read it: this partition already */
            cw_st_arg_str(st, "p");
            cw_st_arg_i64(st, p);
        }
        for (uint32_t x = 0; x < g->n_cnt; x++) {
            const ap_cnt_t *e = &st->ap_cnt[g->cnt0 + x];
            if (e->amount != 0) {
                ap_arg_field(st, e->day, l->counters[e->c].name);
                cw_st_arg_i64(st, e->base + e->amount);
            }
        }
        cw_st_arg_tagged(st, "o:", p);
        cw_st_arg_i64(st, g->last);
        for (int k = 0; k < AP_NF; k++) {
            if (g->fch & (1u << k)) {
                cw_st_arg_str(st, ap_fact[k]);
                cw_st_arg_i64(st, g->f[k]);
            }
        }
        for (int k = 0; k < 4; k++) {
            if (g->ach & (1u << k)) {
                cw_st_arg_str(st, ap_attr[k]);
                n = (int)cw_fmt_i64(tmp, g->at[k]);
                cw_st_arg_begin(st);
                cw_st_arg_piece(st, tmp, (size_t)n);
                cw_st_arg_piece(st, ",", 1);
                cw_st_arg_piece(st, st->ap_vbuf.data + g->av_off[k], g->av_len[k]);
                cw_st_arg_end(st);
            }
        }
        for (int k = 0; k < l->n_counters; k++) {
            if (g->mch & (1u << k)) {
                cw_st_arg_mark(st, "m:", l->counters[k].name);
                cw_st_arg_i64(st, g->mc_new[k]);
            }
        }
        for (int s = 0; s < l->n_sets; s++) {
            if (g->nsch & (1u << s)) {
                cw_st_arg_mark(st, "n:", l->sets[s].name);
                cw_st_arg_i64(st, g->ns_new[s]);
            }
        }
        if (g->refresh) {
            cw_st_arg_str(st, "x");
            cw_st_arg_i64(st, cw_st_ap_day(st->ap_now));
        }
        for (uint32_t k = 0; k < g->n_mem; k++) {
            const ap_mem_t *m = &st->ap_mem[g->mem0 + k];
            if (m->touched) {
                cw_st_arg_member(st, m->set, m->member, strlen(m->member));
                n = (int)cw_fmt_i64(tmp, m->L);
                tmp[n++] = ',';
                n += (int)cw_fmt_i64(tmp + n, m->M);
                cw_st_arg_mem(st, tmp, (size_t)n);
            }
        }
        break;
    case AP_EXPIRE:
        cw_st_arg_str(st, "EXPIRE");
        if (c->sub == -1) {
            cw_st_arg_key(st, "a", id, NULL);
        } else if (c->sub == -2) {
            cw_st_arg_key(st, "h", id, NULL);
        } else {
            cw_st_arg_key(st, "snap", id, NULL);
        }
        cw_st_arg_i64(st, (int64_t)(st->plan.max_retention + 2) * 86400);
        break;
    case AP_SADD:
        cw_st_arg_str(st, "SADD");
        cw_st_arg_key(st, "accounts", NULL, NULL);
        cw_st_arg_str(st, id);
        break;
    case AP_ZADD:
        cw_st_arg_str(st, "ZADD");
        cw_st_arg_pkey(st, "due", p);
        cw_st_arg_str(st, "LT");
        cw_st_arg_i64(st, ap_timer(st, g));
        cw_st_arg_str(st, id);
        break;
    case AP_WMAX:
        cw_st_arg_str(st, "HSET");
        cw_st_arg_key(st, "wm", NULL, NULL);
        cw_st_arg_i64(st, p);
        cw_st_arg_i64(st, st->ap_wmax[p]);
        break;
    default:
        return CW_ERROR;
    }
    return cw_st_args_send(st);
}

/* "<a>,<b>" with both integers; -1 otherwise. */
static int ap_pair(const redisReply *r, int64_t *a, int64_t *b) {
    const char *comma;
    if (r->type != REDIS_REPLY_STRING || (comma = memchr(r->str, ',', r->len)) == NULL) {
        return -1;
    }
    if (cw_sv_i64((cw_sv_t){r->str, (size_t)(comma - r->str)}, a) != 0 ||
        cw_sv_i64((cw_sv_t){comma + 1, r->len - (size_t)(comma + 1 - r->str)}, b) != 0) {
        return -1;
    }
    return 0;
}

static int64_t ap_rep_i64(const redisReply *r) {
    int64_t v;
    return r->type == REDIS_REPLY_STRING && cw_sv_i64((cw_sv_t){r->str, r->len}, &v) == 0 ? v
                                                                                          : AP_NONE;
}

static int32_t ap_rep_day(const redisReply *r) {
    int64_t v = ap_rep_i64(r);
    return v == AP_NONE || v < INT32_MIN + 1 || v > INT32_MAX ? AP_I32_NONE : (int32_t)v;
}

/* A stored band (HGET bd, or the "bd" value of an HGETALL): -1 for none or
 * out of range. */
int cw_st_rep_band(const redisReply *r) {
    int64_t v = ap_rep_i64(r);
    return v == AP_NONE || v < 0 || v > 1000 ? -1 : (int)v;
}

/* The as-of of a history entry "<asof_ms>,<score>" (an element of LRANGE
 * h): AP_NONE for none. */
int64_t cw_st_rep_hist_asof(const redisReply *r) {
    const char *comma = r->type == REDIS_REPLY_STRING ? memchr(r->str, ',', r->len) : NULL;
    int64_t v;
    return comma != NULL && cw_sv_i64((cw_sv_t){r->str, (size_t)(comma - r->str)}, &v) == 0
               ? v
               : AP_NONE;
}

static cw_err_t ap_reply_reads(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const ap_cmd_t *c = &st->ap_cmd[i];
    const cw_layout_t *l = st->layout;
    ap_grp_t *g;
    size_t want;
    (void)vctx;
    if (c->kind == AP_WATCH || c->kind == AP_GETF) {
        return ap_reply_fences(st, c, r);
    }
    if (c->kind == AP_WMGET) {
        /* none, or not a number (as the Lua maximum did: overwritten) */
        if (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_STRING) {
            return CW_ERROR;
        }
        st->ap_wm[c->grp] = AP_NONE;
        if (r->type == REDIS_REPLY_STRING && cw_st_rep_i64(r, &st->ap_wm[c->grp]) != 0) {
            st->ap_wm[c->grp] = AP_NONE;
        }
        return CW_OK;
    }
    g = &st->ap_grp[c->grp];
    switch (c->kind) {
    case AP_HMGET_A: {
        size_t e = 0, nf = (size_t)__builtin_popcount(g->rq_f), na = g->rq_at ? 4 : 0;
        /* "p", then the fixed fields unless the cache had them (ap_cache_load) */
        size_t nfix = g->hit ? 1 : (size_t)l->n_counters + 2 * (size_t)l->n_sets + 3;
        want = nf + na + nfix + g->n_cnt + g->n_mem;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != want) {
            return CW_ERROR;
        }
        g->home = cw_st_rep_partition(r->element[e++]);
        if (g->home >= 0 && !st->ap_watched[g->home]) {
            /* written last by another partition's apply, whose fence is
             * not watched: watch it and read again (ap_run), so that this
             * apply and one of that partition are serialized */
            st->ap_watched[g->home] = 2;
            st->ap_stale = 1;
        }
        if (g->hit && (g->home != st->bat->groups[c->grp].partition ||
                       st->ap_fence_moved[st->bat->groups[c->grp].partition])) {
            /* another partition's apply wrote the hash since (an account
             * on two partitions; the pipeline applies them in turn), or it
             * is gone, or another writer moved the partition's fence (the
             * record was dropped as this read began): the record is stale
             * (ap_read reads again) */
            g->stale = 1;
            st->ap_stale = 1;
        }
        for (int k = 0; k < AP_NF; k++) {
            if (g->rq_f & (1u << k)) {
                g->f[k] = ap_rep_i64(r->element[e++]);
            }
        }
        for (int k = 0; k < 4; k++) {
            const redisReply *v = k < (int)na ? r->element[e++] : NULL;
            const char *comma =
                v != NULL && v->type == REDIS_REPLY_STRING ? memchr(v->str, ',', v->len) : NULL;
            g->at[k] = AP_NONE;
            if (comma != NULL &&
                cw_sv_i64((cw_sv_t){v->str, (size_t)(comma - v->str)}, &g->at[k]) == 0) {
                g->av_off[k] = (uint32_t)st->ap_vbuf.len;
                g->av_len[k] = (uint32_t)(v->len - (size_t)(comma + 1 - v->str));
                cw_buf_append(&st->ap_vbuf, comma + 1, g->av_len[k]);
            } else {
                g->at[k] = AP_NONE;
            }
        }
        if (!g->hit) {
            for (int k = 0; k < l->n_counters; k++) {
                g->mc[k] = ap_rep_day(r->element[e++]);
            }
            for (int s = 0; s < l->n_sets; s++) {
                g->ms[s] = ap_rep_day(r->element[e + (size_t)s]);
                g->ns[s] = ap_rep_day(r->element[e + (size_t)l->n_sets + (size_t)s]);
            }
            e += 2 * (size_t)l->n_sets;
            g->x = ap_rep_i64(r->element[e++]);
            g->last = ap_rep_i64(r->element[e++]);
        }
        for (uint32_t x = 0; x < g->n_cnt; x++) {
            int64_t v = ap_rep_i64(r->element[e++]);
            st->ap_cnt[g->cnt0 + x].base = v == AP_NONE ? 0 : v;
        }
        for (uint32_t k = 0; k < g->n_mem; k++) {
            ap_mem_t *m = &st->ap_mem[g->mem0 + k];
            if (ap_pair(r->element[e++], &m->L, &m->M) != 0 || m->M < 0) {
                m->L = AP_NONE;
                m->M = AP_NONE;
            }
        }
        if (g->last == AP_NONE) {
            g->last = -1;
        }
        return st->ap_vbuf.oom ? CW_ERROR : CW_OK;
    }
    case AP_ZSCORE:
        return cw_st_rep_timer(r, &g->due);
    default:
        return CW_ERROR;
    }
}

/* Phase 1 compute for group gi: skip redeliveries, update facts and
 * attributes, coalesce counters, mark set masks, find what to prune. */
static int ap_compute(cw_state_t *st, size_t gi, int64_t now) {
    const cw_layout_t *l = st->layout;
    const cw_view_plan_t *pl = &st->plan;
    ap_grp_t *g = &st->ap_grp[gi];
    int64_t mind[CW_MAX_COUNTERS];
    cw_event_ops_t ops;
    char tmp[40];
    for (int c = 0; c < l->n_counters; c++) {
        mind[c] = AP_NONE;
        g->mc_new[c] = g->mc[c];
    }
    const int64_t ll0 = g->f[AP_LL]; /* the last login before this apply */
    g->wmin = g->wmax = AP_NONE;
    g->is_new = g->f[AP_FM] == AP_NONE;
    /* TTLs (retention + 2 days) are refreshed once a wall-clock day, and on
     * keys this apply may create: EXPIRE was ~7 per account apply before */
    g->refresh = g->is_new || g->x == AP_NONE || g->x < cw_st_ap_day(now);
    /* redeliveries: at or below the last offset applied from this partition */
    for (int32_t e = st->bat->groups[gi].head; e >= 0; e = st->bat->evs[e].next) {
        cw_bev_t *ev = &st->bat->evs[e];
        int fl;
        if (ev->offset <= g->last) {
            ev->skip = 1;
            st->duplicates++;
            continue;
        }
        ev->skip = 0;
        g->last = ev->offset;
        g->applied++;
        g->wmax = g->wmax == AP_NONE || ev->ts_ms > g->wmax ? ev->ts_ms : g->wmax;
        g->wmin = g->wmin == AP_NONE || ev->ts_ms < g->wmin ? ev->ts_ms : g->wmin;
        fl = ap_known(ev);
#define AP_LO(k, v)                                                                                \
    if (g->f[k] == AP_NONE || (v) < g->f[k]) {                                                     \
        g->f[k] = (v);                                                                             \
        g->fch |= 1u << (k);                                                                       \
    }
#define AP_HI(k, v)                                                                                \
    if (g->f[k] == AP_NONE || (v) > g->f[k]) {                                                     \
        g->f[k] = (v);                                                                             \
        g->fch |= 1u << (k);                                                                       \
    }
        if (fl) {
            AP_LO(AP_FM, ev->ts_ms);
            AP_HI(AP_LM, ev->ts_ms);
        }
        if (ev->type == CW_EV_LOGIN) {
            AP_LO(AP_FL, ev->ts_ms);
            AP_HI(AP_LL, ev->ts_ms);
        }
        if (ev->type == CW_EV_CANCELLATION) {
            AP_HI(AP_KC, ev->ts_ms);
        }
        if (fl && ev->key_feature >= 0 && ev->key_feature < CW_MAX_KEY_FEATURES) {
            AP_LO(AP_K0 + ev->key_feature, ev->ts_ms);
        }
#undef AP_LO
#undef AP_HI
        if (ev->type == CW_EV_ACCOUNT) {
            /* arr, seats, plan, renewal: the value of the latest event time */
            for (int k = 0; k < 4; k++) {
                int n = 0;
                if (k == 0 && ev->arr >= 0) {
                    n = snprintf(tmp, sizeof(tmp), "%.17g", ev->arr);
                } else if (k == 1 && ev->seats >= 0) {
                    n = (int)cw_fmt_i64(tmp, ev->seats);
                } else if (k == 3 && ev->renewal_ms >= 0) {
                    n = (int)cw_fmt_i64(tmp, ev->renewal_ms);
                }
                const char *plan = cw_st_ev_str(st->bat, ev->plan);
                if ((k == 2 ? plan[0] == '\0' : n == 0) ||
                    (g->at[k] != AP_NONE && ev->ts_ms < g->at[k])) {
                    continue;
                }
                g->at[k] = ev->ts_ms;
                g->av_off[k] = (uint32_t)st->ap_vbuf.len;
                g->av_len[k] = (uint32_t)(k == 2 ? strlen(plan) : (size_t)n);
                cw_buf_append(&st->ap_vbuf, k == 2 ? plan : tmp, g->av_len[k]);
                g->ach |= 1u << k;
            }
        }
    }
    if (g->applied == 0) {
        return 0;
    }
    g->cur = st->conf->time_mode == CW_TIME_WALL
                 ? cw_st_ap_day(now)
                 : cw_st_ap_day(g->f[AP_LM] != AP_NONE ? g->f[AP_LM] : g->wmax);
    /* Retention is counted from the oldest day a pending decision will read:
     * in event mode a day-end timer can lag the newest applied event by a
     * whole batch's span of event time, and its as-of read needs the days
     * before it (pruning from the newest event dropped them once the lag
     * passed CW_STATE_SLACK_DAYS: a replay then read too few tickets) */
    g->base = g->cur;
    if (st->conf->time_mode != CW_TIME_WALL) {
        /* the timer: the end of the earliest day this apply changed, among
         * events still within the retention of the newest one (an older
         * event changes nothing a decision reads, and must not send the
         * timers back over days whose data is gone) */
        int64_t lim = g->cur - st->plan.max_retention, due = g->due;
        g->wmin = AP_NONE;
        for (int32_t e = st->bat->groups[gi].head; e >= 0; e = st->bat->evs[e].next) {
            int64_t ts = st->bat->evs[e].ts_ms;
            if (!st->bat->evs[e].skip && cw_st_ap_day(ts) >= lim &&
                (g->wmin == AP_NONE || ts < g->wmin)) {
                g->wmin = ts;
            }
        }
        if (g->wmin != AP_NONE) {
            int64_t timer = (cw_st_ap_day(g->wmin) + 1) * CW_MS_PER_DAY - 1;
            due = due == AP_NONE || timer < due ? timer : due;
        }
        /* lt: the last login at or before the pending decision, kept when a
         * newer login is applied first. A read as of that decision whose
         * last login is older than the logins' retention (its day bucket is
         * gone) takes it from here (cw_view): the last login as of a day
         * end does not depend on where batches start. */
        if (due != AP_NONE && g->f[AP_LL] != AP_NONE && g->f[AP_LL] > due) {
            int64_t lt = ll0 != AP_NONE && ll0 <= due ? ll0 : AP_NONE;
            for (int32_t e = st->bat->groups[gi].head; e >= 0; e = st->bat->evs[e].next) {
                const cw_bev_t *ev = &st->bat->evs[e];
                if (!ev->skip && ev->type == CW_EV_LOGIN && ev->ts_ms <= due &&
                    (lt == AP_NONE || ev->ts_ms > lt)) {
                    lt = ev->ts_ms;
                }
            }
            if (lt != AP_NONE && (g->f[AP_LT] == AP_NONE || lt > g->f[AP_LT])) {
                g->f[AP_LT] = lt;
                g->fch |= 1u << AP_LT;
            }
        }
        if (due != AP_NONE && cw_st_ap_day(due) < g->cur) {
            g->base = cw_st_ap_day(due);
        }
    }
    /* counters (coalesced per day and counter) and set masks, in event order */
    for (int32_t e = st->bat->groups[gi].head; e >= 0; e = st->bat->evs[e].next) {
        const cw_bev_t *ev = &st->bat->evs[e];
        int64_t d = cw_st_ap_day(ev->ts_ms);
        if (ev->skip || !ap_known(ev)) {
            continue;
        }
        ap_event_ops(st, ev, &ops);
        for (int k = 0; k < ops.n_counters; k++) {
            int c = ops.counter[k];
            ap_cnt_t *ce;
            if (d < g->base - pl->cr[c]) {
                continue; /* already out of the counter's retention */
            }
            if ((ce = ap_cnt_find(st, g, c, d, 0)) == NULL) {
                return -1; /* planned from the same events: cannot happen */
            }
            ce->amount += ops.amount[k];
            mind[c] = mind[c] == AP_NONE || d < mind[c] ? d : mind[c];
        }
        for (int k = 0; k < ops.n_sets; k++) {
            int s = ops.set[k];
            const char *mem = ap_member(st, ev, s);
            ap_mem_t *m;
            if (mem[0] == '\0' || d < g->base - pl->sr[s] ||
                (m = ap_mem_find(st, g, s, mem, 0)) == NULL) {
                continue;
            }
            m->touched = 1;
            if (m->L == AP_NONE) {
                m->L = d;
                m->M = 1;
            } else if (d > m->L) {
                m->M =
                    d - m->L >= 52
                        ? 1
                        : (int64_t)((((uint64_t)m->M << (d - m->L)) & ((UINT64_C(1) << 52) - 1)) +
                                    1);
                m->L = d;
            } else if (m->L - d < 52) {
                m->M |= (int64_t)(UINT64_C(1) << (m->L - d));
            }
        }
    }
    /* counter days below the retention: O(days removed) via m:<counter> */
    g->del0 = (uint32_t)st->ap_n_del;
    for (int c = 0; c < l->n_counters; c++) {
        int64_t cut = g->base - pl->cr[c];
        int64_t m = g->mc[c] == AP_I32_NONE ? AP_NONE : g->mc[c];
        int64_t nm = m;
        if (m != AP_NONE && m < cut) {
            if (cut - m > AP_PRUNE_SCAN_DAYS) {
                g->need_keys = 1; /* phase 2 lists the fields */
            } else {
                for (int64_t d = m; d < cut; d++) {
                    char name[AP_DAY_FIELD_MAX];
                    size_t nn = ap_day_field(name, d, l->counters[c].name);
                    if (ap_del_push(st, (uint32_t)gi, name, nn) != 0) {
                        return -1;
                    }
                }
            }
            nm = cut;
        }
        if (mind[c] != AP_NONE && (nm == AP_NONE || mind[c] < nm)) {
            nm = mind[c];
        }
        if (nm != AP_NONE && nm != m) {
            g->mc_new[c] = (int32_t)nm;
            g->mch |= 1u << c;
        }
    }
    /* sets: members out of the retention are listed and deleted (phase 2)
     * only when one can be: n:<set> is a lower bound of the members' last
     * days (events only raise a member's last day; new members lower it).
     * A set written by an older version (m:<set>, the day it was last
     * pruned, and no n:<set>) is listed once, which also sets n:<set>. */
    for (int s = 0; s < l->n_sets; s++) {
        int64_t low = AP_NONE, cut = g->base - pl->sr[s];
        for (uint32_t k = 0; k < g->n_mem; k++) {
            const ap_mem_t *m = &st->ap_mem[g->mem0 + k];
            if (m->set == s && m->touched && (low == AP_NONE || m->L < low)) {
                low = m->L;
            }
        }
        int legacy = g->ms[s] != AP_I32_NONE && g->ns[s] == AP_I32_NONE;
        if (legacy || (g->ns[s] != AP_I32_NONE && g->ns[s] < cut)) {
            g->sprune |= 1u << s;
            g->ns_new[s] = low == AP_NONE ? (int32_t)g->cur : (int32_t)low; /* phase 2 lowers it */
            g->nsch |= 1u << s;
            if (g->ms[s] != AP_I32_NONE) {
                char name[CW_KEYNAME_MAX + 4];
                int nn = snprintf(name, sizeof(name), "m:%s", l->sets[s].name);
                if (ap_del_push(st, (uint32_t)gi, name, (size_t)nn) != 0) {
                    return -1;
                }
            }
        } else if (low != AP_NONE && (g->ns[s] == AP_I32_NONE || low < g->ns[s])) {
            g->ns_new[s] = (int32_t)low;
            g->nsch |= 1u << s;
        }
    }
    return st->ap_vbuf.oom || st->ap_dbuf.oom ? -1 : 0;
}

/* Phase 2 replies: the names to delete. */
static cw_err_t ap_reply_prune(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const ap_cmd_t *c = &st->ap_cmd[i];
    const cw_layout_t *l = st->layout;
    const cw_view_plan_t *pl = &st->plan;
    ap_grp_t *g;
    if (c->kind == AP_CLAIM) {
        /* 0: another partition's apply wrote "p" since the read */
        if (r->type != REDIS_REPLY_INTEGER) {
            return CW_ERROR;
        }
        *(int *)vctx |= r->integer == 0;
        return CW_OK;
    }
    g = &st->ap_grp[c->grp];
    if (r->type != REDIS_REPLY_ARRAY) {
        return CW_ERROR;
    }
    if (c->kind == AP_HKEYS) {
        /* counter fields below the cut of a counter whose gap was too wide */
        for (size_t k = 0; k < r->elements; k++) {
            const redisReply *f = r->element[k];
            const char *colon;
            int64_t d;
            if (f->type != REDIS_REPLY_STRING || (colon = memchr(f->str, ':', f->len)) == NULL ||
                cw_sv_i64((cw_sv_t){f->str, (size_t)(colon - f->str)}, &d) != 0) {
                continue;
            }
            for (int cc = 0; cc < l->n_counters; cc++) {
                const char *name = l->counters[cc].name;
                int64_t m = g->mc[cc] == AP_I32_NONE ? AP_NONE : g->mc[cc];
                int64_t cut = g->base - pl->cr[cc];
                if (m != AP_NONE && cut - m > AP_PRUNE_SCAN_DAYS && d < cut &&
                    strlen(name) == f->len - (size_t)(colon + 1 - f->str) &&
                    memcmp(name, colon + 1, strlen(name)) == 0 &&
                    ap_del_push(st, c->grp, f->str, f->len) != 0) {
                    return CW_ERROR;
                }
            }
        }
        return CW_OK;
    }
    /* HGETALL of the account hash: the members of the listed sets
     * (sprune) out of the retention that this batch does not mark again */
    if (r->elements % 2 != 0) {
        return CW_ERROR;
    }
    for (size_t k = 0; k < r->elements; k += 2) {
        const redisReply *f = r->element[k];
        cw_sv_t mem;
        int64_t L, M;
        int s, keep = 0;
        if (f->type != REDIS_REPLY_STRING ||
            (s = cw_st_member_field(l, (cw_sv_t){f->str, f->len}, &mem)) < 0 ||
            !((g->sprune >> s) & 1)) {
            continue;
        }
        if (ap_pair(r->element[k + 1], &L, &M) == 0 && M >= 0 && L >= g->base - pl->sr[s]) {
            if (L < g->ns_new[s]) {
                g->ns_new[s] = (int32_t)L; /* kept: the bound must cover it */
            }
            continue;
        }
        for (uint32_t x = 0; x < g->n_mem && !keep; x++) {
            const ap_mem_t *m = &st->ap_mem[g->mem0 + x];
            keep = m->set == s && m->touched && strlen(m->member) == mem.len &&
                   memcmp(m->member, mem.p, mem.len) == 0;
        }
        if (!keep && ap_del_push(st, c->grp, f->str, f->len) != 0) {
            return CW_ERROR;
        }
    }
    return CW_OK;
}

/* Replies of a MULTI ... EXEC: +OK, +QUEUED..., then EXEC's array (nil:
 * aborted by a changed watched key, st->tx_aborted = 1). */
cw_err_t cw_st_ap_reply_writes(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    (void)vctx;
    if (st->ap_cmd[i].kind != AP_EXEC) {
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR; /* +OK, +QUEUED */
    }
    if (r->type == REDIS_REPLY_NIL) {
        st->tx_aborted = 1; /* a watched key changed */
        return CW_OK;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        return CW_ERROR;
    }
    for (size_t k = 0; k < r->elements; k++) {
        if (r->element[k]->type == REDIS_REPLY_ERROR) {
            return cw_st_reply_error(r->element[k], "apply");
        }
    }
    /* the fences' new values (the queued commands are ap_cmd[1..i)) */
    if (st->acache != NULL && (st->ap_cmd[0].kind != AP_MULTI || r->elements + 1 != i)) {
        cw_acache_clear(st->acache); /* cannot tell which reply is whose */
        return CW_OK;
    }
    for (size_t k = 0; st->acache != NULL && k < r->elements; k++) {
        const ap_cmd_t *q = &st->ap_cmd[k + 1];
        if (q->kind == AP_FENCE) {
            if (r->element[k]->type != REDIS_REPLY_INTEGER) {
                return CW_ERROR;
            }
            cw_acache_fence_incr(st->acache, (int)q->grp, r->element[k]->integer);
        }
    }
    return CW_OK;
}

static int ap_del_cmp(const void *a, const void *b) {
    const ap_del_t *x = a, *y = b;
    if (x->grp != y->grp) {
        return x->grp < y->grp ? -1 : 1;
    }
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Phase 3 plan: MULTI, each group's writes, the watermarks, EXEC. */
static int ap_plan_writes(cw_state_t *st) {
    size_t k = 0;
    unsigned char moved[CW_STATE_MAX_PARTITIONS] = {0};  /* fences INCRed for moves */
    unsigned char fenced[CW_STATE_MAX_PARTITIONS] = {0}; /* partitions' own INCRs queued */
    /* deletions of a group contiguous (phase 2 appended more) */
    if (st->ap_n_del > 1) {
        qsort(st->ap_del, st->ap_n_del, sizeof(*st->ap_del), ap_del_cmp);
    }
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        st->ap_grp[gi].del0 = (uint32_t)k;
        st->ap_grp[gi].n_del = 0;
        while (k < st->ap_n_del && st->ap_del[k].grp == gi) {
            st->ap_grp[gi].n_del++;
            k++;
        }
    }
    /* each partition's newest applied event: its watermark is raised to
     * that (HSET) when the read found it lower */
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        const ap_grp_t *g = &st->ap_grp[gi];
        int p = st->bat->groups[gi].partition;
        if (g->applied > 0 && g->wmax != AP_NONE &&
            (st->ap_wmax[p] == AP_NONE || g->wmax > st->ap_wmax[p])) {
            st->ap_wmax[p] = g->wmax;
        }
    }
    st->ap_n_cmd = 0;
    if (cw_st_ap_cmd_push(st, 0, AP_MULTI, 0)) {
        return -1;
    }
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        const ap_grp_t *g = &st->ap_grp[gi];
        uint32_t gg = (uint32_t)gi;
        if (g->applied == 0) {
            continue;
        }
        /* set members are fields of the account hash: its HDEL and HSET
         * carry them, and its TTL covers them */
        if ((g->n_del > 0 && cw_st_ap_cmd_push(st, gg, AP_HDEL_A, 0)) ||
            cw_st_ap_cmd_push(st, gg, AP_HSET_A, 0) ||
            (g->refresh && (cw_st_ap_cmd_push(st, gg, AP_EXPIRE, -1) ||
                            cw_st_ap_cmd_push(st, gg, AP_EXPIRE, -2) ||
                            cw_st_ap_cmd_push(st, gg, AP_EXPIRE, -3)))) {
            return -1;
        }
        /* ZADD LT only when it moves the timer: an account whose timer is
         * already at or before this apply's (most applies of a day) is left
         * alone; the fence guarantees the timer read is still current */
        if ((g->is_new && cw_st_ap_cmd_push(st, gg, AP_SADD, 0)) ||
            (ap_timer(st, g) >= 0 && (g->due == AP_NONE || ap_timer(st, g) < g->due) &&
             cw_st_ap_cmd_push(st, gg, AP_ZADD, 0))) {
            return -1;
        }
        {
            int p = st->bat->groups[gi].partition;
            if (!fenced[p]) {
                fenced[p] = 1;
                if ((st->ap_wmax[p] != AP_NONE &&
                     (st->ap_wm[p] == AP_NONE || st->ap_wmax[p] > st->ap_wm[p]) &&
                     cw_st_ap_cmd_push(st, (uint32_t)p, AP_WMAX, 0)) ||
                    cw_st_ap_cmd_push(st, (uint32_t)p, AP_FENCE, 0)) {
                    return -1;
                }
            }
            /* the account moves here from partition home: a decision read
             * there (and watching home's fence) must see that (cw_state_commit) */
            if (g->home >= 0 && g->home != p && !moved[g->home]) {
                moved[g->home] = 1;
                if (cw_st_ap_cmd_push(st, (uint32_t)g->home, AP_FENCE, 0)) {
                    return -1;
                }
            }
        }
    }
    return cw_st_ap_cmd_push(st, 0, AP_EXEC, 0);
}

/* Group g's timer after its apply (ZADD LT): AP_NONE for none. */
static int64_t ap_due_after(const cw_state_t *st, const ap_grp_t *g) {
    int64_t timer = ap_timer(st, g);
    if (g->due == AP_NONE) {
        return timer >= 0 ? timer : AP_NONE;
    }
    return timer >= 0 && timer < g->due ? timer : g->due;
}

/* The touched accounts as the apply leaves them (st->exec_out; written
 * before its transaction is sent: a wall-mode read back follows its EXEC in
 * the same pipeline and evaluates into these). */
static void ap_out_fill(cw_state_t *st) {
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        const ap_grp_t *g = &st->ap_grp[gi];
        cw_account_state_t *a = &st->exec_out[gi];
        int64_t dm = ap_due_after(st, g); /* the timer after ZADD LT */
        memset(a, 0, sizeof(*a));
        cw_strlcpy(a->account_id, ap_id(st, gi), sizeof(a->account_id));
        a->partition = st->bat->groups[gi].partition;
        a->home_partition = g->applied > 0 ? a->partition : g->home;
        a->last_event_ms = g->f[AP_LM] == AP_NONE ? -1 : g->f[AP_LM];
        dm = dm == AP_NONE ? -1 : dm;
        if (st->conf->time_mode == CW_TIME_WALL) {
            /* decided at once, as of now (the timer: from the read back) */
            a->asof_ms = st->ap_now;
            a->due_ms = -1;
        } else {
            /* the account's day-end timer (set or kept by the apply) */
            a->asof_ms = a->last_event_ms;
            a->due_ms = dm;
        }
    }
}

/* Wall mode: the apply's write pipeline goes on, after its EXEC, with the
 * read back of its accounts (cw_st_read_back_*, cw_state_due.c). */
typedef struct ap_write_ctx {
    size_t n_tx;      /* the transaction's commands (st->ap_cmd) */
    wreads_ctx_t *rb; /* then these reads; NULL in event mode */
    int exec_ok;      /* the EXEC ran (not aborted, no error): the reads count */
} ap_write_ctx_t;

static cw_err_t ap_build_write(cw_state_t *st, size_t i, void *vctx) {
    const ap_write_ctx_t *w = vctx;
    return i < w->n_tx ? ap_build(st, i, NULL) : cw_st_build_wreads(st, i - w->n_tx, w->rb);
}

static cw_err_t ap_reply_write(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    ap_write_ctx_t *w = vctx;
    if (i < w->n_tx) {
        cw_err_t err = cw_st_ap_reply_writes(st, i, r, NULL);
        if (st->ap_cmd[i].kind == AP_EXEC) {
            w->exec_ok = err == CW_OK && !st->tx_aborted;
        }
        return err;
    }
    /* after an aborted EXEC the reads are of no use (the apply runs again) */
    return w->exec_ok ? cw_st_reply_wreads(st, i - w->n_tx, r, w->rb) : CW_OK;
}

/* Phase 1: read the batch's accounts (with the cache, in the same round
 * trip as its fence check), again while a read finds a cache record stale
 * or an account's "p" naming a partition whose fence is not watched yet. */
static cw_err_t ap_read(cw_state_t *st) {
    cw_err_t err;
    do {
        st->ap_n_cnt = 0;
        st->ap_n_del = 0;
        st->ap_stale = 0;
        memset(st->ap_fence_moved, 0, sizeof(st->ap_fence_moved));
        cw_buf_reset(&st->ap_vbuf);
        cw_buf_reset(&st->ap_dbuf);
        if (ap_plan_reads(st) != 0) {
            return CW_ERROR;
        }
        err = cw_st_pipe_run(st, st->ap_n_cmd, ap_build, ap_reply_reads, NULL, "apply read");
        if (err != CW_OK) {
            return err;
        }
        /* stale records are dropped and the batch read again: they miss */
        for (size_t gi = 0; st->ap_stale && gi < st->bat->n_groups; gi++) {
            if (st->ap_grp[gi].stale) {
                cw_acache_drop(st->acache, st->bat->groups[gi].partition, ap_id(st, gi));
                st->ac_hits--; /* counted as a miss when read again */
            }
        }
    } while (st->ap_stale);
    return CW_OK;
}

/* One attempt at the whole batch; *aborted = 1 when EXEC was aborted. */
static cw_err_t ap_run(cw_state_t *st, int *aborted) {
    cw_err_t err;
    size_t n_prune = 0;
    *aborted = 0;
    if (cw_st_grow((void **)&st->ap_grp, &st->ap_grp_cap, st->bat->n_groups, sizeof(*st->ap_grp)) !=
        0) {
        return CW_ERROR;
    }
    memset(st->ap_watched, 0, sizeof(st->ap_watched));
    uint64_t dup0 = st->duplicates, hits0 = st->ac_hits, misses0 = st->ac_misses;
    for (;;) {
        int created = 0;
        err = ap_read(st);
        if (err != CW_OK) {
            return err;
        }
        if (st->after_read != NULL) {
            void (*fn)(void *) = st->after_read;
            st->after_read = NULL;
            fn(st->after_read_opaque);
        }
        st->ap_now = cw_time_now_ms();
        for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
            if (ap_compute(st, gi, st->ap_now) != 0) {
                return CW_ERROR;
            }
        }
        /* phase 2 (stage "apply claim"): the hashes read without "p" (new
         * accounts) are claimed for this partition; what must be listed
         * before it can be pruned is listed, in the same round trip */
        st->ap_n_cmd = 0;
        for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
            const ap_grp_t *g = &st->ap_grp[gi];
            if (g->applied == 0) {
                continue;
            }
            if (g->home < 0 && cw_st_ap_cmd_push(st, (uint32_t)gi, AP_CLAIM, 0)) {
                return CW_ERROR;
            }
            if (g->need_keys && cw_st_ap_cmd_push(st, (uint32_t)gi, AP_HKEYS, 0)) {
                return CW_ERROR;
            }
            if (g->sprune != 0 && cw_st_ap_cmd_push(st, (uint32_t)gi, AP_HGETALL_A, 0)) {
                return CW_ERROR;
            }
        }
        n_prune = st->ap_n_cmd;
        if (n_prune > 0) {
            err = cw_st_pipe_run(st, n_prune, ap_build, ap_reply_prune, &created, "apply claim");
            if (err != CW_OK) {
                return err;
            }
        }
        if (!created) {
            break;
        }
        /* another partition's apply wrote one of them since the read (an
         * account's first events on two partitions, in two processes): read
         * the batch again; its "p" now names that partition, whose fence
         * the read watches (the claims made stay: they name this one) */
        st->duplicates = dup0;
        st->ac_hits = hits0;
        st->ac_misses = misses0;
    }
    for (int p = 0; p < CW_STATE_MAX_PARTITIONS; p++) {
        st->ap_wmax[p] = AP_NONE;
    }
    if (ap_plan_writes(st) != 0 || st->ap_vbuf.oom || st->ap_dbuf.oom) {
        return CW_ERROR;
    }
    ap_out_fill(st);
    ap_write_ctx_t w = {st->ap_n_cmd, NULL, 0};
    wreads_ctx_t rb;
    int watch[CW_STATE_MAX_PARTITIONS];
    size_t n = st->ap_n_cmd;
    if (st->conf->time_mode == CW_TIME_WALL) {
        w.rb = &rb;
        n += cw_st_read_back_plan(st, &rb, watch);
        if (n == st->ap_n_cmd) {
            return CW_ERROR;
        }
    }
    st->tx_aborted = 0;
    err = cw_st_pipe_run(st, n, ap_build_write, ap_reply_write, &w, "apply write");
    cw_st_held_free(st);
    *aborted = st->tx_aborted;
    return err;
}

/* After a successful apply: every group's record as Redis now holds it
 * (the fixed fields read, or from the cache, and what the apply wrote). */
static void ap_cache_store(cw_state_t *st) {
    const cw_layout_t *l = st->layout;
    for (size_t gi = 0; st->acache != NULL && gi < st->bat->n_groups; gi++) {
        const ap_grp_t *g = &st->ap_grp[gi];
        ac_rec_t *r = cw_acache_put(st->acache, st->bat->groups[gi].partition, ap_id(st, gi));
        if (r == NULL) {
            continue;
        }
        /* the facts read, known before, or written (g->fch) */
        r->known = g->known | g->rq_f | g->fch;
        for (int k = 0; k < AP_NF; k++) {
            r->f[k] = (r->known & (1u << k)) ? g->f[k] : AP_NONE;
        }
        for (int c = 0; c < l->n_counters; c++) {
            r->mark[c] = (g->mch >> c) & 1 ? g->mc_new[c] : g->mc[c];
        }
        for (int s = 0; s < l->n_sets; s++) {
            /* a listed set's m:<set> was deleted (ap_compute) */
            r->mark[l->n_counters + s] = (g->sprune >> s) & 1 ? AP_I32_NONE : g->ms[s];
            r->mark[l->n_counters + l->n_sets + s] = (g->nsch >> s) & 1 ? g->ns_new[s] : g->ns[s];
        }
        /* a group with nothing applied wrote nothing */
        r->x = g->applied > 0 && g->refresh ? cw_st_ap_day(st->ap_now) : g->x;
        r->last = g->last;
        r->due = ap_due_after(st, g);
        r->due_known = st->conf->time_mode != CW_TIME_WALL; /* (wall: not read) */
    }
}

static cw_err_t batch_exec(cw_state_t *st, cw_account_state_t **out, size_t *n_out) {
    cw_err_t err;
    int aborted = 0;
    *out = NULL;
    *n_out = 0;
    if (st->bat->n_groups == 0) {
        return CW_OK;
    }
    if (cw_st_grow((void **)&st->exec_out, &st->exec_cap, st->bat->n_groups,
                   sizeof(*st->exec_out)) != 0) {
        return CW_ERROR;
    }
    err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    if (!st->acache_tried && st->conf->cache_accounts > 0) {
        int lanes = st->conf->redis_connections > 0 ? st->conf->redis_connections : 1;
        size_t slots = (size_t)st->conf->cache_accounts / (size_t)lanes;
        st->acache_tried = 1;
        st->acache = cw_acache_new(slots > 0 ? slots : 1, ac_rec_size(st->layout));
        if (st->acache == NULL) {
            CW_LOG(CW_LOG_WARN, CW_STATE_COMP, "no memory for the apply cache; running without");
        } else {
            CW_LOG(CW_LOG_INFO, CW_STATE_COMP, "apply cache: %zu accounts in %.1f MB (this lane)",
                   cw_acache_slots(st->acache),
                   (double)cw_acache_bytes(st->acache) / (1024.0 * 1024.0));
        }
    }
    for (int attempt = 0;; attempt++) {
        uint64_t dup0 = st->duplicates;
        err = ap_run(st, &aborted);
        if (err != CW_OK || aborted) {
            st->duplicates = dup0; /* counted again by the next attempt */
            /* a half-done transaction (WATCH, queued commands) must not
             * leak into the next call on this connection */
            cw_st_drop(st, err != CW_OK ? "apply failed" : "apply aborted");
        }
        if (err != CW_OK) {
            return err;
        }
        if (!aborted) {
            break;
        }
        if (attempt == 4) {
            CW_LOG(CW_LOG_WARN, CW_STATE_COMP,
                   "apply: accounts changed by another writer 5 times in a row; retrying later");
            return CW_RETRY;
        }
        err = cw_state_connect(st);
        if (err != CW_OK) {
            return err;
        }
    }
    ap_cache_store(st);
    if (st->conf->time_mode == CW_TIME_WALL) {
        cw_st_read_back_done(st);
    }
    *out = st->exec_out;
    *n_out = st->bat->n_groups;
    return CW_OK;
}

cw_err_t cw_state_batch_exec(cw_state_t *st, cw_state_batch_t *b, cw_account_state_t **out,
                             size_t *n_out) {
    st->bat = b;
    cw_err_t err = batch_exec(st, out, n_out);
    st->bat = NULL;
    return err;
}
