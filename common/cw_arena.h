/*
 * cw_arena.h — a bump allocator for objects that die together: Redis
 * replies (scoring/cw_state.c builds hiredis's reply objects in one arena
 * per connection instead of a calloc per element and a free per element).
 *
 * Allocation is a pointer bump in the current chunk (a new chunk when it is
 * full); nothing is freed one by one; cw_arena_reset makes every byte
 * reusable at once and keeps at most `keep` bytes of chunks for the next
 * round. Built with AddressSanitizer, memory not handed out (and all of it
 * after a reset) is poisoned, so a use after reset is reported like a use
 * after free.
 *
 * Ownership: cw_arena_new returns an arena owned by the caller
 * (cw_arena_destroy). Memory from cw_arena_alloc is owned by the arena and
 * valid until the next cw_arena_reset or cw_arena_destroy. Not thread-safe:
 * one thread at a time.
 */
#ifndef CW_ARENA_H
#define CW_ARENA_H

#include <stddef.h>

typedef struct cw_arena cw_arena_t;

/** @brief New arena of chunks of chunk bytes (larger requests get a chunk of
 * their own); a reset keeps at most keep bytes of chunks. NULL: out of memory. */
cw_arena_t *cw_arena_new(size_t chunk, size_t keep);
void cw_arena_destroy(cw_arena_t *a); /* accepts NULL */
/** @brief n bytes aligned for any type, zeroed when zero is set; NULL: out of memory. */
void *cw_arena_alloc(cw_arena_t *a, size_t n, int zero);
/** @brief Every allocation is dead: reuse the memory. */
void cw_arena_reset(cw_arena_t *a);
/** @brief Bytes of chunks held (for tests and reports). */
size_t cw_arena_held(const cw_arena_t *a);

#endif
