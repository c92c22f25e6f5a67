/*
 * cw_acache.c — see cw_acache.h. A slot is a header (id, partition, the
 * partition's epoch when it was put) followed by the caller's record.
 * Dropping every record of a partition is O(1): its epoch moves on, and a
 * slot of an older epoch is empty.
 */
#include "cw_acache.h"

#include <stdlib.h>
#include <string.h>

#include "cw_common.h"

#define FENCE_UNKNOWN INT64_MIN

typedef struct slot_hdr {
    uint32_t epoch; /* 0: empty */
    int16_t partition;
    char id[CW_ACACHE_ID_MAX];
} slot_hdr_t;

struct cw_acache {
    unsigned char *slots; /* n * stride bytes */
    size_t n, mask, stride, rec_off;
    uint32_t epoch[CW_ACACHE_MAX_PARTITIONS]; /* current epoch of each partition (>= 1) */
    int64_t fence[CW_ACACHE_MAX_PARTITIONS];  /* the fence the records are as of */
};

static size_t round8(size_t n) {
    return (n + 7) & ~(size_t)7;
}

cw_acache_t *cw_acache_new(size_t slots, size_t rec_size) {
    cw_acache_t *c;
    size_t n = 1;
    if (slots == 0) {
        return NULL;
    }
    while (n <= slots / 2) {
        n *= 2;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->rec_off = round8(sizeof(slot_hdr_t));
    c->stride = c->rec_off + round8(rec_size);
    c->n = n;
    c->mask = n - 1;
    c->slots = calloc(n, c->stride);
    if (c->slots == NULL) {
        free(c);
        return NULL;
    }
    for (int p = 0; p < CW_ACACHE_MAX_PARTITIONS; p++) {
        c->epoch[p] = 1;
        c->fence[p] = FENCE_UNKNOWN;
    }
    return c;
}

void cw_acache_destroy(cw_acache_t *c) {
    if (c != NULL) {
        free(c->slots);
        free(c);
    }
}

size_t cw_acache_bytes(const cw_acache_t *c) {
    return c != NULL ? c->n * c->stride : 0;
}

size_t cw_acache_slots(const cw_acache_t *c) {
    return c != NULL ? c->n : 0;
}

/* The slot of (partition, id), or NULL when they cannot be cached; *len
 * the id's length. */
static slot_hdr_t *slot_of(const cw_acache_t *c, int partition, const char *id, size_t *len) {
    *len = strlen(id);
    if (partition < 0 || partition >= CW_ACACHE_MAX_PARTITIONS || *len >= CW_ACACHE_ID_MAX) {
        return NULL;
    }
    uint64_t h = cw_hash_account(id, *len, partition);
    return (slot_hdr_t *)(c->slots + (size_t)(h & c->mask) * c->stride);
}

/* The slot of (partition, id) when it holds a current record of them. */
static slot_hdr_t *find(const cw_acache_t *c, int partition, const char *id) {
    size_t len;
    slot_hdr_t *s = slot_of(c, partition, id, &len);
    return s != NULL && s->epoch == c->epoch[partition] && s->partition == partition &&
                   memcmp(s->id, id, len + 1) == 0
               ? s
               : NULL;
}

void *cw_acache_get(cw_acache_t *c, int partition, const char *id) {
    slot_hdr_t *s = find(c, partition, id);
    return s != NULL ? (unsigned char *)s + c->rec_off : NULL;
}

void *cw_acache_put(cw_acache_t *c, int partition, const char *id) {
    size_t len;
    slot_hdr_t *s = slot_of(c, partition, id, &len);
    if (s == NULL) {
        return NULL;
    }
    memset(s, 0, c->stride);
    s->epoch = c->epoch[partition];
    s->partition = (int16_t)partition;
    memcpy(s->id, id, len + 1);
    return (unsigned char *)s + c->rec_off;
}

void cw_acache_drop(cw_acache_t *c, int partition, const char *id) {
    slot_hdr_t *s = find(c, partition, id);
    if (s != NULL) {
        s->epoch = 0;
    }
}

/* Every record of p is dropped; the next ones are as of fence. */
static void new_epoch(cw_acache_t *c, int p, int64_t fence) {
    if (++c->epoch[p] == 0) {
        /* 2^32 epochs: clear the slots so no old record can match again */
        memset(c->slots, 0, c->n * c->stride);
        c->epoch[p] = 1;
    }
    c->fence[p] = fence;
}

void cw_acache_clear(cw_acache_t *c) {
    for (int p = 0; p < CW_ACACHE_MAX_PARTITIONS; p++) {
        new_epoch(c, p, FENCE_UNKNOWN);
    }
}

int cw_acache_fence_seen(cw_acache_t *c, int partition, int64_t fence) {
    if (partition < 0 || partition >= CW_ACACHE_MAX_PARTITIONS) {
        return 0;
    }
    if (c->fence[partition] != FENCE_UNKNOWN && c->fence[partition] == fence) {
        return 1;
    }
    new_epoch(c, partition, fence);
    return 0;
}

int cw_acache_fence_incr(cw_acache_t *c, int partition, int64_t fence) {
    if (partition < 0 || partition >= CW_ACACHE_MAX_PARTITIONS) {
        return 0;
    }
    if (c->fence[partition] != FENCE_UNKNOWN && fence == c->fence[partition] + 1) {
        c->fence[partition] = fence;
        return 1;
    }
    new_epoch(c, partition, fence);
    return 0;
}
