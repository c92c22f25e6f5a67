/*
 * cw_state.c — the per-account state in Redis (see cw_state.h for the key
 * layout, the failure model and ownership).
 *
 * Plain commands only, computed in C: the apply of a batch and the commit
 * of a chunk of decisions are each one optimistic transaction (WATCH of a
 * fence key per partition, reads, MULTI ... EXEC; see "apply" and
 * "commit" below), and an account read is HGETALL of its hash (set members
 * included) and LRANGE of its history in one MULTI/EXEC, evaluated by
 * cw_view. This used to be Lua scripts; the Lua VM cost Redis several times
 * the CPU of the commands themselves, and Redis CPU is the throughput
 * bottleneck (bench/README.md). The one script left, the watermark maximum
 * (cw_state_lua.h), is sent with EVAL.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "cw_acache.h"
#include "cw_state_lua.h"
#include "cw_view.h"

#define CW_STATE_COMP "state"
#define CW_STATE_MIN_EVENTS 256   /* initial batch capacity */
#define CW_STATE_PIPE_WINDOW 2048 /* commands in flight per connection */
#define CW_STATE_PIPE_SLICE 256   /* commands written (and replies read) at a time */
#define CW_STATE_SCAN_COUNT "500" /* HSCAN page size of the outbox scan */
#define CW_STATE_KEY_MAX 256      /* P:<kind> of a blocking command */

/* One event of the batch, packed: what the apply uses of it, its counter
 * and set updates worked out once at add (cw_layout_event_ops), its
 * strings in the batch's ev_str (80 bytes plus the strings, instead of a copy of
 * the 700-byte cw_event_t: a batch of 4,096 held ~2.9 MB per lane). Groups
 * link their events by index. */
typedef struct cw_bev {
    int64_t ts_ms;
    int64_t offset;
    int64_t sum_amount;           /* what it adds to SUM counters (the others: 1, the
                                     rule of cw_layout_event_ops) */
    double arr;                   /* account events: as in cw_event_t */
    int64_t seats, renewal_ms;    /* account events: as in cw_event_t */
    uint32_t counters;            /* bit c: adds to layout counter c */
    uint32_t user, feature, plan; /* offsets of NUL-terminated strings in ev_str */
    int32_t next;                 /* next event of the same group, -1 last */
    int16_t partition;
    uint8_t type;       /* cw_ev_type_t */
    uint8_t sets;       /* bit s: marks its member in layout set s */
    int8_t key_feature; /* index into the model's key features, -1 none */
    uint8_t skip;       /* 1: a redelivery (set by the apply) */
} cw_bev_t;

static int ap_known(const cw_bev_t *b) {
    return b->type < CW_EV__COUNT;
}

/* The events of one (account, partition) in the batch. */
typedef struct cw_group {
    int32_t head, tail; /* first/last event index */
    uint32_t id;        /* the account id: offset in ev_str */
    int partition;
    uint32_t n;    /* events */
    uint64_t hash; /* of (account, partition) */
} cw_group_t;

/* A batch (see cw_state.h): its events packed, grouped per (account,
 * partition). Filled by one thread while another executes a different one:
 * nothing here points into a cw_state_t. */
struct cw_state_batch {
    const cw_conf_t *conf;     /* not owned; outlives b */
    const cw_layout_t *layout; /* not owned; outlives b */
    cw_bev_t *evs;
    size_t n_evs, cap_evs, max_evs;
    cw_buf_t ev_str; /* the batch's strings (offset 0: ""), see cw_bev_t */
    cw_group_t *groups;
    size_t n_groups, cap_groups;
    int32_t *table; /* open addressing over group indices; -1 empty */
    size_t table_size;
};

/* What a commit's writes depend on, read under the WATCH of its fence. */
typedef struct cm_read {
    int64_t due;     /* the account's timer now; INT64_MIN none */
    int band;        /* stored band; -1 none */
    int home;        /* the hash's "p" when it names another partition (its fence is
                        watched and INCRed too); -1 otherwise */
    int64_t top;     /* as-of of the newest history entry; INT64_MIN none */
    int64_t hlen;    /* entries in the history; -1 not read */
    int hpos;        /* the first history entry of the decision's UTC day or an
                        older one; hlen when every entry is newer */
    int hsame;       /* that entry is of the decision's day: replaced */
    char hpivot[48]; /* that entry as stored (LINSERT BEFORE it) */
    int timer_only;
    int same_score; /* the hash's "sc" (and so the at-risk rank) is already the
                       commit's score: no ZADD of the rank */
} cm_read_t;

struct cw_state {
    const cw_conf_t *conf;     /* not owned; outlives st */
    const cw_layout_t *layout; /* not owned; outlives st */
    cw_view_plan_t plan;       /* retention and read depth per counter/set */
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
    int migrating; /* cw_state_migrate: connect without the layout check */
    uint64_t reconnects;
    uint64_t duplicates;
    /* the batch cw_state_batch_exec runs: borrowed for the call */
    cw_state_batch_t *bat;
    /* results, owned; valid until the next call */
    cw_account_state_t *exec_out;
    size_t exec_cap;
    cw_account_state_t *due_out;
    size_t due_cap, n_due;
    /* command arguments: one buffer, offsets/lengths, pointers at send */
    cw_buf_t abuf;
    size_t *arg_off;
    size_t *arg_len;
    const char **argv;
    size_t argc, arg_cap, arg_start;
    int arg_oom;
    /* apply scratch (see "apply" below), reset per batch */
    struct ap_grp *ap_grp;
    size_t ap_grp_cap;
    struct ap_mem *ap_mem;
    size_t ap_mem_cap, ap_n_mem;
    struct ap_cnt *ap_cnt;
    size_t ap_cnt_cap, ap_n_cnt;
    struct ap_del *ap_del;
    size_t ap_del_cap, ap_n_del;
    struct ap_cmd *ap_cmd;
    size_t ap_cmd_cap, ap_n_cmd;
    cw_buf_t ap_vbuf; /* attribute values read or set */
    cw_buf_t ap_dbuf; /* names to delete */
    int64_t ap_now;
    int tx_aborted;   /* the last EXEC was aborted (WATCH) */
    int ap_stale;     /* an apply read found a stale cache record */
    cm_read_t *cm_rd; /* commit: what each commit's writes depend on */
    int cm_rewatch;   /* a commit read found an account's "p" on an unwatched partition */
    /* apply: fences watched in this attempt (1), or to watch before the
     * next read (2: an account's "p" named it) */
    unsigned char ap_watched[CW_STATE_MAX_PARTITIONS];
    size_t cm_rd_cap;
    /* due reads made under WATCH (see cw_state_due): what the commit of
     * those accounts depends on, read already; valid while pre_watch */
    cm_read_t *pre_rd;
    size_t pre_rd_cap;
    size_t n_pre; /* accounts that pre_rd holds */
    int pre_watch;
    uint64_t watch_gen; /* counts watched reads: read_tag = gen << 20 | index */
    /* one account's replies (HGETALL, LRANGE, sets), until its last arrives */
    redisReply *held[3]; /* READ_CMDS, and a ZSCORE (wall-mode read back) */
    size_t n_held;
    int hold; /* set by a reply callback: pipe_run must not free this reply */
    int64_t ap_wmax[CW_STATE_MAX_PARTITIONS];
    /* reads: views into one EXEC reply (scratch, grows to the largest) */
    cw_sv_t *sv;
    size_t sv_cap;
    signed char *sv_set; /* per field of the hash read: its set, -1 none */
    size_t sv_set_cap;
    unsigned char *read_miss; /* per account of the last read_accounts */
    size_t read_miss_cap;
    /* the apply's cache of accounts' fixed fields and timers (state.cache_accounts; NULL off) */
    cw_acache_t *acache; /* owned */
    int acache_tried;
    uint64_t ac_hits, ac_misses;
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
    return cw_hash_account(id, strlen(id), partition);
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
        return cw_sv_i64((cw_sv_t){r->str, r->len}, out);
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
        return cw_sv_dbl((cw_sv_t){r->str, r->len}, out);
    }
    return -1;
}

