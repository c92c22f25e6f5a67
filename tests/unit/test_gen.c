/*
 * test_gen.c — unit tests of app/cw_gen.c, the traffic generator, driven
 * through cw_gen_main with --out/--truth files in a temp dir.
 *
 * The generator is the ground truth of the end-to-end tests and the
 * benchmarks, so these tests check what the others rely on: the same seed
 * gives the same bytes (and another seed other bytes); every valid line
 * decodes with the real decoder (cw_event_decode, keyed by its account id)
 * and every malformed one is rejected; counts in the truth summary match
 * the output; events are sorted by time; profiles get their quota and
 * behave as documented (silent stops, decline drops, stalled never uses
 * the key features, cancel sends one notice); all three ARR tiers occur;
 * --zipf skews activity; live mode stamps events with the wall clock; bad
 * arguments are refused.
 */
#define _GNU_SOURCE /* nftw */
#include <criterion/criterion.h>

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "cw_common.h"
#include "cw_event.h"
#include "cw_gen.h"

#define END "2026-06-01T00:00:00Z"
#define END_MS INT64_C(1780272000000)
#define DAY_MS INT64_C(86400000)
#define MIN_TS_MS INT64_C(946684800000) /* 2000-01-01 */

static const char *const profile_names[] = {"steady", "decline", "silent", "stalled", "cancel"};
enum { N_PROFILES = 5, N_KINDS = 8 };
static const char *const kind_names[N_KINDS] = {
    "not_json",  "missing_account_id", "missing_ts",     "wrong_type",
    "oversized", "absurd_ts_1970",     "absurd_ts_2999", "long_event_id"};
static const char *const type_names[] = {"login",          "usage", "account",
                                         "support_ticket", "nps",   "cancellation_notice"};

/* ---- running the generator ---- */

static char tmpdir[64];

static void setup(void) {
    cw_strlcpy(tmpdir, "/tmp/cw-gen-XXXXXX", sizeof(tmpdir));
    cr_assert_not_null(mkdtemp(tmpdir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void) {
    cr_expect_eq(nftw(tmpdir, rm_one, 8, FTW_DEPTH | FTW_PHYS), 0);
}

static void path_of(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* cw_gen_main("gen" args... NULL) */
static int gen(const char *first, ...) {
    char *argv[64];
    int argc = 0;
    va_list ap;
    argv[argc++] = "gen";
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *)) {
        argv[argc++] = (char *)a; /* cw_gen_main does not modify its arguments */
    }
    va_end(ap);
    argv[argc] = NULL;
    return cw_gen_main(argc, argv);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len) {
        *len = (size_t)n;
    }
    return buf;
}

/* ---- reading truth and output back ---- */

typedef struct acct_stat {
    int profile;       /* index into profile_names */
    int64_t change_ms; /* -1 when none */
    int64_t first_ms;
    size_t before;   /* valid events before change_ms (or the whole window) */
    size_t after;    /* valid events at/after change_ms */
    int used_key[2]; /* reports, integrations */
    int n_cancel;
    int64_t cancel_ts;
    int n_account;
    int64_t account_ts;
    double arr;
} acct_stat_t;

typedef struct analysis {
    size_t lines, ok, bad;
    size_t by_type[6];
    int sorted;
    int ids_increasing; /* event ids "e-<seed>-<n>" with n strictly increasing */
    int64_t min_ts, max_ts;
    size_t n_acct;
    acct_stat_t *a;
    /* from the truth summary */
    size_t s_events, s_mal_total, s_lines, s_by_type[6], s_profiles[N_PROFILES], s_kinds[N_KINDS];
    int64_t s_start_ms, s_end_ms;
} analysis_t;

static long long json_int(yajl_val root, const char *const *path) {
    yajl_val v = yajl_tree_get(root, (const char **)path, yajl_t_number);
    cr_assert_not_null(v, "missing number %s", path[0]);
    cr_assert(YAJL_IS_INTEGER(v));
    return YAJL_GET_INTEGER(v);
}

