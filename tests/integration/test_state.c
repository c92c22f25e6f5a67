/*
 * test_state.c — cw_state against a real redis-server (tests/harness):
 * the day-bucketed counters and 52-day distinct sets must give exact window
 * values under late and out-of-order events, redeliveries and pruning;
 * attributes follow event time; watermarks are per partition; due marks,
 * commits, history, outbox and the at-risk ranking round-trip; and the
 * failure model holds (a killed server is CW_RETRY and the batch re-runs
 * after a restart; a flushed script cache is reloaded transparently).
 *
 * Window values are checked two ways: hand-computed numbers for the
 * explain windows of a small table of events, and an independent oracle
 * that recomputes every layout query from the raw events.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pthread.h>

#include <hiredis/hiredis.h>

#include "cw_alert.h"
#include "cw_common.h"
#include "cw_conf.h"
#include "cw_event.h"
#include "cw_harness.h"
#include "cw_model.h"
#include "cw_state.h"
#include "cw_view.h"

#define DAY CW_MS_PER_DAY
#define HOUR INT64_C(3600000)
#define D0 INT64_C(20000) /* base day (2024-10-04) */
#define T(day, hour) ((D0 + (day)) * DAY + (hour)*HOUR)

static cw_h_redis_t *redis;
static cw_conf_t *conf;
static cw_layout_t layout;
static cw_state_t *st;
static cw_state_batch_t *bat; /* the batch apply() fills (any state may execute it) */

static cw_conf_t *make_conf(const char *mode) {
    char json[1024];
    char err[256];
    cw_conf_t *c;
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"127.0.0.1:9\", \"input_topic\": \"events\"},"
             " \"redis\": {\"url\": \"%s\", \"key_prefix\": \"t\", \"timeout_ms\": 2000},"
             " \"time\": {\"mode\": \"%s\"}}",
             cw_h_redis_url(redis), mode);
    c = cw_conf_parse(json, err, sizeof(err));
    cr_assert_not_null(c, "conf: %s", err);
    return c;
}

static void setup_mode(const char *mode) {
    char err[256];
    redis = cw_h_redis_start();
    conf = make_conf(mode);
    cr_assert_eq(cw_layout_build(&conf->model, &layout, err, sizeof(err)), 0, "layout: %s", err);
    st = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_not_null(st, "state: %s", err);
    cr_assert_eq(cw_state_connect(st), CW_OK);
    bat = cw_state_batch_new(conf, &layout);
    cr_assert_not_null(bat);
}

static void setup(void) {
    setup_mode("event");
}

static void teardown(void) {
    cw_state_batch_destroy(bat);
    bat = NULL;
    cw_state_destroy(st);
    st = NULL;
    cw_conf_destroy(conf);
    conf = NULL;
    cw_h_redis_stop(redis);
    redis = NULL;
}

TestSuite(state, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ---- */

static cw_event_t ev_make(cw_ev_type_t type, const char *acct, const char *user,
                          const char *feature, int64_t ts, int64_t count) {
    cw_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    cw_strlcpy(ev.account_id, acct, sizeof(ev.account_id));
    cw_strlcpy(ev.user_id, user ? user : "", sizeof(ev.user_id));
    cw_strlcpy(ev.feature, feature ? feature : "", sizeof(ev.feature));
    snprintf(ev.event_id, sizeof(ev.event_id), "%s-%lld", acct, (long long)ts);
    ev.ts_ms = ts;
    ev.count = count > 0 ? count : 1;
    ev.arr = -1;
    ev.seats = -1;
    ev.renewal_ms = -1;
    ev.score = -1;
    return ev;
}

static cw_event_t login(const char *acct, const char *user, int64_t ts) {
    return ev_make(CW_EV_LOGIN, acct, user, NULL, ts, 1);
}

static cw_event_t usage(const char *acct, const char *user, const char *feature, int64_t ts,
                        int64_t count) {
    return ev_make(CW_EV_USAGE, acct, user, feature, ts, count);
}

/* In event mode an apply only (re)schedules the account's day-end timer and
 * returns its latest event time and due score; these tests then read each
 * touched account as of its latest event, as the day-end timer of that day
 * would see it at that moment (due_ms kept from the apply). */
static cw_account_state_t applied[64];

static cw_err_t read_back(cw_state_t *s, cw_account_state_t **out, size_t n) {
    cr_assert_leq(n, sizeof(applied) / sizeof(applied[0]));
    for (size_t i = 0; i < n; i++) {
        int64_t due = (*out)[i].due_ms;
        cw_err_t r = cw_state_read(s, (*out)[i].account_id, (*out)[i].last_event_ms, &applied[i]);
        if (r != CW_OK) {
            return r;
        }
        applied[i].due_ms = due;
    }
    *out = applied;
    return CW_OK;
}

/* Apply events[0..n) at offsets first.. on one partition; CW status. */
static cw_err_t apply(cw_state_t *s, const cw_event_t *evs, size_t n, int partition,
                      int64_t first_offset, cw_account_state_t **out, size_t *n_out) {
    cw_account_state_t *dummy;
    size_t dn;
    cw_err_t r;
    cw_state_batch_begin(bat);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(cw_state_batch_add(bat, partition, first_offset + (int64_t)i, &evs[i]), CW_OK);
    }
    cr_assert_eq(cw_state_batch_len(bat), n);
    out = out ? out : &dummy;
    n_out = n_out ? n_out : &dn;
    r = cw_state_batch_exec(s, bat, out, n_out);
    if (r == CW_OK && conf->time_mode == CW_TIME_EVENT) {
        r = read_back(s, out, *n_out);
    }
    return r;
}

static const cw_account_state_t *find_out(cw_account_state_t *out, size_t n, const char *id) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(out[i].account_id, id) == 0) {
            return &out[i];
        }
    }
    cr_assert_fail("account %s not in the exec output", id);
    return NULL;
}

/* Independent oracle: layout query j of account acct as of asof, from raw events. */
static double oracle(const cw_event_t *evs, size_t n, const char *acct, int64_t asof, int j) {
    const cw_query_def_t *q = &layout.queries[j];
    int64_t hi = cw_time_day(asof) - q->offset_days;
    int64_t lo = hi - q->len_days + 1;
    double sum = 0;
    const char *seen[512];
    size_t n_seen = 0;
    for (size_t i = 0; i < n; i++) {
        const cw_event_t *e = &evs[i];
        int64_t d = cw_time_day(e->ts_ms);
        if (strcmp(e->account_id, acct) != 0 || d < lo || d > hi) {
            continue;
        }
        if (!q->is_set) {
            const cw_counter_def_t *c = &layout.counters[q->index];
            if (c->type == e->type &&
                (c->feature[0] == '\0' || strcmp(c->feature, e->feature) == 0)) {
                sum += c->sum ? (double)cw_event_value(e) : 1.0;
            }
        } else {
            const cw_set_def_t *s = &layout.sets[q->index];
            const char *m = s->of_users ? e->user_id : e->feature;
            int dup = 0;
            if (!(s->types & CW_EV_BIT(e->type)) || m[0] == '\0' ||
                (s->feature[0] != '\0' && strcmp(s->feature, e->feature) != 0)) {
                continue;
            }
            for (size_t k = 0; k < n_seen && !dup; k++) {
                dup = strcmp(seen[k], m) == 0;
            }
            if (!dup) {
                cr_assert(n_seen < 512);
                seen[n_seen++] = m;
            }
        }
    }
    return q->is_set ? (double)n_seen : sum;
}

static void check_all_queries(const cw_account_state_t *a, const cw_event_t *evs, size_t n) {
    for (int j = 0; j < layout.n_queries; j++) {
        double want = oracle(evs, n, a->account_id, a->asof_ms, j);
        cr_expect_eq(a->q[j], want, "%s query %d (%s %d, off %d, len %d): got %g want %g",
                     a->account_id, j, layout.queries[j].is_set ? "set" : "counter",
                     layout.queries[j].index, layout.queries[j].offset_days,
                     layout.queries[j].len_days, a->q[j], want);
    }
}

static double win(const cw_account_state_t *a, cw_win_t w) {
    return a->q[layout.win_q[w]];
}

/* A direct connection for raw checks (freed by the caller). */
static redisContext *raw(void) {
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectUnixWithTimeout(cw_h_redis_socket(redis), tv);
    cr_assert(c != NULL && c->err == 0, "raw connect");
    return c;
}

/* Number of "<day>:<counter>" fields of an account hash. */
static long day_fields(const char *acct, const char *counter) {
    redisContext *c = raw();
    char key[256];
    long n = 0;
    snprintf(key, sizeof(key), "t:a:{%s}", acct);
    redisReply *r = redisCommand(c, "HKEYS %s", key);
    cr_assert(r != NULL && r->type == REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++) {
        const char *colon = strchr(r->element[i]->str, ':');
        if (r->element[i]->str[0] >= '0' && r->element[i]->str[0] <= '9' && colon != NULL &&
            strcmp(colon + 1, counter) == 0) {
            n++;
        }
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* Calls of one Redis command ("eval", "hset", ...) since the server
 * started or the last CONFIG RESETSTAT (INFO commandstats). */
static long long cmd_calls(const char *cmd) {
    redisContext *c = raw();
    redisReply *r = redisCommand(c, "INFO commandstats");
    char pat[64];
    long long n = 0;
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING);
    snprintf(pat, sizeof(pat), "cmdstat_%s:calls=", cmd);
    const char *p = strstr(r->str, pat);
    if (p != NULL) {
        n = strtoll(p + strlen(pat), NULL, 10);
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

static void reset_stats(void) {
    redisContext *c = raw();
    redisReply *r = redisCommand(c, "CONFIG RESETSTAT");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS, "CONFIG RESETSTAT");
    freeReplyObject(r);
    redisFree(c);
}

/* ---- tests ---- */

Test(state, new_rejects_bad_urls) {
    static const struct {
        const char *url;
        int ok;
    } cases[] = {
        {"tcp://127.0.0.1:6379", 1}, {"tcp://[::1]:6379", 1},
        {"unix:///tmp/r.sock", 1},   {"tcp://host", 0},
        {"tcp://host:0", 0},         {"tcp://host:70000", 0},
        {"tcp://:6379", 0},          {"unix://rel.sock", 0},
        {"redis://h:1", 0},          {"", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cw_conf_t c = *conf;
        char err[256] = "";
        cw_strlcpy(c.redis_url, cases[i].url, sizeof(c.redis_url));
        cw_state_t *s = cw_state_new(&c, &layout, err, sizeof(err));
        if (cases[i].ok) {
            cr_expect_not_null(s, "%s: %s", cases[i].url, err);
        } else {
            cr_expect_null(s, "%s accepted", cases[i].url);
            cr_expect(strstr(err, "redis.url") != NULL, "%s: errstr \"%s\"", cases[i].url, err);
        }
        cw_state_destroy(s);
    }
}

/* Counts over 7/30-day windows, with late and out-of-order events across
 * batches; hand-computed expectations plus the oracle on every query. */
Test(state, windows_exact_with_late_events) {
    /* as of day 40 (the latest event): 7d = days 34..40, 30d = days 11..40 */
    static const struct {
        int day, hour;
        int type; /* 0 login, 1 usage */
        const char *user, *feature;
        int count;
    } table[] = {
        /* batch 1 */
        {0, 9, 0, "u1", NULL, 0},       /* out of every window by the end */
        {10, 9, 0, "u1", NULL, 0},      /* day 10: just outside 30d */
        {11, 9, 0, "u2", NULL, 0},      /* first day of 30d */
        {20, 9, 1, "u2", "reports", 5}, /* usage 30d */
        {33, 23, 0, "u3", NULL, 0},     /* last day before 7d */
        /* batch 2: the newest first, then late ones */
        {40, 8, 0, "u1", NULL, 0},       /* 7d */
        {40, 9, 1, "u1", "export", 3},   /* 7d */
        {34, 0, 0, "u4", NULL, 0},       /* late: first day of 7d */
        {25, 12, 1, "u3", "reports", 2}, /* late: 30d */
        {39, 1, 0, "u1", NULL, 0},       /* late: 7d */
        /* batch 3: only late events */
        {5, 1, 1, "u9", "admin", 100}, /* too old for any window */
        {36, 1, 1, "u2", "export", 4}, /* 7d */
        {11, 0, 0, "u5", NULL, 0},     /* first ms of day 11: 30d */
    };
    const size_t n = sizeof(table) / sizeof(table[0]);
    const size_t cuts[] = {5, 10, n};
    cw_event_t evs[16];
    cw_account_state_t *out = NULL;
    size_t n_out = 0, from = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t ts = T(table[i].day, table[i].hour);
        evs[i] = table[i].type == 0
                     ? login("acme", table[i].user, ts)
                     : usage("acme", table[i].user, table[i].feature, ts, table[i].count);
    }
    for (size_t b = 0; b < 3; b++) {
        cr_assert_eq(apply(st, evs + from, cuts[b] - from, 0, (int64_t)from, &out, &n_out), CW_OK);
        cr_assert_eq(n_out, 1);
        /* as of the newest event so far, every query equals the oracle over
         * everything applied so far */
        check_all_queries(&out[0], evs, cuts[b]);
        from = cuts[b];
    }
    cr_expect_eq(out[0].asof_ms, T(40, 9));
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_7D), 3);        /* d40, d34, d39 */
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_30D), 6);       /* + d11 u2, d33, d11 u5 */
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_7D), 7);         /* 3 + 4 */
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_30D), 14);       /* 5 + 3 + 2 + 4 */
    cr_expect_eq(win(&out[0], CW_WIN_ACTIVE_USERS_7D), 3);  /* u1 u4 u2 */
    cr_expect_eq(win(&out[0], CW_WIN_ACTIVE_USERS_30D), 5); /* u1 u2 u3 u4 u5 */
    cr_expect_eq(win(&out[0], CW_WIN_FEATURES_30D), 2);     /* reports export */
    cr_expect_eq(out[0].first_ms, T(0, 9));
    cr_expect_eq(out[0].last_event_ms, T(40, 9));
    cr_expect_eq(out[0].first_login_ms, T(0, 9));
    cr_expect_eq(out[0].last_login_ms, T(40, 8));
    cr_expect_eq(out[0].partition, 0);
    cr_expect_eq(out[0].has_score, 0);

    /* cw_state_read as of the account's current time gives the same */
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "acme", -1, &a), CW_OK);
    cr_expect_eq(a.asof_ms, T(40, 9));
    check_all_queries(&a, evs, n);
    /* and as of an explicit later time the windows slide */
    cr_assert_eq(cw_state_read(st, "acme", T(45, 0), &a), CW_OK);
    cr_expect_eq(a.asof_ms, T(45, 0));
    check_all_queries(&a, evs, n);
    cr_expect_eq(win(&a, CW_WIN_LOGINS_7D), 2); /* days 39..45: d39, d40 */
    cr_expect_eq(cw_state_read(st, "nobody", -1, &a), CW_NOENT);
}

