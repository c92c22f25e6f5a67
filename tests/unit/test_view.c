/*
 * test_view.c — unit tests of scoring/cw_view.c: windows, distinct day
 * masks, the as-of last login, attributes and the 7-day-old score, all
 * computed from raw (field, value) strings as Redis returns them. The
 * integration test test_state checks the same reads against an oracle over
 * real Redis; these pin the edge cases without a server.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cw_view.h"

#define DAY CW_MS_PER_DAY
#define D0 20000 /* the as-of day of most tests */

static cw_layout_t L;
static cw_view_plan_t P;
static cw_conf_t C;

/* logins (counter 0) 7d and the 28 days before; usage (counter 1) 30d;
 * users (set 0) 7d and 30d */
static void setup(void) {
    char err[256];
    memset(&L, 0, sizeof(L));
    memset(&C, 0, sizeof(C));
    snprintf(L.counters[0].name, sizeof(L.counters[0].name), "logins");
    L.counters[0].retention_days = 35;
    snprintf(L.counters[1].name, sizeof(L.counters[1].name), "usage");
    L.counters[1].retention_days = 30;
    L.n_counters = 2;
    snprintf(L.sets[0].name, sizeof(L.sets[0].name), "users");
    L.sets[0].of_users = 1;
    L.n_sets = 1;
    L.queries[0] = (cw_query_def_t){0, 0, 0, 7};
    L.queries[1] = (cw_query_def_t){0, 0, 7, 28};
    L.queries[2] = (cw_query_def_t){0, 1, 0, 30};
    L.queries[3] = (cw_query_def_t){1, 0, 0, 7};
    L.queries[4] = (cw_query_def_t){1, 0, 0, 30};
    L.n_queries = 5;
    for (int w = 0; w < CW_WIN__COUNT; w++) {
        L.win_q[w] = -1;
    }
    L.win_q[CW_WIN_LOGINS_7D] = 0;
    L.retention_days = 35;
    cr_assert_eq(cw_view_plan_build(&C, &L, 7, &P, err, sizeof(err)), 0, "%s", err);
}

TestSuite(view, .init = setup);

/* A hash built from "field=value" strings (static storage per test). */
static char store[256][48];
static cw_sv_t hv[512];
static size_t hash_of(const char *const *kv, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(kv[i], '=');
        cr_assert(eq != NULL);
        snprintf(store[i], sizeof(store[i]), "%s", kv[i]);
        hv[2 * i] = (cw_sv_t){store[i], (size_t)(eq - kv[i])};
        hv[2 * i + 1] = (cw_sv_t){store[i] + (eq - kv[i]) + 1, strlen(eq + 1)};
    }
    return n;
}

static cw_sv_t sv(const char *s) {
    return (cw_sv_t){s, strlen(s)};
}

static void eval(int64_t asof, size_t n_hash, const cw_sv_t *set0, size_t n_set0,
                 const cw_sv_t *hist, size_t n_hist, cw_account_state_t *out) {
    const cw_sv_t *sets[CW_MAX_SETS] = {set0};
    size_t n_sets[CW_MAX_SETS] = {n_set0};
    memset(out, 0, sizeof(*out));
    snprintf(out->account_id, sizeof(out->account_id), "acct");
    out->due_ms = 77;
    cw_view_eval(&L, &P, asof, hv, n_hash, sets, n_sets, hist, n_hist, out);
}

Test(view, plan_retention_includes_slack) {
    cr_expect_eq(P.cq[0], 35);
    cr_expect_eq(P.cr[0], 42);
    cr_expect_eq(P.cq[1], 30);
    cr_expect_eq(P.cr[1], 37);
    cr_expect_eq(P.sr[0], 37);
    cr_expect_eq(P.logins, 0);
    cr_expect_eq(P.max_retention, 42);
}

Test(view, plan_rejects_long_distinct_window) {
    char err[256] = "";
    L.queries[4].len_days = 60;
    cr_expect_eq(cw_view_plan_build(&C, &L, 7, &P, err, sizeof(err)), -1);
    cr_expect(strstr(err, "distinct window of 60 days") != NULL, "%s", err);
}

