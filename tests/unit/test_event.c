/*
 * test_event.c — unit tests for consumer/cw_event.c, the decoder and
 * validator of one input event (SPEC §2).
 *
 * Two tables drive most of it: valid events of every type, whose decoded
 * fields are compared one by one, and malformed inputs, each with the exact
 * stable reason code the dead-letter topic will carry. Separate tests cover
 * the limits (oversized, timestamp bounds), the safety of the human detail
 * text, inputs large enough to push yajl past its stack arena, and
 * cw_event_value / cw_event_limits_from_conf. All limits are fixed, so the
 * results do not depend on the wall clock.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_event.h"

#define NOW_MS INT64_C(1780272000000)   /* 2026-06-01T00:00:00Z */
#define MIN_TS_MS INT64_C(946684800000) /* 2000-01-01T00:00:00Z */
#define DAY_MS INT64_C(86400000)
#define TS_A INT64_C(1779271200000) /* 2026-05-20T10:00:00Z */

static const cw_event_limits_t limits = {NOW_MS, DAY_MS, MIN_TS_MS, 65536};

static cw_err_t decode_lim(const char *json, const char *key, const cw_event_limits_t *lim,
                           cw_event_t *ev, char *reason, char *detail) {
    return cw_event_decode(json, strlen(json), key, key != NULL ? strlen(key) : 0, lim, ev, reason,
                           detail);
}

static cw_err_t decode(const char *json, const char *key, cw_event_t *ev, char *reason,
                       char *detail) {
    return decode_lim(json, key, &limits, ev, reason, detail);
}

/* ---- valid events ---- */

typedef struct valid_case {
    const char *name;
    const char *json;
    const char *key; /* NULL = no message key */
    cw_ev_type_t type;
    const char *event_id;
    const char *account_id;
    const char *user_id;
    const char *feature;
    const char *plan;
    int64_t ts_ms;
    int64_t count;
    double arr;
    int64_t seats;
    int64_t renewal_ms;
    int score;
    int64_t value; /* cw_event_value */
} valid_case_t;

