/*
 * cw_event.c — decode and validate one input event (SPEC §2) with yajl's
 * streaming parser.
 *
 * Why streaming and not yajl_tree: the consumer decodes every message on the
 * hot path, and a tree allocates a node per value. Here yajl calls us back
 * value by value and we copy the few fields we know straight into the
 * caller's fixed cw_event_t; unknown fields (nested or not) are skipped by
 * tracking the nesting depth. The only memory yajl itself needs (its handle,
 * lexer, state stack and unescape buffer) comes from a small arena on our
 * stack through yajl's custom-allocator hooks, falling back to malloc only
 * for unusually large escaped strings or deep nesting — so a typical event
 * costs no heap allocation at all.
 *
 * Validation is deterministic: the whole document is always parsed, so a
 * syntax error anywhere wins ("not_json") over a field problem; otherwise the
 * first field problem in document order wins, then missing required fields
 * (in a fixed order), then the timestamp range, then the message key. Every
 * rejection carries a stable reason code and a short human detail that
 * quotes the offending value truncated on a UTF-8 boundary with control
 * bytes replaced, so it is safe to log and to put in a dead-letter message.
 *
 * Ownership: the caller owns the input bytes, the key and the cw_event_t;
 * nothing is retained after cw_event_decode returns.
 */
#include "cw_event.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

/* Longest string field, in bytes (CW_FIELD_MAX includes the NUL). */
#define EV_STR_MAX (CW_FIELD_MAX - 1)
/* Bytes of an offending value quoted in a detail message. */
#define SNIPPET_MAX 40
/* Stack arena handed to yajl; enough for the handle, lexer and buffers. */
#define ARENA_BYTES 8192
#define ARENA_ALIGN 16

/* ---- a tiny stack arena behind yajl's allocator hooks ---- */

typedef struct arena {
    unsigned char *base; /* caller's aligned stack buffer (not owned) */
    size_t cap;          /* its size, a multiple of ARENA_ALIGN */
    size_t used;         /* bytes handed out, from base */
    size_t last;         /* offset of the newest block's header; SIZE_MAX = none */
} arena_t;

/* Each arena block is [ARENA_ALIGN-byte header holding the size][data]. */
static int arena_owns(const arena_t *a, const void *p) {
    uintptr_t u = (uintptr_t)p;
    uintptr_t b = (uintptr_t)a->base;
    return u >= b && u < b + a->cap;
}