/* Distinct users and features: users active on several days count once,
 * a user seen only before the window does not count. */
Test(state, distinct_sets_exact) {
    cw_event_t evs[256];
    size_t n = 0;
    const char *users[] = {"alice", "bob", "carol", "dave", "erin"};
    const char *features[] = {"reports", "export", "admin", "integrations"};
    /* alice: every day 0..45; bob: days 0, 20, 44; carol: days 1..5 only;
     * dave: day 45 usage only; erin: day 14 and day 38 */
    for (int d = 0; d <= 45; d++) {
        evs[n++] = login("multi", users[0], T(d, 10));
        evs[n++] = usage("multi", users[0], features[d % 2], T(d, 11), 1);
    }
    evs[n++] = login("multi", users[1], T(0, 1));
    evs[n++] = usage("multi", users[1], features[2], T(20, 1), 2);
    evs[n++] = login("multi", users[1], T(44, 1));
    for (int d = 1; d <= 5; d++) {
        evs[n++] = usage("multi", users[2], features[3], T(d, 2), 1);
    }
    evs[n++] = usage("multi", users[3], features[0], T(45, 3), 1);
    evs[n++] = login("multi", users[4], T(14, 4));
    evs[n++] = login("multi", users[4], T(38, 4));
    /* several batches, a few events each, in an order that is not by time */
    for (size_t i = 0; i < n; i += 7) {
        size_t m = n - i < 7 ? n - i : 7;
        cw_account_state_t *out;
        size_t n_out;
        cr_assert_eq(apply(st, evs + i, m, 3, (int64_t)i, &out, &n_out), CW_OK);
    }
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "multi", -1, &a), CW_OK);
    cr_expect_eq(a.asof_ms, T(45, 11));
    check_all_queries(&a, evs, n);
    /* 7d = days 39..45: alice, bob (44), dave (45) */
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_7D), 3);
    /* 30d = days 16..45: alice, bob, dave, erin (38) — carol (1..5) no */
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_30D), 4);
    /* features 30d: reports, export (alice), admin (bob d20) — integrations only d1..5 */
    cr_expect_eq(win(&a, CW_WIN_FEATURES_30D), 3);
    /* key feature first use: "reports" (index 0) at day 0, "integrations" at day 1 */
    cr_expect_eq(a.key_feature_first_ms[0], T(0, 11));
    cr_expect_eq(a.key_feature_first_ms[1], T(1, 2));
    cr_expect_eq(a.key_feature_first_ms[2], -1);
    /* a read as of a day earlier (within the kept retention) is exact too:
     * 7d = days 38..44: alice, bob (44), erin (38) */
    cr_assert_eq(cw_state_read(st, "multi", T(44, 0), &a), CW_OK);
    check_all_queries(&a, evs, n);
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_7D), 3);
}

/* A redelivered batch (same offsets) does not double-count and reports
 * duplicates; an overlapping one applies only the new offsets. */
Test(state, redelivery_is_idempotent) {
    cw_event_t evs[20];
    cw_account_state_t *out;
    size_t n_out;
    for (int i = 0; i < 20; i++) {
        evs[i] = i % 2 ? login("dup", "u1", T(1, i)) : usage("dup", "u2", "reports", T(1, i), 2);
    }
    cr_assert_eq(apply(st, evs, 10, 2, 100, &out, &n_out), CW_OK);
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_7D), 5);
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_7D), 10);
    cr_expect_eq(cw_state_duplicates(st), 0);
    /* the very same batch again */
    cr_assert_eq(apply(st, evs, 10, 2, 100, &out, &n_out), CW_OK);
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_7D), 5);
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_7D), 10);
    cr_expect_eq(cw_state_duplicates(st), 10);
    /* offsets 105..119: 105..109 are redeliveries, 110..119 new */
    cr_assert_eq(apply(st, evs + 5, 15, 2, 105, &out, &n_out), CW_OK);
    cr_expect_eq(cw_state_duplicates(st), 15);
    check_all_queries(&out[0], evs, 20);
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_7D), 10);
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_7D), 20);
    /* the same offsets from another partition are different events */
    cr_assert_eq(apply(st, evs, 1, 5, 100, &out, &n_out), CW_OK);
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_7D), 22);
    cr_expect_eq(cw_state_duplicates(st), 15);
}

/* The pipeline's day-end decision for (account, day) has been made: the
 * account's timer moves to the next day end (what a commit does, INCR of
 * the partition's fence included: every writer of a partition's accounts
 * does, and the apply cache trusts nothing else). */
static void decided(const char *id, int partition, int day) {
    cw_h_redis_int(redis, "ZADD t:due:%d %lld %s", partition, (long long)(T(day + 2, 0) - 1), id);
    cw_h_redis_int(redis, "INCR t:fence:%d", partition);
}

/* Old day fields and set members are pruned once no pending decision needs
 * them; windows stay exact. */
Test(state, pruning_bounds_memory) {
    cw_event_t evs[200];
    size_t n = 0;
    long fields_at_60 = 0;
    redisContext *c;
    redisReply *r;
    /* "early" only on day 0; then "daily" logs in every day for 150 days,
     * one batch a day, each day decided before the next (as the timers do) */
    evs[n++] = login("prune", "early", T(0, 0));
    for (int d = 0; d < 150; d++) {
        size_t first = n - (d == 0 ? 1 : 0);
        evs[n++] = login("prune", "daily", T(d, 12));
        cr_assert_eq(apply(st, evs + first, n - first, 0, (int64_t)first, NULL, NULL), CW_OK);
        decided("prune", 0, d);
        if (d == 60) {
            fields_at_60 = day_fields("prune", "cl");
        }
    }
    /* a pending decision keeps what it will read: with the day-0 decision
     * not made, a batch spanning 60 days (more than the login counter's
     * retention) prunes nothing */
    {
        cw_event_t span[60];
        for (int d = 0; d < 60; d++) {
            span[d] = login("pending", "u", T(d, 12));
        }
        cr_assert_eq(apply(st, span, 60, 0, 0, NULL, NULL), CW_OK);
        cr_expect_eq(day_fields("pending", "cl"), 60);
    }
    /* the login counter keeps its retention (a few dozen days), not 150 */
    long fields = day_fields("prune", "cl");
    int ret = 0;
    for (int k = 0; k < layout.n_counters; k++) {
        if (strcmp(layout.counters[k].name, "cl") == 0) {
            ret = layout.counters[k].retention_days;
        }
    }
    cr_assert_gt(ret, 0);
    cr_expect_leq(fields, ret + CW_STATE_SLACK_DAYS + 1, "cl day fields %ld, retention %d", fields,
                  ret);
    cr_expect_eq(fields, fields_at_60, "day fields grew from %ld to %ld", fields_at_60, fields);
    cr_expect_lt(fields, 150);
    /* the set member seen only on day 0 is gone, the daily one kept */
    c = raw();
    r = redisCommand(c, "HEXISTS t:a:{prune} s4:U:lu:early");
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
    cr_expect_eq(r->integer, 0);
    freeReplyObject(r);
    r = redisCommand(c, "HEXISTS t:a:{prune} s4:U:lu:daily");
    cr_expect_eq(r->integer, 1);
    freeReplyObject(r);
    /* every key has a TTL of retention + 2 days (the members' is the
     * account hash's) */
    r = redisCommand(c, "TTL t:a:{prune}");
    cr_expect_gt(r->integer, (long long)(conf->retention_days + 1) * 86400);
    freeReplyObject(r);
    redisFree(c);
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "prune", -1, &a), CW_OK);
    check_all_queries(&a, evs, n);
    cr_expect_eq(win(&a, CW_WIN_LOGINS_30D), 30);
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_30D), 1);
    /* a very late event older than the retention is ignored by counters,
     * and does not send the timer back */
    cw_event_t old = login("prune", "ghost", T(1, 0));
    cr_assert_eq(apply(st, &old, 1, 0, 1000, NULL, NULL), CW_OK);
    cr_expect_eq(day_fields("prune", "cl"), fields);
    cr_expect_eq(cw_h_redis_int(redis, "ZCOUNT t:due:0 %lld %lld", (long long)(T(151, 0) - 1),
                                (long long)(T(151, 0) - 1)),
                 1);
    /* after a gap of more than 400 days (a replay of a silent account) the
     * old fields are found by a scan rather than day by day */
    decided("prune", 0, 698);
    cw_event_t back = login("prune", "daily", T(700, 0));
    cr_assert_eq(apply(st, &back, 1, 0, 1001, NULL, NULL), CW_OK);
    cr_expect_eq(day_fields("prune", "cl"), 1);
    cr_assert_eq(cw_state_read(st, "prune", -1, &a), CW_OK);
    cr_expect_eq(win(&a, CW_WIN_LOGINS_30D), 1);
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_30D), 1);
}

/* Attributes are the latest by event time, not by arrival. */
Test(state, attributes_latest_by_event_time) {
    cw_event_t e[5];
    cw_account_state_t *out;
    size_t n_out;
    e[0] = ev_make(CW_EV_ACCOUNT, "attr", NULL, NULL, T(10, 0), 1);
    e[0].arr = 1000000;
    e[0].seats = 10;
    cw_strlcpy(e[0].plan, "pro", sizeof(e[0].plan));
    e[0].renewal_ms = T(300, 0);
    /* older, delivered later: must not win */
    e[1] = ev_make(CW_EV_ACCOUNT, "attr", NULL, NULL, T(5, 0), 1);
    e[1].arr = 2000000;
    e[1].seats = 99;
    cw_strlcpy(e[1].plan, "basic", sizeof(e[1].plan));
    /* newer, seats only: the other attributes stay */
    e[2] = ev_make(CW_EV_ACCOUNT, "attr", NULL, NULL, T(12, 0), 1);
    e[2].seats = 20;
    e[3] = ev_make(CW_EV_CANCELLATION, "attr", NULL, NULL, T(11, 0), 1);
    e[4] = ev_make(CW_EV_CANCELLATION, "attr", NULL, NULL, T(9, 0), 1);
    cr_assert_eq(apply(st, e, 1, 0, 0, &out, &n_out), CW_OK);
    cr_expect_eq(out[0].arr, 1000000);
    cr_assert_eq(apply(st, e + 1, 4, 0, 1, &out, &n_out), CW_OK);
    cr_expect_eq(out[0].arr, 1000000);
    cr_expect_eq(out[0].seats, 20);
    cr_expect_str_eq(out[0].plan, "pro");
    cr_expect_eq(out[0].renewal_ms, T(300, 0));
    cr_expect_eq(out[0].cancel_ms, T(11, 0));
    cr_expect_eq(out[0].first_ms, T(5, 0));
    cr_expect_eq(out[0].last_event_ms, T(12, 0));
    cr_expect_eq(out[0].first_login_ms, -1);
    cr_expect_eq(out[0].last_login_ms, -1);
    /* an equal timestamp later in the log wins (ties go to the later offset) */
    cw_event_t tie = ev_make(CW_EV_ACCOUNT, "attr", NULL, NULL, T(12, 0), 1);
    tie.seats = 21;
    cr_assert_eq(apply(st, &tie, 1, 0, 10, &out, &n_out), CW_OK);
    cr_expect_eq(out[0].seats, 21);
    /* a plan with characters that need care round-trips */
    cw_event_t odd = ev_make(CW_EV_ACCOUNT, "attr", NULL, NULL, T(13, 0), 1);
    cw_strlcpy(odd.plan, "ent,erprise \"x\"", sizeof(odd.plan));
    cr_assert_eq(apply(st, &odd, 1, 0, 11, &out, &n_out), CW_OK);
    cr_expect_str_eq(out[0].plan, "ent,erprise \"x\"");
}

