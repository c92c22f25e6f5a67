/*
 * cw_acache.h — a bounded cache of per-account records in the process, for
 * one lane: what the apply last read or wrote of an account hash's fixed
 * fields (facts, prune marks, last offset, TTL day) and its timer, so the
 * next apply of that account need not ask Redis for them again.
 *
 * Keyed by (partition, account id); direct-mapped: a fixed number of slots
 * allocated at new, a record lands in slot hash(p, id) mod slots and evicts
 * what was there. No allocation after new. Ids longer than
 * CW_ACACHE_ID_MAX - 1 bytes are never cached (a lookup misses).
 *
 * Trust comes from the partition fences (P:fence:<p>, INCRed by every
 * apply and commit transaction of partition p, cw_state.h): the cache keeps,
 * per partition, the fence value its records are current as of. A record
 * of partition p is returned only while nothing but this cache's owner has
 * written p since: cw_acache_fence_seen (a fence read under WATCH) and
 * cw_acache_fence_incr (the value an own EXEC's INCR returned) drop every
 * record of p when the fence moved by anything else. Writers of account
 * state that do not INCR the fence must drop the records they touch
 * (cw_acache_drop), or all of them (cw_acache_clear, e.g. on a lost
 * connection, where an EXEC's outcome is unknown).
 *
 * The record's contents are the caller's: rec_size bytes, 8-byte aligned,
 * zeroed by cw_acache_put.
 *
 * Threads: one thread at a time (each lane has its own).
 * Ownership: the cache owns its slots; record pointers are valid until the
 * next call that can evict (put, clear, drop, fence_*) or destroy.
 */
#ifndef CW_ACACHE_H
#define CW_ACACHE_H

#include <stddef.h>
#include <stdint.h>

#define CW_ACACHE_ID_MAX 48          /* an id and its NUL; longer ids are not cached */
#define CW_ACACHE_MAX_PARTITIONS 256 /* partitions 0..255 (cw_state's bound) */

typedef struct cw_acache cw_acache_t;

/* A cache of `slots` records (rounded down to a power of two, at least 1)
 * of rec_size bytes each; NULL on slots == 0 or out of memory. */
cw_acache_t *cw_acache_new(size_t slots, size_t rec_size);
void cw_acache_destroy(cw_acache_t *c);

/* Bytes the slots take (what state.cache_accounts costs), and their number. */
size_t cw_acache_bytes(const cw_acache_t *c);
size_t cw_acache_slots(const cw_acache_t *c);

/* The current record of (partition, id), or NULL. */
void *cw_acache_get(cw_acache_t *c, int partition, const char *id);

/* The record slot of (partition, id), zeroed, evicting its previous
 * occupant; NULL when the id is too long or the partition out of range.
 * The caller fills it with what Redis holds now (as of the partition's
 * current fence). */
void *cw_acache_put(cw_acache_t *c, int partition, const char *id);

/* Forget (partition, id) if cached. */
void cw_acache_drop(cw_acache_t *c, int partition, const char *id);

/* Forget everything, and every partition's fence. */
void cw_acache_clear(cw_acache_t *c);

/* The fence of partition p was read as `fence` (under WATCH, before what
 * was read on the strength of the records counts). Returns 1 when the
 * records of p are current (the fence is the one they were kept as of);
 * otherwise drops them and returns 0 (records put from now on are as of
 * `fence`). */
int cw_acache_fence_seen(cw_acache_t *c, int partition, int64_t fence);

/* An own transaction's INCR of partition p's fence returned `fence`.
 * When it was not the next value after the one the records are as of,
 * another writer came between and the records of p are dropped. Returns 1
 * when the records of p are still current. */
int cw_acache_fence_incr(cw_acache_t *c, int partition, int64_t fence);

#endif