static void read_truth(const char *path, analysis_t *an) {
    char *text = slurp(path, NULL);
    char err[256];
    size_t cap = 0;
    int have_summary = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        yajl_val root = yajl_tree_parse(l, err, sizeof(err));
        cr_assert_not_null(root, "truth line does not parse: %s", err);
        const char *sp[] = {"summary", NULL};
        yajl_val summary = yajl_tree_get(root, sp, yajl_t_object);
        if (summary) {
            const char *p3[4] = {"summary", NULL, NULL, NULL};
            have_summary = 1;
            p3[1] = "events";
            an->s_events = (size_t)json_int(root, p3);
            p3[1] = "lines";
            an->s_lines = (size_t)json_int(root, p3);
            p3[1] = "start_ms";
            an->s_start_ms = json_int(root, p3);
            p3[1] = "end_ms";
            an->s_end_ms = json_int(root, p3);
            p3[1] = "malformed";
            p3[2] = "total";
            an->s_mal_total = (size_t)json_int(root, p3);
            for (int k = 0; k < N_KINDS; k++) {
                p3[2] = kind_names[k];
                an->s_kinds[k] = (size_t)json_int(root, p3);
            }
            p3[1] = "by_type";
            for (int k = 0; k < 6; k++) {
                p3[2] = type_names[k];
                an->s_by_type[k] = (size_t)json_int(root, p3);
            }
            p3[1] = "profiles";
            for (int k = 0; k < N_PROFILES; k++) {
                p3[2] = profile_names[k];
                an->s_profiles[k] = (size_t)json_int(root, p3);
            }
        } else {
            const char *ip[] = {"account_id", NULL}, *pp[] = {"profile", NULL},
                       *cp[] = {"change_ms", NULL}, *fp[] = {"first_ms", NULL};
            yajl_val id = yajl_tree_get(root, ip, yajl_t_string);
            yajl_val prof = yajl_tree_get(root, pp, yajl_t_string);
            yajl_val change = yajl_tree_get(root, cp, yajl_t_any);
            cr_assert(id && prof && change);
            int idx = atoi(id->u.string + 5) - 1;
            cr_assert_eq((size_t)idx, an->n_acct, "truth lines in account order");
            if (an->n_acct == cap) {
                cap = cap ? cap * 2 : 256;
                an->a = realloc(an->a, cap * sizeof(*an->a));
                cr_assert_not_null(an->a);
            }
            acct_stat_t *a = &an->a[an->n_acct++];
            memset(a, 0, sizeof(*a));
            a->profile = -1;
            for (int k = 0; k < N_PROFILES; k++) {
                if (strcmp(prof->u.string, profile_names[k]) == 0) {
                    a->profile = k;
                }
            }
            cr_assert_geq(a->profile, 0);
            a->change_ms = YAJL_IS_NULL(change) ? -1 : YAJL_GET_INTEGER(change);
            a->first_ms = json_int(root, fp);
        }
        yajl_tree_free(root);
    }
    cr_assert(have_summary, "truth has a summary line");
    free(text);
}

/* Decode every output line like the pipeline would (key = account_id). */
static void read_output(const char *path, analysis_t *an) {
    char *text = slurp(path, NULL);
    cw_event_limits_t lim = {an->s_end_ms + DAY_MS, DAY_MS, MIN_TS_MS, 65536};
    int64_t prev = INT64_MIN;
    char err[256];
    unsigned long long prev_id = 0;
    an->sorted = 1;
    an->ids_increasing = 1;
    an->min_ts = INT64_MAX;
    an->max_ts = INT64_MIN;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(l);
        char key[256] = "";
        const char *keyp = NULL;
        yajl_val root = yajl_tree_parse(l, err, sizeof(err));
        an->lines++;
        if (root) {
            const char *ip[] = {"account_id", NULL};
            yajl_val id = yajl_tree_get(root, ip, yajl_t_string);
            if (id) {
                cw_strlcpy(key, id->u.string, sizeof(key));
                keyp = key;
            }
            yajl_tree_free(root);
        }
        cw_event_t ev;
        char reason[CW_REASON_MAX], detail[CW_DETAIL_MAX];
        if (cw_event_decode(l, len, keyp, keyp ? strlen(keyp) : 0, &lim, &ev, reason, detail) !=
            CW_OK) {
            an->bad++;
            continue;
        }
        an->ok++;
        cr_assert(ev.type < CW_EV__COUNT, "generated type is known: %s", l);
        an->by_type[ev.type]++;
        if (ev.ts_ms < prev) {
            an->sorted = 0;
        }
        prev = ev.ts_ms;
        unsigned long long seed_part = 0, id = 0;
        if (sscanf(ev.event_id, "e-%llu-%llu", &seed_part, &id) != 2 || id <= prev_id) {
            an->ids_increasing = 0;
        }
        prev_id = id;
        an->min_ts = ev.ts_ms < an->min_ts ? ev.ts_ms : an->min_ts;
        an->max_ts = ev.ts_ms > an->max_ts ? ev.ts_ms : an->max_ts;
        int idx = atoi(ev.account_id + 5) - 1;
        cr_assert(idx >= 0 && (size_t)idx < an->n_acct, "account %s in truth", ev.account_id);
        acct_stat_t *a = &an->a[idx];
        if (a->change_ms >= 0 && ev.ts_ms >= a->change_ms) {
            a->after++;
        } else {
            a->before++;
        }
        if (ev.type == CW_EV_USAGE && strcmp(ev.feature, "reports") == 0) {
            a->used_key[0] = 1;
        }
        if (ev.type == CW_EV_USAGE && strcmp(ev.feature, "integrations") == 0) {
            a->used_key[1] = 1;
        }
        if (ev.type == CW_EV_CANCELLATION) {
            a->n_cancel++;
            a->cancel_ts = ev.ts_ms;
        }
        if (ev.type == CW_EV_ACCOUNT) {
            a->n_account++;
            a->account_ts = ev.ts_ms;
            a->arr = ev.arr;
        }
    }
    free(text);
}

