/*
 * cw_state.c — the per-account state in Redis (see cw_state.h for the key
 * layout, the failure model and ownership).
 *
 * Every write is a Lua script so one account's update is atomic: APPLY
 * (events in, idempotent by Kafka offset, prunes old buckets, marks the
 * account dirty and reads it back), READ (the same read code, for
 * `explain`, dashboards and timers) and COMMIT (the decision, history,
 * ranking, next timer and outbox). The scripts are generated once per
 * layout (cw_state_lua.h: a prelude describing the layout, then shared
 * code), loaded with SCRIPT LOAD on connect and called with EVALSHA; a
 * NOSCRIPT reply (server restarted or flushed) reloads them and retries the
 * affected calls once.
 *
 * Round trips: a batch is one pipeline — every command is appended with
 * redisAppendCommandArgv (binary-safe keys), then every reply is read.
 * Any I/O or protocol error frees the hiredis context (a context with err
 * set is never reused) and returns CW_RETRY; the next call reconnects.
 *
 * One addition to the key layout of cw_state.h: the score snapshot JSON is
 * kept in its own string key P:snap:{id} (same TTL as the account), not in
 * the account hash, because one value over hash-max-listpack-value (64
 * bytes) would convert the whole hash to a hashtable (~3x the memory).
 *
 * Hot path: events are copied into a preallocated array that grows
 * geometrically up to kafka.batch_size * 2 entries and are grouped per
 * (account, partition) with an open-addressing table reset per batch;
 * command arguments are built in one reusable buffer. Nothing is allocated
 * per event once the buffers have reached their working size.
 */
#include "cw_state.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "cw_state_lua.h"

#define CW_STATE_COMP "state"
#define CW_STATE_MIN_EVENTS 256   /* initial batch capacity */
#define CW_STATE_SCAN_COUNT "500" /* HSCAN page size of the outbox scan */

/* The scripts, indices into sha[] / src[]. */
enum { CW_SCRIPT_APPLY = 0, CW_SCRIPT_READ, CW_SCRIPT_COMMIT, CW_SCRIPT__COUNT };

/* Fields of the read's attribute array, in the order of RF in CW_LUA_COMMON. */
enum cw_rf {
    CW_RF_P = 0,
    CW_RF_ARR,
    CW_RF_SEA,
    CW_RF_REN,
    CW_RF_PLN,
    CW_RF_FM,
    CW_RF_FL,
    CW_RF_LL,
    CW_RF_LM,
    CW_RF_KC,
    CW_RF_SC,
    CW_RF_BD,
    CW_RF_AM,
    CW_RF_LID,
    CW_RF_A0,
    CW_RF_K0 = CW_RF_A0 + CW_REASON__COUNT,
    CW_RF__COUNT = CW_RF_K0 + CW_MAX_KEY_FEATURES,
};

/* Event flags understood by APPLY. */
#define CW_FL_ACTIVITY 1
#define CW_FL_LOGIN 2
#define CW_FL_ACCOUNT 4
#define CW_FL_CANCEL 8

/* One event of the batch (a copy; groups link their events by index). */
typedef struct cw_bev {
    cw_event_t ev;
    int64_t offset;
    int partition;
    int32_t next; /* next event of the same group, -1 last */
} cw_bev_t;

/* The events of one (account, partition) in the batch. */
typedef struct cw_group {
    int32_t head, tail; /* first/last event index */
    int partition;
    uint32_t n;    /* events */
    uint64_t hash; /* of (account, partition) */
} cw_group_t;

struct cw_state {
    const cw_conf_t *conf;     /* not owned; outlives st */
    const cw_layout_t *layout; /* not owned; outlives st */
    /* endpoint, from redis.url */
    int is_unix;
    char host[CW_STR_MAX];
    int port;
    char path[CW_STR_MAX];
    /* connection */
    redisContext *c;         /* owned; NULL when disconnected */
    cw_state_rtt_cb *rtt_cb; /* optional observer of pipelined round trips */
    void *rtt_opaque;
    int ever_connected;
    uint64_t reconnects;
    uint64_t duplicates;
    /* scripts: generated sources (owned) and their SHAs on the server */
    cw_buf_t src[CW_SCRIPT__COUNT];
    char sha[CW_SCRIPT__COUNT][41];
    /* batch */
    cw_bev_t *evs;
    size_t n_evs, cap_evs, max_evs;
    cw_group_t *groups;
    size_t n_groups, cap_groups;
    int32_t *table; /* open addressing over group indices; -1 empty */
    size_t table_size;
    /* results, owned; valid until the next call */
    cw_account_state_t *exec_out;
    size_t exec_cap;
    cw_account_state_t *due_out;
    unsigned char *due_miss; /* 1: the due account no longer exists */
    size_t due_cap, n_due;
    /* command arguments: one buffer, offsets/lengths, pointers at send */
    cw_buf_t abuf;
    size_t *arg_off;
    size_t *arg_len;
    const char **argv;
    size_t argc, arg_cap, arg_start;
    int arg_oom;
    /* pipeline bookkeeping */
    size_t *pend;
    size_t pend_cap;
};

/* ---- small helpers ---- */

/* Grow *p (elements of elsz bytes) to hold at least need; 0 or -1. */
static int grow(void **p, size_t *cap, size_t need, size_t elsz) {
    size_t ncap = *cap ? *cap : 16;
    void *np;
    if (need <= *cap) {
        return 0;
    }
    while (ncap < need) {
        ncap *= 2;
    }
    np = realloc(*p, ncap * elsz);
    if (np == NULL) {
        return -1;
    }
    *p = np;
    *cap = ncap;
    return 0;
}

static uint64_t group_hash(const char *id, int partition) {
    uint64_t h = cw_fnv1a(CW_FNV_INIT, id, strlen(id));
    return cw_fnv1a(h, &partition, sizeof(partition));
}

