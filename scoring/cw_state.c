/*
 * cw_state.c — the per-account state in Redis (see cw_state.h for the key
 * layout, the failure model and ownership): the connection, command
 * arguments, the pipeline, account reads and lifecycle. The other parts are
 * in cw_state_*.c (the list is in cw_state_int.h).
 *
 * Plain commands only, computed in C: the apply of a batch and the commit
 * of a chunk of decisions are each one optimistic transaction (WATCH of a
 * fence key per partition, reads, MULTI ... EXEC; see cw_state_apply.c
 * and cw_state_commit.c), and an account read is HGETALL of its hash (set members
 * included) and LRANGE of its history in one MULTI/EXEC, evaluated by
 * cw_view. This used to be Lua scripts; the Lua VM cost Redis several times
 * the CPU of the commands themselves, and Redis CPU is the throughput
 * bottleneck (bench/README.md). No script is left
 * (cw_state_int.h: "Stored formats").
 *
 * Round trips: a batch is one pipeline — every command is written in RESP
 * (binary-safe keys) and appended, then every reply is read; replies are
 * built in an arena of the connection, not with a calloc per element.
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
#include "cw_state_int.h"

/* ---- small helpers ---- */

/* Grow *p (elements of elsz bytes) to hold at least need; 0 or -1. */
int cw_st_grow(void **p, size_t *cap, size_t need, size_t elsz) {
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

uint64_t cw_st_group_hash(const char *id, int partition) {
    return cw_hash_account(id, strlen(id), partition);
}

/* Integer from an INTEGER or STRING reply; -1 when neither parses. */
int cw_st_rep_i64(const redisReply *r, int64_t *out) {
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

int cw_st_rep_dbl(const redisReply *r, double *out) {
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
int cw_st_rep_partition(const redisReply *r) {
    int64_t v;
    return cw_st_rep_i64(r, &v) == 0 && v >= 0 && v < CW_STATE_MAX_PARTITIONS ? (int)v : -1;
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

void cw_st_args_reset(cw_state_t *st) {
    cw_buf_reset(&st->abuf);
    st->argc = 0;
    st->arg_oom = 0;
}

void cw_st_arg_begin(cw_state_t *st) {
    st->arg_start = st->abuf.len;
}

void cw_st_arg_piece(cw_state_t *st, const void *p, size_t n) {
    cw_buf_append(&st->abuf, p, n);
}

void cw_st_arg_end(cw_state_t *st) {
    if (st->argc == st->arg_cap) {
        size_t cap = st->arg_cap;
        size_t cap2 = st->arg_cap;
        if (cw_st_grow((void **)&st->arg_off, &cap, st->argc + 1, sizeof(*st->arg_off)) != 0 ||
            cw_st_grow((void **)&st->arg_len, &cap2, st->argc + 1, sizeof(*st->arg_len)) != 0) {
            st->arg_oom = 1;
            return;
        }
        st->arg_cap = cap;
    }
    st->arg_off[st->argc] = st->arg_start;
    st->arg_len[st->argc] = st->abuf.len - st->arg_start;
    st->argc++;
}

void cw_st_arg_mem(cw_state_t *st, const void *p, size_t n) {
    cw_st_arg_begin(st);
    cw_st_arg_piece(st, p, n);
    cw_st_arg_end(st);
}

/* A prune-mark field name: prefix ("m:" or "n:") and a counter or set name. */
void cw_st_arg_mark(cw_state_t *st, const char *prefix, const char *name) {
    cw_st_arg_begin(st);
    cw_st_arg_piece(st, prefix, 2);
    cw_st_arg_piece(st, name, strlen(name));
    cw_st_arg_end(st);
}

void cw_st_arg_str(cw_state_t *st, const char *s) {
    cw_st_arg_mem(st, s, strlen(s));
}

/* A distinct-set member's field in the account hash: "s<n>:<set>:<member>",
 * n = the set name's length (feature names, and so set names, may hold any
 * character; the length keeps the field unambiguous). */
void cw_st_arg_member(cw_state_t *st, int set, const char *mem, size_t len) {
    const char *name = st->layout->sets[set].name;
    char pre[2 + CW_I64_MAX_CHARS] = "s";
    size_t nl = strlen(name);
    size_t n = 1 + cw_fmt_i64(pre + 1, (int64_t)nl);
    pre[n++] = ':';
    cw_st_arg_begin(st);
    cw_st_arg_piece(st, pre, n);
    cw_st_arg_piece(st, name, nl);
    cw_st_arg_piece(st, ":", 1);
    cw_st_arg_piece(st, mem, len);
    cw_st_arg_end(st);
}

/* The set of an account-hash field that is a member's (cw_st_arg_member), -1 for
 * any other field; *mem (may be NULL) the member. */
int cw_st_member_field(const cw_layout_t *l, cw_sv_t f, cw_sv_t *mem) {
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

void cw_st_arg_i64(cw_state_t *st, int64_t v) {
    char tmp[CW_I64_MAX_CHARS];
    cw_st_arg_mem(st, tmp, cw_fmt_i64(tmp, v));
}

/* A field named by a tag and a number: "o:<partition>", "a<reason>". */
void cw_st_arg_tagged(cw_state_t *st, const char *tag, int64_t v) {
    char tmp[CW_I64_MAX_CHARS];
    size_t n = cw_fmt_i64(tmp, v);
    cw_st_arg_begin(st);
    cw_st_arg_piece(st, tag, strlen(tag));
    cw_st_arg_piece(st, tmp, n);
    cw_st_arg_end(st);
}

/* "P:<kind>" plus optional "{id}" and suffix: P:a:{id}, P:due:3, P:wm. */
void cw_st_arg_key(cw_state_t *st, const char *kind, const char *id, const char *suffix) {
    const char *prefix = st->conf->redis_key_prefix;
    cw_st_arg_begin(st);
    cw_st_arg_piece(st, prefix, strlen(prefix));
    cw_st_arg_piece(st, ":", 1);
    cw_st_arg_piece(st, kind, strlen(kind));
    if (id != NULL) {
        cw_st_arg_piece(st, ":{", 2);
        cw_st_arg_piece(st, id, strlen(id));
        cw_st_arg_piece(st, "}", 1);
    }
    if (suffix != NULL) {
        cw_st_arg_piece(st, suffix, strlen(suffix));
    }
    cw_st_arg_end(st);
}

/* "P:<kind>:<partition>" */
void cw_st_arg_pkey(cw_state_t *st, const char *kind, int partition) {
    char suffix[1 + CW_I64_MAX_CHARS] = ":";
    cw_fmt_i64(suffix + 1, partition);
    cw_st_arg_key(st, kind, NULL, suffix);
}

/* "<c><n>\r\n" into out (a RESP header: *argc, $length); its length. */
static size_t resp_header(char *out, char c, size_t n) {
    out[0] = c;
    size_t len = 1 + cw_fmt_i64(out + 1, (int64_t)n);
    out[len++] = '\r';
    out[len++] = '\n';
    return len;
}

/* Append the built command to the pipeline. CW_ERROR on out-of-memory.
 * The command is written in RESP here, into one reusable buffer, and
 * appended as it is (redisAppendFormattedCommand): what
 * redisAppendCommandArgv does, without its sds string per command and its
 * formatted append per argument. */
cw_err_t cw_st_args_send(cw_state_t *st) {
    char hdr[CW_I64_MAX_CHARS + 3];
    if (st->arg_oom || st->abuf.oom) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "out of memory building a command");
        return CW_ERROR;
    }
    cw_buf_reset(&st->resp);
    cw_buf_append(&st->resp, hdr, resp_header(hdr, '*', st->argc));
    for (size_t i = 0; i < st->argc; i++) {
        cw_buf_append(&st->resp, hdr, resp_header(hdr, '$', st->arg_len[i]));
        if (st->arg_len[i] > 0) { /* abuf.data may be NULL when every argument is empty */
            cw_buf_append(&st->resp, st->abuf.data + st->arg_off[i], st->arg_len[i]);
        }
        cw_buf_append(&st->resp, "\r\n", 2);
    }
    if (st->resp.oom) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "out of memory building a command");
        return CW_ERROR;
    }
    if (redisAppendFormattedCommand(st->c, st->resp.data, st->resp.len) != REDIS_OK) {
        CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "cannot append a command: %s", st->c->errstr);
        return CW_ERROR;
    }
    return CW_OK;
}