static void analyse(analysis_t *an, const char *out, const char *truth) {
    memset(an, 0, sizeof(*an));
    read_truth(truth, an);
    read_output(out, an);
}

/* ---- tests ---- */

TestSuite(gen, .init = setup, .fini = teardown);

Test(gen, same_seed_same_bytes_other_seed_other_bytes) {
    char o1[128], o2[128], o3[128], t1[128], t2[128], t3[128];
    path_of(o1, sizeof(o1), "o1");
    path_of(o2, sizeof(o2), "o2");
    path_of(o3, sizeof(o3), "o3");
    path_of(t1, sizeof(t1), "t1");
    path_of(t2, sizeof(t2), "t2");
    path_of(t3, sizeof(t3), "t3");
    cr_assert_eq(gen("--seed", "42", "--accounts", "200", "--end", END, "--out", o1, "--truth", t1,
                     "--malformed-share", "0.02", NULL),
                 0);
    cr_assert_eq(gen("--truth", t2, "--out", o2, "--malformed-share", "0.02", "--end", END,
                     "--accounts", "200", "--seed", "42", NULL),
                 0);
    cr_assert_eq(gen("--seed", "43", "--accounts", "200", "--end", END, "--out", o3, "--truth", t3,
                     "--malformed-share", "0.02", NULL),
                 0);
    size_t l1, l2, l3;
    char *a = slurp(o1, &l1), *b = slurp(o2, &l2), *c = slurp(o3, &l3);
    cr_assert_gt(l1, 100000u, "a month of 200 accounts is sizeable");
    cr_expect(l1 == l2 && memcmp(a, b, l1) == 0, "same seed, same bytes");
    cr_expect(l1 != l3 || memcmp(a, c, l1) != 0, "other seed, other bytes");
    free(a);
    free(b);
    free(c);
    a = slurp(t1, &l1);
    b = slurp(t2, &l2);
    cr_expect(l1 == l2 && memcmp(a, b, l1) == 0, "same seed, same truth");
    free(a);
    free(b);
}

