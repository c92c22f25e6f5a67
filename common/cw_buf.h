/*
 * cw_buf.h — a growable byte buffer used to build JSON documents and Redis
 * arguments without per-call allocation: callers keep one buffer and reset
 * it between uses, so the hot path allocates only when a buffer first grows.
 *
 * Ownership: cw_buf_t is a plain struct owned by whoever declares it;
 * cw_buf_free releases its storage. On allocation failure the buffer sets
 * `oom` and further appends are ignored; check it once at the end.
 */
#ifndef CW_BUF_H
#define CW_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cw_buf {
    char *data; /* NUL-terminated contents (may be NULL when empty) */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
    int oom;    /* set when an allocation failed */
} cw_buf_t;

#define CW_BUF_INIT                                                                                \
    { NULL, 0, 0, 0 }

void cw_buf_reset(cw_buf_t *b); /* len = 0, keeps storage */
void cw_buf_free(cw_buf_t *b);  /* releases storage */
void cw_buf_append(cw_buf_t *b, const void *data, size_t len);
void cw_buf_puts(cw_buf_t *b, const char *s);
void cw_buf_printf(cw_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** @brief Append s[0..len) as a quoted, escaped JSON string. */
void cw_buf_json_str(cw_buf_t *b, const char *s, size_t len);
/** @brief Append a double as JSON (finite; %.6g-style, integers without dot). */
void cw_buf_json_num(cw_buf_t *b, double v);

#endif