/* Parse a whole string as an int64; -1 on junk. */
static int parse_i64(const char *s, size_t len, int64_t *out) {
    char tmp[32];
    char *end = NULL;
    long long v;
    if (len == 0 || len >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    errno = 0;
    v = strtoll(tmp, &end, 10);
    if (errno != 0 || end == tmp || *end != '\0') {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int parse_dbl(const char *s, size_t len, double *out) {
    char tmp[64];
    char *end = NULL;
    double v;
    if (len == 0 || len >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    errno = 0;
    v = strtod(tmp, &end);
    if (errno != 0 || end == tmp || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

/* Integer from an INTEGER or STRING reply; -1 when neither parses. */
static int rep_i64(const redisReply *r, int64_t *out) {
    if (r == NULL) {
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = (int64_t)r->integer;
        return 0;
    }
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        return parse_i64(r->str, r->len, out);
    }
    return -1;
}

static int rep_dbl(const redisReply *r, double *out) {
    if (r == NULL) {
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = (double)r->integer;
        return 0;
    }
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        return parse_dbl(r->str, r->len, out);
    }
    return -1;
}

/* ---- redis.url ---- */

static int parse_url(cw_state_t *st, const char *url, char *errstr, size_t errstr_size) {
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        if (p[0] != '/' || strlen(p) >= sizeof(st->path)) {
            snprintf(errstr, errstr_size, "redis.url: expected unix:///absolute/path, got \"%s\"",
                     url);
            return -1;
        }
        st->is_unix = 1;
        cw_strlcpy(st->path, p, sizeof(st->path));
        return 0;
    }
    if (strncmp(url, "tcp://", 6) == 0) {
        const char *h = url + 6;
        const char *colon;
        const char *hend;
        char *end = NULL;
        long port;
        if (h[0] == '[') { /* [ipv6]:port */
            hend = strchr(h, ']');
            if (hend == NULL || hend[1] != ':') {
                snprintf(errstr, errstr_size, "redis.url: bad IPv6 host in \"%s\"", url);
                return -1;
            }
            colon = hend + 1;
            h++;
        } else {
            colon = strrchr(h, ':');
            hend = colon;
        }
        if (colon == NULL || hend == h || (size_t)(hend - h) >= sizeof(st->host)) {
            snprintf(errstr, errstr_size, "redis.url: expected tcp://host:port, got \"%s\"", url);
            return -1;
        }
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || port < 1 || port > 65535) {
            snprintf(errstr, errstr_size, "redis.url: bad port in \"%s\"", url);
            return -1;
        }
        memcpy(st->host, h, (size_t)(hend - h));
        st->host[hend - h] = '\0';
        st->port = (int)port;
        st->is_unix = 0;
        return 0;
    }
    snprintf(errstr, errstr_size, "redis.url: expected tcp://host:port or unix:///path, got \"%s\"",
             url);
    return -1;
}

/* ---- script generation ---- */

/* A Lua string literal: bytes outside a safe set become \ddd escapes. */
static void lua_str(cw_buf_t *b, const char *s) {
    cw_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (isalnum(*p) || *p == ':' || *p == '_' || *p == '-' || *p == '.') {
            cw_buf_append(b, p, 1);
        } else {
            cw_buf_printf(b, "\\%03u", (unsigned)*p);
        }
    }
    cw_buf_puts(b, "\"");
}

/* The layout prelude every script starts with (see cw_state_lua.h). */
static int gen_prelude(const cw_conf_t *conf, const cw_layout_t *l, cw_buf_t *b, char *errstr,
                       size_t errstr_size) {
    int cq[CW_MAX_COUNTERS] = {0};
    int sr[CW_MAX_SETS] = {0};
    int maxret =
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
            sr[q->index] = need > sr[q->index] ? need : sr[q->index];
        } else {
            if (need > CW_MAX_RETENTION_DAYS) {
                snprintf(errstr, errstr_size, "state: window of %d days over %d", need,
                         CW_MAX_RETENTION_DAYS);
                return -1;
            }
            cq[q->index] = need > cq[q->index] ? need : cq[q->index];
        }
    }
    cw_buf_puts(b, "local CN = {");
    for (int c = 0; c < l->n_counters; c++) {
        cw_buf_puts(b, c ? "," : "");
        lua_str(b, l->counters[c].name);
    }
    cw_buf_puts(b, "}\nlocal CR = {");
    for (int c = 0; c < l->n_counters; c++) {
        int r = l->counters[c].retention_days > cq[c] ? l->counters[c].retention_days : cq[c];
        r += CW_STATE_SLACK_DAYS;
        maxret = r > maxret ? r : maxret;
        cw_buf_printf(b, "%s%d", c ? "," : "", r);
    }
    cw_buf_puts(b, "}\nlocal CQ = {");
    for (int c = 0; c < l->n_counters; c++) {
        cw_buf_printf(b, "%s%d", c ? "," : "", cq[c]);
    }
    cw_buf_puts(b, "}\nlocal SN = {");
    for (int s = 0; s < l->n_sets; s++) {
        cw_buf_puts(b, s ? "," : "");
        lua_str(b, l->sets[s].name);
    }
    cw_buf_puts(b, "}\nlocal SR = {");
    for (int s = 0; s < l->n_sets; s++) {
        cw_buf_printf(b, "%s%d", s ? "," : "", (sr[s] > 0 ? sr[s] : 1) + CW_STATE_SLACK_DAYS);
    }
    cw_buf_puts(b, "}\nlocal SQ = {");
    for (int s = 0; s < l->n_sets; s++) {
        int first = 1;
        cw_buf_puts(b, s ? ",{" : "{");
        for (int j = 0; j < l->n_queries; j++) {
            if (l->queries[j].is_set && l->queries[j].index == s) {
                cw_buf_printf(b, "%s%d", first ? "" : ",", j + 1);
                first = 0;
            }
        }
        cw_buf_puts(b, "}");
    }
    cw_buf_puts(b, "}\nlocal Q = {");
    for (int j = 0; j < l->n_queries; j++) {
        const cw_query_def_t *q = &l->queries[j];
        cw_buf_printf(b, "%s{%d,%d,%d,%d}", j ? "," : "", q->is_set ? 1 : 0, q->index + 1,
                      q->offset_days, q->len_days);
    }
    {
        /* LC: the logins counter (1-based, 0 none), for the as-of last login */
        int wq = l->win_q[CW_WIN_LOGINS_7D];
        int lc =
            wq >= 0 && wq < l->n_queries && !l->queries[wq].is_set ? l->queries[wq].index + 1 : 0;
        cw_buf_printf(b, "}\nlocal LC = %d\n", lc);
    }
    cw_buf_printf(b, "local TTL = %d\nlocal HL = %d\n", (maxret + 2) * 86400,
                  conf->history_len > 0 ? conf->history_len : 30);
    return b->oom ? -1 : 0;
}

/* ---- command arguments ---- */

static void args_reset(cw_state_t *st) {
    cw_buf_reset(&st->abuf);
    st->argc = 0;
    st->arg_oom = 0;
}

static void arg_begin(cw_state_t *st) {
    st->arg_start = st->abuf.len;
}

static void arg_piece(cw_state_t *st, const void *p, size_t n) {
    cw_buf_append(&st->abuf, p, n);
}

