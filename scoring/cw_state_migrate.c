/*
 * cw_state_migrate.c — the migration from the layout with set keys
 * (part of the state module: cw_state.h, cw_state_int.h).
 */
#include "cw_state_int.h"

/* ---- migration from the layout with set keys (P:s:{id}:<set>) ---- */

/* n replies of commands already appended; each freed unless kept in out[]
 * (out may be NULL). CW_RETRY on a lost connection, CW_ERROR on an error
 * reply. */
static cw_err_t mg_replies(cw_state_t *st, size_t n, redisReply **out, const char *what) {
    cw_err_t worst = CW_OK;
    for (size_t k = 0; k < n; k++) {
        void *v = NULL;
        if (redisGetReply(st->c, &v) != REDIS_OK || v == NULL) {
            cw_st_drop(st, what);
            return CW_RETRY;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR && worst == CW_OK) {
            worst = cw_st_reply_error(r, what);
        }
        if (out != NULL) {
            out[k] = r;
        } else {
            cw_st_reply_free(st, r);
        }
    }
    return worst;
}

/* The account id and set of a key P:s:{id}:<set> (set -1: not a set of
 * the model); 0, or -1 when the key is not of that form. */
static int mg_parse_key(const cw_state_t *st, const char *key, size_t len, cw_sv_t *id, int *set) {
    const char *prefix = st->conf->redis_key_prefix;
    size_t pl = strlen(prefix), best = 0;
    if (len < pl + 5 || memcmp(key, prefix, pl) != 0 || memcmp(key + pl, ":s:{", 4) != 0) {
        return -1;
    }
    *set = -1;
    for (int s = 0; s < st->layout->n_sets; s++) {
        size_t nl = strlen(st->layout->sets[s].name);
        if (len >= pl + 4 + nl + 2 && nl >= best && memcmp(key + len - nl - 2, "}:", 2) == 0 &&
            memcmp(key + len - nl, st->layout->sets[s].name, nl) == 0) {
            *set = s;
            best = nl;
        }
    }
    id->p = key + pl + 4;
    id->len = *set >= 0 ? len - best - 2 - (pl + 4) : 0;
    return 0;
}

/* Move one set key's members into its account hash (when that exists) and
 * delete the key. */
static cw_err_t mg_move(cw_state_t *st, const char *key, size_t len, uint64_t *keys) {
    cw_sv_t id;
    int set;
    char idbuf[CW_FIELD_MAX + 1];
    redisReply *rep[2] = {NULL, NULL};
    cw_err_t err;
    size_t n = 0;
    if (mg_parse_key(st, key, len, &id, &set) != 0) {
        return CW_OK;
    }
    if (set >= 0 && id.len < sizeof(idbuf)) {
        memcpy(idbuf, id.p, id.len);
        idbuf[id.len] = '\0';
        cw_st_args_reset(st);
        cw_st_arg_str(st, "EXISTS");
        cw_st_arg_key(st, "a", idbuf, NULL);
        if ((err = cw_st_args_send(st)) != CW_OK) {
            return err;
        }
        cw_st_args_reset(st);
        cw_st_arg_str(st, "HGETALL");
        cw_st_arg_mem(st, key, len);
        if ((err = cw_st_args_send(st)) != CW_OK) {
            return err;
        }
        err = mg_replies(st, 2, rep, "migrate read");
        if (err == CW_OK && rep[0]->type == REDIS_REPLY_INTEGER && rep[0]->integer > 0 &&
            rep[1]->type == REDIS_REPLY_ARRAY) {
            /* the members (not the TTL mark "" of 22a750b) into the hash,
             * which has its own TTL */
            cw_st_args_reset(st);
            cw_st_arg_str(st, "HSET");
            cw_st_arg_key(st, "a", idbuf, NULL);
            for (size_t k = 0; k + 1 < rep[1]->elements; k += 2) {
                const redisReply *f = rep[1]->element[k], *v = rep[1]->element[k + 1];
                if (f->type == REDIS_REPLY_STRING && f->len > 0 && v->type == REDIS_REPLY_STRING) {
                    cw_st_arg_member(st, set, f->str, f->len);
                    cw_st_arg_mem(st, v->str, v->len);
                }
            }
            if (st->argc > 2) {
                err = cw_st_args_send(st);
                n++;
            }
        }
        cw_st_reply_free(st, rep[0]);
        cw_st_reply_free(st, rep[1]);
        if (err != CW_OK) {
            return err;
        }
    }
    cw_st_args_reset(st);
    cw_st_arg_str(st, "DEL");
    cw_st_arg_mem(st, key, len);
    if ((err = cw_st_args_send(st)) != CW_OK ||
        (err = mg_replies(st, n + 1, NULL, "migrate")) != CW_OK) {
        return err;
    }
    (*keys)++;
    return CW_OK;
}

cw_err_t cw_state_migrate(cw_state_t *st, uint64_t *keys_out, char *errstr, size_t errstr_size) {
    char match[CW_STATE_KEY_MAX], lkey[CW_STATE_KEY_MAX], cursor[32] = "0";
    redisReply *r = NULL;
    cw_err_t err;
    *keys_out = 0;
    st->migrating = 1;
    err = cw_state_connect(st);
    if (err != CW_OK) {
        snprintf(errstr, errstr_size, "cannot connect to redis %s", st->conf->redis_url);
        return err;
    }
    /* the prefix, glob characters escaped, then ":s:{*" */
    size_t m = 0;
    for (const char *c = st->conf->redis_key_prefix; *c != '\0' && m + 8 < sizeof(match); c++) {
        if (strchr("*?[]\\", *c) != NULL) {
            match[m++] = '\\';
        }
        match[m++] = *c;
    }
    memcpy(match + m, ":s:{*", 6);
    do {
        if ((err = cw_st_cmd_strs(st, "migrate scan", &r, "SCAN", cursor, "MATCH", match, "COUNT",
                                  "1000", NULL)) != CW_OK) {
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            cw_st_reply_free(st, r);
            err = CW_ERROR;
            break;
        }
        cw_strlcpy(cursor, r->element[0]->str, sizeof(cursor));
        for (size_t k = 0; err == CW_OK && k < r->element[1]->elements; k++) {
            const redisReply *key = r->element[1]->element[k];
            if (key->type == REDIS_REPLY_STRING) {
                err = mg_move(st, key->str, key->len, keys_out);
            }
        }
        cw_st_reply_free(st, r);
    } while (err == CW_OK && strcmp(cursor, "0") != 0);
    if (err == CW_OK) {
        err = cw_st_cmd_strs(st, "migrate", &r, "SET",
                             cw_st_plain_key(st, "layout", lkey, sizeof(lkey)), CW_STATE_LAYOUT,
                             NULL);
        cw_st_reply_free(st, r);
    }
    if (err != CW_OK) {
        snprintf(errstr, errstr_size,
                 "migration stopped after %" PRIu64 " set keys (run it again to resume)",
                 *keys_out);
    }
    return err;
}