/* ---- replies: built in the connection's arena ---- */

/* hiredis builds a reply through these functions (the context's reader
 * calls them with privdata = st): every object, string and element vector
 * of a reply comes from st->rarena instead of a calloc per element. A reply
 * is released with cw_st_reply_free, never freeReplyObject; the reader
 * releases a reply it abandons (a protocol error, a freed context) through
 * freeObject. When no reply is live any more, the arena is reset: in a
 * pipeline that is after nearly every reply, so replies reuse the same
 * memory. */
typedef struct reply_root {
    redisReply r;
    cw_state_t *st; /* for the reader's freeObject, which gets only the object */
} reply_root_t;

static void *reply_obj(const redisReadTask *task, int type) {
    cw_state_t *st = task->privdata;
    redisReply *r;
    if (task->parent != NULL) {
        if ((r = cw_arena_alloc(st->rarena, sizeof(*r), 1)) == NULL) {
            return NULL;
        }
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    } else {
        reply_root_t *root = cw_arena_alloc(st->rarena, sizeof(*root), 1);
        if (root == NULL) {
            return NULL;
        }
        root->st = st;
        r = &root->r;
        st->replies_live++;
    }
    r->type = type;
    return r;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len) {
    cw_state_t *st = task->privdata;
    char *buf = cw_arena_alloc(st->rarena, len + 1, 0);
    if (buf == NULL) {
        return NULL;
    }
    redisReply *r = reply_obj(task, task->type);
    if (r == NULL) {
        return NULL;
    }
    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;
    return r;
}