static void arg_end(cw_state_t *st) {
    if (st->argc == st->arg_cap) {
        size_t cap = st->arg_cap;
        size_t cap2 = st->arg_cap;
        size_t cap3 = st->arg_cap;
        if (grow((void **)&st->arg_off, &cap, st->argc + 1, sizeof(*st->arg_off)) != 0 ||
            grow((void **)&st->arg_len, &cap2, st->argc + 1, sizeof(*st->arg_len)) != 0 ||
            grow((void **)&st->argv, &cap3, st->argc + 1, sizeof(*st->argv)) != 0) {
            st->arg_oom = 1;
            return;
        }
        st->arg_cap = cap;
    }
    st->arg_off[st->argc] = st->arg_start;
    st->arg_len[st->argc] = st->abuf.len - st->arg_start;
    st->argc++;
}

static void arg_mem(cw_state_t *st, const void *p, size_t n) {
    arg_begin(st);
    arg_piece(st, p, n);
    arg_end(st);
}

static void arg_str(cw_state_t *st, const char *s) {
    arg_mem(st, s, strlen(s));
}

static void arg_i64(cw_state_t *st, int64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    arg_mem(st, tmp, (size_t)n);
}

static void arg_dbl(cw_state_t *st, double v) {
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    arg_mem(st, tmp, (size_t)n);
}

/* "P:<kind>" plus optional "{id}" and suffix: P:a:{id}, P:s:{id}:U:lu, P:wm. */
static void arg_key(cw_state_t *st, const char *kind, const char *id, const char *suffix) {
    const char *prefix = st->conf->redis_key_prefix;
    arg_begin(st);
    arg_piece(st, prefix, strlen(prefix));
    arg_piece(st, ":", 1);
    arg_piece(st, kind, strlen(kind));
    if (id != NULL) {
        arg_piece(st, ":{", 2);
        arg_piece(st, id, strlen(id));
        arg_piece(st, "}", 1);
    }
    if (suffix != NULL) {
        arg_piece(st, suffix, strlen(suffix));
    }
    arg_end(st);
}

/* "P:<kind>:<partition>" */
static void arg_pkey(cw_state_t *st, const char *kind, int partition) {
    char suffix[24];
    snprintf(suffix, sizeof(suffix), ":%d", partition);
    arg_key(st, kind, NULL, suffix);
}

/* Append the built command to the pipeline. CW_ERROR on out-of-memory. */
static cw_err_t args_send(cw_state_t *st) {
    if (st->arg_oom || st->abuf.oom) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "out of memory building a command");
        return CW_ERROR;
    }
    for (size_t i = 0; i < st->argc; i++) {
        st->argv[i] = st->abuf.data != NULL ? st->abuf.data + st->arg_off[i] : "";
    }
    if (redisAppendCommandArgv(st->c, (int)st->argc, st->argv, st->arg_len) != REDIS_OK) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "cannot append a command: %s", st->c->errstr);
        return CW_ERROR;
    }
    return CW_OK;
}

/* EVALSHA <sha> <numkeys> */
static void arg_evalsha(cw_state_t *st, int script, int numkeys) {
    arg_str(st, "EVALSHA");
    arg_str(st, st->sha[script]);
    arg_i64(st, numkeys);
}

/* ---- connection ---- */

/* Free the context: a context that saw an error is never reused. */
static void drop(cw_state_t *st, const char *why) {
    if (st->c != NULL) {
        CW_LOG(CW_LOG_WARN, CW_STATE_COMP, "redis connection lost (%s): %s", why,
               st->c->err ? st->c->errstr : "protocol error");
        redisFree(st->c);
        st->c = NULL;
    }
}

/* A transient Redis error (retry later) rather than a permanent one. */
static int transient_error(const redisReply *r) {
    static const char *const prefixes[] = {"OOM",      "BUSY",       "LOADING",    "READONLY",
                                           "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t n = strlen(prefixes[i]);
        if (r->len >= n && strncmp(r->str, prefixes[i], n) == 0) {
            return 1;
        }
    }
    return 0;
}

static cw_err_t reply_error(const redisReply *r, const char *what) {
    cw_err_t err = transient_error(r) ? CW_RETRY : CW_ERROR;
    CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "%s: redis error: %.*s", what, (int)r->len, r->str);
    return err;
}

/* One blocking command outside a pipeline (connect time). *out owned by the
 * caller (freeReplyObject). */
static cw_err_t cmd_blocking(cw_state_t *st, int argc, const char **argv, const size_t *lens,
                             const char *what, redisReply **out) {
    redisReply *r = redisCommandArgv(st->c, argc, argv, lens);
    *out = NULL;
    if (r == NULL) {
        drop(st, what);
        return CW_RETRY;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        cw_err_t err = reply_error(r, what);
        freeReplyObject(r);
        return err;
    }
    *out = r;
    return CW_OK;
}

static cw_err_t scripts_load(cw_state_t *st) {
    for (int s = 0; s < CW_SCRIPT__COUNT; s++) {
        const char *argv[3] = {"SCRIPT", "LOAD", st->src[s].data};
        size_t lens[3] = {6, 4, st->src[s].len};
        redisReply *r = NULL;
        cw_err_t err = cmd_blocking(st, 3, argv, lens, "SCRIPT LOAD", &r);
        if (err != CW_OK) {
            return err;
        }
        if (r->type != REDIS_REPLY_STRING || r->len != 40) {
            CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "SCRIPT LOAD: unexpected reply type %d", r->type);
            freeReplyObject(r);
            return CW_ERROR;
        }
        memcpy(st->sha[s], r->str, 40);
        st->sha[s][40] = '\0';
        freeReplyObject(r);
    }
    return CW_OK;
}

cw_err_t cw_state_connect(cw_state_t *st) {
    struct timeval tv;
    int ms = st->conf->redis_timeout_ms > 0 ? st->conf->redis_timeout_ms : 5000;
    struct sigaction sa;
    cw_err_t err;
    if (st->c != NULL) {
        return CW_OK;
    }
    /* hiredis writes with write(2): a peer that went away would raise
     * SIGPIPE and kill the process instead of returning EPIPE. Ignore it
     * unless the program installed its own handler. */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        signal(SIGPIPE, SIG_IGN);
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (st->is_unix) {
        st->c = redisConnectUnixWithTimeout(st->path, tv);
    } else {
        st->c = redisConnectWithTimeout(st->host, st->port, tv);
    }
    if (st->c == NULL || st->c->err) {
        CW_LOG(CW_LOG_WARN, CW_STATE_COMP, "cannot connect to redis %s: %s", st->conf->redis_url,
               st->c ? st->c->errstr : "out of memory");
        redisFree(st->c); /* accepts NULL */
        st->c = NULL;
        return CW_RETRY;
    }
    if (redisSetTimeout(st->c, tv) != REDIS_OK) {
        drop(st, "set timeout");
        return CW_RETRY;
    }
    if (st->conf->redis_password[0] != '\0') {
        const char *argv[2] = {"AUTH", st->conf->redis_password};
        size_t lens[2] = {4, strlen(st->conf->redis_password)};
        redisReply *r = NULL;
        /* the password is never logged: only the error text is */
        err = cmd_blocking(st, 2, argv, lens, "AUTH", &r);
        freeReplyObject(r);
        if (err != CW_OK) {
            drop(st, "AUTH");
            return err;
        }
    }
    if (st->conf->redis_db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, 0};
        redisReply *r = NULL;
        lens[1] = (size_t)snprintf(db, sizeof(db), "%d", st->conf->redis_db);
        err = cmd_blocking(st, 2, argv, lens, "SELECT", &r);
        freeReplyObject(r);
        if (err != CW_OK) {
            drop(st, "SELECT");
            return err;
        }
    }
    err = scripts_load(st);
    if (err != CW_OK) {
        drop(st, "SCRIPT LOAD");
        return err;
    }
    if (st->ever_connected) {
        st->reconnects++;
    }
    st->ever_connected = 1;
    CW_LOG(CW_LOG_INFO, CW_STATE_COMP, "connected to redis %s", st->conf->redis_url);
    return CW_OK;
}

