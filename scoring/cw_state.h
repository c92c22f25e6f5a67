/*
 * cw_state.h — the per-account state in Redis: rolling day-bucketed
 * counters and distinct sets, attributes, the last decision, the
 * partition-scoped rescoring timers, the alert outbox and the at-risk
 * ranking. Plain Redis commands computed in C: the apply of a batch and the
 * commit of a chunk of decisions are each one optimistic transaction (WATCH
 * of the partitions' fence keys, pipelined reads, MULTI ... EXEC); an
 * account read is HGETALL/LRANGE in one MULTI/EXEC, evaluated by
 * cw_view. (These were Lua scripts; the Lua VM cost Redis several times the
 * CPU of the commands, bench/README.md.)
 *
 * Keys (P = redis.key_prefix, {id} = account id as a cluster hash tag):
 *   P:a:{id}         hash: attributes, facts, last decision, per-day counters
 *                    ("<day>:<counter>"), "o:<partition>" = last Kafka
 *                    offset applied (idempotency: a redelivered event whose
 *                    offset <= it is skipped, atomically with the update),
 *                    and the distinct-set members: "s<n>:<set>:<member>"
 *                    (n = strlen(set)) -> "<lastday>,<mask>", a 52-bit day
 *                    mask of activity, so distinct counts over any window
 *                    <= 52 days are exact
 *   P:h:{id}         list of "<asof_ms>,<score>" (score history: one point
 *                    per UTC day, the day's last decision, newest day
 *                    first; a decision of an older day than the newest
 *                    point is inserted where its day belongs)
 *   P:due:<p>        zset account -> time it must be rescored (timers; in
 *                    event mode each apply moves its account's earlier, to
 *                    its first day's end, atomically; in wall mode the apply
 *                    leaves it and the decision the caller makes in the same
 *                    step sets it: the batch's offsets are stored only after
 *                    that, and a redelivered account is decided again)
 *   P:wm             hash partition -> event-time watermark (max event ts)
 *   P:fence:<p>      counter INCRed by every apply and commit of partition
 *                    p, which WATCH it (optimistic concurrency between two
 *                    consumers of one partition during a rebalance), and
 *                    by every apply and commit of an account whose hash's
 *                    "p" names partition p, which WATCH it too (see
 *                    "Accounts on two partitions")
 *   P:outbox:<p>     hash alert_id -> alert JSON not yet acked by Kafka
 *   P:atrisk         zset account -> score (lowest first = most at risk)
 *   P:accounts       set of known account ids (for dashboards / explain)
 *   P:bands          hash band -> number of accounts in it (moved by commits)
 *   P:layout         CW_STATE_LAYOUT, claimed by the first connection to an
 *                    empty keyspace; a keyspace with accounts and no mark
 *                    (members in keys P:s:{id}:<set>, versions up to
 *                    22a750b) is refused until cw_state_migrate has run
 * Old day buckets and set members are deleted by the apply once they fall
 * out of the retention (longest window), and every key carries a TTL of
 * retention + 2 days (refreshed by the apply once a wall-clock day while
 * the account has events; a commit gives one only to a key it creates) so
 * silent accounts do not leak memory.
 *
 * Apply cache (state.cache_accounts, cw_acache.h): each cw_state_t keeps
 * the fixed fields of the account hashes it applied (facts, prune marks, x,
 * o:<p>) and their timers, as of its last transaction; the next apply of a
 * cached account asks Redis only for its day buckets, members and missing
 * facts, and sends no ZSCORE. Its read starts with the WATCH and GET of
 * the batch's fences, in the same round trip: a partition whose fence
 * moved other than by this cw_state_t's own INCRs has its records dropped,
 * and the reads that relied on them are made again, as misses. So every writer of an account's hash
 * or timer must INCR its partition's fence in the same transaction (the
 * apply and commit do; cw_state_migrate runs with every consumer stopped).
 *
 * Timers: cw_state_due reads its accounts after a WATCH of the partition's
 * fence, as plain commands, and a cw_state_commit of (some of) those
 * accounts that follows on the same cw_state_t reuses that read: its
 * MULTI/EXEC is sent without reads of its own, and an EXEC aborted by
 * another writer of the partition falls back to reading again (the
 * decision stands; only what its writes depend on is read again). A
 * commit writes nothing that is already so: no ZADD of a timer already at
 * its next time, nor of an at-risk rank whose stored score is the same.
 *
 * Accounts on two partitions (a producer that changed keys, a topic that
 * grew): such an account has a timer on each partition, and the consumers
 * (or lanes) of the two can apply or decide it at the same time. The hash's
 * "p" names the partition whose apply wrote it last. An apply, or a commit
 * that stores a decision (one that only moves its own partition's timer
 * does not read "p"), whose read finds "p" naming a partition whose fence
 * it does not watch, watches that fence too and reads again (only then
 * does its read count), and INCRs it with its own; an apply that moves the
 * account (writes "p") INCRs the fence of the partition it moves it from.
 * So of two such transactions the later one's EXEC aborts and is
 * recomputed from a new read: a band is counted once, a history entry
 * written once (test_state: decisions_of_an_account_on_two_partitions).
 * A new account has no "p" to name a fence, so an apply whose read found
 * an account hash without "p" claims it before it writes: HSETNX of "p"
 * (its partition), in the round trip of the prune lists. A claim that
 * finds "p" set since the read (another partition's apply) makes the
 * batch read again, and the read then watches that partition's fence; a
 * claim that succeeds names this partition, so another apply reading the
 * account from then on watches this partition's fence, which this apply's
 * EXEC INCRs. So two processes making the first applies of one account
 * from two partitions at once are serialized too (test_state:
 * new_account_applied_from_two_partitions_at_once). A WATCH of the new
 * hashes would do the same, but Redis 7.0 checks a connection's watched
 * keys linearly: 4,096 keys cost it 96 ms, 16,384 keys 0.9 s.
 *
 * Failure model: any connection or protocol error returns CW_RETRY and
 * drops the connection; the next call reconnects (with the caller's
 * backoff). A batch that failed can be re-executed as a whole: the offsets
 * make it idempotent. A REDIS_REPLY_ERROR is CW_ERROR (CW_RETRY for the
 * transient ones: OOM, BUSY, LOADING, READONLY, ...). An EXEC aborted by a
 * changed fence is recomputed, at most 5 times, then CW_RETRY.
 *
 * Threads: a cw_state_t is one connection and is used by one thread at a
 * time; the pipeline gives each of its lanes its own. A cw_state_batch_t
 * is a separate object, so one thread can fill a batch while another
 * executes a different one (the pipeline gives each lane two).
 *
 * Ownership: cw_state_t owns its hiredis context and buffers. It keeps the
 * conf and layout pointers it was given (they must outlive it). Account
 * arrays returned by exec/due calls are owned by the cw_state_t and valid
 * until its next call. A cw_state_batch_t is owned by its creator, who
 * destroys it; exec borrows it for the call.
 */
