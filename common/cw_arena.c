/*
 * cw_arena.c — see cw_arena.h.
 */
#include "cw_arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ALIGN 16

typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(ALIGN) unsigned char data[];
} chunk_t;

struct cw_arena {
    chunk_t *head; /* chunks in use, the current one first */
    chunk_t *free; /* kept by a reset, reused before new ones */
    size_t chunk, keep, held;
};

cw_arena_t *cw_arena_new(size_t chunk, size_t keep) {
    cw_arena_t *a = calloc(1, sizeof(*a));
    if (a != NULL) {
        a->chunk = chunk < 1024 ? 1024 : chunk;
        a->keep = keep;
    }
    return a;
}

static void chunks_free(cw_arena_t *a, chunk_t *c) {
    while (c != NULL) {
        chunk_t *next = c->next;
        a->held -= c->cap;
        UNPOISON(c->data, c->cap);
        free(c);
        c = next;
    }
}

void cw_arena_destroy(cw_arena_t *a) {
    if (a == NULL) {
        return;
    }
    chunks_free(a, a->head);
    chunks_free(a, a->free);
    free(a);
}

static chunk_t *chunk_get(cw_arena_t *a, size_t n) {
    /* a kept chunk that fits, else a new one */
    for (chunk_t **pp = &a->free; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->cap >= n) {
            chunk_t *c = *pp;
            *pp = c->next;
            return c;
        }
    }
    size_t cap = n > a->chunk ? n : a->chunk;
    chunk_t *c = malloc(sizeof(chunk_t) + cap);
    if (c == NULL) {
        return NULL;
    }
    c->cap = cap;
    a->held += cap;
    POISON(c->data, cap);
    return c;
}

void *cw_arena_alloc(cw_arena_t *a, size_t n, int zero) {
    size_t need = (n + (ALIGN - 1)) & ~(size_t)(ALIGN - 1);
    if (need < n) {
        return NULL; /* overflow */
    }
    chunk_t *c = a->head;
    if (c == NULL || c->cap - c->used < need) {
        c = chunk_get(a, need);
        if (c == NULL) {
            return NULL;
        }
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    UNPOISON(p, n);
    if (zero) {
        memset(p, 0, n);
    }
    return p;
}

void cw_arena_reset(cw_arena_t *a) {
    /* keep chunks up to `keep` bytes (the largest first would need a sort:
     * the order of use is good enough), free the rest */
    size_t kept = 0;
    for (chunk_t *c = a->free; c != NULL; c = c->next) {
        kept += c->cap;
    }
    chunk_t *c = a->head;
    a->head = NULL;
    while (c != NULL) {
        chunk_t *next = c->next;
        if (kept + c->cap <= a->keep) {
            kept += c->cap;
            POISON(c->data, c->cap);
            c->used = 0;
            c->next = a->free;
            a->free = c;
        } else {
            c->next = NULL;
            chunks_free(a, c);
        }
        c = next;
    }
}

size_t cw_arena_held(const cw_arena_t *a) {
    return a != NULL ? a->held : 0;
}