int cw_state_connected(const cw_state_t *st) {
    return st->c != NULL && st->c->err == 0;
}

uint64_t cw_state_reconnects(const cw_state_t *st) {
    return st->reconnects;
}

uint64_t cw_state_duplicates(const cw_state_t *st) {
    return st->duplicates;
}

/* ---- pipeline ---- */

/* Build command i (args_reset ... args_send). */
typedef cw_err_t (*pipe_build_t)(cw_state_t *st, size_t i, void *ctx);
/* Handle the (non-error) reply of command i; the reply is freed after. */
typedef cw_err_t (*pipe_reply_t)(cw_state_t *st, size_t i, const redisReply *r, void *ctx);

/* Send the already-built args as command 0 (single-command pipelines). */
static cw_err_t build_prepared(cw_state_t *st, size_t i, void *ctx) {
    (void)i;
    (void)ctx;
    return args_send(st);
}

/*
 * Run n commands as one pipeline: append all, then read every reply.
 * Commands answered NOSCRIPT are re-run once after reloading the scripts.
 * I/O error: the connection is dropped, CW_RETRY. Error replies are
 * CW_ERROR (or CW_RETRY when transient) after all replies were drained.
 */
static cw_err_t pipe_run(cw_state_t *st, size_t n, pipe_build_t build, pipe_reply_t on_reply,
                         void *ctx, const char *what) {
    cw_err_t worst = CW_OK;
    size_t np = n;
    if (n == 0) {
        return CW_OK;
    }
    if (grow((void **)&st->pend, &st->pend_cap, n, sizeof(*st->pend)) != 0) {
        return CW_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        st->pend[i] = i;
    }
    for (int attempt = 0;; attempt++) {
        size_t nretry = 0;
        int64_t t0 = st->rtt_cb != NULL ? cw_time_mono_us() : 0;
        for (size_t k = 0; k < np; k++) {
            cw_err_t err = build(st, st->pend[k], ctx);
            if (err != CW_OK) {
                /* commands already appended cannot be taken back: discard
                 * the connection, and with it the half-built pipeline */
                drop(st, what);
                return err;
            }
        }
        for (size_t k = 0; k < np; k++) {
            redisReply *r = NULL;
            if (redisGetReply(st->c, (void **)&r) != REDIS_OK || r == NULL) {
                freeReplyObject(r);
                drop(st, what);
                return CW_RETRY;
            }
            if (r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
                strncmp(r->str, "NOSCRIPT", 8) == 0) {
                st->pend[nretry++] = st->pend[k]; /* nretry <= k: in place */
            } else if (r->type == REDIS_REPLY_ERROR) {
                cw_err_t err = reply_error(r, what);
                worst = err > worst ? err : worst;
            } else {
                cw_err_t err = on_reply(st, st->pend[k], r, ctx);
                if (err == CW_ERROR) {
                    CW_LOG(CW_LOG_ERROR, CW_STATE_COMP,
                           "%s: unexpected reply (type %d, %zu elements) to command %zu", what,
                           r->type, r->type == REDIS_REPLY_ARRAY ? r->elements : (size_t)0,
                           st->pend[k]);
                }
                worst = err > worst ? err : worst;
            }
            freeReplyObject(r);
        }
        if (st->rtt_cb != NULL) {
            st->rtt_cb(st->rtt_opaque, (double)(cw_time_mono_us() - t0) / 1e6);
        }
        if (nretry == 0) {
            return worst;
        }
        if (attempt > 0) {
            CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "%s: NOSCRIPT again after reloading", what);
            return CW_ERROR;
        }
        CW_LOG(CW_LOG_INFO, CW_STATE_COMP, "%s: scripts missing on the server, reloading", what);
        cw_err_t err = scripts_load(st);
        if (err != CW_OK) {
            if (err == CW_RETRY || st->c == NULL) {
                return CW_RETRY;
            }
            drop(st, "SCRIPT LOAD");
            return err;
        }
        np = nretry;
    }
}

/* ---- reading an account ---- */

static const redisReply *rf(const redisReply *hm, int i) {
    const redisReply *r = hm->element[i];
    return r->type == REDIS_REPLY_NIL ? NULL : r;
}

static int64_t rf_i64(const redisReply *hm, int i, int64_t dflt) {
    int64_t v;
    const redisReply *r = rf(hm, i);
    return r != NULL && rep_i64(r, &v) == 0 ? v : dflt;
}

/* The value part of an attribute "<ts>,<value>"; NULL when absent. */
static const char *rf_attr(const redisReply *hm, int i, size_t *len) {
    const redisReply *r = rf(hm, i);
    const char *comma;
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        return NULL;
    }
    comma = memchr(r->str, ',', r->len);
    if (comma == NULL) {
        return NULL;
    }
    *len = r->len - (size_t)(comma + 1 - r->str);
    return comma + 1;
}