#ifndef CW_STATE_H
#define CW_STATE_H

#include "cw_account.h"
#include "cw_buf.h"
#include "cw_common.h"
#include "cw_conf.h"
#include "cw_event.h"
#include "cw_model.h"

typedef struct cw_state cw_state_t;
typedef struct cw_state_batch cw_state_batch_t;

/* The key layout this version reads and writes (P:layout). */
#define CW_STATE_LAYOUT "2"

/* Days kept beyond the longest window. The apply counts retention back
 * from the account's oldest pending day-end decision (its timer), not from
 * its newest event, so a decision made after a batch crossed its day end
 * still reads every day it needs; the slack is margin on top (wall-clock
 * reads, the last-login look-back). */
#define CW_STATE_SLACK_DAYS 7

/* Partitions 0 .. CW_STATE_MAX_PARTITIONS - 1 are supported. */
#define CW_STATE_MAX_PARTITIONS 256

/** @brief Create (does not connect yet). NULL + errstr on a bad redis.url. */
cw_state_t *cw_state_new(const cw_conf_t *conf, const cw_layout_t *layout, char *errstr,
                         size_t errstr_size);
/** @brief Close and free; accepts NULL. */
void cw_state_destroy(cw_state_t *st);

/** @brief Connect if not connected (AUTH, SELECT). CW_RETRY if down. */
cw_err_t cw_state_connect(cw_state_t *st);
/** @brief 1 when a live connection exists. */
int cw_state_connected(const cw_state_t *st);
/**
 * @brief Move the distinct-set members of the previous layout (keys
 * P:s:{id}:<set>) into their account hashes, delete those keys and mark
 * the keyspace P:layout = CW_STATE_LAYOUT. Every churnwatch using the
 * keyspace must be stopped first. Members of an account whose hash has
 * expired, and sets the model no longer has, are deleted. Resumable: run
 * it again after a failure. Call on a new cw_state_t, before any other.
 * @param keys_out set keys moved or deleted
 */