static size_t arena_round(size_t sz) {
    return (sz + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static void *arena_malloc(void *ctx, size_t sz) {
    arena_t *a = ctx;
    /* sz is checked first so the rounding below cannot overflow */
    if (sz <= a->cap && ARENA_ALIGN + arena_round(sz) <= a->cap - a->used) {
        unsigned char *h = a->base + a->used;
        memcpy(h, &sz, sizeof(sz));
        a->last = a->used;
        a->used += ARENA_ALIGN + arena_round(sz);
        return h + ARENA_ALIGN;
    }
    return malloc(sz); /* too big for what is left: the heap owns it */
}

static void arena_free(void *ctx, void *p) {
    arena_t *a = ctx;
    if (p == NULL) {
        return;
    }
    if (!arena_owns(a, p)) {
        free(p);
        return;
    }
    size_t off = (size_t)((unsigned char *)p - a->base) - ARENA_ALIGN;
    if (off == a->last) {
        /* the newest block can be given back; older ones live until return */
        a->used = off;
        a->last = SIZE_MAX;
    }
}

static void *arena_realloc(void *ctx, void *p, size_t sz) {
    arena_t *a = ctx;
    if (p == NULL) {
        return arena_malloc(ctx, sz);
    }
    if (!arena_owns(a, p)) {
        return realloc(p, sz);
    }
    size_t off = (size_t)((unsigned char *)p - a->base) - ARENA_ALIGN;
    size_t old;
    memcpy(&old, a->base + off, sizeof(old));
    if (off == a->last && sz <= a->cap - off - ARENA_ALIGN) {
        /* newest block: grow or shrink in place */
        memcpy(a->base + off, &sz, sizeof(sz));
        a->used = off + ARENA_ALIGN + arena_round(sz);
        return p;
    }
    void *n = arena_malloc(ctx, sz);
    if (n == NULL) {
        return NULL;
    }
    memcpy(n, p, old < sz ? old : sz);
    arena_free(ctx, p);
    return n;
}

/* ---- known fields ---- */

typedef enum {
    F_EVENT_ID = 0,
    F_TYPE,
    F_ACCOUNT_ID,
    F_USER_ID,
    F_TS,
    F_FEATURE,
    F_COUNT,
    F_ARR,
    F_SEATS,
    F_PLAN,
    F_RENEWAL_DATE,
    F_SCORE,
    F__COUNT,
} field_t;

static const char *const field_names[F__COUNT] = {
    "event_id", "type", "account_id", "user_id", "ts",           "feature",
    "count",    "arr",  "seats",      "plan",    "renewal_date", "score",
};

/* What each field must be, for wrong_type details. */
static const char *const field_wants[F__COUNT] = {
    "a string",
    "a string",
    "a string",
    "a string",
    "an RFC 3339 string or epoch milliseconds",
    "a string",
    "an integer",
    "a number",
    "an integer",
    "a string",
    "a \"YYYY-MM-DD\" or RFC 3339 string",
    "an integer",
};

/* JSON value kinds as seen by the callbacks. */
typedef enum { V_NULL, V_BOOL, V_NUMBER, V_STRING, V_MAP, V_ARRAY } vkind_t;

static const char *const vkind_names[] = {"null", "boolean", "number", "string", "object", "array"};

typedef struct decode_ctx {
    cw_event_t *ev;             /* output, owned by the caller */
    int depth;                  /* nesting depth; 1 = directly inside the top-level object */
    int started;                /* the top-level value has begun */
    int not_object;             /* the top-level value is not an object */
    int field;                  /* known field of the pending depth-1 value; -1 = unknown */
    unsigned seen;              /* bit per field_t present */
    int failed;                 /* reason/detail hold the first field problem */
    char reason[CW_REASON_MAX]; /* stable code of the first problem */
    char detail[CW_DETAIL_MAX]; /* its human detail */
} decode_ctx_t;

/* ---- safe detail text ---- */

/* Length of the valid UTF-8 sequence starting at s[0] (within n bytes), 0 if invalid.
 * yajl validates raw input bytes only loosely and turns a lone "\\udc00" escape
 * into an encoded surrogate, so the decoder checks strings itself with this. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    size_t k;
    if (s[0] < 0x80) {
        return 1;
    } else if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        k = 2;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        k = 3;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        k = 4;
    } else {
        return 0;
    }
    if (k > n) {
        return 0;
    }
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    /* no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f)) {
        return 0;
    }
    return k;
}

/* 1 when p[0..len) is valid UTF-8 (control characters allowed). */
static int utf8_valid(const char *p, size_t len) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < len) {
        size_t k = utf8_seq(s + i, len - i);
        if (k == 0) {
            return 0;
        }
        i += k;
    }
    return 1;
}

/*
 * Copy at most SNIPPET_MAX bytes of p[0..len) into out (>= SNIPPET_MAX + 4
 * bytes): control bytes and invalid UTF-8 become '?', multi-byte characters
 * are never cut, and "..." marks truncation.
 */
static void snippet(char *out, const char *p, size_t len) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    size_t o = 0;
    while (i < len) {
        size_t k = utf8_seq(s + i, len - i);
        if (k == 0 || (k == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
            if (o + 1 > SNIPPET_MAX) {
                break;
            }
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + k > SNIPPET_MAX) {
            break;
        }
        memcpy(out + o, s + i, k);
        o += k;
        i += k;
    }
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Cut s at its first byte that does not start a complete, printable UTF-8 character. */
static void utf8_trim(char *s) {
    size_t n = strlen(s);
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k == 0 || (k == 1 && ((unsigned char)s[i] < 0x20 || s[i] == 0x7f))) {
            break;
        }
        i += k;
    }
    s[i] = '\0';
}