static void *reply_array(const redisReadTask *task, int elements) {
    cw_state_t *st = task->privdata;
    redisReply **el = NULL;
    if (elements > 0 &&
        (el = cw_arena_alloc(st->rarena, (size_t)elements * sizeof(*el), 1)) == NULL) {
        return NULL;
    }
    redisReply *r = reply_obj(task, REDIS_REPLY_ARRAY);
    if (r == NULL) {
        return NULL;
    }
    r->element = el;
    r->elements = elements > 0 ? (size_t)elements : 0;
    return r;
}

static void *reply_integer(const redisReadTask *task, long long value) {
    redisReply *r = reply_obj(task, REDIS_REPLY_INTEGER);
    if (r != NULL) {
        r->integer = value;
    }
    return r;
}

static void *reply_nil(const redisReadTask *task) {
    return reply_obj(task, REDIS_REPLY_NIL);
}

/* The reader's release of a whole reply (its root). */
static void reply_release(void *privdata) {
    cw_state_t *st = privdata;
    if (st->replies_live > 0 && --st->replies_live == 0) {
        cw_arena_reset(st->rarena);
    }
}

/* The reader's freeObject: called with the root of a reply it abandons. */
static void reply_abandon(void *obj) {
    if (obj != NULL) {
        reply_release(((reply_root_t *)obj)->st);
    }
}

static redisReplyObjectFunctions reply_fns = {reply_string, reply_array, reply_integer, reply_nil,
                                              reply_abandon};

void cw_st_reply_free(cw_state_t *st, redisReply *r) {
    if (r != NULL) {
        reply_release(st);
    }
}

/* ---- connection ---- */

/* Free the replies a reply callback kept (st->hold). */
void cw_st_held_free(cw_state_t *st) {
    for (size_t k = 0; k < st->n_held; k++) {
        cw_st_reply_free(st, st->held[k]);
    }
    st->n_held = 0;
}