cw_err_t cw_state_migrate(cw_state_t *st, uint64_t *keys_out, char *errstr, size_t errstr_size);
/** @brief Number of reconnects since creation (metrics). */
uint64_t cw_state_reconnects(const cw_state_t *st);

/* ---- batched apply ---- */
/**
 * A batch of decoded events to apply: owned by the caller, independent of
 * any cw_state_t (one thread may fill a batch while another executes a
 * different one on its connection: the pipeline decodes the next step
 * while its lanes apply the current one). conf and layout are borrowed and
 * must outlive it. NULL when out of memory.
 */
cw_state_batch_t *cw_state_batch_new(const cw_conf_t *conf, const cw_layout_t *layout);
void cw_state_batch_destroy(cw_state_batch_t *b);
/** @brief Empty the batch (forgets the previous events). */
void cw_state_batch_begin(cw_state_batch_t *b);
/**
 * @brief Add one decoded event at (partition, offset) to the batch; events of
 * one account are coalesced into one update. What the apply uses of the
 * event is copied (packed; ev is not kept). An
 * account must not be added under two partitions in one batch: each would
 * be updated from the same read and the later write would win.
 * @returns CW_OK, or CW_ERROR when the batch is full (caller execs first) or
 * the partition is out of range.
 */
cw_err_t cw_state_batch_add(cw_state_batch_t *b, int partition, int64_t offset,
                            const cw_event_t *ev);
/** @brief Number of events in the batch. */
size_t cw_state_batch_len(const cw_state_batch_t *b);
/**
 * @brief Apply batch b (one optimistic transaction) and advance
 * the partitions' watermarks. Wall mode: every touched account is then read
 * back as of now, in the same pipeline after the EXEC, under a WATCH of the
 * batch's fences that stays on for the caller's cw_state_commit of (some
 * of) these accounts (see "Timers" above: same rules, plus the timer's
 * ZSCORE); the caller decides them all before storing the batch's offsets.
 * Event mode: nothing is read — decisions are made by the day-end timers —
 * and each returned entry holds only account_id, partition, last_event_ms
 * (also asof_ms) and due_ms (the account's timer after the apply: the end
 * of the day of its earliest applied event, or an earlier timer it had).
 * Safe to call again with the same batch after CW_RETRY (idempotent). b is
 * read (and its redeliveries marked) during the call only; it must not be
 * changed meanwhile.
 * @param out,n_out the touched accounts (owned by st, valid until next call)
 */
cw_err_t cw_state_batch_exec(cw_state_t *st, cw_state_batch_t *b, cw_account_state_t **out,
                             size_t *n_out);
/**
 * @brief Tests only: fn(opaque) is called once, by the next apply on st,
 * after it has read its accounts and before it computes and writes them,
 * to put another writer's transaction at that point. NULL clears it.
 */
void cw_state_test_after_read(cw_state_t *st, void (*fn)(void *), void *opaque);
/** @brief Events skipped as already applied (redeliveries) since creation. */
uint64_t cw_state_duplicates(const cw_state_t *st);
/** @brief Applies of an account whose fixed fields came from the apply
 * cache (state.cache_accounts), and those that read them, since creation. */
void cw_state_cache_stats(const cw_state_t *st, uint64_t *hits, uint64_t *misses);

/* ---- reads ---- */
/** @brief Event-time watermark of a partition (-1 when none yet). */
cw_err_t cw_state_watermark(cw_state_t *st, int partition, int64_t *wm_out);
/**
 * @brief Read one account as of asof_ms (< 0: the account's current time —
 * its partition's watermark in event mode, the wall clock in wall mode).
 * @returns CW_NOENT for an unknown account.
 */