static void set_error(decode_ctx_t *c, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record a problem unless one is already recorded (the first one wins). */
static void set_error(decode_ctx_t *c, const char *code, const char *field, const char *fmt, ...) {
    va_list ap;
    if (c->failed) {
        return;
    }
    c->failed = 1;
    if (field != NULL) {
        snprintf(c->reason, sizeof(c->reason), "%s:%s", code, field);
    } else {
        snprintf(c->reason, sizeof(c->reason), "%s", code);
    }
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
    va_end(ap);
    utf8_trim(c->detail);
}

/* ---- value conversion ---- */

/*
 * Parse a JSON number literal (as validated by yajl) as an int64.
 * @returns 0 ok, -1 not an integer literal (fraction/exponent), -2 out of range.
 */
static int parse_int(const char *p, size_t len, int64_t *out) {
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0;
    const uint64_t lim = (uint64_t)INT64_MAX;

    if (len > 0 && p[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == len) {
        return -1;
    }
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
    }
    for (i = (size_t)neg; i < len; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (lim + (uint64_t)neg - d) / 10) {
            return -2;
        }
        v = v * 10 + d;
    }
    if (neg) {
        *out = v == lim + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        *out = (int64_t)v;
    }
    return 0;
}

/* Parse a JSON number literal as a double; -1 when too long or not finite. */
static int parse_double(const char *p, size_t len, double *out) {
    char buf[64];
    char *end = NULL;
    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    double d = strtod(buf, &end);
    if (end != buf + len || !isfinite(d)) {
        return -1;
    }
    *out = d;
    return 0;
}

/* "YYYY-MM-DD" (midnight UTC) or RFC 3339 into epoch ms; -1 when neither. */
static int parse_date(const char *p, size_t len, int64_t *out) {
    if (len == 10) {
        char buf[21];
        memcpy(buf, p, 10);
        memcpy(buf + 10, "T00:00:00Z", 10);
        return cw_time_parse_rfc3339(buf, 20, out);
    }
    return cw_time_parse_rfc3339(p, len, out);
}

static void wrong_type(decode_ctx_t *c, field_t f, vkind_t k, const char *p, size_t len) {
    const char *want = field_wants[f];
    char snip[SNIPPET_MAX + 4];
    if (k == V_STRING || k == V_NUMBER) {
        snippet(snip, p, len);
        set_error(c, "wrong_type", field_names[f], "field \"%s\" must be %s, got %s %s%s%s",
                  field_names[f], want, vkind_names[k], k == V_STRING ? "\"" : "", snip,
                  k == V_STRING ? "\"" : "");
    } else {
        set_error(c, "wrong_type", field_names[f], "field \"%s\" must be %s, got %s",
                  field_names[f], want, vkind_names[k]);
    }
}

static void bad_value(decode_ctx_t *c, field_t f, const char *why, const char *p, size_t len) {
    char snip[SNIPPET_MAX + 4];
    snippet(snip, p, len);
    set_error(c, "bad_value", field_names[f], "field \"%s\" %s, got %s", field_names[f], why, snip);
}

/* Check a string value (length, NUL) and copy it into dst (CW_FIELD_MAX bytes). */
static int take_string(decode_ctx_t *c, field_t f, vkind_t k, const char *p, size_t len,
                       char *dst) {
    char snip[SNIPPET_MAX + 4];
    if (k != V_STRING) {
        wrong_type(c, f, k, p, len);
        return -1;
    }
    if (len > EV_STR_MAX) {
        snippet(snip, p, len);
        set_error(c, "too_long", field_names[f], "field \"%s\" is %zu bytes, limit %d: \"%s\"",
                  field_names[f], len, EV_STR_MAX, snip);
        return -1;
    }
    if (memchr(p, '\0', len) != NULL) {
        bad_value(c, f, "contains a NUL character", p, len);
        return -1;
    }
    if (!utf8_valid(p, len)) {
        bad_value(c, f, "is not valid UTF-8 (e.g. a lone surrogate escape)", p, len);
        return -1;
    }
    if (dst != NULL) {
        memcpy(dst, p, len);
        dst[len] = '\0';
    }
    return 0;
}

/* An integer field within [lo, hi]. */
static int take_int(decode_ctx_t *c, field_t f, vkind_t k, const char *p, size_t len, int64_t lo,
                    int64_t hi, const char *why, int64_t *out) {
    int64_t v = 0;
    int rc;
    if (k != V_NUMBER || (rc = parse_int(p, len, &v)) == -1) {
        wrong_type(c, f, k, p, len);
        return -1;
    }
    if (rc != 0 || v < lo || v > hi) {
        bad_value(c, f, why, p, len);
        return -1;
    }
    *out = v;
    return 0;
}