/* A partition number reply (the account hash's "p"); -1 for none or out of range. */
static int rep_partition(const redisReply *r) {
    int64_t v;
    return rep_i64(r, &v) == 0 && v >= 0 && v < CW_STATE_MAX_PARTITIONS ? (int)v : -1;
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

/* A prune-mark field name: prefix ("m:" or "n:") and a counter or set name. */
static void arg_mark(cw_state_t *st, const char *prefix, const char *name) {
    arg_begin(st);
    arg_piece(st, prefix, 2);
    arg_piece(st, name, strlen(name));
    arg_end(st);
}

static void arg_str(cw_state_t *st, const char *s) {
    arg_mem(st, s, strlen(s));
}

/* A distinct-set member's field in the account hash: "s<n>:<set>:<member>",
 * n = the set name's length (feature names, and so set names, may hold any
 * character; the length keeps the field unambiguous). */
static void arg_member(cw_state_t *st, int set, const char *mem, size_t len) {
    const char *name = st->layout->sets[set].name;
    char pre[16];
    size_t nl = strlen(name);
    int n = snprintf(pre, sizeof(pre), "s%zu:", nl);
    arg_begin(st);
    arg_piece(st, pre, (size_t)n);
    arg_piece(st, name, nl);
    arg_piece(st, ":", 1);
    arg_piece(st, mem, len);
    arg_end(st);
}

/* The set of an account-hash field that is a member's (arg_member), -1 for
 * any other field; *mem (may be NULL) the member. */
static int member_field(const cw_layout_t *l, cw_sv_t f, cw_sv_t *mem) {
    size_t nl = 0, k = 1;
    if (f.len < 4 || f.p[0] != 's' || f.p[1] < '0' || f.p[1] > '9') {
        return -1;
    }
    while (k < f.len && f.p[k] >= '0' && f.p[k] <= '9' && nl < 1000) {
        nl = nl * 10 + (size_t)(f.p[k++] - '0');
    }
    if (k >= f.len || f.p[k] != ':' || f.len < k + 1 + nl + 1 || f.p[k + 1 + nl] != ':') {
        return -1;
    }
    for (int s = 0; s < l->n_sets; s++) {
        if (strlen(l->sets[s].name) == nl && memcmp(l->sets[s].name, f.p + k + 1, nl) == 0) {
            if (mem != NULL) {
                mem->p = f.p + k + 1 + nl + 1;
                mem->len = f.len - (k + 1 + nl + 1);
            }
            return s;
        }
    }
    return -1;
}

static void arg_i64(cw_state_t *st, int64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    arg_mem(st, tmp, (size_t)n);
}

/* "P:<kind>" plus optional "{id}" and suffix: P:a:{id}, P:due:3, P:wm. */
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

/* ---- connection ---- */

/* Free the replies a reply callback kept (st->hold). */
static void held_free(cw_state_t *st) {
    for (size_t k = 0; k < st->n_held; k++) {
        freeReplyObject(st->held[k]);
    }
    st->n_held = 0;
}

/* Free the context: a context that saw an error is never reused. */
static void drop(cw_state_t *st, const char *why) {
    st->pre_watch = 0;
    if (st->acache != NULL) {
        cw_acache_clear(st->acache); /* an EXEC in flight may or may not have run */
    }
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

/* A key of the keyspace P:<kind> into buf (blocking commands). */
static const char *plain_key(const cw_state_t *st, const char *kind, char *buf, size_t size) {
    snprintf(buf, size, "%s:%s", st->conf->redis_key_prefix, kind);
    return buf;
}

/* A blocking command with string arguments, NULL-terminated. */
static cw_err_t cmd_strs(cw_state_t *st, const char *what, redisReply **out, ...) {
    const char *argv[8];
    size_t lens[8];
    int argc = 0;
    va_list ap;
    va_start(ap, out);
    for (const char *a; argc < 8 && (a = va_arg(ap, const char *)) != NULL; argc++) {
        argv[argc] = a;
        lens[argc] = strlen(a);
    }
    va_end(ap);
    return cmd_blocking(st, argc, argv, lens, what, out);
}

/*
 * The keyspace's layout (P:layout): CW_STATE_LAYOUT, claimed by the first
 * connection to an empty keyspace. A keyspace with accounts and no mark
 * was written by a version that kept set members in keys of their own
 * (P:s:{id}:<set>): reading it as this layout would lose those members,
 * so the connection is refused (CW_ERROR) until `churnwatch migrate` has
 * moved them.
 */
static cw_err_t check_layout(cw_state_t *st) {
    char key[CW_STATE_KEY_MAX], akey[CW_STATE_KEY_MAX];
    redisReply *r = NULL;
    cw_err_t err;
    plain_key(st, "layout", key, sizeof(key));
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((err = cmd_strs(st, "layout", &r, "GET", key, NULL)) != CW_OK) {
            return err;
        }
        if (r->type == REDIS_REPLY_STRING) {
            int ok = strcmp(r->str, CW_STATE_LAYOUT) == 0;
            if (!ok) {
                CW_LOG(CW_LOG_ERROR, CW_STATE_COMP,
                       "redis keyspace \"%s\" has key layout %s (%s); this version reads layout "
                       "%s only",
                       st->conf->redis_key_prefix, r->str, key, CW_STATE_LAYOUT);
            }
            freeReplyObject(r);
            return ok ? CW_OK : CW_ERROR;
        }
        freeReplyObject(r);
        if ((err = cmd_strs(st, "layout", &r, "EXISTS",
                            plain_key(st, "accounts", akey, sizeof(akey)), NULL)) != CW_OK) {
            return err;
        }
        int legacy = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        freeReplyObject(r);
        if (legacy) {
            CW_LOG(CW_LOG_ERROR, CW_STATE_COMP,
                   "redis keyspace \"%s\" was written by a churnwatch that kept distinct-set "
                   "members in keys of their own (%s:s:{id}:<set>); stop every churnwatch "
                   "using it and run `churnwatch migrate --config FILE` once, then start this "
                   "version",
                   st->conf->redis_key_prefix, st->conf->redis_key_prefix);
            return CW_ERROR;
        }
        /* empty: claim it (a concurrent claim is read back) */
        if ((err = cmd_strs(st, "layout", &r, "SET", key, CW_STATE_LAYOUT, "NX", NULL)) != CW_OK) {
            return err;
        }
        freeReplyObject(r);
    }
    return CW_ERROR;
}

/* "<cmd> <arg>" while connecting (AUTH, SELECT); the connection is
 * dropped when it fails. */
static cw_err_t connect_cmd(cw_state_t *st, const char *cmd, const char *arg) {
    redisReply *r = NULL;
    cw_err_t err = cmd_strs(st, cmd, &r, cmd, arg, NULL);
    freeReplyObject(r);
    if (err != CW_OK) {
        drop(st, cmd);
    }
    return err;
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
    /* the password is never logged: only the error text is */
    if (st->conf->redis_password[0] != '\0' &&
        (err = connect_cmd(st, "AUTH", st->conf->redis_password)) != CW_OK) {
        return err;
    }
    if (st->conf->redis_db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", st->conf->redis_db);
        if ((err = connect_cmd(st, "SELECT", db)) != CW_OK) {
            return err;
        }
    }
    if (!st->migrating && (err = check_layout(st)) != CW_OK) {
        if (err == CW_ERROR) { /* logged: not a lost connection */
            redisFree(st->c);
            st->c = NULL;
        } else {
            drop(st, "layout");
        }
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

void cw_state_cache_stats(const cw_state_t *st, uint64_t *hits, uint64_t *misses) {
    *hits = st->ac_hits;
    *misses = st->ac_misses;
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
 * Run n commands as one pipeline, streamed: commands are built and written
 * in slices of CW_STATE_PIPE_SLICE, and replies read a slice at a time, with
 * at most CW_STATE_PIPE_WINDOW commands in flight (the output buffer and the
 * replies held stay bounded however large the batch; a transaction may span
 * slices: the server queues it until EXEC). Redis starts on the first slice
 * while the next ones are built, and works on the next slices while this
 * thread parses a slice's replies, instead of the two taking turns.
 * I/O error: the connection is dropped, CW_RETRY. Error replies are
 * CW_ERROR (or CW_RETRY when transient) after all replies were drained.
 */
static cw_err_t pipe_run(cw_state_t *st, size_t n, pipe_build_t build, pipe_reply_t on_reply,
                         void *ctx, const char *what) {
    cw_err_t worst = CW_OK;
    int64_t t0 = st->rtt_cb != NULL ? cw_time_mono_us() : 0;
    size_t sent = 0, got = 0;
    while (got < n) {
        /* write slices while the window has room (and at least one is out) */
        while (sent < n &&
               (sent == got || sent - got + CW_STATE_PIPE_SLICE <= CW_STATE_PIPE_WINDOW)) {
            size_t end = n - sent < CW_STATE_PIPE_SLICE ? n : sent + CW_STATE_PIPE_SLICE;
            int done = 0;
            for (size_t k = sent; k < end; k++) {
                cw_err_t err = build(st, k, ctx);
                if (err != CW_OK) {
                    /* commands already appended cannot be taken back: discard
                     * the connection, and with it the half-built pipeline */
                    drop(st, what);
                    return err;
                }
            }
            while (!done) {
                if (redisBufferWrite(st->c, &done) != REDIS_OK) {
                    drop(st, what);
                    return CW_RETRY;
                }
            }
            sent = end;
        }
        /* then read the oldest slice's replies */
        size_t end = sent - got < CW_STATE_PIPE_SLICE ? sent : got + CW_STATE_PIPE_SLICE;
        for (size_t k = got; k < end; k++) {
            redisReply *r = NULL;
            if (redisGetReply(st->c, (void **)&r) != REDIS_OK || r == NULL) {
                freeReplyObject(r);
                drop(st, what);
                return CW_RETRY;
            }
            if (r->type == REDIS_REPLY_ERROR) {
                cw_err_t err = reply_error(r, what);
                worst = err > worst ? err : worst;
            } else {
                cw_err_t err = on_reply(st, k, r, ctx);
                if (err == CW_ERROR) {
                    CW_LOG(CW_LOG_ERROR, CW_STATE_COMP,
                           "%s: unexpected reply (type %d, %zu elements) to command %zu", what,
                           r->type, r->type == REDIS_REPLY_ARRAY ? r->elements : (size_t)0, k);
                }
                worst = err > worst ? err : worst;
            }
            if (st->hold) {
                st->hold = 0; /* the callback keeps it (and frees it) */
            } else {
                freeReplyObject(r);
            }
        }
        got = end;
    }
    if (st->rtt_cb != NULL && n > 0) {
        st->rtt_cb(st->rtt_opaque, (double)(cw_time_mono_us() - t0) / 1e6);
    }
    return worst;
}

/* ---- reading accounts ---- */

/* One MULTI/EXEC per account: HGETALL a (set members included), LRANGE h. */
#define READ_PER 4  /* MULTI, HGETALL, LRANGE, EXEC */
#define READ_CMDS 2 /* HGETALL, LRANGE: without MULTI/EXEC (under a due scan's WATCH) */

typedef struct reads_ctx {
    cw_account_state_t *a; /* account_id, due_ms, asof_ms set by the caller */
} reads_ctx_t;

/* Command k of an account read (id): 0 HGETALL a, 1 LRANGE h. */
static cw_err_t build_read_cmd(cw_state_t *st, const char *id, size_t k) {
    args_reset(st);
    if (k == 0) {
        arg_str(st, "HGETALL");
        arg_key(st, "a", id, NULL);
    } else {
        arg_str(st, "LRANGE");
        arg_key(st, "h", id, NULL);
        arg_str(st, "0");
        arg_str(st, "-1");
    }
    return args_send(st);
}

static cw_err_t build_reads(cw_state_t *st, size_t i, void *vctx) {
    const reads_ctx_t *ctx = vctx;
    size_t k = i % READ_PER;
    if (k == 0 || k + 1 == READ_PER) {
        args_reset(st);
        arg_str(st, k == 0 ? "MULTI" : "EXEC");
        return args_send(st);
    }
    return build_read_cmd(st, ctx->a[i / READ_PER].account_id, k - 1);
}

/* Evaluate account a from its replies: hash (HGETALL a: its set members
 * are split off into one array of values per set) and hist (LRANGE h). An
 * empty hash is an unknown account (*miss = 1). */
static cw_err_t eval_account(cw_state_t *st, const redisReply *hash, const redisReply *hist,
                             cw_account_state_t *a, unsigned char *miss) {
    const cw_layout_t *l = st->layout;
    size_t used = 0, off_hist, off_set[CW_MAX_SETS], n_set[CW_MAX_SETS] = {0};
    const cw_sv_t *sets[CW_MAX_SETS];
    if (hash->type != REDIS_REPLY_ARRAY || hist->type != REDIS_REPLY_ARRAY ||
        hash->elements % 2 != 0) {
        return CW_ERROR;
    }
    if (hash->elements == 0) {
        *miss = 1; /* unknown (or expired) account */
        return CW_OK;
    }
    if (grow((void **)&st->sv, &st->sv_cap, hash->elements + hist->elements + 1, sizeof(*st->sv)) !=
            0 ||
        grow((void **)&st->sv_set, &st->sv_set_cap, hash->elements / 2, 1) != 0) {
        return CW_ERROR;
    }
    /* the other fields first (name, value pairs), then the history, then
     * each set's member values */
    for (size_t k = 0; k < hash->elements; k += 2) {
        const redisReply *f = hash->element[k], *v = hash->element[k + 1];
        int s;
        st->sv_set[k / 2] = -1;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }
        if ((s = member_field(l, (cw_sv_t){f->str, f->len}, NULL)) >= 0) {
            st->sv_set[k / 2] = (signed char)s; /* placed below */
            n_set[s]++;
            continue;
        }
        st->sv[used++] = (cw_sv_t){f->str, f->len};
        st->sv[used++] = (cw_sv_t){v->str, v->len};
    }
    const size_t n_fields = used / 2;
    off_hist = used;
    for (size_t k = 0; k < hist->elements; k++) {
        const redisReply *e = hist->element[k];
        st->sv[used++] =
            e->type == REDIS_REPLY_STRING ? (cw_sv_t){e->str, e->len} : (cw_sv_t){NULL, 0};
    }
    for (int s = 0; s < l->n_sets; s++) {
        off_set[s] = used;
        used += n_set[s];
        n_set[s] = 0;
    }
    for (size_t k = 0; k < hash->elements; k += 2) {
        const redisReply *v = hash->element[k + 1];
        int s = st->sv_set[k / 2];
        if (s >= 0) {
            st->sv[off_set[s] + n_set[s]++] = (cw_sv_t){v->str, v->len};
        }
    }
    for (int s = 0; s < l->n_sets; s++) {
        sets[s] = st->sv + off_set[s];
    }
    *miss = 0;
    cw_view_eval(l, &st->plan, a->asof_ms, st->sv, n_fields, sets, n_set, st->sv + off_hist,
                 hist->elements, a);
    /* cw_view_eval took partition from the hash's "p": a caller that reads
     * for a partition of its own (cw_state_due) sets partition after */
    a->home_partition =
        a->partition >= 0 && a->partition < CW_STATE_MAX_PARTITIONS ? a->partition : -1;
    return CW_OK;
}

static cw_err_t reply_reads(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const reads_ctx_t *ctx = vctx;
    size_t acct = i / READ_PER, k = i % READ_PER;
    if (k + 1 < READ_PER) {
        return CW_OK; /* +OK / +QUEUED */
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != READ_CMDS) {
        return CW_ERROR; /* nil EXEC (aborted) or a short reply */
    }
    for (size_t x = 0; x < r->elements; x++) {
        if (r->element[x]->type == REDIS_REPLY_ERROR) {
            return reply_error(r->element[x], "read");
        }
    }
    return eval_account(st, r->element[0], r->element[1], &ctx->a[acct], &st->read_miss[acct]);
}

static cw_err_t reply_ignore(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
    (void)st;
    (void)i;
    (void)r;
    (void)ctx;
    return CW_OK;
}

/*
 * Read a[0..n) as of each a[i].asof_ms (account_id, due_ms, asof_ms set by
 * the caller) in one pipeline. st->read_miss[i] = 1 marks an account that
 * does not exist (a[i] is then left as it was).
 */
static cw_err_t read_accounts(cw_state_t *st, cw_account_state_t *a, size_t n, const char *what) {
    reads_ctx_t ctx = {a};
    if (n == 0) {
        return CW_OK;
    }
    if (st->pre_watch) {
        /* a WATCH left on by a due scan would abort these EXECs if its
         * fence moved: end it first */
        cw_err_t err;
        args_reset(st);
        arg_str(st, "UNWATCH");
        if ((err = pipe_run(st, 1, build_prepared, reply_ignore, NULL, what)) != CW_OK) {
            return err;
        }
        st->pre_watch = 0;
    }
    if (grow((void **)&st->read_miss, &st->read_miss_cap, n, 1) != 0) {
        return CW_ERROR;
    }
    memset(st->read_miss, 1, n);
    return pipe_run(st, n * READ_PER, build_reads, reply_reads, &ctx, what);
}

/* ---- lifecycle ---- */

cw_state_t *cw_state_new(const cw_conf_t *conf, const cw_layout_t *layout, char *errstr,
                         size_t errstr_size) {
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
    if (cw_view_plan_build(conf, layout, CW_STATE_SLACK_DAYS, &st->plan, errstr, errstr_size) !=
        0) {
        cw_state_destroy(st);
        return NULL;
    }
    return st;
}

void cw_state_destroy(cw_state_t *st) {
    if (st == NULL) {
        return;
    }
    redisFree(st->c); /* accepts NULL */
    free(st->exec_out);
    free(st->due_out);
    cw_buf_free(&st->abuf);
    free(st->arg_off);
    free(st->arg_len);
    free(st->argv);
    free(st->sv);
    free(st->sv_set);
    free(st->read_miss);
    free(st->ap_grp);
    free(st->ap_mem);
    free(st->ap_cnt);
    free(st->ap_del);
    free(st->ap_cmd);
    free(st->cm_rd);
    free(st->pre_rd);
    held_free(st);
    cw_buf_free(&st->ap_vbuf);
    cw_buf_free(&st->ap_dbuf);
    cw_acache_destroy(st->acache);
    free(st);
}

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

static const char *ev_str(const cw_state_batch_t *b, uint32_t off) {
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
    h = group_hash(ev->account_id, partition);
    idx = (size_t)h & (b->table_size - 1);
    while (b->table[idx] >= 0) {
        const cw_group_t *cand = &b->groups[b->table[idx]];
        if (cand->hash == h && cand->partition == partition &&
            strcmp(ev_str(b, cand->id), ev->account_id) == 0) {
            g = b->table[idx];
            break;
        }
        idx = (idx + 1) & (b->table_size - 1);
    }
    if (g < 0) {
        if (grow((void **)&b->groups, &b->cap_groups, b->n_groups + 1, sizeof(*b->groups)) != 0) {
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

/* ---- apply: WATCH and read, compute in C, MULTI ... EXEC ----
 *
 * One batch is one optimistic transaction over the touched accounts.
 * Phase 1 WATCHes the fence key P:fence:<p> of each partition in the batch
 * (every apply of a partition INCRs it in its transaction) and reads what
 * the update needs: HMGET of its facts, attributes, prune marks, the last
 * offset applied from this partition and the day buckets its events add
 * to; HMGET of the set members its events mark; ZSCORE of its timer.
 * Phase 2, only for accounts crossing a prune point, reads the whole set
 * (HGETALL) or the field names (HKEYS) to delete. Phase 3 writes everything
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
 * cw_state_lua.h (it was a Lua script: ~180 us of Redis CPU per account;
 * bench/README.md has the figures). Nothing is allocated per event: the
 * scratch arrays below grow to the largest batch and are reused.
 */

#define AP_NONE INT64_MIN
#define AP_NF 14 /* facts */
static const char *const ap_fact[AP_NF] = {"fm", "lm", "fl", "ll", "kc", "k0", "k1",
                                           "k2", "k3", "k4", "k5", "k6", "k7", "lt"};
enum { AP_FM = 0, AP_LM, AP_FL, AP_LL, AP_KC, AP_K0, AP_LT = AP_K0 + CW_MAX_KEY_FEATURES };
static const char *const ap_attr[4] = {"arr", "sea", "pln", "ren"};
#define AP_PRUNE_SCAN_DAYS 400 /* a counter gap wider than this is pruned via HKEYS */

/* What one command of a phase is for. */
enum {
    AP_WATCH,
    AP_GETF, /* GET of a partition's fence (the apply cache's check) */
    AP_HMGET_A,
    AP_ZSCORE,
    AP_HKEYS,
    AP_HGETALL_A,
    AP_MULTI,
    AP_HDEL_A,
    AP_HSET_A,
    AP_EXPIRE,
    AP_SADD,
    AP_ZADD,
    AP_WMAX,
    AP_FENCE,
    AP_EXEC,
    /* cw_state_commit (and the shared ones above) */
    CM_HMGET_BD,
    CM_LRANGE_H,
    CM_SET_SNAP,
    CM_LSET,
    CM_LPUSH,
    CM_LINSERT,
    CM_RPUSH,
    CM_LTRIM,
    CM_EXPIRE_H,
    CM_BAND_MOVE,
    CM_HSET,
    CM_HDEL,
    CM_ZADD_RISK,
    CM_TIMER_SET,
    CM_TIMER_LT,
    CM_TIMER_DEL,
    CM_OUTBOX
};

typedef struct ap_cmd {
    uint32_t grp; /* group (or partition for AP_WMAX) */
    int16_t kind;
    int16_t sub; /* set index, counter entry, expire key, ... */
} ap_cmd_t;

/* One (set, member) a group's events mark. */
typedef struct ap_mem {
    const char *member; /* in the batch's event copy */
    int set;
    int touched; /* marked by an event within the set's retention */
    int64_t L, M;
} ap_mem_t;

/* One coalesced counter increment: the day bucket's value is read with
 * the account's HMGET (base) and written back as base + amount in its HSET
 * (the fence makes the read-modify-write safe; one HINCRBY per bucket was
 * ~12% of the apply's commands). */
typedef struct ap_cnt {
    int c;
    int64_t day, amount;
    int64_t base; /* the bucket's value read; 0 when absent */
} ap_cnt_t;

/* One field of the account hash to delete (a day bucket, a member, ...). */
typedef struct ap_del {
    uint32_t grp;
    uint32_t off, len; /* in st->ap_dbuf */
} ap_del_t;

typedef struct ap_grp {
    int64_t f[AP_NF];
    unsigned fch; /* facts changed */
    int64_t at[4];
    uint32_t av_off[4], av_len[4]; /* attribute values, in st->ap_vbuf */
    unsigned ach;                  /* attributes changed */
    int32_t mc[CW_MAX_COUNTERS];   /* m:<counter> read; INT32_MIN none */
    int32_t mc_new[CW_MAX_COUNTERS];
    uint32_t mch;                /* m:<counter> changed */
    int32_t ms[CW_MAX_SETS];     /* legacy m:<set> (day of the last prune) read */
    int32_t ns[CW_MAX_SETS];     /* n:<set> read: no member's last day is below it */
    int32_t ns_new[CW_MAX_SETS]; /* n:<set> to write */
    unsigned nsch;               /* n:<set> changed */
    unsigned sprune;             /* sets listed and pruned now (phase 2) */
    int need_keys;
    int64_t last, due, cur, wmin, wmax;
    int64_t base; /* day retention is counted back from (<= cur) */
    int is_new, applied;
    int64_t x;     /* wall day the keys' TTLs were last refreshed ("x"); AP_NONE never */
    int refresh;   /* refresh them now */
    unsigned rq_f; /* facts the read asks for (ap_read_fields) */
    int rq_at;     /* and the attributes */
    uint32_t mem0, n_mem, cnt0, n_cnt, del0, n_del;
    int hit;        /* fixed fields and (if due_known) timer from the cache */
    int stale;      /* ... but the hash's "p" says another partition wrote it */
    int home;       /* the hash's "p" read (-1 none): when it names another partition,
                       this apply moves the account and INCRs that partition's fence too */
    unsigned known; /* facts known before the read (the cache's) */
    int due_known;  /* the timer too: no ZSCORE */
} ap_grp_t;

#define AP_I32_NONE INT32_MIN

/*
 * What the lane's cache (cw_acache) keeps of an account for its next apply:
 * the account hash's fixed fields as Redis holds them after this lane's
 * last transaction on it — the facts read or written (known), the prune
 * marks m:<counter>, m:<set>, n:<set>, x and o:<p> — and its timer. A hit
 * makes the apply's HMGET carry only the day buckets, members, facts not
 * yet known and attributes, and drops its ZSCORE (bench/README.md).
 * Records are trusted while the partition's fence shows no other writer
 * (cw_acache.h) and only on the wall day of their x: the account hash then
 * still exists (its TTL was refreshed that day).
 */
typedef struct ac_rec {
    int64_t f[AP_NF];
    int64_t x, last, due; /* due: AP_NONE none */
    uint32_t known;       /* facts in f */
    int32_t due_known;
    int32_t mark[]; /* mc[n_counters], ms[n_sets], ns[n_sets] */
} ac_rec_t;

static size_t ac_rec_size(const cw_layout_t *l) {
    return sizeof(ac_rec_t) + sizeof(int32_t) * (size_t)(l->n_counters + 2 * l->n_sets);
}

static int64_t ap_day(int64_t ms) {
    return cw_time_day(ms);
}

/* Format v into tmp ("%lld"); returns the length. */
static int ap_fmt(char *tmp, size_t size, int64_t v) {
    return snprintf(tmp, size, "%" PRId64, v);
}

static void ap_arg_field(cw_state_t *st, int64_t day, const char *name) {
    char tmp[32];
    int n = ap_fmt(tmp, sizeof(tmp), day);
    arg_begin(st);
    arg_piece(st, tmp, (size_t)n);
    arg_piece(st, ":", 1);
    arg_piece(st, name, strlen(name));
    arg_end(st);
}

static const char *ap_id(const cw_state_t *st, size_t g) {
    return ev_str(st->bat, st->bat->groups[g].id);
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
    return g->wmin == AP_NONE ? -1 : (ap_day(g->wmin) + 1) * CW_MS_PER_DAY - 1;
}

static int ap_cmd_push(cw_state_t *st, uint32_t grp, int kind, int sub) {
    if (grow((void **)&st->ap_cmd, &st->ap_cmd_cap, st->ap_n_cmd + 1, sizeof(*st->ap_cmd)) != 0) {
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
    if (grow((void **)&st->ap_del, &st->ap_del_cap, st->ap_n_del + 1, sizeof(*st->ap_del)) != 0) {
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
    if (!add ||
        grow((void **)&st->ap_mem, &st->ap_mem_cap, st->ap_n_mem + 1, sizeof(*st->ap_mem)) != 0) {
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
    return ev_str(st->bat, st->layout->sets[set].of_users ? b->user : b->feature);
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
    if (!add ||
        grow((void **)&st->ap_cnt, &st->ap_cnt_cap, st->ap_n_cnt + 1, sizeof(*st->ap_cnt)) != 0) {
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
 * read), each with its GET when the cache needs the value (kind AP_GETF). */
static int ap_push_watches(cw_state_t *st, int with_get) {
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        int p = st->bat->groups[gi].partition;
        if (!st->ap_watched[p]) {
            st->ap_watched[p] = 1;
            if (ap_cmd_push(st, (uint32_t)p, AP_WATCH, 0) ||
                (with_get && ap_cmd_push(st, (uint32_t)p, AP_GETF, 0))) {
                return -1;
            }
        }
    }
    return 0;
}

/* Replies of the cache's fence check: the WATCHes, and the fences' values
 * (nil: never INCRed, 0), which keep or drop each partition's records. */
static cw_err_t ap_reply_fences(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const ap_cmd_t *c = &st->ap_cmd[i];
    int64_t v = 0;
    (void)vctx;
    if (c->kind == AP_WATCH) {
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    }
    if (r->type != REDIS_REPLY_NIL && rep_i64(r, &v) != 0) {
        return CW_ERROR;
    }
    cw_acache_fence_seen(st->acache, (int)c->grp, v);
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
    int64_t today = ap_day(cw_time_now_ms());
    st->ap_n_cmd = 0;
    st->ap_n_mem = 0;
    /* with the cache, the WATCHes went first (ap_run) */
    if (st->acache == NULL && ap_push_watches(st, 0) != 0) {
        return -1;
    }
    /* the partitions that wrote accounts of the batch last, found by the
     * previous read (ap_reply_reads): watched before this read */
    for (int p = 0; p < CW_STATE_MAX_PARTITIONS; p++) {
        if (st->ap_watched[p] == 2) {
            st->ap_watched[p] = 1;
            if (ap_cmd_push(st, (uint32_t)p, AP_WATCH, 0)) {
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
                if (ap_cnt_find(st, g, ops.counter[k], ap_day(ev->ts_ms), 1) == NULL) {
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
        if (ap_cmd_push(st, (uint32_t)gi, AP_HMGET_A, 0)) {
            return -1;
        }
        /* (wall mode sets no timer here: its read back reads it) */
        if (!g->due_known && st->conf->time_mode != CW_TIME_WALL &&
            ap_cmd_push(st, (uint32_t)gi, AP_ZSCORE, 0)) {
            return -1;
        }
    }
    return 0;
}

/* ZSCORE of a timer: *due = its score, AP_NONE for none (nil). */
static cw_err_t rep_timer(const redisReply *r, int64_t *due) {
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
static int tx_shared(cw_state_t *st, int kind, int p, const char *id) {
    if (kind == AP_EXEC) {
        st->pre_watch = 0; /* EXEC ends every WATCH */
    }
    switch (kind) {
    case AP_ZSCORE:
        arg_str(st, "ZSCORE");
        arg_pkey(st, "due", p);
        arg_str(st, id);
        return 1;
    case AP_WATCH:
        /* one fence per partition, not the accounts' keys: WATCH checks a
         * client's watched keys linearly (~90 us a call at 10,000 keys) */
        arg_str(st, "WATCH");
        arg_pkey(st, "fence", p);
        return 1;
    case AP_FENCE:
        arg_str(st, "INCR");
        arg_pkey(st, "fence", p);
        return 1;
    case AP_MULTI:
        arg_str(st, "MULTI");
        return 1;
    case AP_EXEC:
        arg_str(st, "EXEC");
        return 1;
    default:
        return 0;
    }
}

static cw_err_t ap_build(cw_state_t *st, size_t i, void *vctx) {
    const ap_cmd_t *c = &st->ap_cmd[i];
    const cw_layout_t *l = st->layout;
    /* grp is a group index, except for AP_WATCH, AP_WMAX and AP_FENCE (a
     * partition) and AP_MULTI/AP_EXEC (unused) */
    int per_group = c->kind != AP_WATCH && c->kind != AP_GETF && c->kind != AP_WMAX &&
                    c->kind != AP_FENCE && c->kind != AP_MULTI && c->kind != AP_EXEC;
    const ap_grp_t *g = per_group ? &st->ap_grp[c->grp] : NULL;
    const char *id = per_group ? ap_id(st, c->grp) : "";
    int p = per_group ? st->bat->groups[c->grp].partition : (int)c->grp;
    char tmp[64];
    int n;
    (void)vctx;
    args_reset(st);
    if (tx_shared(st, c->kind, p, id)) {
        return args_send(st);
    }
    switch (c->kind) {
    case AP_HMGET_A:
        arg_str(st, "HMGET");
        arg_key(st, "a", id, NULL);
        arg_str(st, "p"); /* the partition of the hash's last apply */
        for (int k = 0; k < AP_NF; k++) {
            if (g->rq_f & (1u << k)) {
                arg_str(st, ap_fact[k]);
            }
        }
        for (int k = 0; g->rq_at && k < 4; k++) {
            arg_str(st, ap_attr[k]);
        }
        for (int k = 0; !g->hit && k < l->n_counters; k++) {
            arg_mark(st, "m:", l->counters[k].name);
        }
        for (int s = 0; !g->hit && s < l->n_sets; s++) {
            arg_mark(st, "m:", l->sets[s].name);
        }
        for (int s = 0; !g->hit && s < l->n_sets; s++) {
            arg_mark(st, "n:", l->sets[s].name);
        }
        if (!g->hit) {
            arg_str(st, "x");
            n = snprintf(tmp, sizeof(tmp), "o:%d", p);
            arg_mem(st, tmp, (size_t)n);
        }
        for (uint32_t x = 0; x < g->n_cnt; x++) {
            const ap_cnt_t *e = &st->ap_cnt[g->cnt0 + x];
            ap_arg_field(st, e->day, l->counters[e->c].name);
        }
        for (uint32_t k = 0; k < g->n_mem; k++) {
            const ap_mem_t *m = &st->ap_mem[g->mem0 + k];
            arg_member(st, m->set, m->member, strlen(m->member));
        }
        break;
    case AP_GETF:
        arg_str(st, "GET");
        arg_pkey(st, "fence", p);
        break;
    case AP_HKEYS:
        arg_str(st, "HKEYS");
        arg_key(st, "a", id, NULL);
        break;
    case AP_HGETALL_A:
        arg_str(st, "HGETALL");
        arg_key(st, "a", id, NULL);
        break;
    case AP_HDEL_A:
        arg_str(st, "HDEL");
        arg_key(st, "a", id, NULL);
        for (uint32_t k = 0; k < g->n_del; k++) {
            const ap_del_t *d = &st->ap_del[g->del0 + k];
            arg_mem(st, st->ap_dbuf.data + d->off, d->len);
        }
        break;
    case AP_HSET_A:
        arg_str(st, "HSET");
        arg_key(st, "a", id, NULL);
        if (!g->hit) { /* a hit read it: this partition already */
            arg_str(st, "p");
            arg_i64(st, p);
        }
        for (uint32_t x = 0; x < g->n_cnt; x++) {
            const ap_cnt_t *e = &st->ap_cnt[g->cnt0 + x];
            if (e->amount != 0) {
                ap_arg_field(st, e->day, l->counters[e->c].name);
                arg_i64(st, e->base + e->amount);
            }
        }
        n = snprintf(tmp, sizeof(tmp), "o:%d", p);
        arg_mem(st, tmp, (size_t)n);
        arg_i64(st, g->last);
        for (int k = 0; k < AP_NF; k++) {
            if (g->fch & (1u << k)) {
                arg_str(st, ap_fact[k]);
                arg_i64(st, g->f[k]);
            }
        }
        for (int k = 0; k < 4; k++) {
            if (g->ach & (1u << k)) {
                arg_str(st, ap_attr[k]);
                n = ap_fmt(tmp, sizeof(tmp), g->at[k]);
                arg_begin(st);
                arg_piece(st, tmp, (size_t)n);
                arg_piece(st, ",", 1);
                arg_piece(st, st->ap_vbuf.data + g->av_off[k], g->av_len[k]);
                arg_end(st);
            }
        }
        for (int k = 0; k < l->n_counters; k++) {
            if (g->mch & (1u << k)) {
                arg_mark(st, "m:", l->counters[k].name);
                arg_i64(st, g->mc_new[k]);
            }
        }
        for (int s = 0; s < l->n_sets; s++) {
            if (g->nsch & (1u << s)) {
                arg_mark(st, "n:", l->sets[s].name);
                arg_i64(st, g->ns_new[s]);
            }
        }
        if (g->refresh) {
            arg_str(st, "x");
            arg_i64(st, ap_day(st->ap_now));
        }
        for (uint32_t k = 0; k < g->n_mem; k++) {
            const ap_mem_t *m = &st->ap_mem[g->mem0 + k];
            if (m->touched) {
                arg_member(st, m->set, m->member, strlen(m->member));
                n = snprintf(tmp, sizeof(tmp), "%" PRId64 ",%" PRId64, m->L, m->M);
                arg_mem(st, tmp, (size_t)n);
            }
        }
        break;
    case AP_EXPIRE:
        arg_str(st, "EXPIRE");
        if (c->sub == -1) {
            arg_key(st, "a", id, NULL);
        } else if (c->sub == -2) {
            arg_key(st, "h", id, NULL);
        } else {
            arg_key(st, "snap", id, NULL);
        }
        arg_i64(st, (int64_t)(st->plan.max_retention + 2) * 86400);
        break;
    case AP_SADD:
        arg_str(st, "SADD");
        arg_key(st, "accounts", NULL, NULL);
        arg_str(st, id);
        break;
    case AP_ZADD:
        arg_str(st, "ZADD");
        arg_pkey(st, "due", p);
        arg_str(st, "LT");
        arg_i64(st, ap_timer(st, g));
        arg_str(st, id);
        break;
    case AP_WMAX:
        /* EVAL, not EVALSHA: inside MULTI a NOSCRIPT would fail alone */
        arg_str(st, "EVAL");
        arg_str(st, CW_LUA_WMAX);
        arg_str(st, "1");
        arg_key(st, "wm", NULL, NULL);
        arg_i64(st, p);
        arg_i64(st, st->ap_wmax[p]);
        break;
    default:
        return CW_ERROR;
    }
    return args_send(st);
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
static int rep_band(const redisReply *r) {
    int64_t v = ap_rep_i64(r);
    return v == AP_NONE || v < 0 || v > 1000 ? -1 : (int)v;
}

/* The as-of of a history entry "<asof_ms>,<score>" (an element of LRANGE
 * h): AP_NONE for none. */
static int64_t rep_hist_asof(const redisReply *r) {
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
    if (c->kind == AP_WATCH) {
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
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
        g->home = rep_partition(r->element[e++]);
        if (g->home >= 0 && !st->ap_watched[g->home]) {
            /* written last by another partition's apply, whose fence is
             * not watched: watch it and read again (ap_run), so that this
             * apply and one of that partition are serialized */
            st->ap_watched[g->home] = 2;
            st->ap_stale = 1;
        }
        if (g->hit && g->home != st->bat->groups[c->grp].partition) {
            /* another partition's apply wrote the hash since (an account
             * on two partitions; the pipeline applies them in turn), or it
             * is gone: the record is stale (ap_run reads again) */
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
        return rep_timer(r, &g->due);
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
    g->refresh = g->is_new || g->x == AP_NONE || g->x < ap_day(now);
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
                    n = ap_fmt(tmp, sizeof(tmp), ev->seats);
                } else if (k == 3 && ev->renewal_ms >= 0) {
                    n = ap_fmt(tmp, sizeof(tmp), ev->renewal_ms);
                }
                const char *plan = ev_str(st->bat, ev->plan);
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
                 ? ap_day(now)
                 : ap_day(g->f[AP_LM] != AP_NONE ? g->f[AP_LM] : g->wmax);
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
            if (!st->bat->evs[e].skip && ap_day(ts) >= lim &&
                (g->wmin == AP_NONE || ts < g->wmin)) {
                g->wmin = ts;
            }
        }
        if (g->wmin != AP_NONE) {
            int64_t timer = (ap_day(g->wmin) + 1) * CW_MS_PER_DAY - 1;
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
        if (due != AP_NONE && ap_day(due) < g->cur) {
            g->base = ap_day(due);
        }
    }
    /* counters (coalesced per day and counter) and set masks, in event order */
    for (int32_t e = st->bat->groups[gi].head; e >= 0; e = st->bat->evs[e].next) {
        const cw_bev_t *ev = &st->bat->evs[e];
        int64_t d = ap_day(ev->ts_ms);
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
                    char name[CW_KEYNAME_MAX + 24];
                    int nn = snprintf(name, sizeof(name), "%" PRId64 ":%s", d, l->counters[c].name);
                    if (ap_del_push(st, (uint32_t)gi, name, (size_t)nn) != 0) {
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
    ap_grp_t *g = &st->ap_grp[c->grp];
    (void)vctx;
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
            (s = member_field(l, (cw_sv_t){f->str, f->len}, &mem)) < 0 || !((g->sprune >> s) & 1)) {
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
static cw_err_t ap_reply_writes(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
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
            return reply_error(r->element[k], "apply");
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
    unsigned char moved[CW_STATE_MAX_PARTITIONS] = {0}; /* fences INCRed for moves */
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
    st->ap_n_cmd = 0;
    if (ap_cmd_push(st, 0, AP_MULTI, 0)) {
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
        if ((g->n_del > 0 && ap_cmd_push(st, gg, AP_HDEL_A, 0)) ||
            ap_cmd_push(st, gg, AP_HSET_A, 0) ||
            (g->refresh &&
             (ap_cmd_push(st, gg, AP_EXPIRE, -1) || ap_cmd_push(st, gg, AP_EXPIRE, -2) ||
              ap_cmd_push(st, gg, AP_EXPIRE, -3)))) {
            return -1;
        }
        /* ZADD LT only when it moves the timer: an account whose timer is
         * already at or before this apply's (most applies of a day) is left
         * alone; the fence guarantees the timer read is still current */
        if ((g->is_new && ap_cmd_push(st, gg, AP_SADD, 0)) ||
            (ap_timer(st, g) >= 0 && (g->due == AP_NONE || ap_timer(st, g) < g->due) &&
             ap_cmd_push(st, gg, AP_ZADD, 0))) {
            return -1;
        }
        {
            int p = st->bat->groups[gi].partition;
            if (st->ap_wmax[p] == AP_NONE && (ap_cmd_push(st, (uint32_t)p, AP_WMAX, 0) ||
                                              ap_cmd_push(st, (uint32_t)p, AP_FENCE, 0))) {
                return -1;
            }
            /* the account moves here from partition home: a decision read
             * there (and watching home's fence) must see that (cw_state_commit) */
            if (g->home >= 0 && g->home != p && !moved[g->home]) {
                moved[g->home] = 1;
                if (ap_cmd_push(st, (uint32_t)g->home, AP_FENCE, 0)) {
                    return -1;
                }
            }
            st->ap_wmax[p] =
                st->ap_wmax[p] == AP_NONE || g->wmax > st->ap_wmax[p] ? g->wmax : st->ap_wmax[p];
        }
    }
    return ap_cmd_push(st, 0, AP_EXEC, 0);
}

/* One attempt at the whole batch; *aborted = 1 when EXEC was aborted. */
/* Group g's timer after its apply (ZADD LT): AP_NONE for none. */
static int64_t ap_due_after(const cw_state_t *st, const ap_grp_t *g) {
    int64_t timer = ap_timer(st, g);
    if (g->due == AP_NONE) {
        return timer >= 0 ? timer : AP_NONE;
    }
    return timer >= 0 && timer < g->due ? timer : g->due;
}

/* Reads under WATCH (cw_state_due, and the wall-mode read back). */
typedef struct wreads_ctx {
    int partition;
    int64_t upto; /* scan: timers due at or before this */
    size_t max;   /* scan: at most this many */
    /* the watched reads: accounts a[] (due_out, or exec_out for a wall-mode
     * read back), per commands each (READ_CMDS; READ_CMDS + 1 when each
     * starts with the ZSCORE of its timer in its batch group's partition),
     * after n_watch WATCHes of the fences of watch[] */
    cw_account_state_t *a;
    size_t per, n_watch;
    const int *watch;
} wreads_ctx_t;

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
 * read back of its accounts (read_back_*, below). */
typedef struct ap_write_ctx {
    size_t n_tx;      /* the transaction's commands (st->ap_cmd) */
    wreads_ctx_t *rb; /* then these reads; NULL in event mode */
    int exec_ok;      /* the EXEC ran (not aborted, no error): the reads count */
} ap_write_ctx_t;

static size_t read_back_plan(cw_state_t *st, wreads_ctx_t *ctx, int *watch);
static void hist_locate(const redisReply *hist, int64_t asof, cm_read_t *rd);
static void read_back_done(cw_state_t *st);
static cw_err_t build_wreads(cw_state_t *st, size_t i, void *vctx);
static cw_err_t reply_wreads(cw_state_t *st, size_t i, const redisReply *r, void *vctx);

static cw_err_t ap_build_write(cw_state_t *st, size_t i, void *vctx) {
    const ap_write_ctx_t *w = vctx;
    return i < w->n_tx ? ap_build(st, i, NULL) : build_wreads(st, i - w->n_tx, w->rb);
}

static cw_err_t ap_reply_write(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    ap_write_ctx_t *w = vctx;
    if (i < w->n_tx) {
        cw_err_t err = ap_reply_writes(st, i, r, NULL);
        if (st->ap_cmd[i].kind == AP_EXEC) {
            w->exec_ok = err == CW_OK && !st->tx_aborted;
        }
        return err;
    }
    /* after an aborted EXEC the reads are of no use (the apply runs again) */
    return w->exec_ok ? reply_wreads(st, i - w->n_tx, r, w->rb) : CW_OK;
}

static cw_err_t ap_run(cw_state_t *st, int *aborted) {
    cw_err_t err;
    size_t n_prune = 0;
    *aborted = 0;
    if (grow((void **)&st->ap_grp, &st->ap_grp_cap, st->bat->n_groups, sizeof(*st->ap_grp)) != 0) {
        return CW_ERROR;
    }
    memset(st->ap_watched, 0, sizeof(st->ap_watched));
    do {
        st->ap_n_cnt = 0;
        st->ap_n_del = 0;
        st->ap_stale = 0;
        cw_buf_reset(&st->ap_vbuf);
        cw_buf_reset(&st->ap_dbuf);
        if (st->acache != NULL) {
            /* the fences first: the cache's records are used only if they
             * have not moved (one round trip per batch) */
            st->ap_n_cmd = 0;
            if (ap_push_watches(st, 1) != 0) {
                return CW_ERROR;
            }
            /* (a second read of the batch keeps the first one's) */
            err = st->ap_n_cmd == 0
                      ? CW_OK
                      : pipe_run(st, st->ap_n_cmd, ap_build, ap_reply_fences, NULL, "apply fences");
            if (err != CW_OK) {
                return err;
            }
        }
        if (ap_plan_reads(st) != 0) {
            return CW_ERROR;
        }
        err = pipe_run(st, st->ap_n_cmd, ap_build, ap_reply_reads, NULL, "apply read");
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
    st->ap_now = cw_time_now_ms();
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        if (ap_compute(st, gi, st->ap_now) != 0) {
            return CW_ERROR;
        }
    }
    /* phase 2: what must be listed before it can be pruned */
    st->ap_n_cmd = 0;
    for (size_t gi = 0; gi < st->bat->n_groups; gi++) {
        const ap_grp_t *g = &st->ap_grp[gi];
        if (g->applied == 0) {
            continue;
        }
        if (g->need_keys && ap_cmd_push(st, (uint32_t)gi, AP_HKEYS, 0)) {
            return CW_ERROR;
        }
        if (g->sprune != 0 && ap_cmd_push(st, (uint32_t)gi, AP_HGETALL_A, 0)) {
            return CW_ERROR;
        }
    }
    n_prune = st->ap_n_cmd;
    if (n_prune > 0) {
        err = pipe_run(st, n_prune, ap_build, ap_reply_prune, NULL, "apply prune");
        if (err != CW_OK) {
            return err;
        }
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
        n += read_back_plan(st, &rb, watch);
        if (n == st->ap_n_cmd) {
            return CW_ERROR;
        }
    }
    st->tx_aborted = 0;
    err = pipe_run(st, n, ap_build_write, ap_reply_write, &w, "apply write");
    held_free(st);
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
        r->x = g->applied > 0 && g->refresh ? ap_day(st->ap_now) : g->x;
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
    if (grow((void **)&st->exec_out, &st->exec_cap, st->bat->n_groups, sizeof(*st->exec_out)) !=
        0) {
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
            drop(st, err != CW_OK ? "apply failed" : "apply aborted");
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
        read_back_done(st);
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

/* HMGET a p lm → {partition, last event ms} (-1 each when absent). */
static cw_err_t reply_plm(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    int64_t *plm = vctx;
    (void)st;
    (void)i;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        return CW_ERROR;
    }
    for (size_t k = 0; k < 2; k++) {
        if (rep_i64(r->element[k], &plm[k]) != 0) {
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
    args_reset(st);
    arg_str(st, "HMGET");
    arg_key(st, "a", account_id, NULL);
    arg_str(st, "p");
    arg_str(st, "lm");
    err = pipe_run(st, 1, build_prepared, reply_plm, plm, "read");
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
    err = read_accounts(st, out, 1, "read");
    if (err != CW_OK) {
        return err;
    }
    return st->read_miss[0] ? CW_NOENT : CW_OK;
}

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
    args_reset(st);
    if (ctx->unwatch && i == 0) {
        arg_str(st, "UNWATCH");
        return args_send(st);
    }
    i -= (size_t)ctx->unwatch;
    const char *id = st->due_out[ctx->idx[i / 3]].account_id;
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
    args_reset(st);
    if (i == 0) {
        arg_str(st, "WATCH");
        arg_pkey(st, "fence", ctx->partition);
        return args_send(st);
    }
    arg_str(st, "ZRANGEBYSCORE");
    arg_pkey(st, "due", ctx->partition);
    arg_str(st, "-inf");
    arg_i64(st, ctx->upto);
    arg_str(st, "LIMIT");
    arg_str(st, "0");
    arg_i64(st, ctx->max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)ctx->max);
    arg_str(st, "WITHSCORES");
    return args_send(st);
}

static cw_err_t reply_due_scan(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    if (i == 0) {
        st->pre_watch = 1; /* on, whatever the scan finds */
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    }
    return reply_due_list(st, i, r, vctx);
}

static cw_err_t build_wreads(cw_state_t *st, size_t i, void *vctx) {
    const wreads_ctx_t *ctx = vctx;
    args_reset(st);
    if (i < ctx->n_watch) {
        tx_shared(st, AP_WATCH, ctx->watch[i], NULL);
        return args_send(st);
    }
    i -= ctx->n_watch;
    size_t acct = i / ctx->per, k = i % ctx->per;
    const char *id = ctx->a[acct].account_id;
    if (ctx->per > READ_CMDS) {
        if (k == 0) {
            tx_shared(st, AP_ZSCORE, st->bat->groups[acct].partition, id);
            return args_send(st);
        }
        k--;
    }
    return build_read_cmd(st, id, k);
}

/* Replies of build_wreads: held until an account's last one arrives. */
static cw_err_t reply_wreads(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const wreads_ctx_t *ctx = vctx;
    if (i < ctx->n_watch) {
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    }
    i -= ctx->n_watch;
    size_t acct = i / ctx->per, k = i % ctx->per;
    if (k == 0) {
        held_free(st); /* an account whose replies were short (an error reply) */
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
        } else if (rep_timer(st->held[0], &rd->due) != CW_OK) {
            held_free(st);
            return CW_ERROR;
        }
        err = eval_account(st, hash, hist, &ctx->a[acct], &st->read_miss[acct]);
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
                rd->band = rep_band(hash->element[f + 1]);
            }
        }
        hist_locate(hist, ctx->a[acct].asof_ms, rd); /* LRANGE 0 -1: all of it */
    }
    held_free(st);
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
    err = pipe_run(st, 2, build_due_scan, reply_due_scan, &wctx, "due");
    if (err != CW_OK || st->n_due == 0) {
        return err;
    }
    for (size_t i = 0; i < st->n_due; i++) {
        cw_account_state_t *a = &st->due_out[i];
        a->asof_ms = st->conf->time_mode == CW_TIME_WALL ? now : a->due_ms;
    }
    if (grow((void **)&st->read_miss, &st->read_miss_cap, st->n_due, 1) != 0 ||
        grow((void **)&st->pre_rd, &st->pre_rd_cap, st->n_due, sizeof(*st->pre_rd)) != 0) {
        return CW_ERROR;
    }
    memset(st->read_miss, 1, st->n_due);
    st->pre_watch = 0;
    wctx.a = st->due_out;
    err = pipe_run(st, st->n_due * READ_CMDS, build_wreads, reply_wreads, &wctx, "due read");
    held_free(st);
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
        err = pipe_run(st, 3 * n_gone + (size_t)gctx.unwatch, build_due_gone, reply_ignore, &gctx,
                       "due cleanup");
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
static size_t read_back_plan(cw_state_t *st, wreads_ctx_t *ctx, int *watch) {
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
    if (grow((void **)&st->read_miss, &st->read_miss_cap, n, 1) != 0 ||
        grow((void **)&st->pre_rd, &st->pre_rd_cap, n, sizeof(*st->pre_rd)) != 0) {
        return 0;
    }
    memset(st->read_miss, 1, n);
    *ctx = (wreads_ctx_t){-1, 0, 0, st->exec_out, READ_CMDS + 1, n_watch, watch};
    st->pre_watch = 0;
    st->n_pre = 0;
    return n_watch + n * (READ_CMDS + 1);
}

/* After the apply (and its read back) succeeded: the WATCH is on. */
static void read_back_done(cw_state_t *st) {
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
static void hist_locate(const redisReply *hist, int64_t asof, cm_read_t *rd) {
    size_t n = hist->elements;
    rd->top = n > 0 ? rep_hist_asof(hist->element[0]) : AP_NONE;
    rd->hlen = (int64_t)n;
    rd->hpos = (int)n;
    rd->hsame = 0;
    rd->hpivot[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        const redisReply *e = hist->element[k];
        int64_t at = rep_hist_asof(e);
        if (at == AP_NONE || ap_day(at) > ap_day(asof)) {
            continue;
        }
        rd->hpos = (int)k;
        rd->hsame = ap_day(at) == ap_day(asof);
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

/* The stored form of a score ("%.15g"), into tmp; its length. */
static int score_str(double score, char *tmp, size_t size) {
    return snprintf(tmp, size, "%.15g", score);
}

/* 1 when c's account has a stored score and it is c's, as stored. */
static int cm_same_score(const cw_commit_t *c) {
    char x[40], y[40];
    if (!c->acct->has_score) {
        return 0;
    }
    score_str(c->score, x, sizeof(x));
    score_str(c->acct->score, y, sizeof(y));
    return strcmp(x, y) == 0;
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
    args_reset(st);
    if (tx_shared(st, cmd->kind, p, id)) {
        return args_send(st);
    }
    switch (cmd->kind) {
    case CM_HMGET_BD:
        arg_str(st, "HMGET");
        arg_key(st, "a", id, NULL);
        arg_str(st, "bd");
        arg_str(st, "p");
        arg_str(st, "sc");
        break;
    case CM_LRANGE_H:
        arg_str(st, "LRANGE");
        arg_key(st, "h", id, NULL);
        arg_str(st, "0");
        arg_str(st, "-1");
        break;
    case CM_SET_SNAP:
        arg_str(st, "SET");
        arg_key(st, "snap", id, NULL);
        arg_str(st, c->snapshot_json);
        arg_str(st, "EX");
        arg_i64(st, (int64_t)(st->plan.max_retention + 2) * 86400);
        break;
    case CM_LSET:
    case CM_LPUSH:
    case CM_LINSERT:
    case CM_RPUSH:
        arg_str(st, cmd->kind == CM_LSET      ? "LSET"
                    : cmd->kind == CM_LPUSH   ? "LPUSH"
                    : cmd->kind == CM_LINSERT ? "LINSERT"
                                              : "RPUSH");
        arg_key(st, "h", id, NULL);
        if (cmd->kind == CM_LSET) {
            arg_i64(st, st->cm_rd[cmd->grp].hpos);
        } else if (cmd->kind == CM_LINSERT) {
            arg_str(st, "BEFORE");
            arg_str(st, st->cm_rd[cmd->grp].hpivot);
        }
        n = ap_fmt(tmp, sizeof(tmp), a->asof_ms);
        arg_begin(st);
        arg_piece(st, tmp, (size_t)n);
        arg_piece(st, ",", 1);
        n = score_str(c->score, tmp, sizeof(tmp));
        arg_piece(st, tmp, (size_t)n);
        arg_end(st);
        break;
    case CM_LTRIM:
        arg_str(st, "LTRIM");
        arg_key(st, "h", id, NULL);
        arg_str(st, "0");
        arg_i64(st, hist_cap(st) - 1);
        break;
    case CM_EXPIRE_H:
        arg_str(st, "EXPIRE");
        arg_key(st, "h", id, NULL);
        arg_i64(st, (int64_t)(st->plan.max_retention + 2) * 86400);
        break;
    case CM_BAND_MOVE:
        arg_str(st, "HINCRBY");
        arg_key(st, "bands", NULL, NULL);
        arg_i64(st, cmd->sub >= 0 ? c->band : -cmd->sub - 1); /* sub < 0: the old band */
        arg_str(st, cmd->sub >= 0 ? "1" : "-1");
        break;
    case CM_HSET:
        arg_str(st, "HSET");
        arg_key(st, "a", id, NULL);
        arg_str(st, "sc");
        n = score_str(c->score, tmp, sizeof(tmp));
        arg_mem(st, tmp, (size_t)n);
        arg_str(st, "bd");
        arg_i64(st, c->band);
        arg_str(st, "ti");
        arg_i64(st, c->tier);
        arg_str(st, "ph");
        arg_i64(st, c->phase);
        arg_str(st, "am");
        arg_i64(st, c->active_mask);
        for (int r = 0; r < CW_REASON__COUNT; r++) {
            if (c->last_alert_ms != NULL && c->last_alert_ms[r] >= 0) {
                n = snprintf(tmp, sizeof(tmp), "a%d", r);
                arg_mem(st, tmp, (size_t)n);
                arg_i64(st, c->last_alert_ms[r]);
            }
        }
        if (c->last_alert_id != NULL && c->last_alert_id[0] != '\0') {
            arg_str(st, "lid");
            arg_str(st, c->last_alert_id);
        }
        break;
    case CM_HDEL:
        arg_str(st, "HDEL");
        arg_key(st, "a", id, NULL);
        for (int r = 0; r < CW_REASON__COUNT; r++) {
            if (cm_alert_gone(c, r)) {
                n = snprintf(tmp, sizeof(tmp), "a%d", r);
                arg_mem(st, tmp, (size_t)n);
            }
        }
        break;
    case CM_ZADD_RISK:
        arg_str(st, "ZADD");
        arg_key(st, "atrisk", NULL, NULL);
        n = score_str(c->score, tmp, sizeof(tmp));
        arg_mem(st, tmp, (size_t)n);
        arg_str(st, id);
        break;
    case CM_TIMER_SET:
    case CM_TIMER_LT:
        arg_str(st, "ZADD");
        arg_pkey(st, "due", p);
        if (cmd->kind == CM_TIMER_LT) {
            arg_str(st, "LT");
        }
        arg_i64(st, c->next_due_ms);
        arg_str(st, id);
        break;
    case CM_TIMER_DEL:
        arg_str(st, "ZREM");
        arg_pkey(st, "due", p);
        arg_str(st, id);
        break;
    case CM_OUTBOX:
        arg_str(st, "HSET");
        arg_pkey(st, "outbox", p);
        arg_str(st, c->alert_ids[cmd->sub]);
        arg_str(st, c->alert_json[cmd->sub]);
        break;
    default:
        return CW_ERROR;
    }
    return args_send(st);
}

static cw_err_t cm_reply_reads(cw_state_t *st, size_t i, const redisReply *r, void *vctx) {
    const ap_cmd_t *cmd = &st->ap_cmd[i];
    cm_read_t *rd = &st->cm_rd[cmd->grp];
    switch (cmd->kind) {
    case AP_WATCH:
        return r->type == REDIS_REPLY_STATUS ? CW_OK : CW_ERROR;
    case AP_ZSCORE:
        return rep_timer(r, &rd->due);
    case CM_HMGET_BD: {
        const cw_commit_t *c = &((const cw_commit_t *)vctx)[cmd->grp];
        const redisReply *sc;
        char tmp[40];
        int home;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
            return CW_ERROR;
        }
        sc = r->element[2];
        rd->same_score = sc->type == REDIS_REPLY_STRING &&
                         sc->len == (size_t)score_str(c->score, tmp, sizeof(tmp)) &&
                         memcmp(sc->str, tmp, sc->len) == 0;
        rd->band = rep_band(r->element[0]);
        home = rep_partition(r->element[1]);
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
        hist_locate(r, ((const cw_commit_t *)vctx)[cmd->grp].acct->asof_ms, rd);
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
    if (ap_cmd_push(st, 0, AP_MULTI, 0)) {
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
                if (ap_cmd_push(st, k, CM_SET_SNAP, 0) || (op >= 0 && ap_cmd_push(st, k, op, 0)) ||
                    ((op == CM_LPUSH || op == CM_LINSERT) && hist_trim(st, rd) &&
                     ap_cmd_push(st, k, CM_LTRIM, 0)) ||
                    (rd->hlen == 0 && ap_cmd_push(st, k, CM_EXPIRE_H, 0))) {
                    return -1;
                }
            }
            if (rd->band != c->band &&
                ((rd->band >= 0 && ap_cmd_push(st, k, CM_BAND_MOVE, -rd->band - 1)) ||
                 ap_cmd_push(st, k, CM_BAND_MOVE, 0))) {
                return -1;
            }
            for (int r = 0; r < CW_REASON__COUNT; r++) {
                ndel += cm_alert_gone(c, r);
            }
            if (ap_cmd_push(st, k, CM_HSET, 0) || (ndel > 0 && ap_cmd_push(st, k, CM_HDEL, 0)) ||
                (!rd->same_score && ap_cmd_push(st, k, CM_ZADD_RISK, 0))) {
                return -1;
            }
        }
        /* the timer */
        {
            int op = cm_timer_op(rd, c);
            if (op >= 0 && ap_cmd_push(st, k, op, 0)) {
                return -1;
            }
        }
        if (!rd->timer_only) {
            int na = c->n_alerts < 0                  ? 0
                     : c->n_alerts > CW_REASON__COUNT ? CW_REASON__COUNT
                                                      : c->n_alerts;
            for (int x = 0; x < na; x++) {
                if (ap_cmd_push(st, k, CM_OUTBOX, x)) {
                    return -1;
                }
            }
        }
        if (!seen[p]) {
            seen[p] = 1;
            if (ap_cmd_push(st, (uint32_t)p, AP_FENCE, 0)) {
                return -1;
            }
        }
        if (rd->home >= 0 && !seen[rd->home]) {
            seen[rd->home] = 1;
            if (ap_cmd_push(st, (uint32_t)rd->home, AP_FENCE, 0)) {
                return -1;
            }
        }
    }
    return ap_cmd_push(st, 0, AP_EXEC, 0);
}

static cw_err_t cm_run(cw_state_t *st, const cw_commit_t *commits, size_t n, int *aborted) {
    cw_err_t err;
    *aborted = 0;
    if (grow((void **)&st->cm_rd, &st->cm_rd_cap, n, sizeof(*st->cm_rd)) != 0) {
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
                    if (ap_cmd_push(st, (uint32_t)ps[j], AP_WATCH, 0)) {
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
            rd->top = AP_NONE;
            rd->hlen = -1;
            rd->hpos = 0;
            rd->hsame = 0;
            rd->same_score = 0;
            if (ap_cmd_push(st, k, AP_ZSCORE, 0) ||
                (!rd->timer_only && ap_cmd_push(st, k, CM_HMGET_BD, 0)) ||
                (!rd->timer_only && c->snapshot_json != NULL &&
                 ap_cmd_push(st, k, CM_LRANGE_H, 0))) {
                return CW_ERROR;
            }
        }
        st->cm_rewatch = 0;
        err = pipe_run(st, st->ap_n_cmd, cm_build, cm_reply_reads, (void *)commits, "commit read");
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
    err = pipe_run(st, st->ap_n_cmd, cm_build, ap_reply_writes, (void *)commits, "commit");
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
    if (grow((void **)&st->cm_rd, &st->cm_rd_cap, n, sizeof(*st->cm_rd)) != 0) {
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
        err = pipe_run(st, st->ap_n_cmd, cm_build, ap_reply_writes, (void *)commits, "commit");
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
            drop(st, err != CW_OK ? "commit failed" : "commit aborted");
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

/* ---- migration from the layout with set keys (P:s:{id}:<set>) ---- */

/* n replies of commands already appended; each freed unless kept in out[]
 * (out may be NULL). CW_RETRY on a lost connection, CW_ERROR on an error
 * reply. */
static cw_err_t mg_replies(cw_state_t *st, size_t n, redisReply **out, const char *what) {
    cw_err_t worst = CW_OK;
    for (size_t k = 0; k < n; k++) {
        void *v = NULL;
        if (redisGetReply(st->c, &v) != REDIS_OK || v == NULL) {
            drop(st, what);
            return CW_RETRY;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR && worst == CW_OK) {
            worst = reply_error(r, what);
        }
        if (out != NULL) {
            out[k] = r;
        } else {
            freeReplyObject(r);
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
        args_reset(st);
        arg_str(st, "EXISTS");
        arg_key(st, "a", idbuf, NULL);
        if ((err = args_send(st)) != CW_OK) {
            return err;
        }
        args_reset(st);
        arg_str(st, "HGETALL");
        arg_mem(st, key, len);
        if ((err = args_send(st)) != CW_OK) {
            return err;
        }
        err = mg_replies(st, 2, rep, "migrate read");
        if (err == CW_OK && rep[0]->type == REDIS_REPLY_INTEGER && rep[0]->integer > 0 &&
            rep[1]->type == REDIS_REPLY_ARRAY) {
            /* the members (not the TTL mark "" of 22a750b) into the hash,
             * which has its own TTL */
            args_reset(st);
            arg_str(st, "HSET");
            arg_key(st, "a", idbuf, NULL);
            for (size_t k = 0; k + 1 < rep[1]->elements; k += 2) {
                const redisReply *f = rep[1]->element[k], *v = rep[1]->element[k + 1];
                if (f->type == REDIS_REPLY_STRING && f->len > 0 && v->type == REDIS_REPLY_STRING) {
                    arg_member(st, set, f->str, f->len);
                    arg_mem(st, v->str, v->len);
                }
            }
            if (st->argc > 2) {
                err = args_send(st);
                n++;
            }
        }
        freeReplyObject(rep[0]);
        freeReplyObject(rep[1]);
        if (err != CW_OK) {
            return err;
        }
    }
    args_reset(st);
    arg_str(st, "DEL");
    arg_mem(st, key, len);
    if ((err = args_send(st)) != CW_OK || (err = mg_replies(st, n + 1, NULL, "migrate")) != CW_OK) {
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
        if ((err = cmd_strs(st, "migrate scan", &r, "SCAN", cursor, "MATCH", match, "COUNT", "1000",
                            NULL)) != CW_OK) {
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
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
        freeReplyObject(r);
    } while (err == CW_OK && strcmp(cursor, "0") != 0);
    if (err == CW_OK) {
        err = cmd_strs(st, "migrate", &r, "SET", plain_key(st, "layout", lkey, sizeof(lkey)),
                       CW_STATE_LAYOUT, NULL);
        freeReplyObject(r);
    }
    if (err != CW_OK) {
        snprintf(errstr, errstr_size,
                 "migration stopped after %" PRIu64 " set keys (run it again to resume)",
                 *keys_out);
    }
    return err;
}
