/*
 * cw_state_batch.c — the batch: events packed and grouped per (account, partition)
 * (part of the state module: cw_state.h, cw_state_int.h).
 */
#include "cw_state_int.h"

/* ---- batch ---- */

cw_state_batch_t *cw_state_batch_new(const cw_conf_t *conf, const cw_layout_t *layout) {
    cw_state_batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->conf = conf;
    b->layout = layout;
    b->max_evs = conf->kafka_batch_size > 0 ? (size_t)conf->kafka_batch_size * 2 : 20000;
    if (b->max_evs < CW_STATE_MIN_EVENTS) {
        b->max_evs = CW_STATE_MIN_EVENTS;
    }
    b->cap_evs = CW_STATE_MIN_EVENTS;
    b->evs = malloc(b->cap_evs * sizeof(*b->evs));
    b->table_size = 2 * CW_STATE_MIN_EVENTS;
    b->table = malloc(b->table_size * sizeof(*b->table));
    if (b->evs == NULL || b->table == NULL) {
        cw_state_batch_destroy(b);
        return NULL;
    }
    memset(b->table, 0xff, b->table_size * sizeof(*b->table));
    return b;
}

void cw_state_batch_destroy(cw_state_batch_t *b) {
    if (b == NULL) {
        return;
    }
    free(b->evs);
    cw_buf_free(&b->ev_str);
    free(b->groups);
    free(b->table);
    free(b);
}

void cw_state_batch_begin(cw_state_batch_t *b) {
    cw_buf_reset(&b->ev_str);
    b->n_evs = 0;
    b->n_groups = 0;
    memset(b->table, 0xff, b->table_size * sizeof(*b->table));
}

size_t cw_state_batch_len(const cw_state_batch_t *b) {
    return b->n_evs;
}

/* Double the group table and re-insert every group. */
static int table_grow(cw_state_batch_t *b) {
    size_t nsize = b->table_size * 2;
    int32_t *nt = malloc(nsize * sizeof(*nt));
    if (nt == NULL) {
        return -1;
    }
    memset(nt, 0xff, nsize * sizeof(*nt));
    for (size_t g = 0; g < b->n_groups; g++) {
        size_t idx = (size_t)b->groups[g].hash & (nsize - 1);
        while (nt[idx] >= 0) {
            idx = (idx + 1) & (nsize - 1);
        }
        nt[idx] = (int32_t)g;
    }
    free(b->table);
    b->table = nt;
    b->table_size = nsize;
    return 0;
}

/* Offset of a copy of s in b->ev_str; 0 (the empty string) for "". */
static uint32_t ev_str_add(cw_state_batch_t *b, const char *s) {
    size_t off = b->ev_str.len, n = strlen(s);
    if (n == 0) {
        return 0;
    }
    cw_buf_append(&b->ev_str, s, n + 1);
    return (uint32_t)off;
}

const char *cw_st_ev_str(const cw_state_batch_t *b, uint32_t off) {
    return b->ev_str.data + off;
}

cw_err_t cw_state_batch_add(cw_state_batch_t *b, int partition, int64_t offset,
                            const cw_event_t *ev) {
    uint64_t h;
    size_t idx;
    int32_t g = -1;
    cw_bev_t *be;
    cw_event_ops_t ops;
    if (partition < 0 || partition >= CW_STATE_MAX_PARTITIONS) {
        return CW_ERROR;
    }
    if (b->ev_str.len == 0) {
        cw_buf_append(&b->ev_str, "", 1); /* offset 0: the empty string */
    }
    if (b->n_evs == b->cap_evs) {
        size_t ncap = b->cap_evs * 2 < b->max_evs ? b->cap_evs * 2 : b->max_evs;
        cw_bev_t *ne;
        if (b->cap_evs >= b->max_evs) {
            return CW_ERROR; /* full: the caller execs first */
        }
        ne = realloc(b->evs, ncap * sizeof(*ne));
        if (ne == NULL) {
            return CW_ERROR;
        }
        b->evs = ne;
        b->cap_evs = ncap;
    }
    if ((b->n_groups + 1) * 2 > b->table_size && table_grow(b) != 0) {
        return CW_ERROR;
    }
    h = cw_st_group_hash(ev->account_id, partition);
    idx = (size_t)h & (b->table_size - 1);
    while (b->table[idx] >= 0) {
        const cw_group_t *cand = &b->groups[b->table[idx]];
        if (cand->hash == h && cand->partition == partition &&
            strcmp(cw_st_ev_str(b, cand->id), ev->account_id) == 0) {
            g = b->table[idx];
            break;
        }
        idx = (idx + 1) & (b->table_size - 1);
    }
    if (g < 0) {
        if (cw_st_grow((void **)&b->groups, &b->cap_groups, b->n_groups + 1, sizeof(*b->groups)) !=
            0) {
            return CW_ERROR;
        }
        g = (int32_t)b->n_groups++;
        b->groups[g].head = (int32_t)b->n_evs;
        b->groups[g].tail = -1;
        b->groups[g].partition = partition;
        b->groups[g].n = 0;
        b->groups[g].hash = h;
        b->groups[g].id = ev_str_add(b, ev->account_id);
        b->table[idx] = g;
    }
    be = &b->evs[b->n_evs];
    memset(be, 0, sizeof(*be));
    be->ts_ms = ev->ts_ms;
    be->offset = offset;
    be->partition = (int16_t)partition;
    be->next = -1;
    be->type = (uint8_t)ev->type;
    be->key_feature = -1;
    be->sum_amount = 1;
    if (ap_known(be)) {
        cw_layout_event_ops(b->layout, &b->conf->model, ev, &ops);
        for (int k = 0; k < ops.n_counters; k++) {
            be->counters |= UINT32_C(1) << ops.counter[k];
            if (b->layout->counters[ops.counter[k]].sum) {
                be->sum_amount = ops.amount[k];
            }
        }
        for (int k = 0; k < ops.n_sets; k++) {
            be->sets |= (uint8_t)(1u << ops.set[k]);
        }
        be->key_feature = (int8_t)ops.key_feature;
        be->user = ev_str_add(b, ev->user_id);
        be->feature = ev_str_add(b, ev->feature);
    }
    if (ev->type == CW_EV_ACCOUNT) {
        be->arr = ev->arr;
        be->seats = ev->seats;
        be->renewal_ms = ev->renewal_ms;
        be->plan = ev_str_add(b, ev->plan);
    }
    if (b->ev_str.oom || b->ev_str.len > UINT32_MAX) {
        return CW_ERROR;
    }
    if (b->groups[g].tail >= 0) {
        b->evs[b->groups[g].tail].next = (int32_t)b->n_evs;
    }
    b->groups[g].tail = (int32_t)b->n_evs;
    b->groups[g].n++;
    b->n_evs++;
    return CW_OK;
}