static const valid_case_t valid_cases[] = {
    {"login, ts with Z, matching key",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u1\","
     "\"ts\":\"2026-05-20T10:00:00Z\"}",
     "acme", CW_EV_LOGIN, "e1", "acme", "u1", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"login, ts with negative offset",
     "{\"type\":\"login\",\"ts\":\"2026-05-20T01:00:00-09:00\",\"event_id\":\"e2\","
     "\"account_id\":\"acme\",\"user_id\":\"u2\"}",
     NULL, CW_EV_LOGIN, "e2", "acme", "u2", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"login, ts with positive offset",
     "{\"event_id\":\"e2b\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u2\","
     "\"ts\":\"2026-05-20T19:00:00+09:00\"}",
     NULL, CW_EV_LOGIN, "e2b", "acme", "u2", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"usage, fractional seconds, count 5",
     "{\"event_id\":\"e3\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u1\","
     "\"feature\":\"reports\",\"count\":5,\"ts\":\"2026-05-20T10:00:00.123Z\"}",
     "acme", CW_EV_USAGE, "e3", "acme", "u1", "reports", "", TS_A + 123, 5, -1, -1, -1, -1, 5},
    {"usage, integer epoch ms, default count",
     "{\"event_id\":\"e4\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u1\","
     "\"feature\":\"export\",\"ts\":1779271200000}",
     NULL, CW_EV_USAGE, "e4", "acme", "u1", "export", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"account, all attributes, YYYY-MM-DD renewal",
     "{\"event_id\":\"e5\",\"type\":\"account\",\"account_id\":\"acme\",\"ts\":1779271200000,"
     "\"arr\":1200000.5,\"seats\":25,\"plan\":\"pro\",\"renewal_date\":\"2027-03-31\"}",
     NULL, CW_EV_ACCOUNT, "e5", "acme", "", "", "pro", TS_A, 1, 1200000.5, 25,
     INT64_C(1806451200000), -1, 1},
    {"account, RFC 3339 renewal, integer arr, zero seats",
     "{\"event_id\":\"e6\",\"type\":\"account\",\"account_id\":\"acme\",\"ts\":1779271200000,"
     "\"arr\":0,\"seats\":0,\"renewal_date\":\"2027-03-31T09:00:00+09:00\"}",
     NULL, CW_EV_ACCOUNT, "e6", "acme", "", "", "", TS_A, 1, 0, 0, INT64_C(1806451200000), -1, 1},
    {"account without attributes",
     "{\"event_id\":\"e7\",\"type\":\"account\",\"account_id\":\"acme\",\"ts\":1779271200000}",
     NULL, CW_EV_ACCOUNT, "e7", "acme", "", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"nps score 0",
     "{\"event_id\":\"e8\",\"type\":\"nps\",\"account_id\":\"acme\",\"ts\":1779271200000,"
     "\"score\":0}",
     NULL, CW_EV_NPS, "e8", "acme", "", "", "", TS_A, 1, -1, -1, -1, 0, 0},
    {"nps score 10 with user",
     "{\"event_id\":\"e9\",\"type\":\"nps\",\"account_id\":\"acme\",\"user_id\":\"cfo\","
     "\"ts\":1779271200000,\"score\":10}",
     NULL, CW_EV_NPS, "e9", "acme", "cfo", "", "", TS_A, 1, -1, -1, -1, 10, 10},
    {"support_ticket",
     "{\"event_id\":\"e10\",\"type\":\"support_ticket\",\"account_id\":\"acme\","
     "\"ts\":\"2026-05-20T10:00:00Z\"}",
     "acme", CW_EV_SUPPORT_TICKET, "e10", "acme", "", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"cancellation_notice",
     "{\"event_id\":\"e11\",\"type\":\"cancellation_notice\",\"account_id\":\"acme\","
     "\"ts\":\"2026-05-20T10:00:00Z\"}",
     NULL, CW_EV_CANCELLATION, "e11", "acme", "", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"unknown type is OK with CW_EV_UNKNOWN",
     "{\"event_id\":\"e12\",\"type\":\"page_view\",\"account_id\":\"acme\","
     "\"ts\":\"2026-05-20T10:00:00Z\"}",
     NULL, CW_EV_UNKNOWN, "e12", "acme", "", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"unknown fields ignored, including nested ones shadowing known names",
     "{\"meta\":{\"account_id\":\"other\",\"ts\":true,\"a\":[1,{\"type\":[]}]},"
     "\"event_id\":\"e13\",\"tags\":[\"x\",[null,{}]],\"type\":\"login\",\"x\":null,\"x\":1,"
     "\"account_id\":\"acme\",\"user_id\":\"u1\",\"extra\":{\"deep\":{\"deeper\":[[[]]]}},"
     "\"ts\":\"2026-05-20T10:00:00Z\",\"flag\":false,\"n\":-1.5e3}",
     "acme", CW_EV_LOGIN, "e13", "acme", "u1", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"escaped strings are unescaped",
     "{\"event_id\":\"e\\\"14\",\"type\":\"lo\\u0067in\",\"account_id\":\"acc\\u00e9\","
     "\"user_id\":\"a\\/b\\\\c\",\"ts\":\"2026-05-20T10:00:00Z\"}",
     "acc\xc3\xa9", CW_EV_LOGIN, "e\"14", "acc\xc3\xa9", "a/b\\c", "", "", TS_A, 1, -1, -1, -1, -1,
     1},
    {"whitespace around the document",
     " \n\t{ \"event_id\" : \"e15\" , \"type\" : \"support_ticket\" , \"account_id\" : "
     "\"acme\" , \"ts\" : 1779271200000 } \n",
     NULL, CW_EV_SUPPORT_TICKET, "e15", "acme", "", "", "", TS_A, 1, -1, -1, -1, -1, 1},
    {"ts exactly at now + max_future",
     "{\"event_id\":\"e16\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"ts\":1780358400000}",
     NULL, CW_EV_LOGIN, "e16", "acme", "u", "", "", NOW_MS + DAY_MS, 1, -1, -1, -1, -1, 1},
    {"ts exactly at min_ts",
     "{\"event_id\":\"e17\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"ts\":\"2000-01-01T00:00:00Z\"}",
     NULL, CW_EV_LOGIN, "e17", "acme", "u", "", "", MIN_TS_MS, 1, -1, -1, -1, -1, 1},
    {"count on a login is accepted; value stays 1",
     "{\"event_id\":\"e18\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"count\":3,\"ts\":1779271200000}",
     NULL, CW_EV_LOGIN, "e18", "acme", "u", "", "", TS_A, 3, -1, -1, -1, -1, 1},
};

