/*
 * cw_harness_ref.c — the test reference model and the reliability-test
 * fixtures declared in cw_ref.h.
 *
 * The reference keeps every valid event of the generated file, per
 * account, as a small record whose user and feature are interned to
 * integers; a window query is a plain scan of the account's events with a
 * generation-stamped "seen" array for distinct users and features. That is
 * deliberately the most obvious way to count — nothing in it resembles the
 * product's day buckets, day masks or Lua scripts — so agreement between
 * the two means something.
 *
 * The fixtures exist because the shared harness (cw_harness.h) restarts
 * Redis empty and hides the broker's pid; a Redis restart that keeps its
 * data and a frozen broker are the honest outage scenarios of issue 4.
 */
#include "cw_ref.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <yajl/yajl_tree.h>

#include "cw_common.h"
#include "cw_conf.h"
#include "cw_event.h"
#include "cw_harness.h"

const char *const cw_ref_window_names[CW_REF_N_WINDOWS] = {
    "logins_7d", "logins_30d", "active_users_7d", "active_users_30d",
    "usage_7d",  "usage_30d",  "features_30d"};

/* ------------------------------------------------------------------ */
/* Interning and account index (open addressing, FNV-1a)               */
/* ------------------------------------------------------------------ */

typedef struct strtab {
    char **strs;    /* id -> string (owned) */
    size_t n, cap;  /* ids in use, array capacity */
    int32_t *slots; /* hash slot -> id + 1 (0 = empty) */
    size_t nslots;  /* power of two */
} strtab_t;

static void strtab_grow(strtab_t *t) {
    size_t ns = t->nslots ? t->nslots * 2 : 1024;
    int32_t *slots = calloc(ns, sizeof(*slots));
    cr_assert_not_null(slots);
    for (size_t id = 0; id < t->n; id++) {
        uint64_t h = cw_fnv1a(CW_FNV_INIT, t->strs[id], strlen(t->strs[id]));
        size_t s = (size_t)h & (ns - 1);
        while (slots[s] != 0) {
            s = (s + 1) & (ns - 1);
        }
        slots[s] = (int32_t)id + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
}

/* Id of s; added when absent and add is set, else -1. */
static int32_t strtab_id(strtab_t *t, const char *s, int add) {
    if (t->nslots == 0 || (t->n + 1) * 2 > t->nslots) {
        strtab_grow(t);
    }
    uint64_t h = cw_fnv1a(CW_FNV_INIT, s, strlen(s));
    size_t slot = (size_t)h & (t->nslots - 1);
    while (t->slots[slot] != 0) {
        int32_t id = t->slots[slot] - 1;
        if (strcmp(t->strs[id], s) == 0) {
            return id;
        }
        slot = (slot + 1) & (t->nslots - 1);
    }
    if (!add) {
        return -1;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->strs = realloc(t->strs, t->cap * sizeof(*t->strs));
        cr_assert_not_null(t->strs);
    }
    t->strs[t->n] = strdup(s);
    cr_assert_not_null(t->strs[t->n]);
    t->slots[slot] = (int32_t)t->n + 1;
    return (int32_t)t->n++;
}

static void strtab_free(strtab_t *t) {
    for (size_t i = 0; i < t->n; i++) {
        free(t->strs[i]);
    }
    free(t->strs);
    free(t->slots);
}

/* ------------------------------------------------------------------ */
/* Reference                                                           */
/* ------------------------------------------------------------------ */

typedef struct ref_event {
    int64_t day;     /* UTC day of the event time */
    int64_t count;   /* usage quantity */
    int32_t user;    /* interned user_id, -1 none */
    int32_t feature; /* interned feature, -1 none */
    int type;        /* cw_ev_type_t */
} ref_event_t;

typedef struct ref_account {
    char profile[32];
    ref_event_t *ev; /* owned */
    size_t n, cap;
    int64_t last_ms;
} ref_account_t;

struct cw_ref {
    strtab_t ids;   /* account ids; id = index into accts */
    strtab_t names; /* users and features */
    ref_account_t *accts;
    size_t cap;
    size_t valid, malformed;
    int64_t max_ts;
    uint32_t *stamp; /* per interned name: generation last seen in */
    size_t stamp_cap;
    uint32_t gen;
};

static size_t ref_account(cw_ref_t *ref, const char *id) {
    int32_t k = strtab_id(&ref->ids, id, 1);
    if ((size_t)k >= ref->cap) {
        size_t nc = ref->cap ? ref->cap * 2 : 512;
        while (nc <= (size_t)k) {
            nc *= 2;
        }
        ref->accts = realloc(ref->accts, nc * sizeof(*ref->accts));
        cr_assert_not_null(ref->accts);
        memset(ref->accts + ref->cap, 0, (nc - ref->cap) * sizeof(*ref->accts));
        for (size_t i = ref->cap; i < nc; i++) {
            ref->accts[i].last_ms = -1;
        }
        ref->cap = nc;
    }
    return (size_t)k;
}

cw_ref_t *cw_ref_load(const char *events_path) {
    cw_ref_t *ref = calloc(1, sizeof(*ref));
    cr_assert_not_null(ref);
    ref->max_ts = -1;
    FILE *f = fopen(events_path, "r");
    cr_assert_not_null(f, "cannot open %s: %s", events_path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    /* the shipped defaults: 1 day of future, 2000-01-01, 64 KiB */
    cw_event_limits_t lim = {cw_time_now_ms(), CW_MS_PER_DAY, INT64_C(946684800000), 65536};
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            len--;
        }
        if (len == 0) {
            continue; /* cw_h_produce_file skips empty lines too */
        }
        cw_event_t ev;
        char reason[CW_REASON_MAX], detail[CW_DETAIL_MAX];
        if (cw_event_decode(line, (size_t)len, NULL, 0, &lim, &ev, reason, detail) != CW_OK) {
            ref->malformed++;
            continue;
        }
        ref->valid++;
        if (ev.type == CW_EV_UNKNOWN) {
            continue;
        }
        size_t k = ref_account(ref, ev.account_id); /* may grow ref->accts: index first */
        ref_account_t *a = &ref->accts[k];
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 256;
            a->ev = realloc(a->ev, a->cap * sizeof(*a->ev));
            cr_assert_not_null(a->ev);
        }
        ref_event_t *r = &a->ev[a->n++];
        r->day = cw_time_day(ev.ts_ms);
        r->type = (int)ev.type;
        r->count = ev.count;
        r->user = ev.user_id[0] ? strtab_id(&ref->names, ev.user_id, 1) : -1;
        r->feature = ev.feature[0] ? strtab_id(&ref->names, ev.feature, 1) : -1;
        if (ev.ts_ms > a->last_ms) {
            a->last_ms = ev.ts_ms;
        }
        if (ev.ts_ms > ref->max_ts) {
            ref->max_ts = ev.ts_ms;
        }
    }
    free(line);
    fclose(f);
    return ref;
}

