/*
 * test_common.c — common/: JSON string escaping (every dead letter carries
 * the raw payload as a JSON string, so any bytes must give valid JSON),
 * the JSON buffer helper, the arena (Redis replies are built in one), the
 * integer formatter of Redis arguments, and the double and time formatters
 * of score snapshots (byte for byte what printf writes).
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "cw_arena.h"
#include "cw_buf.h"
#include "cw_common.h"

typedef struct esc_case {
    const char *in;
    size_t len;
    const char *out;
} esc_case_t;

#define S(x) x, sizeof(x) - 1

Test(common, json_escape_table) {
    static const esc_case_t cases[] = {
        {S("plain"), "plain"},
        {S("q\"b\\"), "q\\\"b\\\\"},
        {S("nl\n\r\t"), "nl\\n\\r\\t"},
        {S("\x01\x1f\x7f"), "\\u0001\\u001f\\u007f"},
        {S("caf\xc3\xa9"), "caf\xc3\xa9"},                           /* 2-byte UTF-8 kept */
        {S("\xe6\x97\xa5\xe6\x9c\xac"), "\xe6\x97\xa5\xe6\x9c\xac"}, /* 3-byte kept */
        {S("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80"},                 /* 4-byte kept */
        {S("\xff"), "\\u00ff"},                                      /* never UTF-8 */
        {S("\xc3"), "\\u00c3"},                                      /* truncated sequence */
        {S("\xc3("), "\\u00c3("},                                    /* bad continuation */
        {S("\xc0\xaf"), "\\u00c0\\u00af"},                           /* overlong */
        {S("\xed\xa0\x80"), "\\u00ed\\u00a0\\u0080"},                /* surrogate */
        {S("\xf4\x90\x80\x80"), "\\u00f4\\u0090\\u0080\\u0080"},     /* past U+10FFFF */
        {"a\0b", 3, "a\\u0000b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[128];
        size_t need = cw_json_escape(out, sizeof(out), cases[i].in, cases[i].len);
        cr_expect_str_eq(out, cases[i].out, "case %zu", i);
        cr_expect_eq(need, strlen(cases[i].out), "case %zu: length", i);
    }
}

Test(common, json_escape_truncates_safely) {
    char out[4];
    size_t need = cw_json_escape(out, sizeof(out), "abcdef", 6);
    cr_expect_eq(need, 6);
    cr_expect_str_eq(out, "abc");
}

/* Every byte value, alone and in a run, gives a string yajl accepts. */
Test(common, json_str_of_any_bytes_parses) {
    char bytes[256];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (char)i;
    }
    cw_buf_t b = {0};
    cw_buf_puts(&b, "{\"payload\":");
    cw_buf_json_str(&b, bytes, sizeof(bytes));
    cw_buf_puts(&b, "}");
    char err[256];
    yajl_val v = yajl_tree_parse(b.data, err, sizeof(err));
    cr_assert_not_null(v, "not JSON: %s", err);
    yajl_tree_free(v);
    cw_buf_free(&b);
}

Test(common, deadline_is_normalised_and_ahead) {
    int64_t before = cw_time_now_ms();
    struct timespec t = cw_time_deadline(1999);
    int64_t at = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
    cr_expect(t.tv_nsec >= 0 && t.tv_nsec < 1000000000L);
    cr_expect_geq(at, before + 1999);
    cr_expect_lt(at, before + 1999 + 10000); /* not a timing check: a 10 s margin */
}

Test(common, arena_aligns_zeroes_and_reuses_after_reset) {
    cw_arena_t *a = cw_arena_new(4096, 8192);
    cr_assert_not_null(a);
    unsigned char *p[64];
    for (int i = 0; i < 64; i++) {
        p[i] = cw_arena_alloc(a, (size_t)(1 + i * 7), 1);
        cr_assert_not_null(p[i]);
        cr_assert_eq((uintptr_t)p[i] % 16, 0, "allocation %d is not 16-byte aligned", i);
        for (int k = 0; k < 1 + i * 7; k++) {
            cr_assert_eq(p[i][k], 0);
        }
        memset(p[i], 0xAB, (size_t)(1 + i * 7));
    }
    /* no two allocations overlap: each still holds its own fill */
    for (int i = 1; i < 64; i++) {
        cr_assert(p[i] >= p[i - 1] + 1 + (i - 1) * 7 || p[i] + 1 + i * 7 <= p[i - 1],
                  "allocations %d and %d overlap", i - 1, i);
    }
    cw_arena_reset(a);
    /* after a reset the same memory is handed out again, zeroed on request */
    unsigned char *q = cw_arena_alloc(a, 100, 1);
    cr_assert_not_null(q);
    for (int k = 0; k < 100; k++) {
        cr_assert_eq(q[k], 0);
    }
    cw_arena_destroy(a);
}

Test(common, arena_large_requests_and_the_keep_bound) {
    cw_arena_t *a = cw_arena_new(1024, 4096);
    cr_assert_not_null(a);
    /* a request larger than a chunk gets a chunk of its own */
    char *big = cw_arena_alloc(a, 100000, 0);
    cr_assert_not_null(big);
    memset(big, 1, 100000);
    for (int i = 0; i < 20; i++) {
        cr_assert_not_null(cw_arena_alloc(a, 1000, 0));
    }
    cr_assert_geq(cw_arena_held(a), 100000 + 20 * 1000);
    /* a reset keeps at most 4,096 bytes of chunks */
    cw_arena_reset(a);
    cr_assert_leq(cw_arena_held(a), 4096, "held %zu after reset", cw_arena_held(a));
    /* and the arena still serves both sizes */
    cr_assert_not_null(cw_arena_alloc(a, 100000, 0));
    cr_assert_not_null(cw_arena_alloc(a, 10, 1));
    cw_arena_destroy(a);
    cw_arena_destroy(NULL);
}