Test(event, valid_events) {
    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        const valid_case_t *tc = &valid_cases[i];
        cw_event_t ev;
        char reason[CW_REASON_MAX] = "sentinel";
        char detail[CW_DETAIL_MAX] = "sentinel";
        cw_err_t rc = decode(tc->json, tc->key, &ev, reason, detail);

        cr_expect_eq(rc, CW_OK, "[%s] rc %d reason %s (%s)", tc->name, rc, reason, detail);
        if (rc != CW_OK) {
            continue;
        }
        cr_expect_str_eq(reason, "sentinel", "[%s] reason must be untouched on OK", tc->name);
        cr_expect_str_eq(detail, "sentinel", "[%s] detail must be untouched on OK", tc->name);
        cr_expect_eq(ev.type, tc->type, "[%s] type %d", tc->name, ev.type);
        cr_expect_str_eq(ev.event_id, tc->event_id, "[%s] event_id", tc->name);
        cr_expect_str_eq(ev.account_id, tc->account_id, "[%s] account_id", tc->name);
        cr_expect_str_eq(ev.user_id, tc->user_id, "[%s] user_id", tc->name);
        cr_expect_str_eq(ev.feature, tc->feature, "[%s] feature", tc->name);
        cr_expect_str_eq(ev.plan, tc->plan, "[%s] plan", tc->name);
        cr_expect_eq(ev.ts_ms, tc->ts_ms, "[%s] ts %lld", tc->name, (long long)ev.ts_ms);
        cr_expect_eq(ev.count, tc->count, "[%s] count %lld", tc->name, (long long)ev.count);
        cr_expect_eq(ev.arr, tc->arr, "[%s] arr %f", tc->name, ev.arr);
        cr_expect_eq(ev.seats, tc->seats, "[%s] seats %lld", tc->name, (long long)ev.seats);
        cr_expect_eq(ev.renewal_ms, tc->renewal_ms, "[%s] renewal %lld", tc->name,
                     (long long)ev.renewal_ms);
        cr_expect_eq(ev.score, tc->score, "[%s] score %d", tc->name, ev.score);
        cr_expect_eq(cw_event_value(&ev), tc->value, "[%s] value", tc->name);
    }
}

/* ---- malformed events ---- */

typedef struct bad_case {
    const char *name;
    const char *json;
    const char *key;
    const char *reason;
} bad_case_t;

/* A valid login with one field replaced: prefix/suffix around it. */
#define LOGIN_WITH(field)                                                                          \
    "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u1\","          \
    "\"ts\":\"2026-05-20T10:00:00Z\"," field "}"
#define USAGE_WITH(field)                                                                          \
    "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u1\","          \
    "\"feature\":\"f\",\"ts\":\"2026-05-20T10:00:00Z\"," field "}"
#define TS_IS(ts)                                                                                  \
    "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u1\","          \
    "\"ts\":" ts "}"
#define S129                                                                                       \
    "0123456789012345678901234567890123456789012345678901234567890123"                             \
    "01234567890123456789012345678901234567890123456789012345678901234"