/* Fill out from a READ reply {asof, {q...}, {RF...}, score_7d}. */
static cw_err_t parse_read(cw_state_t *st, const redisReply *r, const char *id, int64_t due_ms,
                           cw_account_state_t *out) {
    const redisReply *q, *hm, *s7;
    const char *v;
    size_t len = 0;
    int64_t asof;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || rep_i64(r->element[0], &asof) != 0) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "read: malformed reply");
        return CW_ERROR;
    }
    q = r->element[1];
    hm = r->element[2];
    s7 = r->element[3];
    if (q->type != REDIS_REPLY_ARRAY || q->elements != (size_t)st->layout->n_queries ||
        hm->type != REDIS_REPLY_ARRAY || hm->elements != CW_RF__COUNT) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "read: malformed reply arrays");
        return CW_ERROR;
    }
    memset(out, 0, sizeof(*out));
    cw_strlcpy(out->account_id, id, sizeof(out->account_id));
    out->asof_ms = asof;
    out->due_ms = due_ms;
    for (size_t j = 0; j < q->elements; j++) {
        if (rep_dbl(q->element[j], &out->q[j]) != 0) {
            return CW_ERROR;
        }
    }
    out->partition = (int)rf_i64(hm, CW_RF_P, -1);
    out->arr = -1;
    if ((v = rf_attr(hm, CW_RF_ARR, &len)) != NULL && parse_dbl(v, len, &out->arr) != 0) {
        out->arr = -1;
    }
    out->seats = -1;
    if ((v = rf_attr(hm, CW_RF_SEA, &len)) != NULL && parse_i64(v, len, &out->seats) != 0) {
        out->seats = -1;
    }
    out->renewal_ms = -1;
    if ((v = rf_attr(hm, CW_RF_REN, &len)) != NULL && parse_i64(v, len, &out->renewal_ms) != 0) {
        out->renewal_ms = -1;
    }
    if ((v = rf_attr(hm, CW_RF_PLN, &len)) != NULL) {
        size_t n = len < sizeof(out->plan) - 1 ? len : sizeof(out->plan) - 1;
        memcpy(out->plan, v, n);
        out->plan[n] = '\0';
    }
    out->first_ms = rf_i64(hm, CW_RF_FM, -1);
    out->first_login_ms = rf_i64(hm, CW_RF_FL, -1);
    out->last_login_ms = rf_i64(hm, CW_RF_LL, -1);
    out->last_event_ms = rf_i64(hm, CW_RF_LM, -1);
    out->cancel_ms = rf_i64(hm, CW_RF_KC, -1);
    for (int k = 0; k < CW_MAX_KEY_FEATURES; k++) {
        out->key_feature_first_ms[k] = rf_i64(hm, CW_RF_K0 + k, -1);
    }
    if (rf(hm, CW_RF_SC) != NULL && rep_dbl(rf(hm, CW_RF_SC), &out->score) == 0) {
        out->has_score = 1;
    }
    out->band = (int)rf_i64(hm, CW_RF_BD, 0);
    out->active_mask = (unsigned)rf_i64(hm, CW_RF_AM, 0);
    for (int k = 0; k < CW_REASON__COUNT; k++) {
        out->last_alert_ms[k] = rf_i64(hm, CW_RF_A0 + k, -1);
    }
    if (rf(hm, CW_RF_LID) != NULL && rf(hm, CW_RF_LID)->type == REDIS_REPLY_STRING) {
        const redisReply *l = rf(hm, CW_RF_LID);
        size_t n =
            l->len < sizeof(out->last_alert_id) - 1 ? l->len : sizeof(out->last_alert_id) - 1;
        memcpy(out->last_alert_id, l->str, n);
        out->last_alert_id[n] = '\0';
    }
    if (s7->type != REDIS_REPLY_NIL && rep_dbl(s7, &out->score_7d) == 0) {
        out->has_score_7d = 1;
    }
    return CW_OK;
}

/* KEYS of READ: a, h, wm, sets. */
static void args_read(cw_state_t *st, const char *id, int64_t asof, int64_t now) {
    const cw_layout_t *l = st->layout;
    args_reset(st);
    arg_evalsha(st, CW_SCRIPT_READ, 3 + l->n_sets);
    arg_key(st, "a", id, NULL);
    arg_key(st, "h", id, NULL);
    arg_key(st, "wm", NULL, NULL);
    for (int s = 0; s < l->n_sets; s++) {
        char suffix[CW_KEYNAME_MAX + 2];
        snprintf(suffix, sizeof(suffix), ":%s", l->sets[s].name);
        arg_key(st, "s", id, suffix);
    }
    arg_i64(st, asof);
    arg_str(st, st->conf->time_mode == CW_TIME_WALL ? "1" : "0");
    arg_i64(st, now);
}

/* ---- lifecycle ---- */

cw_state_t *cw_state_new(const cw_conf_t *conf, const cw_layout_t *layout, char *errstr,
                         size_t errstr_size) {
    static const char *const bodies[CW_SCRIPT__COUNT] = {CW_LUA_APPLY, CW_LUA_READ, CW_LUA_COMMIT};
    cw_buf_t prelude = CW_BUF_INIT;
    cw_state_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(errstr, errstr_size, "state: out of memory");
        return NULL;
    }
    st->conf = conf;
    st->layout = layout;
    if (parse_url(st, conf->redis_url, errstr, errstr_size) != 0) {
        cw_state_destroy(st);
        return NULL;
    }
    if (gen_prelude(conf, layout, &prelude, errstr, errstr_size) != 0) {
        cw_buf_free(&prelude);
        cw_state_destroy(st);
        return NULL;
    }
    for (int s = 0; s < CW_SCRIPT__COUNT; s++) {
        cw_buf_append(&st->src[s], prelude.data, prelude.len);
        if (s != CW_SCRIPT_COMMIT) {
            cw_buf_puts(&st->src[s], CW_LUA_COMMON);
        }
        cw_buf_puts(&st->src[s], bodies[s]);
        if (st->src[s].oom) {
            snprintf(errstr, errstr_size, "state: out of memory");
            cw_buf_free(&prelude);
            cw_state_destroy(st);
            return NULL;
        }
    }
    cw_buf_free(&prelude);
    st->max_evs = conf->kafka_batch_size > 0 ? (size_t)conf->kafka_batch_size * 2 : 20000;
    if (st->max_evs < CW_STATE_MIN_EVENTS) {
        st->max_evs = CW_STATE_MIN_EVENTS;
    }
    st->cap_evs = CW_STATE_MIN_EVENTS;
    st->evs = malloc(st->cap_evs * sizeof(*st->evs));
    st->table_size = 2 * CW_STATE_MIN_EVENTS;
    st->table = malloc(st->table_size * sizeof(*st->table));
    if (st->evs == NULL || st->table == NULL) {
        snprintf(errstr, errstr_size, "state: out of memory");
        cw_state_destroy(st);
        return NULL;
    }
    memset(st->table, 0xff, st->table_size * sizeof(*st->table));
    return st;
}

void cw_state_destroy(cw_state_t *st) {
    if (st == NULL) {
        return;
    }
    redisFree(st->c); /* accepts NULL */
    for (int s = 0; s < CW_SCRIPT__COUNT; s++) {
        cw_buf_free(&st->src[s]);
    }
    free(st->evs);
    free(st->groups);
    free(st->table);
    free(st->exec_out);
    free(st->due_out);
    free(st->due_miss);
    cw_buf_free(&st->abuf);
    free(st->arg_off);
    free(st->arg_len);
    free(st->argv);
    free(st->pend);
    free(st);
}

/* ---- batch ---- */