/* Day k back from the as-of day: field "<D0-k>:logins" = k + 1. */
Test(view, counter_windows_by_day) {
    static char kv[64][32];
    const char *p[64];
    size_t n = 0;
    cw_account_state_t a;
    for (int k = -2; k < 40; k++) { /* two days after asof: not counted */
        snprintf(kv[n], sizeof(kv[n]), "%d:logins=%d", D0 - k, k + 1 > 0 ? k + 1 : 5);
        p[n] = kv[n];
        n++;
    }
    p[n++] = "20000:usage=4";
    p[n++] = "19980:usage=6";
    p[n++] = "19970:usage=100"; /* 30 days back: outside the 30d window */
    p[n++] = "20000:other=9";   /* not a counter of the layout */
    p[n++] = "19999:usage=abc"; /* junk value */
    p[n++] = "o:3=17";
    p[n++] = "m:logins=19950";
    eval((int64_t)D0 * DAY + 5000, hash_of(p, n), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.q[0], 1 + 2 + 3 + 4 + 5 + 6 + 7); /* k = 0..6 */
    cr_expect_eq(a.q[1], (8 + 35) * 28 / 2);         /* k = 7..34 */
    cr_expect_eq(a.q[2], 10);
    cr_expect_eq(a.asof_ms, (int64_t)D0 * DAY + 5000);
    cr_expect_str_eq(a.account_id, "acct");
    cr_expect_eq(a.due_ms, 77); /* the caller's, kept */
    cr_expect_eq(a.partition, -1);
    cr_expect_eq(a.has_score, 0);
}

Test(view, distinct_members_by_day_mask) {
    char lastday[8][40];
    cw_sv_t m[8];
    cw_account_state_t a;
    /* active on the as-of day */
    snprintf(lastday[0], 40, "%d,1", D0);
    /* last active 10 days ago: in 30d, not in 7d */
    snprintf(lastday[1], 40, "%d,1", D0 - 10);
    /* a later day exists (read of an earlier as-of): bit 2 = D0 counts */
    snprintf(lastday[2], 40, "%d,%d", D0 + 2, 4 + 1);
    /* only active after the as-of day: counts nowhere */
    snprintf(lastday[3], 40, "%d,1", D0 + 2);
    /* active 40 and 6 days ago: bit 34 and bit 0 of lastday D0-6 */
    snprintf(lastday[4], 40, "%d,%llu", D0 - 6, (1ULL << 34) + 1);
    snprintf(lastday[5], 40, "junk");
    snprintf(lastday[6], 40, "%d,", D0);
    for (int i = 0; i < 7; i++) {
        m[i] = sv(lastday[i]);
    }
    eval((int64_t)D0 * DAY + 1, 0, m, 7, NULL, 0, &a);
    cr_expect_eq(a.q[3], 3); /* 0, 2, 4 */
    cr_expect_eq(a.q[4], 4); /* + 1 */
}

Test(view, attributes_facts_and_decision) {
    const char *p[] = {
        "p=12",        "arr=100,1234.5", "sea=100,20", "pln=100,pro,x", "ren=5,99999", "fm=1000",
        "lm=2000",     "kc=1500",        "k0=1100",    "k7=1200",       "sc=61.25",    "bd=1",
        "am=5",        "a0=1300",        "a5=1400",    "lid=abc123",    "fl=1000",     "ll=1900",
        "junkfield=1", "sea2=3",         "ti=2",       "ph=3"};
    cw_account_state_t a;
    eval(3000, hash_of(p, sizeof(p) / sizeof(p[0])), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.partition, 12);
    cr_expect_eq(a.arr, 1234.5);
    cr_expect_eq(a.seats, 20);
    cr_expect_str_eq(a.plan, "pro,x");
    cr_expect_eq(a.renewal_ms, 99999);
    cr_expect_eq(a.first_ms, 1000);
    cr_expect_eq(a.last_event_ms, 2000);
    cr_expect_eq(a.cancel_ms, 1500);
    cr_expect_eq(a.key_feature_first_ms[0], 1100);
    cr_expect_eq(a.key_feature_first_ms[1], -1);
    cr_expect_eq(a.key_feature_first_ms[7], 1200);
    cr_expect_eq(a.has_score, 1);
    cr_expect_eq(a.score, 61.25);
    cr_expect_eq(a.band, 1);
    cr_expect_eq(a.tier, 2);
    cr_expect_eq(a.phase, 3);
    cr_expect_eq(a.active_mask, 5u);
    cr_expect_eq(a.last_alert_ms[0], 1300);
    cr_expect_eq(a.last_alert_ms[1], -1);
    cr_expect_eq(a.last_alert_ms[5], 1400);
    cr_expect_str_eq(a.last_alert_id, "abc123");
    cr_expect_eq(a.first_login_ms, 1000);
    cr_expect_eq(a.last_login_ms, 1900);
}