/* The watermark is per partition and never goes back. */
Test(state, watermark_per_partition) {
    int64_t wm;
    cw_event_t a[3] = {login("w1", "u", T(3, 0)), login("w1", "u", T(5, 0)),
                       login("w1", "u", T(4, 0))};
    cw_event_t b[2] = {login("w2", "u", T(7, 0)), login("w3", "u", T(6, 0))};
    cw_event_t late = login("w4", "u", T(1, 0));
    cr_assert_eq(cw_state_watermark(st, 0, &wm), CW_OK);
    cr_expect_eq(wm, -1);
    cr_assert_eq(apply(st, a, 3, 0, 0, NULL, NULL), CW_OK);
    cr_assert_eq(apply(st, b, 2, 1, 0, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_watermark(st, 0, &wm), CW_OK);
    cr_expect_eq(wm, T(5, 0));
    cr_assert_eq(cw_state_watermark(st, 1, &wm), CW_OK);
    cr_expect_eq(wm, T(7, 0));
    cr_assert_eq(cw_state_watermark(st, 2, &wm), CW_OK);
    cr_expect_eq(wm, -1);
    cr_assert_eq(apply(st, &late, 1, 0, 3, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_watermark(st, 0, &wm), CW_OK);
    cr_expect_eq(wm, T(5, 0));
    /* an account's current time in event mode is its partition's watermark */
    cw_account_state_t s;
    cr_assert_eq(cw_state_read(st, "w4", -1, &s), CW_OK);
    cr_expect_eq(s.asof_ms, T(5, 0));
    cr_expect_eq(s.last_event_ms, T(1, 0));
    /* raised by another writer of the partition (a second consumer during
     * a rebalance): this one's next apply reads it again and keeps it */
    char err[256];
    cw_state_t *st2 = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_not_null(st2, "%s", err);
    cw_event_t later = login("w5", "u", T(9, 0)), mid = login("w6", "u", T(8, 0));
    cr_assert_eq(apply(st2, &later, 1, 0, 4, NULL, NULL), CW_OK);
    cr_assert_eq(apply(st, &mid, 1, 0, 5, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_watermark(st, 0, &wm), CW_OK);
    cr_expect_eq(wm, T(9, 0));
    cw_state_destroy(st2);
    /* a stored value that is not a number is replaced */
    cr_assert_geq(cw_h_redis_int(redis, "HSET t:wm 1 garbage"), 0); /* -1: not an integer reply */
    cw_event_t w7 = login("w7", "u", T(2, 0));
    cr_assert_eq(apply(st, &w7, 1, 1, 2, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_watermark(st, 1, &wm), CW_OK);
    cr_expect_eq(wm, T(2, 0));
}

static cw_commit_t commit_of(const cw_account_state_t *a, double score, int band, int64_t next_due,
                             const char *snap, const int64_t *alert_ms) {
    cw_commit_t c;
    memset(&c, 0, sizeof(c));
    c.acct = a;
    c.score = score;
    c.band = band;
    c.tier = CW_TIER_LOW;
    c.phase = CW_PHASE_ADOPTION;
    c.active_mask = 0;
    c.last_alert_ms = alert_ms;
    c.last_alert_id = "";
    c.next_due_ms = next_due;
    c.snapshot_json = snap;
    c.n_alerts = 0;
    return c;
}

static const int64_t no_alerts[CW_REASON__COUNT] = {-1, -1, -1, -1, -1, -1};

/* Timers, cw_state_due and the stale-commit rule (event mode). An apply
 * sets the account's timer to the end of the day of its earliest applied
 * event, never later than the timer it had (ZADD LT); a commit made on a
 * read whose due score has since changed keeps the newer, earlier one. */
#define DE(day) (T((day) + 1, 0) - 1)
Test(state, due_marks_and_timers) {
    cw_account_state_t *out, *due;
    size_t n_out, n_due;
    cw_event_t e = login("tim", "u", T(2, 5));
    cr_assert_eq(apply(st, &e, 1, 4, 0, &out, &n_out), CW_OK);
    cr_expect_eq(out[0].due_ms, DE(2)); /* the end of its event's day */
    cr_expect_eq(cw_h_redis_int(redis, "ZCARD t:due:4"), 1);
    /* nothing due before the day end, the account at it */
    cr_assert_eq(cw_state_due(st, 4, DE(2) - 1, 10, &due, &n_due), CW_OK);
    cr_expect_eq(n_due, 0);
    cr_assert_eq(cw_state_due(st, 4, DE(2), 10, &due, &n_due), CW_OK);
    cr_assert_eq(n_due, 1);
    cr_expect_str_eq(due[0].account_id, "tim");
    cr_expect_eq(due[0].due_ms, DE(2));
    cr_expect_eq(due[0].asof_ms, DE(2)); /* read as of the timer (event mode) */
    cr_expect_eq(due[0].partition, 4);
    cr_expect_eq(win(&due[0], CW_WIN_LOGINS_7D), 1);
    /* the commit of the timer's read moves it to the next timer */
    cw_commit_t c = commit_of(&due[0], 70, CW_BAND_HEALTHY, DE(3), NULL, no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_assert_eq(cw_state_due(st, 4, DE(3) - 1, 10, &due, &n_due), CW_OK);
    cr_expect_eq(n_due, 0);
    cr_assert_eq(cw_state_due(st, 4, DE(3), 10, &due, &n_due), CW_OK);
    cr_assert_eq(n_due, 1);
    cr_expect_eq(due[0].due_ms, DE(3));
    cr_expect_eq(due[0].has_score, 1);
    /* a late event (day 2) arrives before the day-3 decision is committed:
     * the earlier timer wins, and the stale commit keeps it */
    cw_account_state_t timer_read = due[0];
    cw_event_t e2 = login("tim", "u", T(2, 8));
    cr_assert_eq(apply(st, &e2, 1, 4, 1, &out, &n_out), CW_OK);
    cr_expect_eq(out[0].due_ms, DE(2));
    c = commit_of(&timer_read, 71, CW_BAND_HEALTHY, DE(4), NULL, no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_assert_eq(cw_state_due(st, 4, DE(3), 10, &due, &n_due), CW_OK);
    cr_assert_eq(n_due, 1);
    cr_expect_eq(due[0].due_ms, DE(2));
    cr_expect_eq(win(&due[0], CW_WIN_LOGINS_7D), 2);
    cw_account_state_t mark_read = due[0];
    /* a later event does not postpone the earlier timer */
    cw_event_t e3 = login("tim", "u", T(3, 5));
    cr_assert_eq(apply(st, &e3, 1, 4, 2, &out, &n_out), CW_OK);
    cr_expect_eq(out[0].due_ms, DE(2));
    /* the commit of the timer's own read owns the due score: -1 removes it */
    c = commit_of(&mark_read, 73, CW_BAND_HEALTHY, -1, NULL, no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_expect_eq(cw_h_redis_int(redis, "ZCARD t:due:4"), 0);
    /* max limits the answer */
    cw_event_t many[5];
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        many[i] = login(id, "u", T(5, i));
    }
    cr_assert_eq(apply(st, many, 5, 4, 10, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_due(st, 4, DE(5), 3, &due, &n_due), CW_OK);
    cr_expect_eq(n_due, 3);
    cr_expect_str_eq(due[0].account_id, "m0"); /* by member for one day end */
    /* a due account whose state expired is dropped from the timers */
    cw_h_redis_int(redis, "DEL t:a:{m0}");
    cr_assert_eq(cw_state_due(st, 4, DE(5), 10, &due, &n_due), CW_OK);
    cr_expect_eq(n_due, 4);
    cr_expect_eq(cw_h_redis_int(redis, "ZCARD t:due:4"), 4);
}

/* Commit, then read the decision back; history and score_7d; snapshot;
 * at-risk ranking. */
Test(state, commit_and_read_back) {
    cw_account_state_t *out, a;
    size_t n_out;
    cw_event_t e = login("dec", "u", T(0, 1));
    cr_assert_eq(apply(st, &e, 1, 0, 0, &out, &n_out), CW_OK);
    cr_assert_eq(cw_state_read(st, "dec", T(0, 12), &a), CW_OK);
    int64_t alert_ms[CW_REASON__COUNT] = {-1, T(0, 12), -1, -1, -1, -1};
    cw_commit_t c = commit_of(&a, 80, CW_BAND_HEALTHY, -1, "{\"score\":80}", alert_ms);
    c.tier = CW_TIER_HIGH;
    c.phase = CW_PHASE_ONBOARDING;
    c.active_mask = 0x2;
    c.last_alert_id = "0123456789abcdef0123456789abcdef";
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    /* later scores: day 3 = 60, day 9 = 40 */
    cr_assert_eq(cw_state_read(st, "dec", T(3, 12), &a), CW_OK);
    c = commit_of(&a, 60, CW_BAND_CAUTION, -1, "{\"score\":60}", alert_ms);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK); /* a retried commit: no second entry */
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{dec}"), 2);
    cr_assert_eq(cw_state_read(st, "dec", T(9, 12), &a), CW_OK);
    cr_expect_eq(a.has_score, 1);
    cr_expect_eq(a.score, 60);
    cr_expect_eq(a.band, CW_BAND_CAUTION);
    cr_expect_eq(a.active_mask, 0);
    cr_expect_eq(a.last_alert_ms[CW_REASON_USAGE_DROP], T(0, 12));
    cr_expect_eq(a.last_alert_ms[CW_REASON_INACTIVE], -1);
    cr_expect_str_eq(a.last_alert_id, "0123456789abcdef0123456789abcdef"); /* "" kept it */
    /* newest history entry at least 7 days older than day 9 12:00: day 0 (80) */
    cr_expect_eq(a.has_score_7d, 1);
    cr_expect_eq(a.score_7d, 80);
    cr_assert_eq(cw_state_read(st, "dec", T(5, 0), &a), CW_OK);
    cr_expect_eq(a.has_score_7d, 0);
    cr_assert_eq(cw_state_read(st, "dec", T(10, 13), &a), CW_OK);
    cr_expect_eq(a.score_7d, 60);
    /* history is trimmed to state.history_len */
    for (int i = 0; i < conf->history_len + 5; i++) {
        cr_assert_eq(cw_state_read(st, "dec", T(20 + i, 0), &a), CW_OK);
        c = commit_of(&a, 50 + i % 10, CW_BAND_CAUTION, -1, "{}", alert_ms);
        cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    }
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{dec}"), conf->history_len);
    /* snapshot */
    cw_buf_t buf = CW_BUF_INIT;
    cr_assert_eq(cw_state_snapshot(st, "dec", &buf), CW_OK);
    cr_expect_str_eq(buf.data, "{}");
    cr_expect_eq(cw_state_snapshot(st, "nobody", &buf), CW_NOENT);
    cw_buf_free(&buf);
    /* at-risk ranking: lowest first */
    cw_event_t e2[2] = {login("risk-lo", "u", T(1, 0)), login("risk-hi", "u", T(1, 0))};
    cr_assert_eq(apply(st, e2, 2, 0, 1, &out, &n_out), CW_OK);
    cr_assert_eq(n_out, 2);
    cw_commit_t cc[2] = {
        commit_of(find_out(out, n_out, "risk-lo"), 12.5, CW_BAND_DANGER, -1, NULL, no_alerts),
        commit_of(find_out(out, n_out, "risk-hi"), 99, CW_BAND_HEALTHY, -1, NULL, no_alerts)};
    cr_assert_eq(cw_state_commit(st, cc, 2), CW_OK);
    char ids[2][CW_FIELD_MAX];
    double scores[2];
    size_t n_risk = 0;
    cr_assert_eq(cw_state_at_risk(st, 2, ids, scores, &n_risk), CW_OK);
    cr_assert_eq(n_risk, 2);
    cr_expect_str_eq(ids[0], "risk-lo");
    cr_expect_eq(scores[0], 12.5);
    cr_expect_str_eq(ids[1], "dec");
}

typedef struct seen_alerts {
    char ids[8][CW_ALERT_ID_MAX];
    char json[8][64];
    int n;
} seen_alerts_t;

static void on_alert(void *opaque, const char *id, const char *json, size_t len) {
    seen_alerts_t *s = opaque;
    cr_assert_lt(s->n, 8);
    cw_strlcpy(s->ids[s->n], id, sizeof(s->ids[s->n]));
    cr_assert_lt(len, sizeof(s->json[s->n]));
    memcpy(s->json[s->n], json, len);
    s->json[s->n][len] = '\0';
    s->n++;
}

static int seen_index(const seen_alerts_t *s, const char *id) {
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->ids[i], id) == 0) {
            return i;
        }
    }
    return -1;
}

/* Alerts committed into the outbox are scanned until acked. */
Test(state, outbox_scan_and_ack) {
    cw_account_state_t *out;
    size_t n_out;
    cw_event_t e = login("obx", "u", T(0, 1));
    cr_assert_eq(apply(st, &e, 1, 1, 0, &out, &n_out), CW_OK);
    cw_commit_t c = commit_of(&out[0], 30, CW_BAND_DANGER, -1, "{}", no_alerts);
    c.n_alerts = 2;
    c.alert_ids[0] = "aaaa";
    c.alert_json[0] = "{\"reason\":\"entered_danger\"}";
    c.alert_ids[1] = "bbbb";
    c.alert_json[1] = "{\"reason\":\"inactive\"}";
    c.last_alert_id = "bbbb";
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    seen_alerts_t s = {0};
    cr_assert_eq(cw_state_outbox_scan(st, 1, on_alert, &s), CW_OK);
    cr_assert_eq(s.n, 2);
    cr_assert_geq(seen_index(&s, "aaaa"), 0);
    cr_expect_str_eq(s.json[seen_index(&s, "aaaa")], "{\"reason\":\"entered_danger\"}");
    /* other partitions' outboxes are separate */
    seen_alerts_t s0 = {0};
    cr_assert_eq(cw_state_outbox_scan(st, 0, on_alert, &s0), CW_OK);
    cr_expect_eq(s0.n, 0);
    int parts[1] = {1};
    const char *ack[1] = {"aaaa"};
    cr_assert_eq(cw_state_outbox_ack(st, parts, ack, 1), CW_OK);
    seen_alerts_t s2 = {0};
    cr_assert_eq(cw_state_outbox_scan(st, 1, on_alert, &s2), CW_OK);
    cr_assert_eq(s2.n, 1);
    cr_expect_str_eq(s2.ids[0], "bbbb");
}

/* The pipeline fills one batch while a lane executes another (two per
 * lane, used in turn): a batch holds all its exec needs and exec only
 * borrows it, so filling b2 on another thread while bat executes changes
 * nothing bat applies, and b2 applied after it gives the windows of all
 * six events. */
typedef struct fill_arg {
    cw_state_batch_t *b;
    const cw_event_t *evs;
    size_t n;
    int64_t first_offset;
    cw_err_t r;
} fill_arg_t;

static void *fill_batch(void *arg) {
    fill_arg_t *f = arg;
    cw_state_batch_begin(f->b);
    f->r = CW_OK;
    for (size_t i = 0; i < f->n && f->r == CW_OK; i++) {
        f->r = cw_state_batch_add(f->b, 0, f->first_offset + (int64_t)i, &f->evs[i]);
    }
    return NULL;
}

Test(state, batch_filled_while_another_executes) {
    cw_event_t evs[6] = {login("two", "u1", T(0, 1)),
                         usage("two", "u2", "reports", T(0, 2), 2),
                         login("oth", "u1", T(0, 3)),
                         login("two", "u3", T(1, 1)),
                         usage("two", "u1", "export", T(1, 2), 5),
                         login("oth", "u2", T(1, 4))};
    cw_state_batch_t *b2 = cw_state_batch_new(conf, &layout);
    cr_assert_not_null(b2);
    fill_arg_t first = {bat, evs, 3, 0, CW_ERROR}, second = {b2, evs + 3, 3, 3, CW_ERROR};
    fill_batch(&first);
    cr_assert_eq(first.r, CW_OK);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fill_batch, &second), 0);
    cw_account_state_t *out;
    size_t n_out;
    cw_err_t r1 = cw_state_batch_exec(st, bat, &out, &n_out);
    pthread_join(t, NULL);
    cr_assert_eq(r1, CW_OK);
    cr_assert_eq(n_out, 2);
    cr_assert_eq(second.r, CW_OK);
    cr_assert_eq(cw_state_batch_len(bat), 3);
    cr_assert_eq(cw_state_batch_len(b2), 3);
    cr_assert_eq(cw_state_batch_exec(st, b2, &out, &n_out), CW_OK);
    cr_assert_eq(n_out, 2);
    cr_assert_eq(read_back(st, &out, n_out), CW_OK);
    for (size_t i = 0; i < n_out; i++) {
        check_all_queries(&out[i], evs, 6);
    }
    cr_expect_eq(win(strcmp(out[0].account_id, "two") == 0 ? &out[0] : &out[1], CW_WIN_USAGE_7D),
                 7);
    cw_state_batch_destroy(b2);
}

/* A killed server: exec is CW_RETRY, the connection is dropped; after a
 * restart the same batch re-executes. */
Test(state, redis_killed_then_restarted) {
    cw_event_t evs[4] = {login("kill", "u1", T(0, 1)), login("kill", "u2", T(0, 2)),
                         login("kill", "u1", T(1, 1)), usage("kill", "u1", "reports", T(1, 2), 3)};
    cw_account_state_t *out;
    size_t n_out;
    cr_assert_eq(apply(st, evs, 2, 0, 0, &out, &n_out), CW_OK);
    cr_expect_eq(cw_state_reconnects(st), 0);
    cw_h_redis_kill(redis);
    cr_expect_eq(apply(st, evs + 2, 2, 0, 2, &out, &n_out), CW_RETRY);
    cr_expect_eq(n_out, 0);
    cr_expect_eq(cw_state_connected(st), 0);
    cr_expect_eq(cw_state_batch_exec(st, bat, &out, &n_out), CW_RETRY); /* still down */
    cw_account_state_t a;
    cr_expect_eq(cw_state_read(st, "kill", -1, &a), CW_RETRY);
    cw_h_redis_restart(redis);
    /* the batch is still there: re-exec it as a whole */
    cr_assert_eq(cw_state_batch_len(bat), 2);
    cr_assert_eq(cw_state_batch_exec(st, bat, &out, &n_out), CW_OK);
    cr_expect_eq(cw_state_connected(st), 1);
    cr_expect_eq(cw_state_reconnects(st), 1);
    cr_assert_eq(n_out, 1);
    cr_assert_eq(read_back(st, &out, n_out), CW_OK);
    /* the restarted server is empty: only the re-executed batch counts */
    check_all_queries(&out[0], evs + 2, 2);
    cr_expect_eq(win(&out[0], CW_WIN_USAGE_7D), 3);
}

/* Nothing runs in Redis's Lua VM (it cost Redis several times the CPU of
 * plain commands): an apply, a read, a commit and a due scan send no EVAL,
 * EVALSHA or FCALL, and leave no script cached. */
Test(state, no_script_runs) {
    cw_event_t evs[3] = {login("ns", "u1", T(0, 1)), login("ns", "u2", T(0, 2)),
                         login("ns2", "u1", T(0, 3))};
    cw_account_state_t *out, a;
    size_t n_out;
    reset_stats();
    cr_assert_eq(apply(st, evs, 3, 0, 0, &out, &n_out), CW_OK);
    cr_assert_eq(cw_state_read(st, "ns", -1, &a), CW_OK);
    cw_commit_t c = commit_of(&a, 55, CW_BAND_CAUTION, -1, NULL, no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_assert_eq(cw_state_read(st, "ns", -1, &a), CW_OK);
    cr_expect_eq(a.score, 55);
    cw_account_state_t *due;
    size_t n_due;
    cr_assert_eq(cw_state_due(st, 0, DE(0), 10, &due, &n_due), CW_OK);
    cr_expect_geq(n_due, 1);            /* ns2 at least: due at the end of day 0 */
    cr_expect_gt(cmd_calls("hset"), 0); /* the counts are read right */
    cr_expect_eq(cmd_calls("eval"), 0);
    cr_expect_eq(cmd_calls("evalsha"), 0);
    cr_expect_eq(cmd_calls("fcall"), 0);
    redisContext *rc = raw();
    redisReply *r = redisCommand(rc, "INFO memory");
    cr_assert(r != NULL && r->str != NULL);
    cr_expect(strstr(r->str, "number_of_cached_scripts:0") != NULL, "a script is cached");
    freeReplyObject(r);
    redisFree(rc);
}

/* Wall mode: windows as of now, the dirty mark is now. */
Test(state, wall_mode_reads_as_of_now) {
    teardown(); /* replace the suite's event-mode setup */
    setup_mode("wall");
    int64_t now = cw_time_now_ms();
    cw_event_t evs[3] = {login("wall", "u1", now - 2 * DAY), login("wall", "u1", now - 10 * DAY),
                         login("wall", "u2", now - 40 * DAY)};
    cw_account_state_t *out, a;
    size_t n_out;
    cr_assert_eq(apply(st, evs, 3, 0, 0, &out, &n_out), CW_OK);
    cr_expect_geq(out[0].asof_ms, now);
    cr_expect_lt(out[0].asof_ms, now + 60000);
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_7D), 1);
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_30D), 2);
    cr_assert_eq(cw_state_read(st, "wall", -1, &a), CW_OK);
    cr_expect_geq(a.asof_ms, now);
    check_all_queries(&a, evs, 3);
}