void cw_state_batch_begin(cw_state_t *st) {
    st->n_evs = 0;
    st->n_groups = 0;
    memset(st->table, 0xff, st->table_size * sizeof(*st->table));
}

size_t cw_state_batch_len(const cw_state_t *st) {
    return st->n_evs;
}

/* Double the group table and re-insert every group. */
static int table_grow(cw_state_t *st) {
    size_t nsize = st->table_size * 2;
    int32_t *nt = malloc(nsize * sizeof(*nt));
    if (nt == NULL) {
        return -1;
    }
    memset(nt, 0xff, nsize * sizeof(*nt));
    for (size_t g = 0; g < st->n_groups; g++) {
        size_t idx = (size_t)st->groups[g].hash & (nsize - 1);
        while (nt[idx] >= 0) {
            idx = (idx + 1) & (nsize - 1);
        }
        nt[idx] = (int32_t)g;
    }
    free(st->table);
    st->table = nt;
    st->table_size = nsize;
    return 0;
}

cw_err_t cw_state_batch_add(cw_state_t *st, int partition, int64_t offset, const cw_event_t *ev) {
    uint64_t h;
    size_t idx;
    int32_t g = -1;
    cw_bev_t *be;
    if (st->n_evs == st->cap_evs) {
        size_t ncap = st->cap_evs * 2 < st->max_evs ? st->cap_evs * 2 : st->max_evs;
        cw_bev_t *ne;
        if (st->cap_evs >= st->max_evs) {
            return CW_ERROR; /* full: the caller execs first */
        }
        ne = realloc(st->evs, ncap * sizeof(*ne));
        if (ne == NULL) {
            return CW_ERROR;
        }
        st->evs = ne;
        st->cap_evs = ncap;
    }
    if ((st->n_groups + 1) * 2 > st->table_size && table_grow(st) != 0) {
        return CW_ERROR;
    }
    h = group_hash(ev->account_id, partition);
    idx = (size_t)h & (st->table_size - 1);
    while (st->table[idx] >= 0) {
        const cw_group_t *cand = &st->groups[st->table[idx]];
        if (cand->hash == h && cand->partition == partition &&
            strcmp(st->evs[cand->head].ev.account_id, ev->account_id) == 0) {
            g = st->table[idx];
            break;
        }
        idx = (idx + 1) & (st->table_size - 1);
    }
    if (g < 0) {
        if (grow((void **)&st->groups, &st->cap_groups, st->n_groups + 1, sizeof(*st->groups)) !=
            0) {
            return CW_ERROR;
        }
        g = (int32_t)st->n_groups++;
        st->groups[g].head = (int32_t)st->n_evs;
        st->groups[g].tail = -1;
        st->groups[g].partition = partition;
        st->groups[g].n = 0;
        st->groups[g].hash = h;
        st->table[idx] = g;
    }
    be = &st->evs[st->n_evs];
    memcpy(&be->ev, ev, sizeof(*ev)); /* the batch owns its copy */
    be->offset = offset;
    be->partition = partition;
    be->next = -1;
    if (st->groups[g].tail >= 0) {
        st->evs[st->groups[g].tail].next = (int32_t)st->n_evs;
    }
    st->groups[g].tail = (int32_t)st->n_evs;
    st->groups[g].n++;
    st->n_evs++;
    return CW_OK;
}

typedef struct exec_ctx {
    int64_t now;
} exec_ctx_t;

/* APPLY for group i: see CW_LUA_APPLY for the argument layout. */
static cw_err_t build_apply(cw_state_t *st, size_t i, void *vctx) {
    const exec_ctx_t *ctx = vctx;
    const cw_layout_t *l = st->layout;
    const cw_group_t *g = &st->groups[i];
    const char *id = st->evs[g->head].ev.account_id;
    cw_event_ops_t ops;
    args_reset(st);
    arg_evalsha(st, CW_SCRIPT_APPLY, 6 + l->n_sets);
    arg_key(st, "a", id, NULL);
    arg_key(st, "h", id, NULL);
    arg_pkey(st, "due", g->partition);
    arg_key(st, "wm", NULL, NULL);
    arg_key(st, "accounts", NULL, NULL);
    arg_key(st, "snap", id, NULL);
    for (int s = 0; s < l->n_sets; s++) {
        char suffix[CW_KEYNAME_MAX + 2];
        snprintf(suffix, sizeof(suffix), ":%s", l->sets[s].name);
        arg_key(st, "s", id, suffix);
    }
    arg_i64(st, ctx->now);
    arg_str(st, st->conf->time_mode == CW_TIME_WALL ? "1" : "0");
    arg_i64(st, g->partition);
    arg_str(st, id);
    arg_i64(st, g->n);
    for (int32_t e = g->head; e >= 0; e = st->evs[e].next) {
        const cw_event_t *ev = &st->evs[e].ev;
        int known = (int)ev->type >= 0 && ev->type < CW_EV__COUNT;
        int fl = known ? CW_FL_ACTIVITY : 0;
        int ns = 0;
        fl |= ev->type == CW_EV_LOGIN ? CW_FL_LOGIN : 0;
        fl |= ev->type == CW_EV_ACCOUNT ? CW_FL_ACCOUNT : 0;
        fl |= ev->type == CW_EV_CANCELLATION ? CW_FL_CANCEL : 0;
        if (known) {
            cw_layout_event_ops(l, &st->conf->model, ev, &ops);
        } else {
            ops.n_counters = 0;
            ops.n_sets = 0;
            ops.key_feature = -1;
        }
        arg_i64(st, st->evs[e].offset);
        arg_i64(st, ev->ts_ms);
        arg_i64(st, fl);
        arg_i64(st, ops.key_feature);
        arg_i64(st, ops.n_counters);
        for (int k = 0; k < ops.n_counters; k++) {
            arg_i64(st, ops.counter[k]);
            arg_i64(st, ops.amount[k]);
        }
        for (int k = 0; k < ops.n_sets; k++) {
            const cw_set_def_t *sd = &l->sets[ops.set[k]];
            ns += (sd->of_users ? ev->user_id : ev->feature)[0] != '\0';
        }
        arg_i64(st, ns);
        for (int k = 0; k < ops.n_sets; k++) {
            const cw_set_def_t *sd = &l->sets[ops.set[k]];
            const char *member = sd->of_users ? ev->user_id : ev->feature;
            if (member[0] != '\0') {
                arg_i64(st, ops.set[k]);
                arg_str(st, member);
            }
        }
        if (fl & CW_FL_ACCOUNT) {
            if (ev->arr >= 0) {
                arg_dbl(st, ev->arr);
            } else {
                arg_str(st, "");
            }
            if (ev->seats >= 0) {
                arg_i64(st, ev->seats);
            } else {
                arg_str(st, "");
            }
            arg_str(st, ev->plan);
            if (ev->renewal_ms >= 0) {
                arg_i64(st, ev->renewal_ms);
            } else {
                arg_str(st, "");
            }
        }
    }
    return args_send(st);
}

