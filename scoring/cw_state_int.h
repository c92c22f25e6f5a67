/*
 * cw_state_int.h — internals shared by the files of the state module
 * (scoring/cw_state*.c); nothing outside them includes it. The API, the key
 * layout, the failure model and ownership are in cw_state.h.
 *
 * The module is split by what a file does:
 *   cw_state.c           the connection, command arguments, the pipeline, account reads, lifecycle
 *   cw_state_batch.c     the batch: events packed and grouped per (account, partition)
 *   cw_state_apply.c     the apply of a batch: one optimistic transaction over its accounts
 *   cw_state_due.c       due timers and reads under WATCH (the due scan, the wall-mode read back)
 *   cw_state_commit.c    the commit of decisions: band, score, history, timers, outbox
 *   cw_state_read.c      reads outside the hot path: one account, watermarks, the outbox,
 * dashboards cw_state_migrate.c   the migration from the layout with set keys
 *
 * Names cw_st_* are the helpers one file defines and another uses (listed
 * at the end, per file; each is documented at its definition); every other
 * helper is static to its file. A cw_state_t is used by one thread at
 * a time (cw_state.h), so none of these lock anything.
 *
 * Stored formats. Nothing runs in Redis: events are applied, decisions
 * committed and accounts read with plain commands computed in C (as Lua
 * scripts they cost Redis several times the CPU, and Redis CPU is the
 * throughput bottleneck, bench/README.md; the last one, a watermark maximum
 * EVALed in the apply's transaction, is an HGET in the apply's read and an
 * HSET when the batch raises it).
 *
 * Day masks (written by the apply in C, read by cw_view): a set member's
 * value is "<lastday>,<mask>", bit i of mask set when the member was active
 * on day lastday - i (i < 52).
 *
 * Account hash fields (short names keep small hashes listpack-encoded):
 *   "<day>:<counter>" per-day counter    "o:<p>" last offset applied from p
 *   "m:<counter>" oldest day that may still hold a field of the counter
 *   "n:<set>" no member of the set has a last day below this (members are
 *   listed and pruned only when it falls out of the set's retention; "m:<set>",
 *   the day of the last prune, is what older versions wrote: replaced by
 *   n:<set> at the next prune)    "p" partition of the account
 *   fm/lm first/last event ms   fl/ll first/last login ms   kc cancel ms
 *   lt the last login at or before the account's pending day-end decision,
 *   written when a newer login is applied before that decision
 *   k<i> first use of key feature i    arr/sea/pln/ren "<attr ts>,<value>"
 *   sc/bd/ti/ph/am score, band, tier, phase, active mask   a<r> last alert
 *   ms of reason r   lid last alert id   x wall-clock day the account's
 *   key TTLs were last refreshed (once a day, not on every apply)
 * The score snapshot JSON (several hundred bytes) lives in its own string
 * key P:snap:{id}: a hash value over hash-max-listpack-value (64) would
 * turn the whole account hash into a hashtable, about 3x the memory.
 */
#ifndef CW_STATE_INT_H
#define CW_STATE_INT_H

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
#include "cw_arena.h"
#include "cw_state.h"
#include "cw_view.h"

#define CW_STATE_COMP "state"
#define CW_STATE_MIN_EVENTS 256          /* initial batch capacity */
#define CW_STATE_PIPE_WINDOW 2048        /* commands in flight per connection */
#define CW_STATE_PIPE_SLICE 256          /* commands written (and replies read) at a time */
#define CW_STATE_SCAN_COUNT "500"        /* HSCAN page size of the outbox scan */
#define CW_STATE_KEY_MAX 256             /* P:<kind> of a blocking command */
#define CW_STATE_REPLY_CHUNK (64 * 1024) /* reply arena: chunk size */
#define CW_STATE_REPLY_KEEP (256 * 1024) /* ... and what a reset keeps */

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