/* Redis memory of a 30-day active account with 20 users (bench input). */
Test(state, memory_per_account) {
    enum { USERS = 20, DAYS = 30 };
    static cw_event_t evs[USERS * DAYS * 2 + 8];
    const char *features[] = {"reports", "export", "admin", "integrations", "search"};
    size_t n = 0;
    cw_account_state_t *out;
    size_t n_out;
    for (int d = 0; d < DAYS; d++) {
        for (int u = 0; u < USERS; u++) {
            char user[16];
            snprintf(user, sizeof(user), "user-%02d", u);
            if ((u + d) % 3 == 0) { /* each user active about every third day */
                evs[n++] = login("mem-acct-000001", user, T(d, 8 + u % 8));
                evs[n++] = usage("mem-acct-000001", user, features[(u + d) % 5], T(d, 9 + u % 8),
                                 1 + u % 4);
            }
        }
    }
    evs[n] = ev_make(CW_EV_ACCOUNT, "mem-acct-000001", NULL, NULL, T(0, 0), 1);
    evs[n].arr = 1200000;
    evs[n].seats = 25;
    cw_strlcpy(evs[n].plan, "business", sizeof(evs[n].plan));
    evs[n].renewal_ms = T(200, 0);
    n++;
    evs[n++] = ev_make(CW_EV_SUPPORT_TICKET, "mem-acct-000001", "user-01", NULL, T(12, 0), 1);
    evs[n++] = ev_make(CW_EV_NPS, "mem-acct-000001", "user-02", NULL, T(15, 0), 1);
    evs[n - 1].score = 8;
    /* one batch per day, like a live consumer */
    size_t from = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || cw_time_day(evs[i].ts_ms) != cw_time_day(evs[i - 1].ts_ms)) {
            cr_assert_eq(apply(st, evs + from, i - from, 0, (int64_t)from, &out, &n_out), CW_OK);
            from = i;
        }
    }
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "mem-acct-000001", -1, &a), CW_OK);
    check_all_queries(&a, evs, n);
    /* a realistic decision: snapshot JSON and 30 history points */
    char snap[700];
    memset(snap, 'x', sizeof(snap) - 1);
    snap[0] = '{';
    snap[sizeof(snap) - 2] = '}';
    snap[sizeof(snap) - 1] = '\0';
    for (int i = 0; i < conf->history_len; i++) {
        a.asof_ms = T(i, 0);
        cw_commit_t c = commit_of(&a, 60 + i % 7, CW_BAND_CAUTION, T(31, 0), snap, no_alerts);
        c.last_alert_id = "0123456789abcdef0123456789abcdef";
        cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    }
    const char *keys[] = {"t:a:{mem-acct-000001}", "t:h:{mem-acct-000001}",
                          "t:snap:{mem-acct-000001}"};
    long long total = 0;
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        long long m = cw_h_redis_int(redis, "MEMORY USAGE %s SAMPLES 0", keys[k]);
        cr_assert_gt(m, 0, "%s", keys[k]);
        fprintf(stderr, "memory %s: %lld bytes\n", keys[k], m);
        total += m;
    }
    fprintf(stderr, "memory per 30-day active account with %d users: %lld bytes (HLEN %lld)\n",
            USERS, total, cw_h_redis_int(redis, "HLEN t:a:{mem-acct-000001}"));
    /* small hashes stay listpack-encoded (the snapshot lives in its own key) */
    redisContext *c = raw();
    redisReply *r = redisCommand(c, "OBJECT ENCODING t:a:{mem-acct-000001}");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING);
    cr_expect_str_eq(r->str, "listpack");
    freeReplyObject(r);
    redisFree(c);
    cr_expect_lt(total, 8 * 1024);
}