static cw_err_t reply_apply(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    const cw_group_t *g = &st->groups[i];
    int64_t dups;
    cw_err_t err;
    (void)ctx;
    int64_t dm = -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || rep_i64(r->element[0], &dups) != 0 ||
        r->element[1]->type != REDIS_REPLY_ARRAY || rep_i64(r->element[2], &dm) != 0) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "apply: malformed reply");
        return CW_ERROR;
    }
    st->duplicates += (uint64_t)dups;
    err = parse_read(st, r->element[1], st->evs[g->head].ev.account_id, -1, &st->exec_out[i]);
    if (err == CW_OK) {
        /* the account's due score after APPLY: its dirty mark (the as-of
         * time), or an earlier day-end timer that the mark must not postpone
         * (ZADD LT); COMMIT replaces it only if it is still this value */
        st->exec_out[i].due_ms = dm == st->exec_out[i].asof_ms ? dm : -1;
        if (st->exec_out[i].partition < 0) {
            st->exec_out[i].partition = g->partition;
        }
    }
    return err;
}

cw_err_t cw_state_batch_exec(cw_state_t *st, cw_account_state_t **out, size_t *n_out) {
    exec_ctx_t ctx;
    cw_err_t err;
    *out = NULL;
    *n_out = 0;
    if (st->n_groups == 0) {
        return CW_OK;
    }
    if (grow((void **)&st->exec_out, &st->exec_cap, st->n_groups, sizeof(*st->exec_out)) != 0) {
        return CW_ERROR;
    }
    err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    ctx.now = cw_time_now_ms();
    err = pipe_run(st, st->n_groups, build_apply, reply_apply, &ctx, "apply");
    if (err != CW_OK) {
        return err;
    }
    *out = st->exec_out;
    *n_out = st->n_groups;
    return CW_OK;
}

/* ---- reads ---- */

static cw_err_t reply_wm(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    int64_t *wm = ctx;
    (void)st;
    (void)i;
    if (r->type == REDIS_REPLY_NIL) {
        *wm = -1;
        return CW_OK;
    }
    return rep_i64(r, wm) == 0 ? CW_OK : CW_ERROR;
}

cw_err_t cw_state_watermark(cw_state_t *st, int partition, int64_t *wm_out) {
    char field[16];
    cw_err_t err = cw_state_connect(st);
    *wm_out = -1;
    if (err != CW_OK) {
        return err;
    }
    snprintf(field, sizeof(field), "%d", partition);
    args_reset(st);
    arg_str(st, "HGET");
    arg_key(st, "wm", NULL, NULL);
    arg_str(st, field);
    return pipe_run(st, 1, build_prepared, reply_wm, wm_out, "watermark");
}

typedef struct read_ctx {
    const char *id;
    cw_account_state_t *out;
    int found;
} read_ctx_t;

static cw_err_t reply_read(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    read_ctx_t *ctx = vctx;
    (void)i;
    if (r->type == REDIS_REPLY_NIL) {
        ctx->found = 0;
        return CW_OK;
    }
    ctx->found = 1;
    return parse_read(st, r, ctx->id, -1, ctx->out);
}

cw_err_t cw_state_read(cw_state_t *st, const char *account_id, int64_t asof_ms,
                       cw_account_state_t *out) {
    read_ctx_t ctx = {account_id, out, 0};
    cw_err_t err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    args_read(st, account_id, asof_ms < 0 ? -1 : asof_ms, cw_time_now_ms());
    err = pipe_run(st, 1, build_prepared, reply_read, &ctx, "read");
    if (err != CW_OK) {
        return err;
    }
    return ctx.found ? CW_OK : CW_NOENT;
}

typedef struct due_ctx {
    int partition;
    int64_t now;
} due_ctx_t;

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
    if (grow((void **)&st->due_out, &st->due_cap, n, sizeof(*st->due_out)) != 0) {
        return CW_ERROR;
    }
    {
        size_t cap = st->due_cap > n ? st->due_cap : n;
        unsigned char *m = realloc(st->due_miss, cap);
        if (m == NULL) {
            return CW_ERROR;
        }
        st->due_miss = m;
    }
    for (size_t k = 0; k < n; k++) {
        const redisReply *mem = r->element[2 * k];
        double score;
        if (mem->type != REDIS_REPLY_STRING || mem->len >= CW_FIELD_MAX ||
            rep_dbl(r->element[2 * k + 1], &score) != 0) {
            return CW_ERROR;
        }
        memset(&st->due_out[k], 0, sizeof(st->due_out[k]));
        memcpy(st->due_out[k].account_id, mem->str, mem->len);
        st->due_out[k].account_id[mem->len] = '\0';
        st->due_out[k].due_ms = (int64_t)score;
        st->due_miss[k] = 0;
    }
    st->n_due = n;
    return CW_OK;
}

static cw_err_t build_due_read(cw_state_t *st, size_t i, void *vctx) {
    const due_ctx_t *ctx = vctx;
    const cw_account_state_t *a = &st->due_out[i];
    int64_t asof = st->conf->time_mode == CW_TIME_WALL ? ctx->now : a->due_ms;
    args_read(st, a->account_id, asof, ctx->now);
    return args_send(st);
}

static cw_err_t reply_due_read(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const due_ctx_t *ctx = vctx;
    cw_account_state_t *a = &st->due_out[i];
    char id[CW_FIELD_MAX];
    int64_t due_ms = a->due_ms;
    cw_err_t err;
    if (r->type == REDIS_REPLY_NIL) {
        st->due_miss[i] = 1; /* expired or deleted: its timer is dropped below */
        return CW_OK;
    }
    cw_strlcpy(id, a->account_id, sizeof(id));
    err = parse_read(st, r, id, due_ms, a);
    /* the timer lives in this partition's zset: commit must update it there */
    a->partition = ctx->partition;
    return err;
}

/* Cleanup of due accounts that no longer exist: ZREM due, ZREM atrisk, SREM accounts. */
typedef struct due_gone_ctx {
    int partition;
    size_t *idx; /* indices into due_out of missing accounts */
} due_gone_ctx_t;

static cw_err_t build_due_gone(cw_state_t *st, size_t i, void *vctx) {
    const due_gone_ctx_t *ctx = vctx;
    const char *id = st->due_out[ctx->idx[i / 3]].account_id;
    args_reset(st);
    switch (i % 3) {
    case 0:
        arg_str(st, "ZREM");
        arg_pkey(st, "due", ctx->partition);
        break;
    case 1:
        arg_str(st, "ZREM");
        arg_key(st, "atrisk", NULL, NULL);
        break;
    default:
        arg_str(st, "SREM");
        arg_key(st, "accounts", NULL, NULL);
        break;
    }
    arg_str(st, id);
    return args_send(st);
}