/* Free the context: a context that saw an error is never reused. */
void cw_st_drop(cw_state_t *st, const char *why) {
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

cw_err_t cw_st_reply_error(const redisReply *r, const char *what) {
    cw_err_t err = transient_error(r) ? CW_RETRY : CW_ERROR;
    CW_LOG(CW_LOG_ERROR, CW_STATE_COMP, "%s: redis error: %.*s", what, (int)r->len, r->str);
    return err;
}

/* One blocking command outside a pipeline (connect time). *out owned by the
 * caller (cw_st_reply_free). */
static cw_err_t cmd_blocking(cw_state_t *st, int argc, const char **argv, const size_t *lens,
                             const char *what, redisReply **out) {
    redisReply *r = redisCommandArgv(st->c, argc, argv, lens);
    *out = NULL;
    if (r == NULL) {
        cw_st_drop(st, what);
        return CW_RETRY;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        cw_err_t err = cw_st_reply_error(r, what);
        cw_st_reply_free(st, r);
        return err;
    }
    *out = r;
    return CW_OK;
}

/* A key of the keyspace P:<kind> into buf (blocking commands). */
const char *cw_st_plain_key(const cw_state_t *st, const char *kind, char *buf, size_t size) {
    snprintf(buf, size, "%s:%s", st->conf->redis_key_prefix, kind);
    return buf;
}

/* A blocking command with string arguments, NULL-terminated. */
cw_err_t cw_st_cmd_strs(cw_state_t *st, const char *what, redisReply **out, ...) {
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
    cw_st_plain_key(st, "layout", key, sizeof(key));
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((err = cw_st_cmd_strs(st, "layout", &r, "GET", key, NULL)) != CW_OK) {
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
            cw_st_reply_free(st, r);
            return ok ? CW_OK : CW_ERROR;
        }
        cw_st_reply_free(st, r);
        if ((err = cw_st_cmd_strs(st, "layout", &r, "EXISTS",
                                  cw_st_plain_key(st, "accounts", akey, sizeof(akey)), NULL)) !=
            CW_OK) {
            return err;
        }
        int legacy = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        cw_st_reply_free(st, r);
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
        if ((err = cw_st_cmd_strs(st, "layout", &r, "SET", key, CW_STATE_LAYOUT, "NX", NULL)) !=
            CW_OK) {
            return err;
        }
        cw_st_reply_free(st, r);
    }
    return CW_ERROR;
}

/* "<cmd> <arg>" while connecting (AUTH, SELECT); the connection is
 * dropped when it fails. */
static cw_err_t connect_cmd(cw_state_t *st, const char *cmd, const char *arg) {
    redisReply *r = NULL;
    cw_err_t err = cw_st_cmd_strs(st, cmd, &r, cmd, arg, NULL);
    cw_st_reply_free(st, r);
    if (err != CW_OK) {
        cw_st_drop(st, cmd);
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
        cw_st_drop(st, "set timeout");
        return CW_RETRY;
    }
    st->c->reader->fn = &reply_fns; /* replies in st->rarena (see reply_obj) */
    st->c->reader->privdata = st;
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
            cw_st_drop(st, "layout");
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

void cw_state_test_after_read(cw_state_t *st, void (*fn)(void *), void *opaque) {
    st->after_read = fn;
    st->after_read_opaque = opaque;
}

uint64_t cw_state_duplicates(const cw_state_t *st) {
    return st->duplicates;
}

/* ---- pipeline ---- */

/* Send the already-built args as command 0 (single-command pipelines). */
cw_err_t cw_st_build_prepared(cw_state_t *st, size_t i, void *ctx) {
    (void)i;
    (void)ctx;
    return cw_st_args_send(st);
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
cw_err_t cw_st_pipe_run(cw_state_t *st, size_t n, pipe_build_t build, pipe_reply_t on_reply,
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
                    cw_st_drop(st, what);
                    return err;
                }
            }
            while (!done) {
                if (redisBufferWrite(st->c, &done) != REDIS_OK) {
                    cw_st_drop(st, what);
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
                cw_st_reply_free(st, r);
                cw_st_drop(st, what);
                return CW_RETRY;
            }
            if (r->type == REDIS_REPLY_ERROR) {
                cw_err_t err = cw_st_reply_error(r, what);
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
                cw_st_reply_free(st, r);
            }
        }
        got = end;
    }
    if (st->rtt_cb != NULL && n > 0) {
        st->rtt_cb(st->rtt_opaque, what, (double)(cw_time_mono_us() - t0) / 1e6);
    }
    return worst;
}