static const bad_case_t bad_cases[] = {
    /* not JSON / not an object */
    {"plain text", "hello", NULL, "not_json"},
    {"empty input", "", NULL, "not_json"},
    {"only whitespace", "  \n ", NULL, "not_json"},
    {"truncated object", "{\"event_id\":\"e1\",\"type\":\"login\"", NULL, "not_json"},
    {"truncated string", "{\"event_id\":\"e1", NULL, "not_json"},
    {"truncated after a bad field", "{\"count\":0,", NULL, "not_json"},
    {"trailing garbage", LOGIN_WITH("\"x\":1") " x", NULL, "not_json"},
    {"two documents", "{}{}", NULL, "not_json"},
    {"comments are not JSON", "/* c */" LOGIN_WITH("\"x\":1"), NULL, "not_json"},
    {"single quotes", "{'event_id':'e1'}", NULL, "not_json"},
    {"invalid UTF-8 in a string", LOGIN_WITH("\"x\":\"\xff\xfe\""), NULL, "not_json"},
    {"raw control byte in a string", LOGIN_WITH("\"x\":\"a\x01z\""), NULL, "not_json"},
    {"bare NaN", LOGIN_WITH("\"arr\":NaN"), NULL, "not_json"},
    {"array top level", "[1,2]", NULL, "not_object"},
    {"array holding an event",
     "[{\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"a\",\"ts\":1}]", NULL,
     "not_object"},
    {"string top level", "\"login\"", NULL, "not_object"},
    {"number top level", "42", NULL, "not_object"},
    {"null top level", "null", NULL, "not_object"},
    {"truncated array top level", "[1,2", NULL, "not_json"},
    /* missing fields */
    {"empty object", "{}", NULL, "missing_field:event_id"},
    {"missing event_id",
     "{\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u1\",\"ts\":1779271200000}", NULL,
     "missing_field:event_id"},
    {"missing type",
     "{\"event_id\":\"e1\",\"account_id\":\"acme\",\"user_id\":\"u1\",\"ts\":1779271200000}", NULL,
     "missing_field:type"},
    {"missing account_id",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"user_id\":\"u1\",\"ts\":1779271200000}", NULL,
     "missing_field:account_id"},
    {"missing ts",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u1\"}", NULL,
     "missing_field:ts"},
    {"missing ts on an unknown type",
     "{\"event_id\":\"e1\",\"type\":\"page_view\",\"account_id\":\"acme\"}", NULL,
     "missing_field:ts"},
    {"login without user_id",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"ts\":1779271200000}", NULL,
     "missing_field:user_id"},
    {"usage without user_id",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"acme\",\"feature\":\"f\","
     "\"ts\":1779271200000}",
     NULL, "missing_field:user_id"},
    {"usage without feature",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"ts\":1779271200000}",
     NULL, "missing_field:feature"},
    {"nps without score",
     "{\"event_id\":\"e1\",\"type\":\"nps\",\"account_id\":\"acme\",\"ts\":1779271200000}", NULL,
     "missing_field:score"},
    /* wrong types */
    {"event_id number",
     "{\"event_id\":5,\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"u1\",\"ts\":1}",
     NULL, "wrong_type:event_id"},
    {"type number", "{\"event_id\":\"e1\",\"type\":1,\"account_id\":\"acme\",\"ts\":1}", NULL,
     "wrong_type:type"},
    {"account_id boolean", "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":true}", NULL,
     "wrong_type:account_id"},
    {"account_id null", "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":null}", NULL,
     "wrong_type:account_id"},
    {"duplicate user_id, second of the wrong type", LOGIN_WITH("\"user_id\":5"), NULL,
     "duplicate_field:user_id"},
    {"user_id number (only occurrence)",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":5,\"ts\":1}",
     NULL, "wrong_type:user_id"},
    {"ts boolean", TS_IS("true"), NULL, "wrong_type:ts"},
    {"ts null", TS_IS("null"), NULL, "wrong_type:ts"},
    {"feature array",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"feature\":[\"f\"],\"ts\":1779271200000}",
     NULL, "wrong_type:feature"},
    {"count string", USAGE_WITH("\"count\":\"2\""), NULL, "wrong_type:count"},
    {"count boolean", USAGE_WITH("\"count\":true"), NULL, "wrong_type:count"},
    {"count 1.5", USAGE_WITH("\"count\":1.5"), NULL, "wrong_type:count"},
    {"count 1e2", USAGE_WITH("\"count\":1e2"), NULL, "wrong_type:count"},
    {"arr string", LOGIN_WITH("\"arr\":\"100\""), NULL, "wrong_type:arr"},
    {"seats 1.5", LOGIN_WITH("\"seats\":1.5"), NULL, "wrong_type:seats"},
    {"plan number", LOGIN_WITH("\"plan\":5"), NULL, "wrong_type:plan"},
    {"renewal_date number", LOGIN_WITH("\"renewal_date\":20270331"), NULL,
     "wrong_type:renewal_date"},
    {"score string", LOGIN_WITH("\"score\":\"7\""), NULL, "wrong_type:score"},
    {"score 7.5", LOGIN_WITH("\"score\":7.5"), NULL, "wrong_type:score"},
    /* nested values in known fields */
    {"account_id object", "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":{\"id\":\"a\"}}",
     NULL, "wrong_type:account_id"},
    {"event_id array", "{\"event_id\":[\"e1\"],\"type\":\"login\"}", NULL, "wrong_type:event_id"},
    {"user_id array",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":[\"u\"],"
     "\"ts\":1}",
     NULL, "wrong_type:user_id"},
    {"ts object", TS_IS("{\"ms\":1779271200000}"), NULL, "wrong_type:ts"},
    {"type object", "{\"event_id\":\"e1\",\"type\":{}}", NULL, "wrong_type:type"},
    {"feature object",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"feature\":{\"name\":\"f\"},\"ts\":1779271200000}",
     NULL, "wrong_type:feature"},
    {"count array", USAGE_WITH("\"count\":[1]"), NULL, "wrong_type:count"},
    {"score object", LOGIN_WITH("\"score\":{\"v\":1}"), NULL, "wrong_type:score"},
    /* too long */
    {"event_id 129 bytes", "{\"event_id\":\"" S129 "\",\"type\":\"login\",\"account_id\":\"acme\"}",
     NULL, "too_long:event_id"},
    {"account_id 129 bytes", "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"" S129 "\"}",
     NULL, "too_long:account_id"},
    {"feature 129 bytes",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"acme\",\"user_id\":\"u\","
     "\"feature\":\"" S129 "\",\"ts\":1779271200000}",
     NULL, "too_long:feature"},
    {"plan 129 bytes", LOGIN_WITH("\"plan\":\"" S129 "\""), NULL, "too_long:plan"},
    {"type 129 bytes", "{\"event_id\":\"e1\",\"type\":\"" S129 "\"}", NULL, "too_long:type"},
    /* bad values */
    {"count 0", USAGE_WITH("\"count\":0"), NULL, "bad_value:count"},
    {"count -1", USAGE_WITH("\"count\":-1"), NULL, "bad_value:count"},
    {"count overflows int64", USAGE_WITH("\"count\":99999999999999999999"), NULL,
     "bad_value:count"},
    {"score 11", LOGIN_WITH("\"score\":11"), NULL, "bad_value:score"},
    {"score -1", LOGIN_WITH("\"score\":-1"), NULL, "bad_value:score"},
    {"seats -1", LOGIN_WITH("\"seats\":-1"), NULL, "bad_value:seats"},
    {"arr negative", LOGIN_WITH("\"arr\":-5.5"), NULL, "bad_value:arr"},
    {"arr infinite", LOGIN_WITH("\"arr\":1e999"), NULL, "bad_value:arr"},
    {"renewal_date month 13", LOGIN_WITH("\"renewal_date\":\"2027-13-01\""), NULL,
     "bad_value:renewal_date"},
    {"renewal_date text", LOGIN_WITH("\"renewal_date\":\"next year\""), NULL,
     "bad_value:renewal_date"},
    {"renewal_date Feb 30", LOGIN_WITH("\"renewal_date\":\"2027-02-30\""), NULL,
     "bad_value:renewal_date"},
    {"empty account_id",
     "{\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"\",\"ts\":1779271200000}",
     NULL, "bad_value:account_id"},
    {"empty event_id",
     "{\"event_id\":\"\",\"type\":\"support_ticket\",\"account_id\":\"a\",\"ts\":1779271200000}",
     NULL, "bad_value:event_id"},
    {"empty type", "{\"event_id\":\"e1\",\"type\":\"\",\"account_id\":\"a\",\"ts\":1779271200000}",
     NULL, "bad_value:type"},
    {"empty user_id on login",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"a\",\"user_id\":\"\","
     "\"ts\":1779271200000}",
     NULL, "bad_value:user_id"},
    {"empty feature on usage",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"a\",\"user_id\":\"u\","
     "\"feature\":\"\",\"ts\":1779271200000}",
     NULL, "bad_value:feature"},
    {"embedded NUL in account_id",
     "{\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"a\\u0000b\",\"ts\":1}",
     NULL, "bad_value:account_id"},
    {"embedded NUL in user_id",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"a\",\"user_id\":\"u\\u0000\","
     "\"ts\":1779271200000}",
     NULL, "bad_value:user_id"},
    {"lone low surrogate escape in account_id",
     "{\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"a\\udc00\",\"ts\":1}", NULL,
     "bad_value:account_id"},
    {"raw encoded surrogate in user_id",
     "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"a\",\"user_id\":\"\xed\xa0\x80\","
     "\"ts\":1779271200000}",
     NULL, "bad_value:user_id"},
    {"raw overlong NUL in feature",
     "{\"event_id\":\"e1\",\"type\":\"usage\",\"account_id\":\"a\",\"user_id\":\"u\","
     "\"feature\":\"\xc0\x80\",\"ts\":1779271200000}",
     NULL, "bad_value:feature"},
    /* timestamps */
    {"ts 1970 as text", TS_IS("\"1970-01-01T00:00:00Z\""), NULL, "absurd_timestamp"},
    {"ts 0 ms", TS_IS("0"), NULL, "absurd_timestamp"},
    {"ts negative ms", TS_IS("-1"), NULL, "absurd_timestamp"},
    {"ts just before min", TS_IS("946684799999"), NULL, "absurd_timestamp"},
    {"ts year 2999 as text", TS_IS("\"2999-01-01T00:00:00Z\""), NULL, "absurd_timestamp"},
    {"ts year 2999 as ms", TS_IS("32472144000000"), NULL, "absurd_timestamp"},
    {"ts one ms past now + max_future", TS_IS("1780358400001"), NULL, "absurd_timestamp"},
    {"ts int64 max", TS_IS("9223372036854775807"), NULL, "absurd_timestamp"},
    {"ts int64 min", TS_IS("-9223372036854775808"), NULL, "absurd_timestamp"},
    {"ts word", TS_IS("\"yesterday\""), NULL, "bad_timestamp"},
    {"ts date only", TS_IS("\"2026-05-20\""), NULL, "bad_timestamp"},
    {"ts without zone", TS_IS("\"2026-05-20T10:00:00\""), NULL, "bad_timestamp"},
    {"ts bad month", TS_IS("\"2026-13-20T10:00:00Z\""), NULL, "bad_timestamp"},
    {"ts empty string", TS_IS("\"\""), NULL, "bad_timestamp"},
    {"ts fractional ms", TS_IS("1779271200000.5"), NULL, "bad_timestamp"},
    {"ts exponent", TS_IS("1.7e12"), NULL, "bad_timestamp"},
    {"ts overflows int64", TS_IS("99999999999999999999"), NULL, "bad_timestamp"},
    /* key, duplicates, precedence */
    {"key mismatch", LOGIN_WITH("\"x\":1"), "acme-2", "key_mismatch"},
    {"empty key", LOGIN_WITH("\"x\":1"), "", "key_mismatch"},
    {"key is a prefix", LOGIN_WITH("\"x\":1"), "acm", "key_mismatch"},
    {"duplicate account_id", LOGIN_WITH("\"account_id\":\"acme\""), "acme",
     "duplicate_field:account_id"},
    {"duplicate ts", LOGIN_WITH("\"ts\":1779271200000"), NULL, "duplicate_field:ts"},
    {"duplicate type before other problems", "{\"type\":\"login\",\"type\":\"usage\",\"count\":0}",
     NULL, "duplicate_field:type"},
    {"first field problem wins", LOGIN_WITH("\"count\":0,\"score\":11"), NULL, "bad_value:count"},
    {"field problem beats missing field", "{\"score\":11}", NULL, "bad_value:score"},
    {"field problem beats key mismatch", LOGIN_WITH("\"seats\":-1"), "zzz", "bad_value:seats"},
    {"absurd ts beats key mismatch", TS_IS("0"), "zzz", "absurd_timestamp"},
};