/* Handle the value of one known top-level field. p/len: text for strings and numbers. */
static void on_field(decode_ctx_t *c, field_t f, vkind_t k, const char *p, size_t len) {
    cw_event_t *ev = c->ev;
    char snip[SNIPPET_MAX + 4];
    int64_t v;

    switch (f) {
    case F_EVENT_ID:
        (void)take_string(c, f, k, p, len, ev->event_id);
        return;
    case F_ACCOUNT_ID:
        (void)take_string(c, f, k, p, len, ev->account_id);
        return;
    case F_USER_ID:
        (void)take_string(c, f, k, p, len, ev->user_id);
        return;
    case F_FEATURE:
        (void)take_string(c, f, k, p, len, ev->feature);
        return;
    case F_PLAN:
        (void)take_string(c, f, k, p, len, ev->plan);
        return;
    case F_TYPE:
        if (take_string(c, f, k, p, len, NULL) == 0) {
            if (len == 0) {
                bad_value(c, f, "must not be empty", p, len);
                return;
            }
            ev->type = cw_ev_type_parse(p, len);
        }
        return;
    case F_TS:
        if (k == V_STRING) {
            if (cw_time_parse_rfc3339(p, len, &v) != 0) {
                snippet(snip, p, len);
                set_error(c, "bad_timestamp", NULL, "field \"ts\" is not RFC 3339: \"%s\"", snip);
                return;
            }
        } else if (k == V_NUMBER) {
            if (parse_int(p, len, &v) != 0) {
                snippet(snip, p, len);
                set_error(c, "bad_timestamp", NULL,
                          "field \"ts\" is not an integer of epoch milliseconds: %s", snip);
                return;
            }
        } else {
            wrong_type(c, f, k, p, len);
            return;
        }
        ev->ts_ms = v;
        return;
    case F_COUNT:
        (void)take_int(c, f, k, p, len, 1, INT64_MAX, "must be an integer >= 1", &ev->count);
        return;
    case F_SEATS:
        (void)take_int(c, f, k, p, len, 0, INT64_MAX, "must be an integer >= 0", &ev->seats);
        return;
    case F_SCORE:
        if (take_int(c, f, k, p, len, 0, 10, "must be an integer 0..10", &v) == 0) {
            ev->score = (int)v;
        }
        return;
    case F_ARR: {
        double d = 0;
        if (k != V_NUMBER) {
            wrong_type(c, f, k, p, len);
            return;
        }
        if (parse_double(p, len, &d) != 0 || d < 0) {
            bad_value(c, f, "must be a finite number >= 0", p, len);
            return;
        }
        ev->arr = d;
        return;
    }
    case F_RENEWAL_DATE:
        if (k != V_STRING) {
            wrong_type(c, f, k, p, len);
            return;
        }
        if (parse_date(p, len, &v) != 0) {
            bad_value(c, f, "is not YYYY-MM-DD or RFC 3339", p, len);
            return;
        }
        ev->renewal_ms = v;
        return;
    case F__COUNT:
        return;
    }
}

/*
 * Every value funnels through here before containers change the depth.
 * Returns 1 (continue) always: problems are recorded, and parsing goes on so
 * a later syntax error still reports "not_json".
 */
static int on_value(decode_ctx_t *c, vkind_t k, const char *p, size_t len) {
    if (!c->started) {
        c->started = 1;
        if (k != V_MAP) {
            c->not_object = 1;
        }
        return 1;
    }
    if (c->not_object || c->depth != 1 || c->field < 0) {
        return 1; /* inside a skipped value, or an unknown field */
    }
    if (k == V_MAP || k == V_ARRAY) {
        wrong_type(c, (field_t)c->field, k, p, len);
    } else {
        on_field(c, (field_t)c->field, k, p, len);
    }
    c->field = -1;
    return 1;
}

static int cb_null(void *ctx) {
    return on_value(ctx, V_NULL, NULL, 0);
}

static int cb_boolean(void *ctx, int b) {
    (void)b;
    return on_value(ctx, V_BOOL, NULL, 0);
}

static int cb_number(void *ctx, const char *s, size_t len) {
    return on_value(ctx, V_NUMBER, s, len);
}

static int cb_string(void *ctx, const unsigned char *s, size_t len) {
    return on_value(ctx, V_STRING, (const char *)s, len);
}

static int cb_start_map(void *ctx) {
    decode_ctx_t *c = ctx;
    on_value(c, V_MAP, NULL, 0);
    c->depth++;
    return 1;
}