Test(gen, every_valid_line_decodes_malformed_ones_do_not_and_summary_counts) {
    char out[128], truth[128];
    analysis_t an;
    path_of(out, sizeof(out), "out");
    path_of(truth, sizeof(truth), "truth");
    cr_assert_eq(gen("--seed", "7", "--accounts", "300", "--days", "30", "--end", END, "--out", out,
                     "--truth", truth, "--malformed-share", "0.03", NULL),
                 0);
    analyse(&an, out, truth);
    cr_expect_eq(an.lines, an.s_lines);
    cr_expect_eq(an.ok, an.s_events, "valid lines decode: %zu of %zu", an.ok, an.s_events);
    cr_expect_eq(an.bad, an.s_mal_total, "malformed lines rejected: %zu vs %zu", an.bad,
                 an.s_mal_total);
    /* Share as asked (3% of lines, binomial noise). */
    double share = (double)an.bad / (double)an.lines;
    cr_expect(share > 0.024 && share < 0.036, "malformed share %.4f", share);
    /* Per-type counts as summarised, decoded type by type. */
    for (int t = 0; t < 6; t++) {
        cr_expect_eq(an.by_type[t], an.s_by_type[t], "type %s", type_names[t]);
    }
    cr_expect_eq(an.by_type[CW_EV_ACCOUNT], 300u);
    cr_expect_gt(an.by_type[CW_EV_SUPPORT_TICKET], 0u);
    cr_expect_gt(an.by_type[CW_EV_NPS], 0u);
    /* Kinds spread evenly: they rotate. */
    size_t kmin = SIZE_MAX, kmax = 0, ksum = 0;
    for (int k = 0; k < N_KINDS; k++) {
        kmin = an.s_kinds[k] < kmin ? an.s_kinds[k] : kmin;
        kmax = an.s_kinds[k] > kmax ? an.s_kinds[k] : kmax;
        ksum += an.s_kinds[k];
    }
    cr_expect_eq(ksum, an.s_mal_total);
    cr_expect_leq(kmax - kmin, 1u, "kinds spread evenly (%zu..%zu)", kmin, kmax);
    cr_expect_gt(kmin, 0u);
    /* Sorted, inside the window. */
    cr_expect(an.sorted, "events sorted by ts");
    cr_expect(an.ids_increasing, "event ids e-<seed>-<n> unique and increasing");
    cr_expect_geq(an.min_ts, an.s_start_ms);
    cr_expect_lt(an.max_ts, an.s_end_ms);
    cr_expect_eq(an.s_end_ms, END_MS);
    cr_expect_eq(an.s_start_ms, END_MS - 30 * DAY_MS);
    free(an.a);
}

Test(gen, malformed_kinds_are_rejected_for_their_reason) {
    /* Only malformed lines matter here: a high share, few accounts. */
    char out[128], truth[128];
    path_of(out, sizeof(out), "out");
    path_of(truth, sizeof(truth), "truth");
    cr_assert_eq(gen("--seed", "9", "--accounts", "20", "--days", "5", "--end", END, "--out", out,
                     "--truth", truth, "--malformed-share", "0.5", NULL),
                 0);
    static const char *const expected_prefix[N_KINDS] = {
        "not_json",  "missing_field",    "missing_field",    "wrong_type",
        "oversized", "absurd_timestamp", "absurd_timestamp", ""};
    size_t seen_prefix[N_KINDS] = {0};
    cw_event_limits_t lim = {END_MS + DAY_MS, DAY_MS, MIN_TS_MS, 65536};
    char *text = slurp(out, NULL);
    size_t bad = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cw_event_t ev;
        char reason[CW_REASON_MAX], detail[CW_DETAIL_MAX];
        if (cw_event_decode(l, strlen(l), NULL, 0, &lim, &ev, reason, detail) == CW_OK) {
            continue;
        }
        bad++;
        for (int k = 0; k < N_KINDS - 1; k++) {
            if (strncmp(reason, expected_prefix[k], strlen(expected_prefix[k])) == 0) {
                seen_prefix[k]++;
            }
        }
        cr_expect(strlen(l) < 65536 || strcmp(reason, "oversized") == 0,
                  "a long line is rejected as oversized, not '%s'", reason);
    }
    free(text);
    cr_expect_gt(bad, 50u);
    for (int k = 0; k < N_KINDS - 1; k++) {
        cr_expect_gt(seen_prefix[k], 0u, "some lines rejected as %s", expected_prefix[k]);
    }
}