void cw_ref_free(cw_ref_t *ref) {
    if (ref == NULL) {
        return;
    }
    for (size_t i = 0; i < ref->cap; i++) {
        free(ref->accts[i].ev);
    }
    free(ref->accts);
    strtab_free(&ref->ids);
    strtab_free(&ref->names);
    free(ref->stamp);
    free(ref);
}

static const char *json_str(yajl_val obj, const char *key) {
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v != NULL ? YAJL_GET_STRING(v) : NULL;
}

void cw_ref_load_truth(cw_ref_t *ref, const char *truth_path) {
    FILE *f = fopen(truth_path, "r");
    cr_assert_not_null(f, "cannot open %s: %s", truth_path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        char err[256];
        yajl_val v = yajl_tree_parse(line, err, sizeof(err));
        cr_assert_not_null(v, "truth line is not JSON: %s", err);
        const char *id = json_str(v, "account_id");
        const char *prof = json_str(v, "profile");
        if (id != NULL && prof != NULL) {
            size_t k = ref_account(ref, id); /* may grow ref->accts: index first */
            cw_strlcpy(ref->accts[k].profile, prof, sizeof(ref->accts[0].profile));
        }
        yajl_tree_free(v);
    }
    free(line);
    fclose(f);
}

size_t cw_ref_valid(const cw_ref_t *ref) {
    return ref->valid;
}

size_t cw_ref_malformed(const cw_ref_t *ref) {
    return ref->malformed;
}

size_t cw_ref_accounts(const cw_ref_t *ref) {
    return ref->ids.n;
}

const char *cw_ref_account_id(const cw_ref_t *ref, size_t i) {
    return ref->ids.strs[i];
}

const char *cw_ref_profile(const cw_ref_t *ref, size_t i) {
    return ref->accts[i].profile;
}

size_t cw_ref_account_events(const cw_ref_t *ref, size_t i) {
    return ref->accts[i].n;
}

int64_t cw_ref_account_last_ms(const cw_ref_t *ref, size_t i) {
    return ref->accts[i].last_ms;
}

int64_t cw_ref_max_ts(const cw_ref_t *ref) {
    return ref->max_ts;
}

/* Distinct sets counted at once by cw_ref_windows; each has its own row of
 * stamps (one row shared by two sets would let them overwrite each other's
 * marks and count a member twice). */
#define REF_N_SETS 3

/* First time name id is seen in set `set` during generation g (and marks
 * it). Stamps are indexed by set and interned id and keyed by a generation
 * counter, so a distinct count needs no clearing. */
static int first_seen(cw_ref_t *ref, int set, int32_t id, uint32_t g) {
    uint32_t *stamp = &ref->stamp[(size_t)set * ref->stamp_cap + (size_t)id];
    if (*stamp == g) {
        return 0;
    }
    *stamp = g;
    return 1;
}