Test(view, absent_fields_are_unknown) {
    cw_account_state_t a;
    const char *p[] = {"arr=nocomma", "sea=1,x"};
    eval(3000, hash_of(p, 2), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.arr, -1);
    cr_expect_eq(a.seats, -1);
    cr_expect_eq(a.renewal_ms, -1);
    cr_expect_str_eq(a.plan, "");
    cr_expect_eq(a.first_ms, -1);
    cr_expect_eq(a.first_login_ms, -1);
    cr_expect_eq(a.last_login_ms, -1);
    cr_expect_eq(a.band, 0);
    cr_expect_eq(a.tier, -1);
    cr_expect_eq(a.phase, -1);
    cr_expect_eq(a.has_score_7d, 0);
}

/* A later login than the as-of time (applied before a day-end read of an
 * earlier day) is replaced by what was known at asof. */
Test(view, last_login_as_of) {
    char f[4][40];
    const char *p[4];
    cw_account_state_t a;
    int64_t asof = ((int64_t)D0 + 1) * DAY - 1; /* end of D0 */
    snprintf(f[0], 40, "ll=%lld", (long long)(D0 + 3) * DAY);
    snprintf(f[1], 40, "fl=%lld", (long long)(D0 - 50) * DAY);
    snprintf(f[2], 40, "%d:logins=2", D0 - 3);
    snprintf(f[3], 40, "%d:logins=1", D0 + 3);
    for (int i = 0; i < 4; i++) {
        p[i] = f[i];
    }
    eval(asof, hash_of(p, 4), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.last_login_ms, (int64_t)(D0 - 2) * DAY - 1); /* end of D0-3 */
    /* a login on the as-of day itself: asof */
    snprintf(f[2], 40, "%d:logins=2", D0);
    eval(asof, hash_of(p, 4), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.last_login_ms, asof);
    /* none kept within the retention, first login long before: the oldest
     * day the retention can show */
    snprintf(f[2], 40, "%d:logins=2", D0 - 60);
    eval(asof, hash_of(p, 4), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.last_login_ms, (int64_t)(D0 - P.cr[0] + 1) * DAY - 1);
    /* the first login is after asof too: no login yet as of asof */
    snprintf(f[1], 40, "fl=%lld", (long long)(D0 + 3) * DAY);
    eval(asof, hash_of(p, 4), NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.last_login_ms, -1);
    cr_expect_eq(a.first_login_ms, -1);
}

Test(view, score_seven_days_before) {
    char h[4][40];
    cw_sv_t v[4];
    cw_account_state_t a;
    int64_t asof = (int64_t)D0 * DAY;
    snprintf(h[0], 40, "%lld,50", (long long)(asof - 1 * DAY));
    snprintf(h[1], 40, "%lld,", (long long)(asof - 8 * DAY)); /* no score: skipped */
    snprintf(h[2], 40, "%lld,60.5", (long long)(asof - 7 * DAY));
    snprintf(h[3], 40, "%lld,70", (long long)(asof - 9 * DAY));
    for (int i = 0; i < 4; i++) {
        v[i] = sv(h[i]);
    }
    eval(asof, 0, NULL, 0, v, 4, &a);
    cr_expect_eq(a.has_score_7d, 1);
    cr_expect_eq(a.score_7d, 60.5);
    eval(asof, 0, NULL, 0, v, 1, &a);
    cr_expect_eq(a.has_score_7d, 0);
}