/* Regression: scanning timers with nothing due, again and again (the
 * processor does it every loop), must not fail; an empty answer once freed
 * the scratch through realloc(p, 0) and the next scan returned CW_ERROR. */
Test(state, nothing_due_repeatedly) {
    cw_account_state_t *due;
    size_t n_due = 99;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(cw_state_due(st, 7, T(1, 0), 10, &due, &n_due), CW_OK, "scan %d", i);
        cr_expect_eq(n_due, 0);
    }
    cw_event_t e = login("later", "u", T(2, 5));
    cr_assert_eq(apply(st, &e, 1, 7, 0, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_due(st, 7, DE(2), 10, &due, &n_due), CW_OK);
    cr_expect_eq(n_due, 1);
    cr_assert_eq(cw_state_due(st, 7, T(1, 0), 10, &due, &n_due), CW_OK);
    cr_expect_eq(n_due, 0);
}

/* The dashboard reads: accounts per band move with every band change (a
 * re-run of the same commit moves nothing), and the score history comes
 * back newest first, one point per snapshot. */
Test(state, band_counts_and_history) {
    cw_account_state_t *out;
    size_t n_out;
    uint64_t counts[3];
    int64_t asof[8];
    double scores[8];
    size_t n = 0;
    cr_assert_eq(cw_state_band_counts(st, counts), CW_OK);
    cr_expect(counts[0] == 0 && counts[1] == 0 && counts[2] == 0);
    cr_expect_eq(cw_state_history(st, "bh", 8, asof, scores, &n), CW_NOENT);

    cw_event_t e = login("bh", "u", T(2, 5));
    cr_assert_eq(apply(st, &e, 1, 3, 0, &out, &n_out), CW_OK);
    cw_account_state_t a = out[0];
    cw_commit_t c = commit_of(&a, 80, CW_BAND_HEALTHY, -1, "{\"s\":80}", no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK); /* idempotent re-run */
    cr_assert_eq(cw_state_band_counts(st, counts), CW_OK);
    cr_expect(counts[0] == 1 && counts[1] == 0 && counts[2] == 0, "%llu %llu %llu",
              (unsigned long long)counts[0], (unsigned long long)counts[1],
              (unsigned long long)counts[2]);

    cw_event_t e2 = login("bh", "u", T(3, 5));
    cr_assert_eq(apply(st, &e2, 1, 3, 1, &out, &n_out), CW_OK);
    a = out[0];
    c = commit_of(&a, 30, CW_BAND_DANGER, -1, "{\"s\":30}", no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_assert_eq(cw_state_band_counts(st, counts), CW_OK);
    cr_expect(counts[0] == 0 && counts[1] == 0 && counts[2] == 1);

    cr_assert_eq(cw_state_history(st, "bh", 8, asof, scores, &n), CW_OK);
    cr_assert_eq(n, 2);
    cr_expect_eq(asof[0], T(3, 5));
    cr_expect_eq(scores[0], 30);
    cr_expect_eq(asof[1], T(2, 5));
    cr_expect_eq(scores[1], 80);
    cr_assert_eq(cw_state_history(st, "bh", 1, asof, scores, &n), CW_OK);
    cr_expect_eq(n, 1);
}

/* A read as of an earlier time than the latest login (a day-end timer read
 * after the next day's events were applied) sees the last login as of that
 * time, at day granularity: the end of the last day with logins, or the
 * as-of itself when that day is the as-of's own. */
Test(state, last_login_as_of) {
    cw_account_state_t a;
    cw_event_t evs[3] = {login("ll", "u", T(2, 5)), login("ll", "u", T(4, 7)),
                         login("ll", "u", T(9, 1))};
    cr_assert_eq(apply(st, evs, 3, 2, 0, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_read(st, "ll", T(12, 0), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(9, 1)); /* stored value: nothing later */
    cr_assert_eq(cw_state_read(st, "ll", T(8, 23), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(5, 0) - 1); /* end of day 4 */
    cr_assert_eq(cw_state_read(st, "ll", T(4, 3), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(4, 3)); /* a login that day: as of itself */
    cr_assert_eq(cw_state_read(st, "ll", T(3, 0), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(3, 0) - 1); /* end of day 2 */
}

/* A login older than the logins' retention (42 days with the default
 * model) is gone from the day buckets; when a newer login is applied before
 * the account's pending day-end decision, the apply keeps the one at or
 * before that decision (lt), and a read as of it sees the exact last login,
 * as it would have before the newer login arrived (was: the oldest retained
 * day, so the inactivity a decision saw depended on where batches began). */
Test(state, last_login_kept_across_a_long_gap) {
    cw_account_state_t a;
    cw_event_t first[1] = {login("gap", "u", T(0, 5))};
    cw_event_t later[2] = {usage("gap", "u", "reports", T(60, 1), 1), login("gap", "u", T(61, 2))};
    cr_assert_eq(apply(st, first, 1, 2, 0, NULL, NULL), CW_OK);
    /* the day-0 decision happened; the timer is now at the end of day 50 */
    {
        redisContext *c = raw();
        redisReply *r = redisCommand(c, "ZADD t:due:2 %lld gap", (long long)(T(51, 0) - 1));
        cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
        freeReplyObject(r);
        redisFree(c);
    }
    cr_assert_eq(apply(st, later, 2, 2, 1, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_read(st, "gap", T(51, 0) - 1, &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(0, 5), "as of day 50: %lld", (long long)a.last_login_ms);
    cr_assert_eq(cw_state_read(st, "gap", T(60, 23), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(0, 5));
    cr_assert_eq(cw_state_read(st, "gap", T(61, 3), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(61, 2));
}

/* Before an account's first login, a read as of that time sees no login at
 * all (not a bound derived from the as-of). */
Test(state, no_login_yet_as_of) {
    cw_account_state_t a;
    cw_event_t evs[2] = {usage("nl", "u", "reports", T(1, 5), 1), login("nl", "u", T(6, 2))};
    cr_assert_eq(apply(st, evs, 2, 2, 0, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_read(st, "nl", T(3, 23), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, -1);
    cr_expect_eq(a.first_login_ms, -1);
    cr_assert_eq(cw_state_read(st, "nl", T(7, 0), &a), CW_OK);
    cr_expect_eq(a.last_login_ms, T(6, 2));
    cr_expect_eq(a.first_login_ms, T(6, 2));
}

/* Another writer moves c[0]'s account's timer on partition p back to
 * earlier (and INCRs the fence, as every writer does) between a watched
 * read and the commit of c[0..1]: the commit's EXEC aborts, it reads again
 * and commits; the earlier timer is kept, c[1]'s goes to its next time. */
static void commit_across_a_writer(cw_commit_t *c, int p, int64_t earlier) {
    const char *a = c[0].acct->account_id, *b = c[1].acct->account_id;
    cw_h_redis_int(redis, "ZADD t:due:%d %lld %s", p, (long long)earlier, a);
    cw_h_redis_int(redis, "INCR t:fence:%d", p);
    long long exec0 = cmd_calls("exec");
    cr_assert_eq(cw_state_commit(st, c, 2), CW_OK);
    cr_expect_eq(cmd_calls("exec") - exec0, 2); /* aborted, then read again and committed */
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:%d %s", p, a), earlier);
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:%d %s", p, b), c[1].next_due_ms);
}

/* The commit of accounts just read by cw_state_due reuses that read (made
 * under the WATCH of the partition's fence): no reads of its own. When
 * another writer of the partition wrote in between, the commit's EXEC
 * aborts and it reads again: an earlier timer set meanwhile is kept. */
Test(state, due_commit_reuses_the_watched_read) {
    cw_account_state_t *due;
    size_t n_due;
    cw_event_t e[2] = {login("wr-a", "u", T(2, 5)), login("wr-b", "u", T(2, 6))};
    cr_assert_eq(apply(st, e, 2, 6, 0, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_due(st, 6, DE(2), 10, &due, &n_due), CW_OK);
    cr_assert_eq(n_due, 2);
    long long zscore0 = cmd_calls("zscore"), hget0 = cmd_calls("hget");
    long long lindex0 = cmd_calls("lindex"), exec0 = cmd_calls("exec");
    cw_commit_t c[2] = {commit_of(&due[0], 70, CW_BAND_HEALTHY, DE(3), "{\"s\":70}", no_alerts),
                        commit_of(&due[1], 30, CW_BAND_DANGER, DE(3), "{\"s\":30}", no_alerts)};
    cr_assert_eq(cw_state_commit(st, c, 2), CW_OK);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 0);
    cr_expect_eq(cmd_calls("hget") - hget0, 0);
    cr_expect_eq(cmd_calls("lindex") - lindex0, 0);
    cr_expect_eq(cmd_calls("exec") - exec0, 1);
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:6 wr-a"), DE(3));
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{wr-b}"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "TTL t:h:{wr-b}") > 0, 1); /* created: given a TTL */
    cr_expect_eq(cw_h_redis_int(redis, "TTL t:snap:{wr-b}") > 0, 1);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 1);

    /* day 3: another writer moves wr-a's timer back to day 2 between the
     * read and the commit */
    cr_assert_eq(cw_state_due(st, 6, DE(3), 10, &due, &n_due), CW_OK);
    cr_assert_eq(n_due, 2);
    c[0] = commit_of(&due[0], 71, CW_BAND_HEALTHY, DE(4), NULL, no_alerts);
    c[1] = commit_of(&due[1], 31, CW_BAND_DANGER, DE(4), NULL, no_alerts);
    commit_across_a_writer(c, 6, DE(2));
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{wr-b} sc"), 31);
}

/* Replace the suite's event-mode setup by a wall-mode one; returns now. */
static int64_t wall_setup(void) {
    teardown();
    setup_mode("wall");
    return cw_time_now_ms();
}

/* Apply a login of accounts a (at t) and b (t + 100 ms) on partition p. */
static void apply_logins(const char *a, const char *b, int64_t t, int p, int64_t offset,
                         cw_account_state_t **out, size_t *n_out) {
    cw_event_t e[2] = {login(a, "u", t), login(b, "u", t + 100)};
    cr_assert_eq(apply(st, e, 2, p, offset, out, n_out), CW_OK);
    cr_assert_eq(*n_out, 2);
}

/* Wall mode: the apply reads its accounts back under the WATCH of the
 * batch's fences (with each timer's ZSCORE), and the commit that follows
 * reuses that read: no reads of its own, one EXEC. A writer of the
 * partition in between aborts it; it reads again, and a timer moved
 * earlier meanwhile is kept. A second commit on the same connection
 * (the WATCH ended with the first EXEC) reads for itself. */
Test(state, wall_commit_reuses_the_read_back) {
    int64_t now = wall_setup();
    cw_account_state_t *out;
    size_t n_out;
    long long zscore0 = cmd_calls("zscore");
    apply_logins("rb-a", "rb-b", now - 1000, 5, 0, &out, &n_out);
    cr_expect_eq(win(&out[0], CW_WIN_LOGINS_7D), 1);
    /* the decision that follows sets the timer, not the apply: each timer
     * is read once, by the read back */
    cr_expect_eq(cw_h_redis_int(redis, "ZCARD t:due:5"), 0);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 2);
    cr_expect_eq(out[0].due_ms, -1);
    long long hmget0 = cmd_calls("hmget");
    long long lindex0 = cmd_calls("lindex"), exec0 = cmd_calls("exec");
    zscore0 = cmd_calls("zscore");
    int64_t next = now + DAY;
    cw_commit_t c[2] = {commit_of(&out[0], 70, CW_BAND_HEALTHY, next, "{\"s\":70}", no_alerts),
                        commit_of(&out[1], 30, CW_BAND_DANGER, next, "{\"s\":30}", no_alerts)};
    cr_assert_eq(cw_state_commit(st, c, 2), CW_OK);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 0);
    cr_expect_eq(cmd_calls("hmget") - hmget0, 0);
    cr_expect_eq(cmd_calls("lindex") - lindex0, 0);
    cr_expect_eq(cmd_calls("exec") - exec0, 1);
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:5 rb-a"), next);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{rb-b} sc"), 30);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{rb-b}"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "TTL t:h:{rb-b}") > 0, 1); /* created: given a TTL */

    /* the same commits again, on the same connection: the read back's WATCH
     * ended with the first EXEC, so this one reads (and counts once); the
     * timers and at-risk ranks are already where it would put them */
    zscore0 = cmd_calls("zscore");
    exec0 = cmd_calls("exec");
    long long zadd0 = cmd_calls("zadd");
    cw_account_state_t again[2] = {out[0], out[1]};
    again[0].has_score = again[1].has_score = 1; /* as a read now finds them */
    again[0].score = 70;
    again[1].score = 30;
    c[0].acct = &again[0];
    c[1].acct = &again[1];
    cr_assert_eq(cw_state_commit(st, c, 2), CW_OK);
    cr_expect_eq(cmd_calls("zadd") - zadd0, 0);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 2);
    cr_expect_eq(cmd_calls("exec") - exec0, 1);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{rb-b}"), 1);

    /* another writer moves rb-a's timer earlier between the read back and
     * the commit */
    apply_logins("rb-a", "rb-b", now - 500, 5, 2, &out, &n_out);
    c[0] = commit_of(&out[0], 71, CW_BAND_HEALTHY, next, NULL, no_alerts);
    c[1] = commit_of(&out[1], 72, CW_BAND_HEALTHY, next, NULL, no_alerts);
    commit_across_a_writer(c, 5, now - 5);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 0); /* rb-b left danger once */
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 0"), 2);
}

/* Commit a decision of account id as of asof with score sc (read first). */
static void decide_as_of(const char *id, int64_t asof, double sc) {
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, id, asof, &a), CW_OK);
    cw_commit_t c = commit_of(&a, sc, CW_BAND_CAUTION, -1, "{}", no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
}

/* Decisions of days out of order (a late event's re-decided day ends, an
 * account on two partitions) go where their day belongs: one point per
 * day, newest day first, so score_7d finds the right one. A day older than
 * every point of a full history is not kept. */
Test(state, history_in_day_order) {
    cw_account_state_t a;
    cw_event_t e = login("ho", "u", T(0, 1));
    cr_assert_eq(apply(st, &e, 1, 0, 0, NULL, NULL), CW_OK);
    const int days[] = {5, 3, 4, 4, 1, 9};
    const double sc[] = {50, 30, 40, 41, 10, 90};
    for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++) {
        decide_as_of("ho", DE(days[i]), sc[i]);
    }
    int64_t asof[8];
    double scores[8];
    size_t n;
    const int want_day[] = {9, 5, 4, 3, 1};
    const double want_sc[] = {90, 50, 41, 30, 10};
    cr_assert_eq(cw_state_history(st, "ho", 8, asof, scores, &n), CW_OK);
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(asof[i], DE(want_day[i]), "point %zu", i);
        cr_expect_eq(scores[i], want_sc[i], "point %zu", i);
    }
    cr_assert_eq(cw_state_read(st, "ho", DE(12), &a), CW_OK);
    cr_expect_eq(a.score_7d, 50); /* day 5, not day 1 nor 3 */
    cr_assert_eq(cw_state_read(st, "ho", DE(11), &a), CW_OK);
    cr_expect_eq(a.score_7d, 41);

    cw_event_t f = login("hf", "u", T(19, 1));
    cr_assert_eq(apply(st, &f, 1, 0, 1, NULL, NULL), CW_OK);
    for (int d = 20; d < 20 + conf->history_len; d++) {
        decide_as_of("hf", DE(d), d);
    }
    decide_as_of("hf", DE(10), 10);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{hf}"), conf->history_len);
    cr_assert_eq(cw_state_history(st, "hf", 1, asof, scores, &n), CW_OK);
    cr_expect_eq(asof[0], DE(19 + conf->history_len));
}

/* Wall mode decides as of every batch: the history keeps one point per
 * day (the day's last decision), so a busy day does not push the older
 * days, and with them the score 7 days old, out of state.history_len. */
Test(state, wall_history_keeps_one_point_per_day) {
    int64_t now = wall_setup();
    cw_account_state_t *out, a;
    size_t n_out;
    for (int i = 0; i < 3; i++) {
        apply_logins("hd-a", "hd-b", now - 1000 + i, 2, 2 * i, &out, &n_out);
        cw_commit_t c = commit_of(&out[0], 50 + i, CW_BAND_CAUTION, now + DAY, "{}", no_alerts);
        cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    }
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{hd-a}"), 1);
    int64_t asof[4];
    double scores[4];
    size_t n;
    cr_assert_eq(cw_state_history(st, "hd-a", 4, asof, scores, &n), CW_OK);
    cr_assert_eq(n, 1);
    cr_expect_eq(scores[0], 52); /* the last decision of the day */
    cr_expect_eq(asof[0], out[0].asof_ms);
    /* a decision 8 days later sees that day's score as the one 7 days old,
     * and starts a point of its own */
    a = out[0];
    a.asof_ms += 8 * DAY;
    cr_assert_eq(cw_state_read(st, "hd-a", a.asof_ms, &a), CW_OK);
    cr_expect_eq(a.has_score_7d, 1);
    cr_expect_eq(a.score_7d, 52);
    cw_commit_t c = commit_of(&a, 40, CW_BAND_CAUTION, -1, "{}", no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{hd-a}"), 2);
}

/* Wall mode sets no timer in the apply: a crash between the apply and the
 * decision's commit is covered by the redelivery of the batch (its offsets
 * are stored after the decisions). The redelivered batch applies nothing,
 * but still returns its accounts, read back, for the caller to decide. */
Test(state, wall_redelivered_batch_is_read_back_for_a_decision) {
    int64_t now = wall_setup();
    cw_account_state_t *out;
    size_t n_out;
    apply_logins("rd-a", "rd-b", now - 1000, 3, 10, &out, &n_out);
    /* ... the process dies here, before its decisions were committed */
    cw_state_destroy(st);
    char err[256];
    st = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_not_null(st, "state: %s", err);
    apply_logins("rd-a", "rd-b", now - 1000, 3, 10, &out, &n_out);
    cr_expect_eq(cw_state_duplicates(st), 2);
    for (size_t i = 0; i < n_out; i++) {
        cr_expect_eq(win(&out[i], CW_WIN_LOGINS_7D), 1); /* applied once */
        cr_expect_eq(out[i].due_ms, -1);                 /* no timer yet */
        cr_expect_eq(out[i].partition, 3);
    }
    int64_t next = now + DAY;
    cw_commit_t c[2] = {commit_of(&out[0], 20, CW_BAND_DANGER, next, "{\"s\":20}", no_alerts),
                        commit_of(&out[1], 80, CW_BAND_HEALTHY, next, "{\"s\":80}", no_alerts)};
    long long exec0 = cmd_calls("exec");
    cr_assert_eq(cw_state_commit(st, c, 2), CW_OK);
    cr_expect_eq(cmd_calls("exec") - exec0, 1); /* on the read back */
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:3 rd-a"), next);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 1);
}

/* Set members are listed for pruning only when one can have left the
 * retention (n:<set> bounds the members' last days), not once a day. */
Test(state, set_prune_only_when_a_member_can_expire) {
    int s_lu = -1;
    for (int s = 0; s < layout.n_sets; s++) {
        if (strcmp(layout.sets[s].name, "U:lu") == 0) {
            s_lu = s;
        }
    }
    cr_assert_geq(s_lu, 0);
    cw_view_plan_t plan;
    char err[256];
    cr_assert_eq(cw_view_plan_build(conf, &layout, CW_STATE_SLACK_DAYS, &plan, err, sizeof(err)),
                 0);
    int ret = plan.sr[s_lu]; /* days the set keeps */
    cr_assert_gt(ret, 2);
    /* (each apply() here also reads its account back: one HGETALL) */
    long long hgetall0 = cmd_calls("hgetall");
    /* "old" on day 0 only, "daily" every day: nothing can expire before
     * day ret, so no set is listed */
    cw_event_t e0 = login("sp", "old", T(0, 1));
    cr_assert_eq(apply(st, &e0, 1, 0, 0, NULL, NULL), CW_OK);
    for (int d = 0; d < ret; d++) {
        cw_event_t e = login("sp", "daily", T(d, 12));
        cr_assert_eq(apply(st, &e, 1, 0, 1 + d, NULL, NULL), CW_OK);
        decided("sp", 0, d);
    }
    cr_expect_eq(cmd_calls("hgetall") - hgetall0, 1 + ret); /* the read-backs only */
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{sp} n:U:lu"), D0);
    hgetall0 = cmd_calls("hgetall");
    /* past the retention of day 0: listed once, "old" deleted, the bound
     * moves to the oldest kept member */
    for (int d = ret; d < ret + 3; d++) {
        cw_event_t e = login("sp", "daily", T(d, 12));
        cr_assert_eq(apply(st, &e, 1, 0, 1 + d, NULL, NULL), CW_OK);
        decided("sp", 0, d);
    }
    cr_expect_eq(cmd_calls("hgetall") - hgetall0, 3 + 1);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{sp} s4:U:lu:old"), 0);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{sp} s4:U:lu:daily"), 1);
    cr_expect_geq(cw_h_redis_int(redis, "HGET t:a:{sp} n:U:lu"), D0 + ret);

    /* a set written by an older version (m:<set> = the last prune day, no
     * n:<set>) is listed once, which replaces m: by n: */
    cw_event_t l0 = login("legacy", "gone", T(0, 1));
    cr_assert_eq(apply(st, &l0, 1, 0, 100, NULL, NULL), CW_OK);
    cw_h_redis_int(redis, "HDEL t:a:{legacy} n:U:lu");
    cw_h_redis_int(redis, "HSET t:a:{legacy} m:U:lu %lld", (long long)(D0 + ret + 5));
    cw_h_redis_int(redis, "INCR t:fence:0"); /* that writer's fence */
    decided("legacy", 0, ret + 5);
    hgetall0 = cmd_calls("hgetall");
    cw_event_t l1 = login("legacy", "new", T(ret + 6, 1));
    cr_assert_eq(apply(st, &l1, 1, 0, 101, NULL, NULL), CW_OK);
    cr_expect_eq(cmd_calls("hgetall") - hgetall0, 1 + 1);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{legacy} m:U:lu"), 0);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{legacy} s4:U:lu:gone"), 0);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{legacy} n:U:lu"), D0 + ret + 6);
}