Test(gen, profile_quotas_follow_profiles_option) {
    static const struct {
        const char *spec;
        const char *accounts;
        size_t want[N_PROFILES];
    } cases[] = {
        {NULL, "1000", {700, 100, 80, 70, 50}},
        {"steady=0.5,silent=0.5", "101", {51, 0, 50, 0, 0}},
        {"decline=1", "40", {0, 40, 0, 0, 0}},
        {"steady=2,stalled=1,cancel=1", "10", {5, 0, 0, 3, 2}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char out[128], truth[128];
        analysis_t an;
        path_of(out, sizeof(out), "out");
        path_of(truth, sizeof(truth), "truth");
        if (cases[c].spec) {
            cr_assert_eq(gen("--accounts", cases[c].accounts, "--days", "3", "--end", END, "--out",
                             out, "--truth", truth, "--profiles", cases[c].spec, NULL),
                         0);
        } else {
            cr_assert_eq(gen("--accounts", cases[c].accounts, "--days", "3", "--end", END, "--out",
                             out, "--truth", truth, NULL),
                         0);
        }
        memset(&an, 0, sizeof(an));
        read_truth(truth, &an);
        size_t counted[N_PROFILES] = {0};
        for (size_t i = 0; i < an.n_acct; i++) {
            counted[an.a[i].profile]++;
        }
        size_t sum = 0;
        for (int k = 0; k < N_PROFILES; k++) {
            sum += cases[c].want[k];
        }
        cr_expect_eq(an.n_acct, sum, "case %zu", c);
        for (int k = 0; k < N_PROFILES; k++) {
            /* Largest remainder may move one account between ties. */
            long d = (long)counted[k] - (long)cases[c].want[k];
            cr_expect(d >= -1 && d <= 1, "case %zu %s: %zu, want ~%zu", c, profile_names[k],
                      counted[k], cases[c].want[k]);
            cr_expect_eq(counted[k], an.s_profiles[k], "summary agrees");
        }
        free(an.a);
    }
}

Test(gen, profiles_behave_as_documented) {
    char out[128], truth[128];
    analysis_t an;
    path_of(out, sizeof(out), "out");
    path_of(truth, sizeof(truth), "truth");
    cr_assert_eq(gen("--seed", "11", "--accounts", "400", "--days", "42", "--end", END, "--out",
                     out, "--truth", truth, "--malformed-share", "0", NULL),
                 0);
    analyse(&an, out, truth);
    size_t n_prof[N_PROFILES] = {0};
    double decline_ratio = 0;
    int tiers[3] = {0};
    int stalled_late = 0;
    for (size_t i = 0; i < an.n_acct; i++) {
        const acct_stat_t *a = &an.a[i];
        n_prof[a->profile]++;
        cr_expect_eq(a->n_account, 1, "acct %zu: one account event", i + 1);
        cr_expect(a->account_ts >= a->first_ms && a->account_ts < a->first_ms + DAY_MS,
                  "acct %zu: account event on its first day", i + 1);
        tiers[a->arr >= 5e6 ? 0 : a->arr >= 5e5 ? 1 : 2]++;
        switch (a->profile) {
        case 0: /* steady */
            cr_expect(a->used_key[0] && a->used_key[1], "steady acct %zu uses key features", i + 1);
            cr_expect_eq(a->first_ms, an.s_start_ms);
            break;
        case 1: { /* decline: per-day rate after X at most half of before */
            int64_t change_day = (a->change_ms - an.s_start_ms) / DAY_MS;
            double before = (double)a->before / (double)change_day;
            double after = (double)a->after / (double)(42 - change_day);
            cr_expect(change_day >= 23 && change_day <= 32, "decline day %lld",
                      (long long)change_day);
            decline_ratio += before > 0 ? after / before : 0;
            break;
        }
        case 2: /* silent */
            cr_expect_eq(a->after, 0u, "silent acct %zu has %zu events after X", i + 1, a->after);
            cr_expect_gt(a->before, 0u);
            break;
        case 3: /* stalled */
            cr_expect(!a->used_key[0] && !a->used_key[1], "stalled acct %zu never uses keys",
                      i + 1);
            cr_expect_leq(a->first_ms, an.s_start_ms + (42 - 35) * DAY_MS);
            stalled_late += a->first_ms > an.s_start_ms;
            break;
        case 4: /* cancel */
            cr_expect_eq(a->n_cancel, 1, "cancel acct %zu: one notice", i + 1);
            cr_expect_eq(a->cancel_ts, a->change_ms);
            cr_expect_geq(a->after, 2u, "activity goes on after the notice");
            break;
        }
        if (a->profile != 4) {
            cr_expect_eq(a->n_cancel, 0);
        }
    }
    cr_assert_gt(n_prof[1], 0u);
    decline_ratio /= (double)n_prof[1];
    cr_expect(decline_ratio > 0.1 && decline_ratio < 0.45, "decline keeps ~20-30%%: %.3f",
              decline_ratio);
    cr_expect_gt(stalled_late, 0, "with 42 days some stalled accounts start late");
    for (int t = 0; t < 3; t++) {
        cr_expect_gt(tiers[t], 10, "tier %d occurs", t);
    }
    free(an.a);
}

/* Share of valid events held by the 10% most active accounts. */
static double top_decile_share(const char *zipf) {
    char out[128], truth[128];
    analysis_t an;
    path_of(out, sizeof(out), "zout");
    path_of(truth, sizeof(truth), "ztruth");
    cr_assert_eq(gen("--seed", "5", "--accounts", "200", "--days", "7", "--end", END, "--out", out,
                     "--truth", truth, "--malformed-share", "0", "--zipf", zipf, "--profiles",
                     "steady=1", NULL),
                 0);
    analyse(&an, out, truth);
    size_t *counts = calloc(an.n_acct, sizeof(size_t));
    size_t total = 0, top = 0;
    for (size_t i = 0; i < an.n_acct; i++) {
        counts[i] = an.a[i].before + an.a[i].after;
        total += counts[i];
    }
    for (size_t k = 0; k < an.n_acct / 10; k++) { /* selection of the top 20 */
        size_t best = 0;
        for (size_t i = 1; i < an.n_acct; i++) {
            best = counts[i] > counts[best] ? i : best;
        }
        top += counts[best];
        counts[best] = 0;
    }
    free(counts);
    free(an.a);
    return (double)top / (double)total;
}

Test(gen, zipf_skews_activity) {
    double flat = top_decile_share("0");
    double skewed = top_decile_share("1.5");
    cr_expect_lt(flat, 0.5, "without zipf the top 10%% hold %.2f", flat);
    cr_expect_gt(skewed, 0.7, "with zipf 1.5 the top 10%% hold %.2f", skewed);
}

Test(gen, default_end_is_todays_utc_midnight) {
    char out[128], truth[128];
    analysis_t an;
    path_of(out, sizeof(out), "out");
    path_of(truth, sizeof(truth), "truth");
    int64_t before = cw_time_now_ms();
    cr_assert_eq(gen("--accounts", "3", "--days", "1", "--out", out, "--truth", truth, NULL), 0);
    int64_t after = cw_time_now_ms();
    memset(&an, 0, sizeof(an));
    read_truth(truth, &an);
    cr_expect_eq(an.s_end_ms % DAY_MS, 0);
    cr_expect(an.s_end_ms >= cw_time_day(before) * DAY_MS &&
              an.s_end_ms <= cw_time_day(after) * DAY_MS);
    free(an.a);
}

Test(gen, live_mode_stamps_wall_clock, .timeout = 30) {
    char out[128], truth[128];
    analysis_t an;
    path_of(out, sizeof(out), "out");
    path_of(truth, sizeof(truth), "truth");
    int64_t t0 = cw_time_now_ms();
    cr_assert_eq(gen("--live", "--days", "0", "--accounts", "20", "--rate", "200", "--duration",
                     "0.5", "--malformed-share", "0", "--out", out, "--truth", truth, NULL),
                 0);
    int64_t t1 = cw_time_now_ms();
    memset(&an, 0, sizeof(an));
    read_truth(truth, &an);
    read_output(out, &an);
    cr_expect_eq(an.bad, 0u);
    cr_expect_eq(an.by_type[CW_EV_ACCOUNT], 20u, "every account introduced first");
    cr_expect(an.ok >= 20 + 60 && an.ok <= 20 + 120, "about 100 live events: %zu", an.ok - 20);
    cr_expect(an.min_ts >= t0 && an.max_ts <= t1, "stamped while running");
    cr_expect(an.sorted);
    free(an.a);
}

Test(gen, bad_arguments_are_refused) {
    static const char *const cases[][3] = {
        {"--accounts", "0", NULL},
        {"--accounts", "many", NULL},
        {"--days", "-1", NULL},
        {"--days", "0", NULL}, /* only with --live */
        {"--end", "yesterday", NULL},
        {"--events-per-day", "0", NULL},
        {"--malformed-share", "0.9", NULL},
        {"--zipf", "-1", NULL},
        {"--profiles", "happy=1", NULL},
        {"--profiles", "steady=0", NULL},
        {"--profiles", "steady", NULL},
        {"--seed", "-3", NULL},
        {"--brokers", "127.0.0.1:9", NULL}, /* needs --topic */
        {"--bogus", NULL, NULL},
        {"--accounts", NULL, NULL},
    };
    char out[128];
    path_of(out, sizeof(out), "never");
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int rc = cases[c][1] ? gen("--out", out, cases[c][0], cases[c][1], NULL)
                             : gen("--out", out, cases[c][0], NULL);
        cr_expect_eq(rc, 2, "case %zu (%s %s): rc %d", c, cases[c][0],
                     cases[c][1] ? cases[c][1] : "", rc);
        cr_expect_neq(access(out, F_OK), 0, "no output written on a usage error");
    }
}