static cw_err_t reply_ignore(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    (void)st;
    (void)i;
    (void)r;
    (void)ctx;
    return CW_OK;
}

cw_err_t cw_state_due(cw_state_t *st, int partition, int64_t upto_ms, size_t max,
                      cw_account_state_t **out, size_t *n_out) {
    due_ctx_t ctx = {partition, cw_time_now_ms()};
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
    args_reset(st);
    arg_str(st, "ZRANGEBYSCORE");
    arg_pkey(st, "due", partition);
    arg_str(st, "-inf");
    arg_i64(st, upto_ms);
    arg_str(st, "LIMIT");
    arg_str(st, "0");
    arg_i64(st, max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max);
    arg_str(st, "WITHSCORES");
    err = pipe_run(st, 1, build_prepared, reply_due_list, NULL, "due");
    if (err != CW_OK || st->n_due == 0) {
        return err;
    }
    err = pipe_run(st, st->n_due, build_due_read, reply_due_read, &ctx, "due read");
    if (err != CW_OK) {
        return err;
    }
    for (size_t i = 0; i < st->n_due; i++) {
        n_gone += st->due_miss[i];
    }
    if (n_gone > 0) {
        due_gone_ctx_t gctx = {partition, NULL};
        size_t m = 0;
        gctx.idx = malloc(n_gone * sizeof(*gctx.idx));
        if (gctx.idx == NULL) {
            return CW_ERROR;
        }
        for (size_t i = 0; i < st->n_due; i++) {
            if (st->due_miss[i]) {
                gctx.idx[m++] = i;
            }
        }
        err = pipe_run(st, 3 * n_gone, build_due_gone, reply_ignore, &gctx, "due cleanup");
        free(gctx.idx);
        if (err != CW_OK) {
            return err;
        }
        for (size_t i = 0; i < st->n_due; i++) { /* compact */
            if (!st->due_miss[i]) {
                if (k != i) {
                    st->due_out[k] = st->due_out[i];
                }
                k++;
            }
        }
        st->n_due = k;
    }
    *out = st->due_out;
    *n_out = st->n_due;
    return CW_OK;
}

/* ---- decisions ---- */

static cw_err_t build_commit(cw_state_t *st, size_t i, void *vctx) {
    const cw_commit_t *c = &((const cw_commit_t *)vctx)[i];
    const cw_account_state_t *a = c->acct;
    int p = a->partition >= 0 ? a->partition : 0;
    const char *id = a->account_id;
    args_reset(st);
    arg_evalsha(st, CW_SCRIPT_COMMIT, 7);
    arg_key(st, "a", id, NULL);
    arg_key(st, "h", id, NULL);
    arg_pkey(st, "due", p);
    arg_key(st, "atrisk", NULL, NULL);
    arg_pkey(st, "outbox", p);
    arg_key(st, "snap", id, NULL);
    arg_key(st, "bands", NULL, NULL);
    arg_str(st, id);
    arg_i64(st, a->due_ms);
    arg_i64(st, c->next_due_ms);
    {
        char tmp[40];
        int n = snprintf(tmp, sizeof(tmp), "%.15g", c->score);
        arg_mem(st, tmp, (size_t)n);
    }
    arg_i64(st, c->band);
    arg_i64(st, c->tier);
    arg_i64(st, c->phase);
    arg_i64(st, c->active_mask);
    for (int r = 0; r < CW_REASON__COUNT; r++) {
        arg_i64(st, c->last_alert_ms != NULL ? c->last_alert_ms[r] : -1);
    }
    arg_str(st, c->last_alert_id != NULL ? c->last_alert_id : "");
    arg_i64(st, a->asof_ms);
    arg_str(st, c->reschedule_only ? "T" : c->snapshot_json != NULL ? "1" : "0");
    arg_str(st, c->snapshot_json != NULL ? c->snapshot_json : "");
    {
        int n =
            c->n_alerts < 0 ? 0 : (c->n_alerts > CW_REASON__COUNT ? CW_REASON__COUNT : c->n_alerts);
        arg_i64(st, n);
        for (int k = 0; k < n; k++) {
            arg_str(st, c->alert_ids[k]);
            arg_str(st, c->alert_json[k]);
        }
    }
    return args_send(st);
}

static cw_err_t reply_commit(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    (void)st;
    (void)i;
    (void)ctx;
    return r->type == REDIS_REPLY_INTEGER ? CW_OK : CW_ERROR;
}

cw_err_t cw_state_commit(cw_state_t *st, const cw_commit_t *commits, size_t n) {
    cw_err_t err;
    if (n == 0) {
        return CW_OK;
    }
    err = cw_state_connect(st);
    if (err != CW_OK) {
        return err;
    }
    return pipe_run(st, n, build_commit, reply_commit, (void *)commits, "commit");
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
        args_reset(st);
        arg_str(st, "HSCAN");
        arg_pkey(st, "outbox", partition);
        arg_str(st, cursor);
        arg_str(st, "COUNT");
        arg_str(st, CW_STATE_SCAN_COUNT);
        err = pipe_run(st, 1, build_prepared, reply_scan, &ctx, "outbox scan");
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
    args_reset(st);
    arg_str(st, "HDEL");
    arg_pkey(st, "outbox", ctx->partitions[i]);
    arg_str(st, ctx->ids[i]);
    return args_send(st);
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
    return pipe_run(st, n, build_ack, reply_ignore, &ctx, "outbox ack");
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
    args_reset(st);
    arg_str(st, cmd);
    arg_key(st, kind, id, NULL);
    arg_str(st, "0");
    arg_i64(st, limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit - 1);
    if (withscores) {
        arg_str(st, "WITHSCORES");
    }
    return pipe_run(st, 1, build_prepared, on_reply, ctx, what);
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
        if (m->type != REDIS_REPLY_STRING || rep_dbl(r->element[k + 1], &ctx->scores[ctx->n])) {
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
    args_reset(st);
    arg_str(st, "GET");
    arg_key(st, "snap", account_id, NULL);
    err = pipe_run(st, 1, build_prepared, reply_snap, &ctx, "snapshot");
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
        if (r->element[b]->type != REDIS_REPLY_NIL && rep_i64(r->element[b], &v) != 0) {
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
    args_reset(st);
    arg_str(st, "HMGET");
    arg_key(st, "bands", NULL, NULL);
    arg_str(st, "0");
    arg_str(st, "1");
    arg_str(st, "2");
    return pipe_run(st, 1, build_prepared, reply_bands, counts, "band counts");
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