cw_err_t cw_state_read(cw_state_t *st, const char *account_id, int64_t asof_ms,
                       cw_account_state_t *out);
/**
 * @brief Accounts of a partition whose timer is due at or before upto_ms,
 * at most max, each read as of its due time (event mode) or now (wall).
 * The read stays WATCHed for the next cw_state_commit (see the top).
 */
cw_err_t cw_state_due(cw_state_t *st, int partition, int64_t upto_ms, size_t max,
                      cw_account_state_t **out, size_t *n_out);

/* ---- decisions ---- */
typedef struct cw_commit {
    const cw_account_state_t *acct; /* the state the decision was made on */
    double score;
    int band, tier, phase;
    unsigned active_mask;
    const int64_t *last_alert_ms; /* CW_REASON__COUNT entries */
    const char *last_alert_id;    /* "" when no alert in this decision */
    int64_t next_due_ms;          /* -1: remove the timer */
    const char *snapshot_json;    /* NULL when the score did not change */
    int reschedule_only;          /* 1: only move the timer to next_due_ms (same rules);
                                     no decision is stored (event-time mode decides at
                                     day ends only) */
    int n_alerts;
    const char *alert_ids[CW_REASON__COUNT];
    const char *alert_json[CW_REASON__COUNT];
} cw_commit_t;

/**
 * @brief Persist decisions in one optimistic transaction (reads, then MULTI
 * ... EXEC): score, band, masks, alert times, history, at-risk rank, next
 * timer, and the alerts into the partition's outbox. The band move and the
 * history entry follow the commit's own read, so a decision committed
 * twice, or by two partitions' consumers (see "Accounts on two
 * partitions"), counts once. An account whose due
 * mark changed since it was read keeps the newer mark. A decision that
 * would store exactly what its read found (same stored score, band, tier,
 * phase, conditions and alert times; no alert, no snapshot) only moves the
 * timer, like reschedule_only (key TTLs are then not refreshed: they run
 * from the account's last applied event).
 */
cw_err_t cw_state_commit(cw_state_t *st, const cw_commit_t *commits, size_t n);

/* ---- outbox ---- */
typedef void(cw_outbox_cb)(void *opaque, const char *alert_id, const char *json, size_t len);
/** @brief Call cb for every alert in the partition's outbox (re-delivery at assign). */
cw_err_t cw_state_outbox_scan(cw_state_t *st, int partition, cw_outbox_cb *cb, void *opaque);
/** @brief Remove delivered alerts (pipelined HDEL). */
cw_err_t cw_state_outbox_ack(cw_state_t *st, const int *partitions, const char *const *alert_ids,
                             size_t n);

/* ---- dashboards ---- */
/** @brief Up to limit account ids with the lowest scores, and their scores. */
cw_err_t cw_state_at_risk(cw_state_t *st, size_t limit, char (*ids)[CW_FIELD_MAX], double *scores,
                          size_t *n_out);
/** @brief Stored score snapshot JSON of an account into buf (CW_NOENT if none). */
cw_err_t cw_state_snapshot(cw_state_t *st, const char *account_id, cw_buf_t *buf);

/* ---- observers and dashboard reads ---- */
/**
 * @brief Called after every pipelined round trip with what it was for (a
 * static string: "apply read", "apply write", "due read", "commit", ...;
 * the name failures are logged with) and its duration in seconds.
 */
typedef void(cw_state_rtt_cb)(void *opaque, const char *stage, double seconds);
/** @brief Install (or with NULL remove) the round-trip observer (metrics). */
void cw_state_set_rtt_cb(cw_state_t *st, cw_state_rtt_cb *cb, void *opaque);
/**
 * @brief Accounts per band (index cw_band_t) from P:bands, which the commit
 * moves on every band change. An account whose keys expired (silent
 * past retention + 2 days) is not taken out of its band's count.
 */
cw_err_t cw_state_band_counts(cw_state_t *st, uint64_t counts[3]);
/**
 * @brief Up to max points of an account's score history, NEWEST first, into
 * asof_ms[] / scores[] (caller's arrays of max entries).
 * @returns CW_NOENT when the account has no history.
 */
cw_err_t cw_state_history(cw_state_t *st, const char *account_id, size_t max, int64_t *asof_ms,
                          double *scores, size_t *n_out);

#endif