static inline int ap_known(const cw_bev_t *b) {
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
    redisContext *c; /* owned; NULL when disconnected */
    /* the replies of c, built by cw_state.c's reply functions: owned; reset
     * when no reply is live (replies_live roots not yet released) */
    cw_arena_t *rarena;
    size_t replies_live;
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
    /* command arguments: one buffer, offsets/lengths (RESP written at send) */
    cw_buf_t abuf;
    cw_buf_t resp; /* the command in RESP, written at send */
    size_t *arg_off;
    size_t *arg_len;
    size_t argc, arg_cap, arg_start;
    int arg_oom;
    /* apply scratch (cw_state_apply.c), reset per batch */
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
    /* apply: the fence check in this read dropped the partition's cache records */
    unsigned char ap_fence_moved[CW_STATE_MAX_PARTITIONS];
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
    int hold; /* set by a reply callback: cw_st_pipe_run must not free this reply */
    int64_t ap_wmax[CW_STATE_MAX_PARTITIONS]; /* apply: the batch's newest event per partition */
    int64_t ap_wm[CW_STATE_MAX_PARTITIONS];   /* apply: the watermark its read found (AP_NONE) */
    /* reads: views into one EXEC reply (scratch, grows to the largest) */
    cw_sv_t *sv;
    size_t sv_cap;
    signed char *sv_set; /* per field of the hash read: its set, -1 none */
    size_t sv_set_cap;
    unsigned char *read_miss; /* per account of the last cw_st_read_accounts */
    size_t read_miss_cap;
    /* the apply's cache of accounts' fixed fields and timers (state.cache_accounts; NULL off) */
    cw_acache_t *acache; /* owned */
    int acache_tried;
    uint64_t ac_hits, ac_misses;
    /* tests: called once by the next apply after its read (cw_state_test_after_read) */
    void (*after_read)(void *);
    void *after_read_opaque;
};

/* Build command i (cw_st_args_reset ... cw_st_args_send). */
typedef cw_err_t (*pipe_build_t)(cw_state_t *st, size_t i, void *ctx);
/* Handle the (non-error) reply of command i; the reply is freed after. */
typedef cw_err_t (*pipe_reply_t)(cw_state_t *st, size_t i, const redisReply *r, void *ctx);

/* One MULTI/EXEC per account: HGETALL a (set members included), LRANGE h. */
#define READ_PER 4  /* MULTI, HGETALL, LRANGE, EXEC */
#define READ_CMDS 2 /* HGETALL, LRANGE: without MULTI/EXEC (under a due scan's WATCH) */

typedef struct reads_ctx {
    cw_account_state_t *a; /* account_id, due_ms, asof_ms set by the caller */
} reads_ctx_t;

#define AP_NONE INT64_MIN
#define AP_NF 14 /* facts */

enum { AP_FM = 0, AP_LM, AP_FL, AP_LL, AP_KC, AP_K0, AP_LT = AP_K0 + CW_MAX_KEY_FEATURES };

