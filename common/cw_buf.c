/*
 * cw_buf.c — growable byte buffer (see cw_buf.h). Geometric growth, so a
 * buffer reused across messages stops allocating once it has seen the
 * largest document; JSON helpers escape strings and print numbers compactly.
 */
#include "cw_buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"

static int reserve(cw_buf_t *b, size_t extra) {
    if (b->oom) {
        return -1;
    }
    if (b->len + extra + 1 <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void cw_buf_reset(cw_buf_t *b) {
    b->len = 0;
    b->oom = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

void cw_buf_free(cw_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void cw_buf_append(cw_buf_t *b, const void *data, size_t len) {
    if (reserve(b, len) != 0) {
        return;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void cw_buf_puts(cw_buf_t *b, const char *s) {
    cw_buf_append(b, s, strlen(s));
}

void cw_buf_printf(cw_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n) != 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void cw_buf_json_str(cw_buf_t *b, const char *s, size_t len) {
    size_t need = cw_json_escape(NULL, 0, s, len);
    if (reserve(b, need + 2) != 0) {
        return;
    }
    b->data[b->len++] = '"';
    cw_json_escape(b->data + b->len, need + 1, s, len);
    b->len += need;
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

void cw_buf_json_num(cw_buf_t *b, double v) {
    if (!isfinite(v)) {
        cw_buf_puts(b, "null");
    } else {
        char tmp[CW_G_MAX_CHARS];
        size_t n =
            v == floor(v) && fabs(v) < 1e15 ? cw_fmt_i64(tmp, (int64_t)v) : cw_fmt_g(tmp, v, 6);
        cw_buf_append(b, tmp, n);
    }
}