/* ---- reading accounts ---- */

/* Command k of an account read (id): 0 HGETALL a, 1 LRANGE h. */
cw_err_t cw_st_build_read_cmd(cw_state_t *st, const char *id, size_t k) {
    cw_st_args_reset(st);
    if (k == 0) {
        cw_st_arg_str(st, "HGETALL");
        cw_st_arg_key(st, "a", id, NULL);
    } else {
        cw_st_arg_str(st, "LRANGE");
        cw_st_arg_key(st, "h", id, NULL);
        cw_st_arg_str(st, "0");
        cw_st_arg_str(st, "-1");
    }
    return cw_st_args_send(st);
}

static cw_err_t build_reads(cw_state_t *st, size_t i, void *vctx) {
    const reads_ctx_t *ctx = vctx;
    size_t k = i % READ_PER;
    if (k == 0 || k + 1 == READ_PER) {
        cw_st_args_reset(st);
        cw_st_arg_str(st, k == 0 ? "MULTI" : "EXEC");
        return cw_st_args_send(st);
    }
    return cw_st_build_read_cmd(st, ctx->a[i / READ_PER].account_id, k - 1);
}

/* Evaluate account a from its replies: hash (HGETALL a: its set members
 * are split off into one array of values per set) and hist (LRANGE h). An
 * empty hash is an unknown account (*miss = 1). */
cw_err_t cw_st_eval_account(cw_state_t *st, const redisReply *hash, const redisReply *hist,
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
    if (cw_st_grow((void **)&st->sv, &st->sv_cap, hash->elements + hist->elements + 1,
                   sizeof(*st->sv)) != 0 ||
        cw_st_grow((void **)&st->sv_set, &st->sv_set_cap, hash->elements / 2, 1) != 0) {
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
        if ((s = cw_st_member_field(l, (cw_sv_t){f->str, f->len}, NULL)) >= 0) {
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
            return cw_st_reply_error(r->element[x], "read");
        }
    }
    return cw_st_eval_account(st, r->element[0], r->element[1], &ctx->a[acct],
                              &st->read_miss[acct]);
}

cw_err_t cw_st_reply_ignore(cw_state_t *st, size_t i, const redisReply *r, void *ctx) {
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
cw_err_t cw_st_read_accounts(cw_state_t *st, cw_account_state_t *a, size_t n, const char *what) {
    reads_ctx_t ctx = {a};
    if (n == 0) {
        return CW_OK;
    }
    if (st->pre_watch) {
        /* a WATCH left on by a due scan would abort these EXECs if its
         * fence moved: end it first */
        cw_err_t err;
        cw_st_args_reset(st);
        cw_st_arg_str(st, "UNWATCH");
        if ((err = cw_st_pipe_run(st, 1, cw_st_build_prepared, cw_st_reply_ignore, NULL, what)) !=
            CW_OK) {
            return err;
        }
        st->pre_watch = 0;
    }
    if (cw_st_grow((void **)&st->read_miss, &st->read_miss_cap, n, 1) != 0) {
        return CW_ERROR;
    }
    memset(st->read_miss, 1, n);
    return cw_st_pipe_run(st, n * READ_PER, build_reads, reply_reads, &ctx, what);
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
    st->rarena = cw_arena_new(CW_STATE_REPLY_CHUNK, CW_STATE_REPLY_KEEP);
    if (st->rarena == NULL) {
        snprintf(errstr, errstr_size, "state: out of memory");
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
    cw_buf_free(&st->resp);
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
    cw_st_held_free(st);
    cw_buf_free(&st->ap_vbuf);
    cw_buf_free(&st->ap_dbuf);
    cw_acache_destroy(st->acache);
    cw_arena_destroy(st->rarena); /* last: the frees above release replies */
    free(st);
}