/* What one command of a phase is for. */
enum {
    AP_WATCH,
    AP_GETF,  /* GET of a partition's fence (the apply cache's check) */
    AP_WMGET, /* HGET of a partition's watermark, under the WATCH of its fence */
    AP_HMGET_A,
    AP_ZSCORE,
    AP_HKEYS,
    AP_HGETALL_A,
    AP_CLAIM, /* HSETNX of "p" in a hash the read found without it (a new account) */
    AP_MULTI,
    AP_HDEL_A,
    AP_HSET_A,
    AP_EXPIRE,
    AP_SADD,
    AP_ZADD,
    AP_WMAX, /* HSET of a partition's watermark, when the batch raises it */
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
    uint32_t grp; /* group (or partition for AP_WATCH, AP_GETF, AP_WMGET, AP_WMAX, AP_FENCE) */
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

/* ---- cw_state.c ---- */

int cw_st_grow(void **p, size_t *cap, size_t need, size_t elsz);
uint64_t cw_st_group_hash(const char *id, int partition);
int cw_st_rep_i64(const redisReply *r, int64_t *out);
int cw_st_rep_dbl(const redisReply *r, double *out);
int cw_st_rep_partition(const redisReply *r);
void cw_st_args_reset(cw_state_t *st);
void cw_st_arg_begin(cw_state_t *st);
void cw_st_arg_piece(cw_state_t *st, const void *p, size_t n);
void cw_st_arg_end(cw_state_t *st);
void cw_st_arg_mem(cw_state_t *st, const void *p, size_t n);
void cw_st_arg_mark(cw_state_t *st, const char *prefix, const char *name);
void cw_st_arg_str(cw_state_t *st, const char *s);
void cw_st_arg_member(cw_state_t *st, int set, const char *mem, size_t len);
int cw_st_member_field(const cw_layout_t *l, cw_sv_t f, cw_sv_t *mem);
void cw_st_arg_i64(cw_state_t *st, int64_t v);
void cw_st_arg_tagged(cw_state_t *st, const char *tag, int64_t v);
void cw_st_arg_key(cw_state_t *st, const char *kind, const char *id, const char *suffix);
void cw_st_arg_pkey(cw_state_t *st, const char *kind, int partition);
cw_err_t cw_st_args_send(cw_state_t *st);
void cw_st_held_free(cw_state_t *st);
void cw_st_reply_free(cw_state_t *st, redisReply *r);
void cw_st_drop(cw_state_t *st, const char *why);
cw_err_t cw_st_reply_error(const redisReply *r, const char *what);
const char *cw_st_plain_key(const cw_state_t *st, const char *kind, char *buf, size_t size);
cw_err_t cw_st_cmd_strs(cw_state_t *st, const char *what, redisReply **out, ...);
cw_err_t cw_st_build_prepared(cw_state_t *st, size_t i, void *ctx);
cw_err_t cw_st_pipe_run(cw_state_t *st, size_t n, pipe_build_t build, pipe_reply_t on_reply,
                        void *ctx, const char *what);
cw_err_t cw_st_build_read_cmd(cw_state_t *st, const char *id, size_t k);
cw_err_t cw_st_eval_account(cw_state_t *st, const redisReply *hash, const redisReply *hist,
                            cw_account_state_t *a, unsigned char *miss);
cw_err_t cw_st_reply_ignore(cw_state_t *st, size_t i, const redisReply *r, void *ctx);
cw_err_t cw_st_read_accounts(cw_state_t *st, cw_account_state_t *a, size_t n, const char *what);

/* ---- cw_state_batch.c ---- */

const char *cw_st_ev_str(const cw_state_batch_t *b, uint32_t off);

/* ---- cw_state_apply.c ---- */

int64_t cw_st_ap_day(int64_t ms);
int cw_st_ap_cmd_push(cw_state_t *st, uint32_t grp, int kind, int sub);
cw_err_t cw_st_rep_timer(const redisReply *r, int64_t *due);
int cw_st_tx_shared(cw_state_t *st, int kind, int p, const char *id);
int cw_st_rep_band(const redisReply *r);
int64_t cw_st_rep_hist_asof(const redisReply *r);
cw_err_t cw_st_ap_reply_writes(cw_state_t *st, size_t i, const redisReply *r, void *vctx);

/* ---- cw_state_due.c ---- */

cw_err_t cw_st_build_wreads(cw_state_t *st, size_t i, void *vctx);
cw_err_t cw_st_reply_wreads(cw_state_t *st, size_t i, const redisReply *r, void *vctx);
size_t cw_st_read_back_plan(cw_state_t *st, wreads_ctx_t *ctx, int *watch);
void cw_st_read_back_done(cw_state_t *st);

/* ---- cw_state_commit.c ---- */

void cw_st_hist_locate(const redisReply *hist, int64_t asof, cm_read_t *rd);

#endif /* CW_STATE_INT_H */
