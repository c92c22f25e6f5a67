/*
 * test_acache.c — the apply cache's map and fences (scoring/cw_acache.h):
 * records found only by their (partition, id), bounded slots that evict,
 * and a partition's records dropped whenever its fence moved by anything
 * but the owner's own INCR. The cache's use by the apply is tested against
 * a real redis-server in tests/integration/test_state.c.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cw_acache.h"

typedef struct rec {
    int64_t v;
} rec_t;

static rec_t *put(cw_acache_t *c, int p, const char *id, int64_t v) {
    rec_t *r = cw_acache_put(c, p, id);
    cr_assert_not_null(r, "put %d/%s", p, id);
    cr_expect_eq(r->v, 0, "a put record starts zeroed");
    r->v = v;
    return r;
}

static int64_t get(cw_acache_t *c, int p, const char *id) {
    rec_t *r = cw_acache_get(c, p, id);
    return r != NULL ? r->v : -1;
}

Test(acache, records_by_partition_and_id) {
    cw_acache_t *c = cw_acache_new(1024, sizeof(rec_t));
    cr_assert_not_null(c);
    cr_expect_null(cw_acache_new(0, sizeof(rec_t)));
    cr_expect_eq(cw_acache_fence_seen(c, 3, 7), 0); /* nothing known yet */
    put(c, 3, "acct-1", 11);
    put(c, 3, "acct-2", 12);
    cr_expect_eq(get(c, 3, "acct-1"), 11);
    cr_expect_eq(get(c, 3, "acct-2"), 12);
    cr_expect_eq(get(c, 4, "acct-1"), -1, "another partition's account is another record");
    cr_expect_eq(get(c, 3, "acct-3"), -1);
    cr_expect_eq(get(c, 3, "acct-"), -1);
    /* ids too long to keep, and partitions out of range, are never cached */
    char longid[CW_ACACHE_ID_MAX + 1];
    memset(longid, 'x', CW_ACACHE_ID_MAX);
    longid[CW_ACACHE_ID_MAX] = '\0';
    cr_expect_null(cw_acache_put(c, 3, longid));
    cr_expect_null(cw_acache_get(c, 3, longid));
    longid[CW_ACACHE_ID_MAX - 1] = '\0'; /* the longest that fits */
    put(c, 3, longid, 13);
    cr_expect_eq(get(c, 3, longid), 13);
    cr_expect_null(cw_acache_put(c, CW_ACACHE_MAX_PARTITIONS, "a"));
    cr_expect_null(cw_acache_put(c, -1, "a"));
    cw_acache_drop(c, 3, "acct-1");
    cr_expect_eq(get(c, 3, "acct-1"), -1);
    cr_expect_eq(get(c, 3, "acct-2"), 12);
    cw_acache_clear(c);
    cr_expect_eq(get(c, 3, "acct-2"), -1);
    cw_acache_destroy(c);
}

Test(acache, bounded_slots_evict) {
    cw_acache_t *c = cw_acache_new(3, sizeof(rec_t)); /* rounded down to 2 */
    cr_assert_not_null(c);
    cr_expect_eq(cw_acache_bytes(c) % 2, 0);
    cw_acache_t *one = cw_acache_new(1, sizeof(rec_t));
    cr_expect_eq(cw_acache_bytes(c), 2 * cw_acache_bytes(one));
    cr_expect_eq(cw_acache_slots(c), 2);
    cr_expect_eq(cw_acache_slots(one), 1);
    put(one, 0, "a", 1);
    put(one, 0, "b", 2);
    cr_expect_eq(get(one, 0, "a"), -1, "one slot: b evicted a");
    cr_expect_eq(get(one, 0, "b"), 2);
    /* many ids over two slots: at most two are found, each with its value */
    int found = 0;
    for (int i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof(id), "id%d", i);
        put(c, 1, id, 100 + i);
    }
    for (int i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof(id), "id%d", i);
        int64_t v = get(c, 1, id);
        cr_expect(v == -1 || v == 100 + i, "id%d read %lld", i, (long long)v);
        found += v != -1;
    }
    cr_expect_leq(found, 2);
    cr_expect_geq(found, 1);
    cw_acache_destroy(one);
    cw_acache_destroy(c);
}

/* A partition's records stay only while its fence moved by the owner's own
 * INCRs: a fence read that differs, or an INCR that is not the next value,
 * means another writer, and drops them (and only them). */
Test(acache, fences_keep_or_drop_a_partition) {
    cw_acache_t *c = cw_acache_new(64, sizeof(rec_t));
    cr_assert_not_null(c);
    cr_expect_eq(cw_acache_fence_seen(c, 0, 5), 0);
    cr_expect_eq(cw_acache_fence_seen(c, 1, 0), 0);
    put(c, 0, "a", 1);
    put(c, 1, "b", 2);
    cr_expect_eq(cw_acache_fence_seen(c, 0, 5), 1, "unchanged fence: records current");
    cr_expect_eq(get(c, 0, "a"), 1);
    cr_expect_eq(cw_acache_fence_incr(c, 0, 6), 1, "own INCR 5 -> 6");
    cr_expect_eq(get(c, 0, "a"), 1);
    cr_expect_eq(cw_acache_fence_seen(c, 0, 6), 1);
    /* another writer INCRed in between: 6 -> 7 (theirs) -> 8 (ours) */
    cr_expect_eq(cw_acache_fence_incr(c, 0, 8), 0);
    cr_expect_eq(get(c, 0, "a"), -1);
    cr_expect_eq(get(c, 1, "b"), 2, "partition 1 untouched");
    put(c, 0, "a", 3); /* as of 8 */
    cr_expect_eq(cw_acache_fence_seen(c, 0, 8), 1);
    cr_expect_eq(get(c, 0, "a"), 3);
    /* a fence read that moved (another writer, or a flushed keyspace) */
    cr_expect_eq(cw_acache_fence_seen(c, 0, 9), 0);
    cr_expect_eq(get(c, 0, "a"), -1);
    cr_expect_eq(cw_acache_fence_seen(c, 1, 0), 1);
    cr_expect_eq(cw_acache_fence_seen(c, 1, 0), 1);
    cr_expect_eq(get(c, 1, "b"), 2);
    /* clear forgets the fences too: nothing is current until seen again */
    cw_acache_clear(c);
    cr_expect_eq(cw_acache_fence_incr(c, 1, 1), 0);
    cr_expect_eq(cw_acache_fence_seen(c, 0, 9), 0);
    put(c, 0, "a", 4);
    cr_expect_eq(cw_acache_fence_seen(c, 0, 9), 1);
    cr_expect_eq(get(c, 0, "a"), 4);
    cr_expect_eq(cw_acache_fence_seen(c, -1, 0), 0);
    cr_expect_eq(cw_acache_fence_incr(c, CW_ACACHE_MAX_PARTITIONS, 0), 0);
    cw_acache_destroy(c);
}
