/*
 * test_common.c — common/: JSON string escaping (every dead letter carries
 * the raw payload as a JSON string, so any bytes must give valid JSON) and
 * the JSON buffer helper.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <yajl/yajl_tree.h>

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