Test(event, malformed_events) {
    size_t n = 0;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const bad_case_t *tc = &bad_cases[i];
        cw_event_t ev;
        char reason[CW_REASON_MAX] = "";
        char detail[CW_DETAIL_MAX] = "";
        cw_err_t rc = decode(tc->json, tc->key, &ev, reason, detail);

        cr_expect_eq(rc, CW_ERROR, "[%s] expected an error, got rc %d", tc->name, rc);
        cr_expect_str_eq(reason, tc->reason, "[%s] reason \"%s\" (%s)", tc->name, reason, detail);
        cr_expect_neq(detail[0], '\0', "[%s] detail must not be empty", tc->name);
        n++;
    }
    cr_expect_geq(n, 100, "table shrank to %zu cases", n);
}

/* user_id over the limit is rejected; exactly 128 bytes is accepted in every string field. */
Test(event, too_long_user_id_and_limit_128) {
    char json[512];
    cw_event_t ev;
    char reason[CW_REASON_MAX] = "";
    char detail[CW_DETAIL_MAX] = "";
    char s128[129];

    snprintf(json, sizeof(json),
             "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"acme\",\"user_id\":\"%s\","
             "\"ts\":1779271200000}",
             S129);
    cr_assert_eq(decode(json, NULL, &ev, reason, detail), CW_ERROR);
    cr_expect_str_eq(reason, "too_long:user_id");
    cr_expect(strstr(detail, "129 bytes") != NULL, "detail: %s", detail);

    /* exactly 128 bytes in every string field is accepted and kept whole */
    memcpy(s128, S129, 128);
    s128[128] = '\0';
    char big[2048];
    snprintf(big, sizeof(big),
             "{\"event_id\":\"%s\",\"type\":\"usage\",\"account_id\":\"%s\",\"user_id\":\"%s\","
             "\"feature\":\"%s\",\"plan\":\"%s\",\"ts\":1779271200000}",
             s128, s128, s128, s128, s128);
    cr_assert_eq(decode(big, s128, &ev, reason, detail), CW_OK, "%s %s", reason, detail);
    cr_expect_str_eq(ev.event_id, s128);
    cr_expect_str_eq(ev.account_id, s128);
    cr_expect_str_eq(ev.user_id, s128);
    cr_expect_str_eq(ev.feature, s128);
    cr_expect_str_eq(ev.plan, s128);
}