/* The next value of a xorshift64 sequence (the random cases below). */
static uint64_t xorshift(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

Test(common, fmt_i64_matches_printf) {
    const int64_t fixed[] = {0,         1,         -1,           9, 10, -10, 99, 100, 1234567890123,
                             INT64_MAX, INT64_MIN, INT64_MIN + 1};
    char got[CW_I64_MAX_CHARS], want[32];
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        size_t n = cw_fmt_i64(got, fixed[i]);
        snprintf(want, sizeof(want), "%" PRId64, fixed[i]);
        cr_assert_str_eq(got, want);
        cr_assert_eq(n, strlen(want));
    }
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 100000; i++) {
        xorshift(&x);
        int64_t v = (int64_t)(x >> (i % 64)) * (i % 2 ? -1 : 1);
        size_t n = cw_fmt_i64(got, v);
        snprintf(want, sizeof(want), "%" PRId64, v);
        cr_assert_str_eq(got, want);
        cr_assert_eq(n, strlen(want));
    }
}

/* cw_fmt_g(v, prec) against snprintf("%.*g"): the bytes must be printf's,
 * on the fast path and off it. */
static void expect_g(double v, int prec) {
    char got[CW_G_MAX_CHARS], want[64];
    size_t n = cw_fmt_g(got, v, prec);
    snprintf(want, sizeof(want), "%.*g", prec, v);
    cr_assert_str_eq(got, want, "%%.%dg of %.17g: got %s, want %s", prec, v, got, want);
    cr_assert_eq(n, strlen(want));
}

Test(common, fmt_g_matches_printf) {
    /* ties and near-ties (printf rounds the exact binary value, half to
     * even), the ends of fixed notation, carries into a new digit, specials */
    const double fixed[] = {0.0,          -0.0,       0.5,
                            1.5,          2.5,        0.125,
                            0.375,        123456.5,   1234567.5,
                            999999.5,     999999.4,   9.9999995,
                            9.9999994,    99999.95,   0.00012345675,
                            1e-4,         9.99999e-5, 9.999995e-5,
                            0.0001000005, 1e-5,       1e6,
                            999999.0,     1e15,       1e16,
                            123.456,      -123.456,   0.1,
                            0.7,          1.0 / 3.0,  2.0 / 3.0,
                            100.0,        73.4,       1e300,
                            -1e-300,      5e-324,     1.7976931348623157e308,
                            INFINITY,     -INFINITY,  NAN};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        for (int prec = 1; prec <= 17; prec++) {
            expect_g(fixed[i], prec);
        }
    }
    /* random doubles over twenty decades, both signs */
    uint64_t x = 0x2545F4914F6CDD1Du;
    for (int i = 0; i < 300000; i++) {
        xorshift(&x);
        double m = (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
        double v = m * pow(10.0, (double)(int)(i % 20) - 8.0) * (i % 3 ? 1.0 : -1.0);
        expect_g(v, 1 + i % 9);
        expect_g(v, 6);
    }
    /* short decimals, where ties at the printed precision are common */
    for (int k = -20000; k <= 20000; k++) {
        expect_g(k / 1000.0, 2);
        expect_g(k / 1000.0, 3);
        expect_g(k / 8.0, 4);
        expect_g(k / 64.0, 3);
    }
}

/* cw_state_commit stores a score (the double nearest to k / 10) with
 * "%.15g" through cw_fmt_g at precision 6: the same bytes for every score
 * up to 99,999.9. */
Test(common, fmt_g_at_6_writes_tenths_as_percent_15g) {
    char got[CW_G_MAX_CHARS], want[64];
    for (int k = -999999; k <= 999999; k++) {
        double v = floor((double)k + 0.5) / 10.0; /* as cw_model_score rounds */
        cw_fmt_g(got, v, 6);
        snprintf(want, sizeof(want), "%.15g", v);
        cr_assert_str_eq(got, want, "k %d", k);
    }
}

Test(common, time_format_matches_printf) {
    char got[40], want[40];
    cw_time_format(0, got, sizeof(got));
    cr_assert_str_eq(got, "1970-01-01T00:00:00.000Z");
    cw_time_format(-1, got, sizeof(got));
    cr_assert_str_eq(got, "1969-12-31T23:59:59.999Z");
    cw_time_format(-719528LL * CW_MS_PER_DAY, got, sizeof(got));
    cr_assert_str_eq(got, "0000-01-01T00:00:00.000Z");
    cw_time_format(2932897LL * CW_MS_PER_DAY + 1, got, sizeof(got)); /* past 9999: snprintf */
    cr_assert_str_eq(got, "10000-01-01T00:00:00.001Z");
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 100000; i++) {
        xorshift(&x);
        /* years 1000 .. 9999 (strftime pads %Y to 4 digits only from 1000) */
        int64_t ms = -30610224000000LL + (int64_t)(x % 283996800000000ULL);
        time_t s = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
        struct tm tm;
        gmtime_r(&s, &tm);
        size_t n = strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(want + n, sizeof(want) - n, ".%03dZ", (int)(ms - (int64_t)s * 1000));
        cw_time_format(ms, got, sizeof(got));
        cr_assert_str_eq(got, want, "ms %" PRId64, ms);
    }
}