/* An apply reads only the facts its events can change (HMGET of the
 * account hash): a batch with neither an account event, a login, a
 * cancellation nor a key feature leaves the attributes and those facts as
 * they were, and a later batch with older such events still lowers the
 * first login and a key feature's first use. */
Test(state, facts_kept_by_batches_that_do_not_read_them) {
    cw_account_state_t a;
    cw_event_t e[4];
    e[0] = ev_make(CW_EV_ACCOUNT, "facts", NULL, NULL, T(2, 0), 1);
    e[0].arr = 50000;
    e[0].seats = 12;
    cw_strlcpy(e[0].plan, "team", sizeof(e[0].plan));
    e[0].renewal_ms = T(200, 0);
    e[1] = login("facts", "u1", T(3, 5));
    e[2] = ev_make(CW_EV_CANCELLATION, "facts", NULL, NULL, T(3, 6), 1);
    e[3] = usage("facts", "u1", "reports", T(3, 7), 1); /* key feature 0 */
    cr_assert_eq(apply(st, e, 4, 2, 0, NULL, NULL), CW_OK);
    /* usage of a feature that is not a key feature: reads none of them */
    cw_event_t plain = usage("facts", "u2", "export", T(4, 1), 1);
    cr_assert_eq(apply(st, &plain, 1, 2, 4, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_read(st, "facts", T(4, 12), &a), CW_OK);
    cr_expect_eq(a.arr, 50000);
    cr_expect_eq(a.seats, 12);
    cr_expect_str_eq(a.plan, "team");
    cr_expect_eq(a.renewal_ms, T(200, 0));
    cr_expect_eq(a.first_login_ms, T(3, 5));
    cr_expect_eq(a.last_login_ms, T(3, 5));
    cr_expect_eq(a.cancel_ms, T(3, 6));
    cr_expect_eq(a.key_feature_first_ms[0], T(3, 7));
    cr_expect_eq(a.first_ms, T(2, 0));
    cr_expect_eq(a.last_event_ms, T(4, 1));
    /* older login and key-feature use, delivered later */
    cw_event_t late[2] = {login("facts", "u3", T(1, 0)),
                          usage("facts", "u3", "reports", T(1, 1), 1)};
    cr_assert_eq(apply(st, late, 2, 2, 5, NULL, NULL), CW_OK);
    cr_assert_eq(cw_state_read(st, "facts", T(4, 12), &a), CW_OK);
    cr_expect_eq(a.first_login_ms, T(1, 0));
    cr_expect_eq(a.last_login_ms, T(3, 5));
    cr_expect_eq(a.key_feature_first_ms[0], T(1, 1));
    cr_expect_eq(a.first_ms, T(1, 0));
    cr_expect_eq(a.cancel_ms, T(3, 6));
    cr_expect_str_eq(a.plan, "team");
}

/* A commit after a due read knows the history's length (the read listed
 * it): it trims only once an LPUSH can take it past state.history_len. */
Test(state, history_trimmed_only_when_full) {
    long long ltrim0 = cmd_calls("ltrim");
    int extra = 3;
    for (int i = 0; i < conf->history_len + extra; i++) {
        cw_account_state_t *due;
        size_t n_due;
        cw_event_t e = login("trim", "u", T(i, 1));
        cr_assert_eq(apply(st, &e, 1, 9, i, NULL, NULL), CW_OK);
        cr_assert_eq(cw_state_due(st, 9, DE(i), 10, &due, &n_due), CW_OK);
        cr_assert_eq(n_due, 1);
        cw_commit_t c = commit_of(&due[0], 40 + i % 7, CW_BAND_CAUTION, -1, "{}", no_alerts);
        cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    }
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{trim}"), conf->history_len);
    cr_expect_eq(cmd_calls("ltrim") - ltrim0, extra);
}

/* Distinct-set members are fields of the account hash, "s<n>:<set>:<member>"
 * (n = the set name's length): no key of their own, so no EXPIRE of their
 * own, and a member may hold any character. */
Test(state, set_members_live_in_the_account_hash) {
    cw_account_state_t a;
    cw_event_t e[3] = {login("mh", "u1", T(0, 1)), login("mh", "s4:U:lu:x|y", T(0, 2)),
                       usage("mh", "u:2", "reports", T(0, 3), 1)};
    cr_assert_eq(apply(st, e, 3, 0, 0, NULL, NULL), CW_OK);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{mh} %s", "s4:U:lu:u1"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{mh} %s", "s4:U:lu:s4:U:lu:x|y"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{mh} %s", "s4:U:lu:u:2"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "EXISTS t:s:{mh}:U:lu"), 0);
    cr_assert_eq(cw_state_read(st, "mh", T(0, 12), &a), CW_OK);
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_30D), 3);
    /* more members of the same day: one HMGET, no EXPIRE (the hash has its
     * TTL, refreshed once a wall-clock day) */
    long long expire0 = cmd_calls("expire"), hmget0 = cmd_calls("hmget");
    cw_event_t e2[2] = {login("mh", "u4", T(0, 4)), login("mh", "u5", T(0, 5))};
    cr_assert_eq(apply(st, e2, 2, 0, 3, NULL, NULL), CW_OK);
    cr_expect_eq(cmd_calls("expire") - expire0, 0);
    cr_expect_eq(cmd_calls("hmget") - hmget0, 1);
    cr_assert_eq(cw_state_read(st, "mh", T(0, 12), &a), CW_OK);
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_30D), 5);
    cr_expect_gt(cw_h_redis_int(redis, "TTL t:a:{mh}"), 0);
}