Test(event, oversized_checked_first) {
    const char *ok = "{\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"a\","
                     "\"ts\":1779271200000}";
    size_t n = strlen(ok);
    cw_event_limits_t lim = limits;
    cw_event_t ev;
    char reason[CW_REASON_MAX] = "";
    char detail[CW_DETAIL_MAX] = "";

    lim.max_bytes = n;
    cr_expect_eq(decode_lim(ok, NULL, &lim, &ev, reason, detail), CW_OK, "exactly at the limit");
    lim.max_bytes = n - 1;
    cr_expect_eq(decode_lim(ok, NULL, &lim, &ev, reason, detail), CW_ERROR);
    cr_expect_str_eq(reason, "oversized");
    /* garbage over the limit is "oversized", not "not_json": no parsing happens */
    lim.max_bytes = 4;
    cr_expect_eq(decode_lim("not json at all", NULL, &lim, &ev, reason, detail), CW_ERROR);
    cr_expect_str_eq(reason, "oversized");
    cr_expect(strstr(detail, "15 bytes") != NULL, "detail: %s", detail);
}

/* Inputs that push yajl beyond the stack arena: long escaped strings, deep nesting. */
Test(event, large_inputs_beyond_the_arena) {
    size_t cap = 200000;
    char *json = malloc(cap);
    cw_event_t ev;
    char reason[CW_REASON_MAX] = "";
    char detail[CW_DETAIL_MAX] = "";
    size_t o = 0;

    cr_assert_not_null(json);
    o += (size_t)sprintf(json + o, "{\"note\":\"");
    for (int i = 0; i < 20000; i++) {
        o += (size_t)sprintf(json + o, "\\n");
    }
    o += (size_t)sprintf(json + o, "\",\"deep\":");
    for (int i = 0; i < 5000; i++) {
        json[o++] = '[';
    }
    for (int i = 0; i < 5000; i++) {
        json[o++] = ']';
    }
    o += (size_t)sprintf(
        json + o, ",\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"a\\u00e9"
                  "\",\"ts\":1779271200000}");
    cr_assert_eq(cw_event_decode(json, o, NULL, 0, &limits, &ev, reason, detail), CW_OK, "%s %s",
                 reason, detail);
    cr_expect_str_eq(ev.account_id, "a\xc3\xa9");
    cr_expect_eq(ev.type, CW_EV_SUPPORT_TICKET);

    /* the same but truncated inside the nesting: a syntax error, nothing leaks (ASan) */
    cr_expect_eq(cw_event_decode(json, o - 20100, NULL, 0, &limits, &ev, reason, detail), CW_ERROR);
    cr_expect_str_eq(reason, "not_json");
    free(json);
}