Test(view, integers_parse_strictly) {
    int64_t x = 0;
    double d = 0;
    cr_expect_eq(cw_sv_i64(sv("-42"), &x), 0);
    cr_expect_eq(x, -42);
    cr_expect_eq(cw_sv_i64(sv("4503599627370495"), &x), 0);
    cr_expect_eq(x, 4503599627370495LL);
    cr_expect_eq(cw_sv_i64(sv(""), &x), -1);
    cr_expect_eq(cw_sv_i64(sv("-"), &x), -1);
    cr_expect_eq(cw_sv_i64(sv("12a"), &x), -1);
    cr_expect_eq(cw_sv_i64(sv("1234567890123456789"), &x), -1);
    cr_expect_eq(cw_sv_i64((cw_sv_t){NULL, 0}, &x), -1);
    cr_expect_eq(cw_sv_dbl(sv("61.25"), &d), 0);
    cr_expect_eq(d, 61.25);
    cr_expect_eq(cw_sv_dbl(sv("1x"), &d), -1);
}

/* The first as-of day at which the inputs can change without new events:
 * a bucket leaving one window or entering another, a day-mask bit leaving
 * a window, a history entry turning 7 days old; data newer than the as-of
 * time allows no look-ahead. */
Test(view, inputs_change_day) {
    int64_t asof = (int64_t)D0 * DAY + DAY - 1; /* a day end */
    cw_account_state_t a;
    char mem[40], h[40];
    cw_sv_t m, v;

    eval(asof, 0, NULL, 0, NULL, 0, &a);
    cr_expect_eq(a.inputs_change_day, INT64_MAX, "nothing stored: nothing changes");

    {
        const char *p[] = {"19900:logins=1"}; /* out of every window */
        eval(asof, hash_of(p, 1), NULL, 0, NULL, 0, &a);
        cr_expect_eq(a.inputs_change_day, INT64_MAX);
    }
    {
        /* logins 2 days back: leave the 7d window on D0+5 (and enter the
         * window 7..34 days back then); usage 5 days back: leaves 30d on D0+25 */
        const char *p[] = {"19998:logins=3", "19995:usage=1", "20000:logins=0"};
        eval(asof, hash_of(p, 3), NULL, 0, NULL, 0, &a);
        cr_expect_eq(a.inputs_change_day, D0 + 5);
    }
    {
        /* logins 10 days back are in window 7..34 until D0+25; logins 4
         * days back leave 7d on D0+3 */
        const char *p[] = {"19990:logins=1", "19996:logins=2"};
        eval(asof, hash_of(p, 2), NULL, 0, NULL, 0, &a);
        cr_expect_eq(a.inputs_change_day, D0 + 3);
    }
    {
        /* a member last seen yesterday leaves the 7d set window on D0+6 */
        snprintf(mem, sizeof(mem), "%d,1", D0 - 1);
        m = sv(mem);
        eval(asof, 0, &m, 1, NULL, 0, &a);
        cr_expect_eq(a.q[3], 1);
        cr_expect_eq(a.inputs_change_day, D0 + 6);
    }
    {
        /* a score of 3 days ago becomes the 7-day-old score on D0+4 */
        snprintf(h, sizeof(h), "%lld,50", (long long)(asof - 3 * DAY));
        v = sv(h);
        eval(asof, 0, NULL, 0, &v, 1, &a);
        cr_expect_eq(a.has_score_7d, 0);
        cr_expect_eq(a.inputs_change_day, D0 + 4);
    }
    {
        /* an event after the as-of time was applied already: no look-ahead */
        char lm[40];
        const char *p[] = {"19990:logins=1", lm};
        snprintf(lm, sizeof(lm), "lm=%lld", (long long)(asof + 5));
        eval(asof, hash_of(p, 2), NULL, 0, NULL, 0, &a);
        cr_expect_eq(a.inputs_change_day, D0 + 1);
    }
}