void cw_ref_windows(const cw_ref_t *cref, size_t i, int64_t day, long out[CW_REF_N_WINDOWS]) {
    cw_ref_t *ref = (cw_ref_t *)cref; /* the stamp scratch is mutable state */
    const ref_account_t *a = &ref->accts[i];
    if (ref->stamp_cap < ref->names.n) {
        free(ref->stamp);
        ref->stamp_cap = ref->names.n + 1024;
        ref->stamp = calloc(REF_N_SETS * ref->stamp_cap, sizeof(*ref->stamp));
        cr_assert_not_null(ref->stamp);
        ref->gen = 0;
    }
    /* three independent distinct sets: users 7d, users 30d, features 30d */
    uint32_t g = ++ref->gen;
    memset(out, 0, CW_REF_N_WINDOWS * sizeof(long));
    for (size_t k = 0; k < a->n; k++) {
        const ref_event_t *e = &a->ev[k];
        int in7 = e->day <= day && e->day > day - 7;
        int in30 = e->day <= day && e->day > day - 30;
        if (!in30) {
            continue;
        }
        if (e->type == CW_EV_LOGIN) {
            out[0] += in7;
            out[1] += 1;
        }
        if ((e->type == CW_EV_LOGIN || e->type == CW_EV_USAGE) && e->user >= 0) {
            if (in7 && first_seen(ref, 0, e->user, g)) {
                out[2]++;
            }
            if (first_seen(ref, 1, e->user, g)) {
                out[3]++;
            }
        }
        if (e->type == CW_EV_USAGE) {
            out[4] += in7 ? e->count : 0;
            out[5] += e->count;
            if (e->feature >= 0 && first_seen(ref, 2, e->feature, g)) {
                out[6]++;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* explain                                                             */
/* ------------------------------------------------------------------ */

static double json_num2(yajl_val obj, const char *k1, const char *k2, int *ok) {
    const char *path[] = {k1, k2, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_number);
    if (v == NULL) {
        *ok = 0;
        return 0;
    }
    return YAJL_GET_DOUBLE(v);
}

void cw_ref_explain(const char *config, const char *account_id, cw_ref_explain_t *out) {
    const char *ex[] = {CW_H_BINARY, "explain", account_id, "--config", config, "--json", NULL};
    char *text = NULL;
    size_t len = 0;
    memset(out, 0, sizeof(*out));
    out->asof_ms = -1;
    out->rc = cw_h_run(ex, 30000, &text, &len);
    if (out->rc != 0) {
        free(text);
        return;
    }
    char err[256];
    yajl_val v = yajl_tree_parse(text, err, sizeof(err));
    cr_assert_not_null(v, "explain %s: output is not JSON (%s): %.300s", account_id, err, text);
    int ok = 1;
    out->asof_ms = (int64_t)json_num2(v, "as_of_ms", NULL, &ok);
    cr_assert(ok, "explain %s: no numeric as_of_ms", account_id);
    for (int w = 0; w < CW_REF_N_WINDOWS; w++) {
        out->windows[w] = (long)json_num2(v, "windows", cw_ref_window_names[w], &ok);
        cr_assert(ok, "explain %s: no numeric windows.%s", account_id, cw_ref_window_names[w]);
    }
    yajl_tree_free(v);
    free(text);
}

size_t cw_ref_check_all(const cw_ref_t *ref, const char *config, size_t *checked) {
    return cw_ref_check_all_until(ref, config, ref->max_ts, checked);
}

size_t cw_ref_check_all_until(const cw_ref_t *ref, const char *config, int64_t asof_max_ms,
                              size_t *checked) {
    size_t bad = 0;
    *checked = 0;
    for (size_t i = 0; i < cw_ref_accounts(ref); i++) {
        const char *id = cw_ref_account_id(ref, i);
        cw_ref_explain_t ex;
        cw_ref_explain(config, id, &ex);
        if (ref->accts[i].n == 0) {
            cr_expect_eq(ex.rc, 1, "%s has no valid events but explain exited %d", id, ex.rc);
            bad += ex.rc != 1;
            continue;
        }
        cr_expect_eq(ex.rc, 0, "explain %s exited %d", id, ex.rc);
        if (ex.rc != 0) {
            bad++;
            continue;
        }
        /* the as-of (event time: the watermark; wall clock: now) must
         * cover the account's own events and cannot be later than the bound */
        int64_t bound = asof_max_ms >= 0 ? asof_max_ms : cw_time_now_ms();
        cr_expect(ex.asof_ms >= ref->accts[i].last_ms && ex.asof_ms <= bound,
                  "%s: as_of_ms %lld outside [last event %lld, %lld]", id, (long long)ex.asof_ms,
                  (long long)ref->accts[i].last_ms, (long long)bound);
        long want[CW_REF_N_WINDOWS];
        cw_ref_windows(ref, i, cw_time_day(ex.asof_ms), want);
        for (int w = 0; w < CW_REF_N_WINDOWS; w++) {
            (*checked)++;
            if (ex.windows[w] != want[w]) {
                if (bad < 20) {
                    cr_log_error("%s %s: explain %ld, true %ld (as of day %lld)", id,
                                 cw_ref_window_names[w], ex.windows[w], want[w],
                                 (long long)cw_time_day(ex.asof_ms));
                }
                bad++;
            }
        }
    }
    cr_expect_eq(bad, 0, "%zu window counts differ from the reference (of %zu)", bad, *checked);
    return bad;
}

/* ------------------------------------------------------------------ */
/* Alert sets                                                          */
/* ------------------------------------------------------------------ */

typedef struct alert_entry {
    char *value; /* first content seen (owned) */
    size_t len;
    char *other;     /* a different content, when one was seen (owned) */
    size_t n_values; /* distinct contents seen */
    size_t n_msgs;   /* messages with this id */
} alert_entry_t;

struct cw_ref_alerts {
    strtab_t ids; /* alert_id -> index */
    alert_entry_t *e;
    size_t cap;
    size_t messages;
    size_t invalid;
};

cw_ref_alerts_t *cw_ref_alerts_read(const char *brokers, const char *topic, size_t min_count) {
    cw_ref_alerts_t *a = calloc(1, sizeof(*a));
    cr_assert_not_null(a);
    size_t n = 0;
    cw_h_msg_t *msgs = cw_h_consume_all(brokers, topic, min_count, 3000, 120000, &n);
    a->messages = n;
    for (size_t k = 0; k < n; k++) {
        char err[256];
        yajl_val v = yajl_tree_parse(msgs[k].value, err, sizeof(err));
        const char *id = v != NULL ? json_str(v, "alert_id") : NULL;
        if (id == NULL || json_str(v, "account_id") == NULL || json_str(v, "reason") == NULL) {
            if (a->invalid++ < 5) {
                cr_log_error("%s: not an alert: %.200s", topic, msgs[k].value);
            }
            yajl_tree_free(v);
            continue;
        }
        int32_t idx = strtab_id(&a->ids, id, 1);
        yajl_tree_free(v);
        if ((size_t)idx >= a->cap) {
            size_t nc = a->cap ? a->cap * 2 : 256;
            while (nc <= (size_t)idx) {
                nc *= 2;
            }
            a->e = realloc(a->e, nc * sizeof(*a->e));
            cr_assert_not_null(a->e);
            memset(a->e + a->cap, 0, (nc - a->cap) * sizeof(*a->e));
            a->cap = nc;
        }
        alert_entry_t *e = &a->e[idx];
        e->n_msgs++;
        if (e->value == NULL) {
            e->value = msgs[k].value; /* ownership moves to the set */
            e->len = msgs[k].value_len;
            msgs[k].value = NULL;
            e->n_values = 1;
        } else if (e->len != msgs[k].value_len || memcmp(e->value, msgs[k].value, e->len) != 0) {
            if (e->other == NULL) {
                e->other = msgs[k].value;
                msgs[k].value = NULL;
                e->n_values = 2;
            } else if (strcmp(e->other, msgs[k].value) != 0) {
                e->n_values++;
            }
        }
    }
    cw_h_msgs_free(msgs, n);
    return a;
}

void cw_ref_alerts_free(cw_ref_alerts_t *a) {
    if (a == NULL) {
        return;
    }
    for (size_t i = 0; i < a->ids.n; i++) {
        free(a->e[i].value);
        free(a->e[i].other);
    }
    free(a->e);
    strtab_free(&a->ids);
    free(a);
}

size_t cw_ref_alerts_messages(const cw_ref_alerts_t *a) {
    return a->messages;
}

size_t cw_ref_alerts_ids(const cw_ref_alerts_t *a) {
    return a->ids.n;
}

size_t cw_ref_alerts_invalid(const cw_ref_alerts_t *a) {
    return a->invalid;
}

size_t cw_ref_alerts_conflicts(const cw_ref_alerts_t *a) {
    size_t bad = 0;
    for (size_t i = 0; i < a->ids.n; i++) {
        if (a->e[i].n_values > 1) {
            if (bad < 10) {
                cr_log_error("alert %s has %zu different contents:\n  %s\n  %s", a->ids.strs[i],
                             a->e[i].n_values, a->e[i].value, a->e[i].other);
            }
            bad++;
        }
    }
    return bad;
}

size_t cw_ref_alerts_missing(const cw_ref_alerts_t *want, const cw_ref_alerts_t *got,
                             const char *what) {
    size_t missing = 0;
    strtab_t *ids = (strtab_t *)&got->ids; /* lookup only: add = 0 may still grow slots */
    for (size_t i = 0; i < want->ids.n; i++) {
        if (strtab_id(ids, want->ids.strs[i], 0) < 0) {
            if (missing < 20) {
                cr_log_error("%s: alert %s missing: %s", what, want->ids.strs[i], want->e[i].value);
            }
            missing++;
        }
    }
    return missing;
}

size_t cw_ref_alerts_content_diffs(const cw_ref_alerts_t *a, const cw_ref_alerts_t *b) {
    size_t diffs = 0;
    strtab_t *ids = (strtab_t *)&b->ids;
    for (size_t i = 0; i < a->ids.n; i++) {
        int32_t j = strtab_id(ids, a->ids.strs[i], 0);
        if (j < 0) {
            continue;
        }
        if (a->e[i].len != b->e[j].len || memcmp(a->e[i].value, b->e[j].value, a->e[i].len) != 0) {
            if (diffs < 10) {
                cr_log_error("alert %s differs:\n  %s\n  %s", a->ids.strs[i], a->e[i].value,
                             b->e[j].value);
            }
            diffs++;
        }
    }
    return diffs;
}

/* ------------------------------------------------------------------ */
/* Process helpers                                                     */
/* ------------------------------------------------------------------ */

void cw_ref_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int cw_ref_alive(pid_t pid) {
    /* WNOWAIT: look without reaping, so cw_h_wait still gets the status */
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    return pid > 0 && waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == 0;
}

void cw_ref_dump(const char *what, const char *path) {
    char *text = cw_h_read_file(path, NULL);
    size_t len = text != NULL ? strlen(text) : 0;
    /* the tail is what explains a failure */
    const char *from = len > 20000 ? text + len - 20000 : text;
    fprintf(stderr, "---- %s (%s) ----\n%s\n---- end ----\n", what, path,
            from != NULL ? from : "(none)");
    free(text);
}

int cw_ref_count_in_file(const char *path, const char *needle) {
    char *text = cw_h_read_file(path, NULL);
    int n = 0;
    if (text == NULL) {
        return 0;
    }
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) {
        n++;
    }
    free(text);
    return n;
}

int cw_ref_wait_log(const char *path, const char *needle, int count, pid_t pid, int timeout_ms) {
    int64_t deadline = cw_time_mono_ms() + timeout_ms;
    for (;;) {
        if (cw_ref_count_in_file(path, needle) >= count) {
            return 1;
        }
        if (cw_time_mono_ms() >= deadline) {
            return 0;
        }
        if (pid > 0) {
            /* peek without reaping: the caller waits for the exit code */
            siginfo_t si;
            memset(&si, 0, sizeof(si));
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid) {
                return cw_ref_count_in_file(path, needle) >= count;
            }
        }
        cw_ref_sleep_ms(20);
    }
}

pid_t cw_ref_spawn_run(const char *config, int exit_on_idle_ms, const char *out_log,
                       const char *err_log) {
    char idle[32];
    snprintf(idle, sizeof(idle), "%d", exit_on_idle_ms);
    const char *argv[] = {CW_H_BINARY, "run", "--config", config, "--exit-on-idle", idle, NULL};
    return cw_h_spawn(argv, out_log, err_log);
}

void cw_ref_run_to_idle(const char *config, int exit_on_idle_ms, const char *dir, const char *name,
                        int timeout_ms) {
    char out_log[512], err_log[512];
    snprintf(out_log, sizeof(out_log), "%s/%s.out", dir, name);
    snprintf(err_log, sizeof(err_log), "%s/%s.err", dir, name);
    int rc = cw_h_wait(cw_ref_spawn_run(config, exit_on_idle_ms, out_log, err_log), timeout_ms);
    if (rc != 0) {
        cw_ref_dump("churnwatch stderr", err_log);
    }
    cr_assert_eq(rc, 0, "churnwatch run (%s) exited %d", name, rc);
}

void cw_ref_write_config(const char *path, const char *brokers, const char *redis_url,
                         const char *name, const char *input_topic, const char *out_prefix,
                         int batch_size) {
    cw_ref_write_config_mode(path, brokers, redis_url, name, input_topic, out_prefix, batch_size,
                             "event");
}

void cw_ref_write_config_mode(const char *path, const char *brokers, const char *redis_url,
                              const char *name, const char *input_topic, const char *out_prefix,
                              int batch_size, const char *time_mode) {
    char text[4096];
    snprintf(text, sizeof(text),
             "{ /* reliability test: %s */\n"
             "  \"time\": {\"mode\": \"%s\"},\n"
             "  \"kafka\": {\"brokers\": \"%s\", \"group_id\": \"%s\", \"input_topic\": \"%s\",\n"
             "            \"alert_topic\": \"%s-alerts\", \"score_topic\": \"%s-scores\",\n"
             "            \"dlq_topic\": \"%s-dlq\", \"batch_size\": %d,\n"
             "            \"properties\": {\"session.timeout.ms\": \"6000\",\n"
             "                           \"heartbeat.interval.ms\": \"500\"}},\n"
             "  \"redis\": {\"url\": \"%s\", \"key_prefix\": \"%s\", \"backoff_max_ms\": 1000}\n"
             "}\n",
             name, time_mode, brokers, name, input_topic, out_prefix, out_prefix, out_prefix,
             batch_size, redis_url, name);
    cr_assert_eq(cw_h_write_file(path, text), 0, "cannot write %s", path);
}

uint64_t cw_ref_rng_next(cw_ref_rng_t *r) {
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

long cw_ref_rng_range(cw_ref_rng_t *r, long lo, long hi) {
    return lo + (long)(cw_ref_rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* ------------------------------------------------------------------ */
/* Persistent redis-server                                             */
/* ------------------------------------------------------------------ */

struct cw_ref_redis {
    char *dir; /* temp dir: socket, append-only dir, logs (owned) */
    char sock[PATH_MAX];
    char url[PATH_MAX + 8];
    char log[PATH_MAX];
    pid_t pid; /* -1 when not running */
    int starts;
};

static redisContext *ref_redis_connect(const cw_ref_redis_t *r, int timeout_ms) {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectUnixWithTimeout(r->sock, tv);
    if (c == NULL || c->err) {
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Ready = answers PING and has finished loading its append-only file. */
static int ref_redis_ready(const cw_ref_redis_t *r) {
    redisContext *c = ref_redis_connect(r, 500);
    if (c == NULL) {
        return 0;
    }
    redisReply *rep = redisCommand(c, "PING");
    int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    freeReplyObject(rep);
    redisFree(c);
    return ok;
}

static void ref_redis_spawn(cw_ref_redis_t *r) {
    const char *argv[] = {
        "redis-server", "--port",      "0",  "--unixsocket", r->sock, "--unixsocketperm",
        "700",          "--save",      "",   "--appendonly", "yes",   "--appendfsync",
        "always",       "--daemonize", "no", "--dir",        r->dir,  NULL};
    unlink(r->sock);
    snprintf(r->log, sizeof(r->log), "%s/redis-%d.log", r->dir, r->starts++);
    r->pid = cw_h_spawn(argv, r->log, NULL);
    int64_t deadline = cw_time_mono_ms() + 20000;
    for (;;) {
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = -1;
            cw_ref_dump("redis log", r->log);
            cr_assert_fail("redis-server exited at start (status %d)", status);
        }
        if (ref_redis_ready(r)) {
            return;
        }
        if (cw_time_mono_ms() > deadline) {
            cw_ref_dump("redis log", r->log);
            cr_assert_fail("redis-server (appendonly) not ready within 20 s");
        }
        cw_ref_sleep_ms(20);
    }
}

cw_ref_redis_t *cw_ref_redis_start(void) {
    cw_ref_redis_t *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    signal(SIGPIPE, SIG_IGN);
    r->pid = -1;
    r->dir = cw_h_tmpdir();
    snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir);
    snprintf(r->url, sizeof(r->url), "unix://%s", r->sock);
    ref_redis_spawn(r);
    return r;
}

const char *cw_ref_redis_url(const cw_ref_redis_t *r) {
    return r->url;
}

void cw_ref_redis_kill(cw_ref_redis_t *r) {
    int status;
    if (r->pid <= 0) {
        return;
    }
    kill(r->pid, SIGKILL);
    while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR) {
    }
    r->pid = -1;
}

void cw_ref_redis_restart(cw_ref_redis_t *r) {
    cw_ref_redis_kill(r);
    ref_redis_spawn(r);
}

void cw_ref_redis_stop(cw_ref_redis_t *r) {
    if (r == NULL) {
        return;
    }
    if (r->pid > 0) {
        redisContext *c = ref_redis_connect(r, 1000);
        if (c != NULL) {
            freeReplyObject(redisCommand(c, "SHUTDOWN NOSAVE"));
            redisFree(c);
        } else {
            kill(r->pid, SIGTERM);
        }
        cw_h_wait(r->pid, 5000);
        r->pid = -1;
    }
    cw_h_rmrf(r->dir);
    free(r->dir);
    free(r);
}

long long cw_ref_redis_int(cw_ref_redis_t *r, const char *fmt, ...) {
    redisContext *c = ref_redis_connect(r, 2000);
    long long v = -1;
    va_list ap;
    if (c == NULL) {
        return -1;
    }
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
        v = rep->integer;
    }
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* ------------------------------------------------------------------ */
/* Broker with a known pid                                             */
/* ------------------------------------------------------------------ */

struct cw_ref_broker {
    pid_t pid;
    char *dir;
    char out_path[PATH_MAX];
    char err_path[PATH_MAX];
    char bootstraps[256];
};

cw_ref_broker_t *cw_ref_broker_start(int partitions, const char *topics_csv) {
    cw_ref_broker_t *b = calloc(1, sizeof(*b));
    char parts[32];
    cr_assert_not_null(b);
    b->dir = cw_h_tmpdir();
    snprintf(b->out_path, sizeof(b->out_path), "%s/broker.out", b->dir);
    snprintf(b->err_path, sizeof(b->err_path), "%s/broker.err", b->dir);
    snprintf(parts, sizeof(parts), "%d", partitions);
    const char *argv[] = {CW_H_BINARY, "broker",   "--partitions",       parts,
                          "--topics",  topics_csv, "--exit-with-parent", NULL};
    b->pid = cw_h_spawn(argv, b->out_path, b->err_path);
    int64_t deadline = cw_time_mono_ms() + 15000;
    for (;;) {
        char *text = cw_h_read_file(b->out_path, NULL);
        char *nl = text != NULL ? strchr(text, '\n') : NULL;
        int status;
        if (nl != NULL) {
            *nl = '\0';
            cw_strlcpy(b->bootstraps, text, sizeof(b->bootstraps));
            free(text);
            break;
        }
        free(text);
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = -1;
            cw_ref_dump("broker stderr", b->err_path);
            cr_assert_fail("broker exited before printing its address");
        }
        if (cw_time_mono_ms() > deadline) {
            cw_ref_dump("broker stderr", b->err_path);
            cr_assert_fail("broker printed no address within 15 s");
        }
        cw_ref_sleep_ms(10);
    }
    return b;
}

const char *cw_ref_broker_bootstraps(const cw_ref_broker_t *b) {
    return b->bootstraps;
}

pid_t cw_ref_broker_pid(const cw_ref_broker_t *b) {
    return b->pid;
}

void cw_ref_broker_stop(cw_ref_broker_t *b) {
    if (b == NULL) {
        return;
    }
    if (b->pid > 0) {
        kill(b->pid, SIGCONT); /* a test may have left it frozen */
        kill(b->pid, SIGTERM);
        int code = cw_h_wait(b->pid, 10000);
        if (code != 0) {
            cw_ref_dump("broker stderr", b->err_path);
        }
        cr_expect_eq(code, 0, "broker exited with %d after SIGTERM (-1 = timeout)", code);
    }
    cw_h_rmrf(b->dir);
    free(b->dir);
    free(b);
}

/* ------------------------------------------------------------------ */
/* gen, dead letters                                                   */
/* ------------------------------------------------------------------ */

void cw_ref_gen(const char *events_path, const char *truth_path, unsigned seed, int accounts,
                int days, double events_per_day, double malformed_share) {
    cw_ref_gen_end(events_path, truth_path, seed, accounts, days, events_per_day, malformed_share,
                   CW_REF_GEN_END);
}

void cw_ref_gen_end(const char *events_path, const char *truth_path, unsigned seed, int accounts,
                    int days, double events_per_day, double malformed_share, const char *end) {
    char s_seed[32], s_acc[32], s_days[32], s_epd[32], s_mal[32];
    snprintf(s_seed, sizeof(s_seed), "%u", seed);
    snprintf(s_acc, sizeof(s_acc), "%d", accounts);
    snprintf(s_days, sizeof(s_days), "%d", days);
    snprintf(s_epd, sizeof(s_epd), "%g", events_per_day);
    snprintf(s_mal, sizeof(s_mal), "%g", malformed_share);
    const char *argv[22] = {CW_H_BINARY,
                            "gen",
                            "--seed",
                            s_seed,
                            "--accounts",
                            s_acc,
                            "--days",
                            s_days,
                            "--end",
                            end,
                            "--events-per-day",
                            s_epd,
                            "--malformed-share",
                            s_mal,
                            "--out",
                            events_path};
    int n = 16;
    if (truth_path != NULL) {
        argv[n++] = "--truth";
        argv[n++] = truth_path;
    }
    argv[n] = NULL;
    int rc = cw_h_run(argv, 120000, NULL, NULL);
    cr_assert_eq(rc, 0, "churnwatch gen exited %d", rc);
}

static int dlq_cmp(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

void cw_ref_dlq_read(const char *brokers, const char *topic, size_t min_count, cw_ref_dlq_t *out) {
    size_t n = 0;
    cw_h_msg_t *msgs = cw_h_consume_all(brokers, topic, min_count, 3000, 120000, &n);
    int64_t *pos = calloc(n ? n * 2 : 2, sizeof(*pos));
    size_t np = 0;
    cr_assert_not_null(pos);
    memset(out, 0, sizeof(*out));
    out->messages = n;
    for (size_t k = 0; k < n; k++) {
        char err[256];
        yajl_val v = yajl_tree_parse(msgs[k].value, err, sizeof(err));
        const char *reason = v != NULL ? json_str(v, "reason") : NULL;
        int ok = 1;
        double p = v != NULL ? json_num2(v, "partition", NULL, &ok) : 0;
        double o = v != NULL ? json_num2(v, "offset", NULL, &ok) : 0;
        if (v == NULL || reason == NULL || reason[0] == '\0' || !ok) {
            if (out->invalid++ < 5) {
                cr_log_error("%s: dead letter is not JSON with reason/partition/offset (%s): "
                             "%.300s",
                             topic, v == NULL ? err : "fields", msgs[k].value);
            }
        } else {
            pos[np * 2] = (int64_t)p;
            pos[np * 2 + 1] = (int64_t)o;
            np++;
        }
        yajl_tree_free(v);
    }
    cw_h_msgs_free(msgs, n);
    qsort(pos, np, 2 * sizeof(*pos), dlq_cmp);
    out->partition = calloc(np ? np : 1, sizeof(*out->partition));
    out->offset = calloc(np ? np : 1, sizeof(*out->offset));
    cr_assert(out->partition != NULL && out->offset != NULL);
    for (size_t k = 0; k < np; k++) {
        if (out->distinct > 0 && out->partition[out->distinct - 1] == (int)pos[k * 2] &&
            out->offset[out->distinct - 1] == pos[k * 2 + 1]) {
            continue;
        }
        out->partition[out->distinct] = (int)pos[k * 2];
        out->offset[out->distinct] = pos[k * 2 + 1];
        out->distinct++;
    }
    free(pos);
}

int cw_ref_dlq_has(const cw_ref_dlq_t *d, int partition, int64_t offset) {
    size_t lo = 0, hi = d->distinct;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->partition[mid] < partition ||
            (d->partition[mid] == partition && d->offset[mid] < offset)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < d->distinct && d->partition[lo] == partition && d->offset[lo] == offset;
}

void cw_ref_dlq_free(cw_ref_dlq_t *d) {
    if (d == NULL) {
        return;
    }
    free(d->partition);
    free(d->offset);
    memset(d, 0, sizeof(*d));
}

/* ------------------------------------------------------------------ */
/* Stored decisions                                                    */
/* ------------------------------------------------------------------ */

size_t cw_ref_expect_band_counts(const char *redis_socket, const char *prefix) {
    redisContext *c = redisConnectUnix(redis_socket);
    long long bands[3] = {0, 0, 0};
    size_t scored = 0;
    cr_assert(c != NULL && c->err == 0, "cannot connect to %s", redis_socket);
    redisReply *ids = redisCommand(c, "SMEMBERS %s:accounts", prefix);
    cr_assert(ids != NULL && ids->type == REDIS_REPLY_ARRAY && ids->elements > 0);
    for (size_t i = 0; i < ids->elements; i++) {
        const char *id = ids->element[i]->str;
        redisReply *r = redisCommand(c, "HMGET %s:a:{%s} sc bd", prefix, id);
        cr_assert(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        if (r->element[0]->type == REDIS_REPLY_STRING) {
            long bd = r->element[1]->type == REDIS_REPLY_STRING
                          ? strtol(r->element[1]->str, NULL, 10)
                          : 0;
            cr_assert(bd >= 0 && bd < 3);
            bands[bd]++;
            scored++;
        }
        freeReplyObject(r);
    }
    for (int b = 0; b < 3; b++) {
        redisReply *r = redisCommand(c, "HGET %s:bands %d", prefix, b);
        long long n = r != NULL && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
        cr_expect_eq(n, bands[b], "%s: band %d counted %lld, stored on %lld accounts", prefix, b, n,
                     bands[b]);
        freeReplyObject(r);
    }
    freeReplyObject(ids);
    redisFree(c);
    return scored;
}

size_t cw_ref_expect_all_decided(const cw_ref_t *ref, const char *redis_socket,
                                 const char *prefix) {
    redisContext *c = redisConnectUnix(redis_socket);
    size_t undecided = 0;
    cr_assert(c != NULL && c->err == 0, "cannot connect to %s", redis_socket);
    for (size_t i = 0; i < cw_ref_accounts(ref); i++) {
        const char *id = cw_ref_account_id(ref, i);
        if (cw_ref_account_events(ref, i) == 0) {
            continue;
        }
        redisReply *r = redisCommand(c, "HEXISTS %s:a:{%s} sc", prefix, id);
        cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
        if (r->integer != 1) {
            if (undecided++ < 20) {
                cr_log_error("%s: %s has %zu events and no decision", prefix, id,
                             cw_ref_account_events(ref, i));
            }
        }
        freeReplyObject(r);
    }
    redisFree(c);
    cr_expect_eq(undecided, 0, "%s: %zu accounts with events were never decided", prefix,
                 undecided);
    return undecided;
}