/* Detail text quotes values safely: no control bytes, no cut UTF-8, bounded length. */
Test(event, detail_is_safe_text) {
    static const char *const inputs[] = {
        /* 129 bytes of 'é' pairs plus control escapes, too long for account_id */
        "{\"event_id\":\"e1\",\"type\":\"login\",\"account_id\":\"\\u0001\\u001b[31m\\t"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}",
        /* control bytes in a timestamp */
        TS_IS("\"2026\\n\\r\\u0000-05-20\""),
        /* key with control and invalid UTF-8 bytes */
        LOGIN_WITH("\"x\":1"),
    };
    static const char *const reasons[] = {"too_long:account_id", "bad_timestamp", "key_mismatch"};
    static const char *const keys[] = {NULL, NULL, "\x01\xff\xc3"};

    for (size_t i = 0; i < 3; i++) {
        cw_event_t ev;
        char reason[CW_REASON_MAX] = "";
        char detail[CW_DETAIL_MAX];
        memset(detail, 'X', sizeof(detail));
        cw_event_decode(inputs[i], strlen(inputs[i]), keys[i], keys[i] ? 3 : 0, &limits, &ev,
                        reason, detail);
        cr_expect_str_eq(reason, reasons[i]);
        size_t n = strnlen(detail, sizeof(detail));
        cr_assert_lt(n, sizeof(detail), "[%zu] detail not NUL-terminated", i);
        for (size_t k = 0; k < n; k++) {
            unsigned char b = (unsigned char)detail[k];
            cr_expect(b >= 0x20 && b != 0x7f, "[%zu] control byte 0x%02x in detail: %s", i, b,
                      detail);
            if (b >= 0x80) {
                /* a lead byte of é must be followed by its continuation byte */
                cr_expect(b != 0xc3 || (unsigned char)detail[k + 1] == 0xa9,
                          "[%zu] cut UTF-8 at %zu", i, k);
                cr_expect(b == 0xc3 || b == 0xa9, "[%zu] unexpected byte 0x%02x", i, b);
            }
        }
    }
}