/* The keyspace's layout mark: claimed by the first connection to an empty
 * keyspace; a keyspace with accounts and no mark (set members in keys of
 * their own, as versions up to 22a750b wrote them) is refused until
 * cw_state_migrate has moved them; afterwards every window reads as before
 * the move. Members of an account whose hash has expired, the TTL mark of
 * 22a750b and sets the model does not have are dropped. */
Test(state, migrate_from_set_keys) {
    char err[256];
    redisContext *c;
    redisReply *r;
    cw_event_t evs[40];
    size_t n = 0;
    for (int d = 0; d < 10; d++) {
        char user[16];
        snprintf(user, sizeof(user), "u%d", d % 4);
        evs[n++] = login("mig", user, T(d, 3));
        evs[n++] = usage("mig", user, d % 2 ? "reports" : "export", T(d, 4), 1 + d % 3);
    }
    cr_assert_eq(apply(st, evs, n, 0, 0, NULL, NULL), CW_OK);
    cr_expect_eq(cw_h_redis_int(redis, "EXISTS t:layout"), 1);
    cw_account_state_t before, after;
    cr_assert_eq(cw_state_read(st, "mig", T(10, 0), &before), CW_OK);
    check_all_queries(&before, evs, n);

    /* back to the old layout: members out of the hash into set keys */
    c = raw();
    r = redisCommand(c, "HGETALL t:a:{mig}");
    cr_assert(r != NULL && r->type == REDIS_REPLY_ARRAY);
    int moved = 0;
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const char *f = r->element[k]->str;
        for (int s = 0; s < layout.n_sets; s++) {
            char pre[64];
            snprintf(pre, sizeof(pre), "s%zu:%s:", strlen(layout.sets[s].name),
                     layout.sets[s].name);
            if (strncmp(f, pre, strlen(pre)) == 0) {
                char key[128];
                snprintf(key, sizeof(key), "t:s:{mig}:%s", layout.sets[s].name);
                freeReplyObject(redisCommand(c, "HSET %s %s %s %s 0,0", key, f + strlen(pre),
                                             r->element[k + 1]->str, ""));
                freeReplyObject(redisCommand(c, "HDEL t:a:{mig} %s", f));
                moved++;
            }
        }
    }
    freeReplyObject(r);
    cr_assert_gt(moved, 4);
    freeReplyObject(redisCommand(c, "HSET t:s:{expired}:U:lu u1 20000,1"));
    freeReplyObject(redisCommand(c, "HSET t:s:{mig}:U:gone u1 20000,1"));
    freeReplyObject(redisCommand(c, "DEL t:layout"));
    redisFree(c);

    /* refused while the members are in set keys */
    cw_state_t *fresh = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_not_null(fresh);
    cr_expect_eq(cw_state_connect(fresh), CW_ERROR);
    cr_expect_eq(cw_state_connected(fresh), 0);
    cw_state_destroy(fresh);

    fresh = cw_state_new(conf, &layout, err, sizeof(err));
    uint64_t keys = 0;
    cr_assert_eq(cw_state_migrate(fresh, &keys, err, sizeof(err)), CW_OK, "%s", err);
    cw_state_destroy(fresh);
    cr_expect_eq(keys, 2 + 2); /* mig's two sets, expired, the unknown set */
    cr_expect_eq(cw_h_redis_int(redis, "EXISTS t:s:{mig}:U:lu t:s:{expired}:U:lu t:s:{mig}:U:gone"),
                 0);
    cr_expect_eq(cw_h_redis_int(redis, "EXISTS t:a:{expired}"), 0);
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{mig} s4:U:lu:"), 0); /* the 22a750b mark */
    cr_expect_eq(cw_h_redis_int(redis, "HEXISTS t:a:{mig} s4:U:lu:u1"), 1);

    fresh = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_eq(cw_state_connect(fresh), CW_OK);
    cr_assert_eq(cw_state_read(fresh, "mig", T(10, 0), &after), CW_OK);
    for (int j = 0; j < layout.n_queries; j++) {
        cr_expect_eq(after.q[j], before.q[j], "query %d: %g after, %g before", j, after.q[j],
                     before.q[j]);
    }
    cw_state_destroy(fresh);
    /* a mark of another layout is refused */
    cw_h_redis_int(redis, "SET t:layout 3");
    fresh = cw_state_new(conf, &layout, err, sizeof(err));
    cr_expect_eq(cw_state_connect(fresh), CW_ERROR);
    cw_state_destroy(fresh);
}

/* The arguments of the last logged call of cmd (SLOWLOG, every call
 * logged), space-separated into buf; "" when none. */
static void last_call(const char *cmd, char *buf, size_t size) {
    redisContext *c = raw();
    redisReply *r = redisCommand(c, "SLOWLOG GET 1000");
    buf[0] = '\0';
    cr_assert(r != NULL && r->type == REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements && buf[0] == '\0'; i++) { /* newest first */
        const redisReply *args = r->element[i]->element[3];
        if (args->elements > 0 && strcasecmp(args->element[0]->str, cmd) == 0) {
            for (size_t k = 0; k < args->elements; k++) {
                size_t len = strlen(buf);
                snprintf(buf + len, size - len, "%s%s", k ? " " : "", args->element[k]->str);
            }
        }
    }
    freeReplyObject(r);
    redisFree(c);
}

static void count_rtt(void *opaque, const char *stage, double seconds) {
    (void)stage;
    (void)seconds;
    (*(int *)opaque)++;
}

/* The apply cache (state.cache_accounts): the second apply of an account
 * asks Redis only for its day buckets and members (no facts it knows, no
 * prune marks, x or o:<p>, no ZSCORE of its timer), and computes the same,
 * in two round trips like a miss (the fence check rides with the read). A
 * write by another writer that INCRs the partition's fence is seen: the
 * read that relied on the record is made again as a miss; a commit's timer
 * move is kept in the cache, so the next apply still moves the timer
 * earlier when it must. */
Test(state, apply_cache_keeps_the_fixed_fields) {
    int rtts = 0;
    cw_state_set_rtt_cb(st, count_rtt, &rtts);
    cw_account_state_t *out, *due;
    size_t n_out, n_due;
    uint64_t hits, misses;
    char args[2048];
    cw_event_t evs[4] = {login("ac", "u1", T(0, 1)), login("ac", "u2", T(0, 2)),
                         usage("ac", "u1", "reports", T(0, 3), 2), login("ac", "u1", T(1, 4))};
    cw_h_redis_int(redis, "CONFIG SET slowlog-log-slower-than 0");
    cw_h_redis_int(redis, "CONFIG SET slowlog-max-len 1000");
    cr_assert_eq(apply(st, evs, 1, 0, 0, NULL, NULL), CW_OK);
    cw_state_cache_stats(st, &hits, &misses);
    cr_expect_eq(hits, 0);
    cr_expect_eq(misses, 1);
    rtts = 0;
    last_call("HMGET", args, sizeof(args));
    cr_expect_neq(strstr(args, " o:0"), NULL, "a miss reads the fixed fields: %s", args);

    long long zscore0 = cmd_calls("zscore"), hmget0 = cmd_calls("hmget");
    cr_assert_eq(apply(st, evs + 1, 2, 0, 1, &out, &n_out), CW_OK);
    cr_expect_eq(rtts, 3, "read with the fences, write, and the test's read back: %d", rtts);
    cw_state_cache_stats(st, &hits, &misses);
    cr_expect_eq(hits, 1);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 0, "the timer came from the cache");
    cr_expect_eq(cmd_calls("hmget") - hmget0, 1);
    last_call("HMGET", args, sizeof(args));
    cr_expect_eq(strstr(args, " o:0"), NULL, "%s", args);
    cr_expect_eq(strstr(args, " x"), NULL, "%s", args);
    cr_expect_eq(strstr(args, " m:"), NULL, "%s", args);
    cr_expect_eq(strstr(args, " fm"), NULL, "%s", args);
    cr_expect_neq(strstr(args, "s4:U:lu:u2"), NULL, "members are still read: %s", args);
    check_all_queries(&out[0], evs, 3);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{ac} o:0"), 2);

    /* another writer (fence INCRed) applied offsets up to 10: offset 3 is a
     * redelivery for it, which the cache must not hide */
    cw_h_redis_int(redis, "HSET t:a:{ac} o:0 10");
    cw_h_redis_int(redis, "INCR t:fence:0");
    uint64_t dup0 = cw_state_duplicates(st);
    hmget0 = cmd_calls("hmget");
    cw_state_cache_stats(st, &hits, &misses);
    cr_assert_eq(apply(st, evs + 3, 1, 0, 3, NULL, NULL), CW_OK);
    cr_expect_eq(cw_state_duplicates(st) - dup0, 1);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{ac} o:0"), 10);
    cr_expect_eq(cmd_calls("hmget") - hmget0, 2, "the read that relied on the record, again");
    uint64_t hits1, misses1;
    cw_state_cache_stats(st, &hits1, &misses1);
    cr_expect_eq(hits1 - hits, 0);
    cr_expect_eq(misses1 - misses, 1);
    cw_state_set_rtt_cb(st, NULL, NULL);

    /* the day-0 decision moves the timer to day 5 (a commit, fence INCRed
     * by it); the day-1 event must then bring it back to day 1's end */
    cr_assert_eq(cw_state_due(st, 0, DE(0), 10, &due, &n_due), CW_OK);
    cr_assert_eq(n_due, 1);
    cw_commit_t c = commit_of(&due[0], 80, CW_BAND_HEALTHY, DE(5), NULL, no_alerts);
    cr_assert_eq(cw_state_commit(st, &c, 1), CW_OK);
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:0 ac"), DE(5));
    zscore0 = cmd_calls("zscore");
    cw_state_cache_stats(st, &hits, &misses);
    cr_assert_eq(apply(st, evs + 3, 1, 0, 11, NULL, NULL), CW_OK);
    uint64_t hits2, misses2;
    cw_state_cache_stats(st, &hits2, &misses2);
    cr_expect_eq(hits2 - hits, 1);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 0);
    cr_expect_eq(cw_h_redis_int(redis, "ZSCORE t:due:0 ac"), DE(1));
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "ac", T(1, 12), &a), CW_OK);
    check_all_queries(&a, evs, 4);
}