static int cb_start_array(void *ctx) {
    decode_ctx_t *c = ctx;
    on_value(c, V_ARRAY, NULL, 0);
    c->depth++;
    return 1;
}

static int cb_end(void *ctx) {
    decode_ctx_t *c = ctx;
    c->depth--;
    return 1;
}

static int cb_map_key(void *ctx, const unsigned char *key, size_t len) {
    decode_ctx_t *c = ctx;
    if (c->not_object || c->depth != 1) {
        return 1;
    }
    c->field = -1;
    for (int f = 0; f < F__COUNT; f++) {
        if (strlen(field_names[f]) == len && memcmp(field_names[f], key, len) == 0) {
            if (c->seen & (1u << f)) {
                set_error(c, "duplicate_field", field_names[f],
                          "field \"%s\" appears more than once", field_names[f]);
            } else {
                c->seen |= 1u << f;
                c->field = f;
            }
            break;
        }
    }
    return 1;
}

/* yajl_number (raw text) instead of yajl_integer/yajl_double: we decide what an
 * integer is and report overflow as a bad value instead of a parse error. */
static const yajl_callbacks callbacks = {
    .yajl_null = cb_null,
    .yajl_boolean = cb_boolean,
    .yajl_integer = NULL,
    .yajl_double = NULL,
    .yajl_number = cb_number,
    .yajl_string = cb_string,
    .yajl_start_map = cb_start_map,
    .yajl_map_key = cb_map_key,
    .yajl_end_map = cb_end,
    .yajl_start_array = cb_start_array,
    .yajl_end_array = cb_end,
};

/* ---- post-parse checks ---- */

static int missing(decode_ctx_t *c, field_t f, const char *why) {
    if (c->seen & (1u << f)) {
        return 0;
    }
    set_error(c, "missing_field", field_names[f], "required field \"%s\" is missing%s",
              field_names[f], why);
    return 1;
}

static void empty(decode_ctx_t *c, field_t f, const char *value) {
    if (value[0] == '\0') {
        set_error(c, "bad_value", field_names[f], "field \"%s\" must not be empty", field_names[f]);
    }
}

static void check_required(decode_ctx_t *c) {
    const cw_event_t *ev = c->ev;
    if (missing(c, F_EVENT_ID, "") || missing(c, F_TYPE, "") || missing(c, F_ACCOUNT_ID, "") ||
        missing(c, F_TS, "")) {
        return;
    }
    empty(c, F_EVENT_ID, ev->event_id);
    empty(c, F_ACCOUNT_ID, ev->account_id);
    if (ev->type == CW_EV_LOGIN || ev->type == CW_EV_USAGE) {
        if (!missing(c, F_USER_ID, " for login and usage events")) {
            empty(c, F_USER_ID, ev->user_id);
        }
    }
    if (ev->type == CW_EV_USAGE) {
        if (!missing(c, F_FEATURE, " for usage events")) {
            empty(c, F_FEATURE, ev->feature);
        }
    }
    if (ev->type == CW_EV_NPS) {
        (void)missing(c, F_SCORE, " for nps events");
    }
}

/* Format epoch ms as RFC 3339 when the year is 0..9999, else as a plain number. */
static void format_ms(int64_t ms, char *buf, size_t size) {
    if (ms > -INT64_C(62167219200000) && ms < INT64_C(253402300800000)) {
        cw_time_format(ms, buf, size);
    } else {
        snprintf(buf, size, "%lld ms", (long long)ms);
    }
}

static void check_ts(decode_ctx_t *c, const cw_event_limits_t *lim) {
    char when[32];
    char bound[32];
    int64_t ts = c->ev->ts_ms;
    int64_t max = lim->now_ms;

    if (lim->max_future_ms > 0) {
        max = lim->now_ms > INT64_MAX - lim->max_future_ms ? INT64_MAX
                                                           : lim->now_ms + lim->max_future_ms;
    }
    if (ts >= lim->min_ts_ms && ts <= max) {
        return;
    }
    format_ms(ts, when, sizeof(when));
    if (ts < lim->min_ts_ms) {
        format_ms(lim->min_ts_ms, bound, sizeof(bound));
        set_error(c, "absurd_timestamp", NULL, "ts %s is before the minimum %s", when, bound);
    } else {
        format_ms(max, bound, sizeof(bound));
        set_error(c, "absurd_timestamp", NULL, "ts %s is after now + max_future (%s)", when, bound);
    }
}