Test(event, detail_mentions_the_problem) {
    static const struct {
        const char *json;
        const char *needle;
    } cases[] = {
        {USAGE_WITH("\"count\":0"), "count"},
        {TS_IS("\"yesterday\""), "yesterday"},
        {TS_IS("\"1970-01-01T00:00:00Z\""), "1970-01-01T00:00:00.000Z"},
        {"{\"type\":\"login\"}", "event_id"},
        {"{\"event_id\":\"e1\",", "byte"},
        {LOGIN_WITH("\"score\":true"), "boolean"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cw_event_t ev;
        char reason[CW_REASON_MAX] = "";
        char detail[CW_DETAIL_MAX] = "";
        cr_expect_eq(decode(cases[i].json, NULL, &ev, reason, detail), CW_ERROR);
        cr_expect(strstr(detail, cases[i].needle) != NULL, "[%zu] \"%s\" not in detail: %s", i,
                  cases[i].needle, detail);
    }
}

/* The decoder reads exactly len bytes: the same buffer cut short is judged on the cut. */
Test(event, reads_only_len_bytes) {
    const char *json = "{\"event_id\":\"e1\",\"type\":\"support_ticket\",\"account_id\":\"a\","
                       "\"ts\":1779271200000}GARBAGE";
    cw_event_t ev;
    char reason[CW_REASON_MAX] = "";
    char detail[CW_DETAIL_MAX] = "";
    size_t n = strlen(json) - strlen("GARBAGE");

    cr_expect_eq(cw_event_decode(json, n, "a", 1, &limits, &ev, reason, detail), CW_OK, "%s",
                 reason);
    cr_expect_eq(cw_event_decode(json, strlen(json), "a", 1, &limits, &ev, reason, detail),
                 CW_ERROR);
    cr_expect_str_eq(reason, "not_json");
    /* the key too is compared by length, not up to a NUL */
    cr_expect_eq(cw_event_decode(json, n, "abc", 1, &limits, &ev, reason, detail), CW_OK);
}

Test(event, null_reason_and_detail_are_allowed) {
    cw_event_t ev;
    cr_expect_eq(decode("nope", NULL, &ev, NULL, NULL), CW_ERROR);
}

Test(event, value_by_type) {
    static const struct {
        cw_ev_type_t type;
        int64_t count;
        int score;
        int64_t want;
    } cases[] = {
        {CW_EV_USAGE, 7, -1, 7},        {CW_EV_NPS, 1, 9, 9},      {CW_EV_NPS, 1, 0, 0},
        {CW_EV_LOGIN, 7, -1, 1},        {CW_EV_ACCOUNT, 1, -1, 1}, {CW_EV_SUPPORT_TICKET, 1, -1, 1},
        {CW_EV_CANCELLATION, 1, -1, 1}, {CW_EV_UNKNOWN, 5, 5, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cw_event_t ev;
        memset(&ev, 0, sizeof(ev));
        ev.type = cases[i].type;
        ev.count = cases[i].count;
        ev.score = cases[i].score;
        cr_expect_eq(cw_event_value(&ev), cases[i].want, "[%zu]", i);
    }
}

Test(event, limits_from_conf) {
    cw_conf_t *conf = calloc(1, sizeof(*conf));
    cr_assert_not_null(conf);
    conf->max_future_ms = 12345;
    conf->min_ts_ms = 678;
    conf->max_event_bytes = 4096;
    int64_t before = cw_time_now_ms();
    cw_event_limits_t lim = cw_event_limits_from_conf(conf);
    int64_t after = cw_time_now_ms();
    cr_expect_eq(lim.max_future_ms, 12345);
    cr_expect_eq(lim.min_ts_ms, 678);
    cr_expect_eq(lim.max_bytes, 4096);
    cr_expect(lim.now_ms >= before && lim.now_ms <= after, "now %lld not in [%lld, %lld]",
              (long long)lim.now_ms, (long long)before, (long long)after);
    free(conf);
}