/* state.cache_accounts = 0: every apply reads the fixed fields and the
 * timer (the behaviour the cache's figures are compared with). */
Test(state, apply_cache_off) {
    uint64_t hits, misses;
    cw_event_t evs[2] = {login("off", "u1", T(0, 1)), login("off", "u2", T(0, 2))};
    conf->cache_accounts = 0; /* before the first batch: the cache is made then */
    cr_assert_eq(apply(st, evs, 1, 0, 0, NULL, NULL), CW_OK);
    long long zscore0 = cmd_calls("zscore");
    cr_assert_eq(apply(st, evs + 1, 1, 0, 1, NULL, NULL), CW_OK);
    cr_expect_eq(cmd_calls("zscore") - zscore0, 1);
    cw_state_cache_stats(st, &hits, &misses);
    cr_expect_eq(hits + misses, 0);
}

/* An account whose events arrive on two partitions (a producer that changed
 * its keys): a cached record of partition 0 is stale once partition 1's
 * apply wrote the hash (its "p" names 1), so the next apply from 0 reads
 * the fixed fields again (counted as a miss) and every window stays exact. */
Test(state, apply_cache_record_stale_after_another_partition) {
    uint64_t hits, misses, hits2, misses2;
    cw_event_t evs[3] = {login("two", "u1", T(0, 1)), login("two", "u2", T(0, 5)),
                         login("two", "u3", T(0, 3))};
    cr_assert_eq(apply(st, evs, 1, 0, 0, NULL, NULL), CW_OK);
    cr_assert_eq(apply(st, evs + 1, 1, 1, 0, NULL, NULL), CW_OK); /* lm = T(0, 5) */
    cw_state_cache_stats(st, &hits, &misses);
    cr_assert_eq(apply(st, evs + 2, 1, 0, 1, NULL, NULL), CW_OK);
    cw_state_cache_stats(st, &hits2, &misses2);
    cr_expect_eq(hits2 - hits, 0);
    cr_expect_eq(misses2 - misses, 1);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{two} lm"), T(0, 5), "the newest event stays");
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{two} p"), 0);
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "two", T(0, 12), &a), CW_OK);
    check_all_queries(&a, evs, 3);
    /* and from partition 0 again: now a hit (p names 0) */
    cw_event_t e4 = login("two", "u4", T(0, 6));
    cr_assert_eq(apply(st, &e4, 1, 0, 2, NULL, NULL), CW_OK);
    cw_state_cache_stats(st, &hits, &misses);
    cr_expect_eq(hits - hits2, 1);
}

/* Partition p's accounts due at the end of day 2, read on s (as a lane
 * does before it decides them) and copied to out[0..max). */
static size_t due_day2(cw_state_t *s, int p, cw_account_state_t *out, size_t max) {
    cw_account_state_t *due;
    size_t n;
    cr_assert_eq(cw_state_due(s, p, DE(2), 10, &due, &n), CW_OK);
    cr_assert_leq(n, max);
    memcpy(out, due, n * sizeof(*due));
    return n;
}

/* Commit on s the decision "danger, score 30" made on read a. */
static void commit_danger(cw_state_t *s, const cw_account_state_t *a) {
    cw_commit_t c = commit_of(a, 30, CW_BAND_DANGER, -1, "{\"s\":30}", no_alerts);
    cr_assert_eq(cw_state_commit(s, &c, 1), CW_OK);
}

/* An account whose events arrive on two partitions (a producer that
 * changed keys, a topic that grew) has a day-end timer on each, and the
 * lanes that own the two can decide it at the same time. Its decisions are
 * serialized: a commit also watches and INCRs the fence of the partition
 * that wrote the account last (the hash's "p"), and an apply that moves the
 * account INCRs the fence of the partition it moves it from. Of two
 * decisions read at once, the second to commit reads again, so the band
 * count moves once and the history gets one entry. Each case below fails
 * without its part: the counts end at 2 and the histories hold 2 entries. */
Test(state, decisions_of_an_account_on_two_partitions) {
    char err[256];
    cw_state_t *st2 = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_not_null(st2, "state: %s", err);
    cw_account_state_t d0[3], d1[3];
    cw_event_t e0[3] = {login("ab", "u", T(2, 1)), login("ba", "u", T(2, 1)),
                        login("mv", "u", T(2, 1))};
    cw_event_t e1[2] = {login("ab", "u", T(2, 2)), login("ba", "u", T(2, 2))};
    cr_assert_eq(apply(st, e0, 3, 0, 0, NULL, NULL), CW_OK);
    long long fence0 = cw_h_redis_int(redis, "GET t:fence:0");
    cr_assert_eq(apply(st2, e1, 2, 1, 0, NULL, NULL), CW_OK);
    cr_expect_eq(cw_h_redis_int(redis, "GET t:fence:0"), fence0 + 1,
                 "moving accounts INCRs the fence of the partition they leave, once");
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{ab} p"), 1);

    /* ab: the lane of partition 1 commits first (its own read), then the
     * lane of 0, whose read of ab names partition 1 */
    cr_assert_eq(due_day2(st, 0, d0, 3), 3);
    cr_assert_str_eq(d0[0].account_id, "ab");
    cr_expect_eq(d0[0].home_partition, 1);
    cr_expect_eq(d0[2].home_partition, 0);
    cr_assert_eq(due_day2(st2, 1, d1, 3), 2);
    cr_assert_str_eq(d1[0].account_id, "ab");
    commit_danger(st2, &d1[0]);
    commit_danger(st, &d0[0]);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 1);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{ab}"), 1);

    /* ba: the other order; the lane of 1 committed nothing since its read,
     * so its commit would reuse it, but the fence it watched moved */
    cr_assert_eq(due_day2(st, 0, d0, 3), 2);
    cr_assert_str_eq(d0[0].account_id, "ba");
    cr_assert_eq(due_day2(st2, 1, d1, 3), 1);
    commit_danger(st, &d0[0]);
    commit_danger(st2, &d1[0]);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 2);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{ba}"), 1);

    /* mv: read by the lane of 0 while it lives there only; then its events
     * move to partition 1, whose lane decides it first */
    cr_assert_eq(due_day2(st, 0, d0, 3), 1);
    cr_expect_eq(d0[0].home_partition, 0);
    cw_event_t e2 = login("mv", "u", T(2, 3));
    cr_assert_eq(apply(st2, &e2, 1, 1, 2, NULL, NULL), CW_OK);
    cr_assert_eq(due_day2(st2, 1, d1, 3), 1);
    commit_danger(st2, &d1[0]);
    commit_danger(st, &d0[0]);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:bands 2"), 3);
    cr_expect_eq(cw_h_redis_int(redis, "LLEN t:h:{mv}"), 1);
    cw_state_destroy(st2);
}

/* An apply of an account that another partition's apply wrote last reads
 * it again once it watches that partition's fence as well, and INCRs that
 * fence: so two consumers applying the account from its two partitions
 * (lanes of two processes during a rebalance) are serialized like two
 * applies of one partition. Accounts it does not move cost nothing more. */
Test(state, apply_moving_an_account_watches_the_fence_it_leaves) {
    cw_event_t e0[2] = {login("mo", "u", T(2, 1)), login("st", "u", T(2, 1))};
    cr_assert_eq(apply(st, e0, 2, 0, 0, NULL, NULL), CW_OK);
    cw_event_t e1 = login("st", "u", T(2, 2));
    long long watch0 = cmd_calls("watch"), hmget0 = cmd_calls("hmget");
    cr_assert_eq(apply(st, &e1, 1, 0, 2, NULL, NULL), CW_OK); /* stays on 0 */
    long long watch1 = cmd_calls("watch"), hmget1 = cmd_calls("hmget");
    cr_expect_eq(watch1 - watch0, 1);
    cr_expect_eq(hmget1 - hmget0, 1);
    long long fence0 = cw_h_redis_int(redis, "GET t:fence:0");
    cw_event_t e2 = login("mo", "u", T(2, 3));
    cr_assert_eq(apply(st, &e2, 1, 3, 0, NULL, NULL), CW_OK); /* moves to 3 */
    cr_expect_eq(cmd_calls("watch") - watch1, 2, "the fences of 3, then of 0");
    cr_expect_eq(cmd_calls("hmget") - hmget1, 2, "read again after watching 0");
    cr_expect_eq(cw_h_redis_int(redis, "GET t:fence:0"), fence0 + 1);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{mo} p"), 3);
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "mo", T(2, 12), &a), CW_OK);
    cr_expect_eq(a.home_partition, 3);
    cr_expect_eq(win(&a, CW_WIN_LOGINS_7D), 2);
}

/* Another process's apply of events on another partition: run by
 * cw_state_test_after_read between an apply's read and its write. */
typedef struct other_apply {
    cw_state_t *st;
    cw_state_batch_t *b;
    const cw_event_t *evs;
    size_t n;
    int partition;
    cw_err_t r;
} other_apply_t;

static void other_apply(void *arg) {
    other_apply_t *o = arg;
    cw_account_state_t *out;
    size_t n_out;
    cw_state_batch_begin(o->b);
    for (size_t i = 0; i < o->n; i++) {
        cr_assert_eq(cw_state_batch_add(o->b, o->partition, (int64_t)i, &o->evs[i]), CW_OK);
    }
    o->r = cw_state_batch_exec(o->st, o->b, &out, &n_out);
}

/* A new account has no "p" naming a fence to watch: two processes making
 * its first applies from two partitions at once both read it as missing.
 * Each claims it (HSETNX of "p") before it writes; the one whose claim
 * finds "p" set since its read reads it again (now watching the fence "p"
 * names) and adds to it; without that it overwrote the other's counts
 * (logins 1, users 1). An existing account costs no claim. */
Test(state, new_account_applied_from_two_partitions_at_once) {
    char err[256];
    cw_state_t *st2 = cw_state_new(conf, &layout, err, sizeof(err));
    cr_assert_not_null(st2, "state: %s", err);
    cw_state_batch_t *bat2 = cw_state_batch_new(conf, &layout);
    cr_assert_not_null(bat2);
    cw_event_t e[3] = {login("nw", "u1", T(2, 1)), login("nw", "u2", T(2, 2)),
                       usage("nw", "u2", "reports", T(2, 3), 2)};
    other_apply_t o = {st2, bat2, &e[1], 2, 1, CW_ERROR};
    long long hsetnx0 = cmd_calls("hsetnx"), hmget0 = cmd_calls("hmget");
    cw_state_test_after_read(st, other_apply, &o);
    cr_assert_eq(apply(st, &e[0], 1, 0, 0, NULL, NULL), CW_OK);
    cr_assert_eq(o.r, CW_OK, "the other partition's apply");
    cr_expect_eq(cmd_calls("hsetnx") - hsetnx0, 2, "one claim by each apply");
    cr_expect_eq(cmd_calls("hmget") - hmget0, 4,
                 "%lld: read again after the claim, then after watching the fence of 1 (its \"p\")",
                 cmd_calls("hmget") - hmget0);
    cr_expect_eq(cw_h_redis_int(redis, "HGET t:a:{nw} p"), 0);
    cw_account_state_t a;
    cr_assert_eq(cw_state_read(st, "nw", T(2, 12), &a), CW_OK);
    check_all_queries(&a, e, 3);
    cr_expect_eq(win(&a, CW_WIN_LOGINS_7D), 2);
    cr_expect_eq(win(&a, CW_WIN_ACTIVE_USERS_7D), 2);
    cr_expect_eq(a.first_ms, T(2, 1));
    cr_expect_eq(a.last_event_ms, T(2, 3));

    /* the account exists now: its next applies check nothing */
    long long hsetnx1 = cmd_calls("hsetnx"), watch1 = cmd_calls("watch");
    cw_event_t e3 = login("nw", "u3", T(2, 4));
    cr_assert_eq(apply(st2, &e3, 1, 1, 2, NULL, NULL), CW_OK);
    cr_expect_eq(cmd_calls("hsetnx") - hsetnx1, 0);
    cr_expect_eq(cmd_calls("watch") - watch1, 2, "the fences of 1, then of 0 (its \"p\")");
    cr_assert_eq(cw_state_read(st, "nw", T(2, 12), &a), CW_OK);
    cr_expect_eq(win(&a, CW_WIN_LOGINS_7D), 3);
    cw_state_batch_destroy(bat2);
    cw_state_destroy(st2);
}