static void check_key(decode_ctx_t *c, const char *key, size_t keylen) {
    const char *acc = c->ev->account_id;
    size_t alen = strlen(acc);
    char ks[SNIPPET_MAX + 4];
    char as[SNIPPET_MAX + 4];

    if (key == NULL || (keylen == alen && memcmp(key, acc, alen) == 0)) {
        return;
    }
    snippet(ks, key, keylen);
    snippet(as, acc, alen);
    set_error(c, "key_mismatch", NULL, "message key \"%s\" != account_id \"%s\"", ks, as);
}

/* ---- public API ---- */

cw_event_limits_t cw_event_limits_from_conf(const cw_conf_t *conf) {
    cw_event_limits_t lim;
    lim.now_ms = cw_time_now_ms();
    lim.max_future_ms = conf->max_future_ms;
    lim.min_ts_ms = conf->min_ts_ms;
    lim.max_bytes = conf->max_event_bytes > 0 ? (size_t)conf->max_event_bytes : 0;
    return lim;
}

static void event_init(cw_event_t *ev) {
    memset(ev, 0, sizeof(*ev));
    ev->type = CW_EV_UNKNOWN;
    ev->count = 1;
    ev->arr = -1;
    ev->seats = -1;
    ev->renewal_ms = -1;
    ev->score = -1;
}

/* Describe yajl's error into c (as "not_json"); called with the failing status. */
static void json_error(decode_ctx_t *c, yajl_handle h, size_t offset) {
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    const char *text = msg != NULL ? (const char *)msg : "parse error";
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ')) {
        n--;
    }
    c->failed = 0; /* a syntax error outranks any field problem seen so far */
    set_error(c, "not_json", NULL, "invalid JSON at byte %zu: %.*s", offset, (int)n, text);
    if (msg != NULL) {
        yajl_free_error(h, msg);
    }
}

cw_err_t cw_event_decode(const char *data, size_t len, const char *key, size_t keylen,
                         const cw_event_limits_t *lim, cw_event_t *ev, char *reason, char *detail) {
    _Alignas(ARENA_ALIGN) unsigned char mem[ARENA_BYTES];
    arena_t arena = {mem, sizeof(mem), 0, SIZE_MAX};
    yajl_alloc_funcs afs = {arena_malloc, arena_realloc, arena_free, &arena};
    decode_ctx_t c;
    yajl_handle h;
    yajl_status st;

    event_init(ev);
    memset(&c, 0, sizeof(c));
    c.ev = ev;
    c.field = -1;

    if (len > lim->max_bytes) {
        set_error(&c, "oversized", NULL, "message is %zu bytes, limit %zu", len, lim->max_bytes);
        goto done;
    }
    h = yajl_alloc(&callbacks, &afs, &c);
    if (h == NULL) {
        set_error(&c, "internal", NULL, "cannot allocate the JSON parser");
        goto done;
    }
    st = yajl_parse(h, (const unsigned char *)data, len);
    if (st != yajl_status_ok) {
        json_error(&c, h, yajl_get_bytes_consumed(h));
    } else {
        st = yajl_complete_parse(h);
        if (st != yajl_status_ok) {
            json_error(&c, h, len);
        }
    }
    yajl_free(h);
    h = NULL;
    if (c.failed && strcmp(c.reason, "not_json") == 0) {
        goto done;
    }
    if (c.not_object) {
        c.failed = 0;
        set_error(&c, "not_object", NULL, "the top-level JSON value is not an object");
        goto done;
    }
    if (c.failed) {
        goto done;
    }
    check_required(&c);
    if (!c.failed) {
        check_ts(&c, lim);
    }
    if (!c.failed) {
        check_key(&c, key, keylen);
    }

done:
    if (!c.failed) {
        return CW_OK; /* reason and detail are left untouched */
    }
    if (reason != NULL) {
        cw_strlcpy(reason, c.reason, CW_REASON_MAX);
    }
    if (detail != NULL) {
        cw_strlcpy(detail, c.detail, CW_DETAIL_MAX);
    }
    return CW_ERROR;
}

int64_t cw_event_value(const cw_event_t *ev) {
    switch (ev->type) {
    case CW_EV_USAGE:
        return ev->count;
    case CW_EV_NPS:
        return ev->score;
    default:
        return 1;
    }
}
