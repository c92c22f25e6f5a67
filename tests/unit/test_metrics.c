/*
 * test_metrics.c — the metrics registry (app/cw_metrics.c): what each
 * update does to the Prometheus text it renders, that the text is valid
 * exposition format (every sample belongs to a declared family, label
 * values escaped), that free-form labels stay bounded, that histograms are
 * cumulative with +Inf == _count, readiness logic, and that concurrent
 * writers and a concurrent scraper lose no increments.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_buf.h"
#include "cw_metrics.h"

static cw_metrics_t *new_metrics(void) {
    char err[128] = "";
    cw_metrics_t *m = cw_metrics_new(NULL, err, sizeof(err));
    cr_assert_not_null(m, "cw_metrics_new: %s", err);
    return m;
}

static char *render(const cw_metrics_t *m) {
    cw_buf_t b = CW_BUF_INIT;
    cw_metrics_render(m, &b);
    cr_assert_eq(b.oom, 0);
    cr_assert_not_null(b.data);
    return b.data; /* caller frees */
}

/* Value of the sample line that starts with exactly `series ` ; -1 if absent. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    const char *p = text;
    while (p != NULL && *p != '\0') {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            return strtod(p + n + 1, NULL);
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return -1;
}

static int count_lines_with(const char *text, const char *prefix) {
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, len) == 0) {
            n++;
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return n;
}

/* Check the whole text against the exposition grammar: comments are HELP or
 * TYPE lines, every sample's family was declared by a TYPE line before it,
 * each family is declared once, values are numbers. */
static void assert_valid_exposition(const char *text) {
    regex_t sample_re, type_re, help_re;
    cr_assert_eq(
        regcomp(&sample_re,
                "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                ",?)*\\})? (-?[0-9.eE+-]+|\\+Inf|NaN)$",
                REG_EXTENDED),
        0);
    cr_assert_eq(regcomp(&type_re, "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$",
                         REG_EXTENDED),
                 0);
    cr_assert_eq(regcomp(&help_re, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$", REG_EXTENDED), 0);
    char families[128][96];
    int n_fam = 0;
    char *copy = strdup(text);
    char *save = NULL;
    cr_assert_eq(text[strlen(text) - 1], '\n', "exposition must end with a newline");
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        regmatch_t mt[3];
        if (strncmp(line, "# HELP ", 7) == 0) {
            cr_assert_eq(regexec(&help_re, line, 0, NULL, 0), 0, "bad HELP: %s", line);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            cr_assert_eq(regexec(&type_re, line, 3, mt, 0), 0, "bad TYPE: %s", line);
            int len = (int)(mt[1].rm_eo - mt[1].rm_so);
            for (int i = 0; i < n_fam; i++) {
                cr_assert(strlen(families[i]) != (size_t)len ||
                              strncmp(families[i], line + mt[1].rm_so, (size_t)len) != 0,
                          "family declared twice: %s", line);
            }
            cr_assert_lt(n_fam, 128);
            snprintf(families[n_fam++], sizeof(families[0]), "%.*s", len, line + mt[1].rm_so);
        } else {
            cr_assert_eq(regexec(&sample_re, line, 2, mt, 0), 0, "bad sample: %s", line);
            char name[96];
            snprintf(name, sizeof(name), "%.*s", (int)(mt[1].rm_eo - mt[1].rm_so), line);
            int found = 0;
            for (int i = 0; i < n_fam && !found; i++) {
                size_t fl = strlen(families[i]);
                if (strcmp(name, families[i]) == 0 ||
                    (strncmp(name, families[i], fl) == 0 &&
                     (strcmp(name + fl, "_bucket") == 0 || strcmp(name + fl, "_sum") == 0 ||
                      strcmp(name + fl, "_count") == 0))) {
                    found = 1;
                }
            }
            cr_assert(found, "sample of an undeclared family: %s", line);
            cr_assert_eq(strncmp(name, "churnwatch_", 11), 0, "name without prefix: %s", name);
        }
    }
    free(copy);
    regfree(&sample_re);
    regfree(&type_re);
    regfree(&help_re);
}

Test(metrics, empty_registry_renders_every_family_at_zero) {
    cw_metrics_t *m = new_metrics();
    char *t = render(m);
    assert_valid_exposition(t);
    static const char *const zero_series[] = {
        "churnwatch_events_in_total{type=\"login\"}",
        "churnwatch_events_in_total{type=\"cancellation_notice\"}",
        "churnwatch_events_in_total{type=\"unknown\"}",
        "churnwatch_alerts_total{reason=\"entered_danger\"}",
        "churnwatch_alerts_total{reason=\"recovered\"}",
        "churnwatch_band_changes_total{from=\"none\",to=\"danger\"}",
        "churnwatch_batch_duration_seconds_count",
        "churnwatch_redis_roundtrip_seconds_bucket{le=\"+Inf\"}",
        "churnwatch_redis_reconnects_total",
        "churnwatch_producer_delivered_total{topic=\"alert\"}",
        "churnwatch_producer_failed_total{topic=\"dlq\"}",
        "churnwatch_duplicates_total",
        "churnwatch_redis_up",
        "churnwatch_ready",
    };
    for (size_t i = 0; i < sizeof(zero_series) / sizeof(zero_series[0]); i++) {
        cr_expect_eq(sample(t, zero_series[i]), 0, "%s", zero_series[i]);
    }
    /* no dead-letter series, no lag series, no accounts gauge until known */
    cr_expect_eq(count_lines_with(t, "churnwatch_dead_lettered_total{"), 0);
    cr_expect_eq(count_lines_with(t, "churnwatch_consumer_lag{"), 0);
    cr_expect_eq(count_lines_with(t, "churnwatch_accounts{"), 0);
    cr_expect_eq(count_lines_with(t, "# TYPE churnwatch_dead_lettered_total counter"), 1);
    free(t);
    cw_metrics_destroy(m);
}

/* One update and the series it must move. */
typedef struct update_case {
    const char *what;
    void (*apply)(cw_metrics_t *m);
    const char *series;
    double expect;
} update_case_t;

static void u_login3(cw_metrics_t *m) {
    for (int i = 0; i < 3; i++) {
        cw_metrics_event_in(m, CW_EV_LOGIN);
    }
}
static void u_unknown(cw_metrics_t *m) {
    cw_metrics_event_in(m, CW_EV_UNKNOWN);
}
static void u_bad_type(cw_metrics_t *m) {
    cw_metrics_event_in(m, (cw_ev_type_t)42); /* ignored */
    cw_metrics_event_in(m, CW_EV_USAGE);
}
static void u_dlq(cw_metrics_t *m) {
    cw_metrics_dead_letter(m, "missing_field:ts");
    cw_metrics_dead_letter(m, "not_json");
    cw_metrics_dead_letter(m, "missing_field:ts");
}
static void u_dlq_escape(cw_metrics_t *m) {
    cw_metrics_dead_letter(m, "we\"ird\\reason\n");
}
static void u_dlq_empty(cw_metrics_t *m) {
    cw_metrics_dead_letter(m, "");
    cw_metrics_dead_letter(m, NULL);
}
static void u_alert(cw_metrics_t *m) {
    cw_metrics_alert(m, CW_REASON_USAGE_DROP);
    cw_metrics_alert(m, CW_REASON_USAGE_DROP);
    cw_metrics_alert(m, CW_REASON__COUNT); /* ignored */
}
static void u_band(cw_metrics_t *m) {
    cw_metrics_band_change(m, -1, CW_BAND_HEALTHY);
    cw_metrics_band_change(m, CW_BAND_HEALTHY, CW_BAND_DANGER);
    cw_metrics_band_change(m, CW_BAND_DANGER, CW_BAND_DANGER); /* not a change */
}
static void u_counter(cw_metrics_t *m) {
    cw_metrics_add(m, CW_CTR_DUPLICATES, 7);
    cw_metrics_add(m, CW_CTR_DUPLICATES, 5);
}
static void u_lag(cw_metrics_t *m) {
    cw_metrics_set_lag(m, 3, 10);
    cw_metrics_set_lag(m, 3, 42);
    cw_metrics_set_lag(m, 300, 1); /* out of range: ignored */
}
static void u_reconnects(cw_metrics_t *m) {
    cw_metrics_set_redis_reconnects(m, 4);
}
static void u_producer(cw_metrics_t *m) {
    cw_metrics_set_producer(m, CW_METRICS_TOPIC_SCORE, 120, 2);
}
static void u_accounts(cw_metrics_t *m) {
    uint64_t c[3] = {70, 20, 10};
    cw_metrics_set_accounts(m, c, 1);
}
static void u_ready(cw_metrics_t *m) {
    cw_metrics_set_redis_up(m, 1);
    cw_metrics_set_assigned(m, 2);
}

static const update_case_t update_cases[] = {
    {"logins", u_login3, "churnwatch_events_in_total{type=\"login\"}", 3},
    {"unknown type", u_unknown, "churnwatch_events_in_total{type=\"unknown\"}", 1},
    {"bad type ignored", u_bad_type, "churnwatch_events_in_total{type=\"usage\"}", 1},
    {"dlq by reason", u_dlq, "churnwatch_dead_lettered_total{reason=\"missing_field:ts\"}", 2},
    {"dlq second reason", u_dlq, "churnwatch_dead_lettered_total{reason=\"not_json\"}", 1},
    {"dlq label escaped", u_dlq_escape,
     "churnwatch_dead_lettered_total{reason=\"we\\\"ird\\\\reason\\n\"}", 1},
    {"dlq empty reason", u_dlq_empty, "churnwatch_dead_lettered_total{reason=\"unspecified\"}", 2},
    {"alerts", u_alert, "churnwatch_alerts_total{reason=\"usage_drop\"}", 2},
    {"first scoring", u_band, "churnwatch_band_changes_total{from=\"none\",to=\"healthy\"}", 1},
    {"band change", u_band, "churnwatch_band_changes_total{from=\"healthy\",to=\"danger\"}", 1},
    {"counter add", u_counter, "churnwatch_duplicates_total", 12},
    {"lag gauge", u_lag, "churnwatch_consumer_lag{topic=\"input\",partition=\"3\"}", 42},
    {"reconnects", u_reconnects, "churnwatch_redis_reconnects_total", 4},
    {"producer delivered", u_producer, "churnwatch_producer_delivered_total{topic=\"score\"}", 120},
    {"producer failed", u_producer, "churnwatch_producer_failed_total{topic=\"score\"}", 2},
    {"accounts gauge", u_accounts, "churnwatch_accounts{band=\"caution\"}", 20},
    {"ready", u_ready, "churnwatch_ready", 1},
    {"assigned", u_ready, "churnwatch_assigned_partitions", 2},
};

Test(metrics, each_update_moves_its_series) {
    for (size_t i = 0; i < sizeof(update_cases) / sizeof(update_cases[0]); i++) {
        const update_case_t *c = &update_cases[i];
        cw_metrics_t *m = new_metrics();
        c->apply(m);
        char *t = render(m);
        assert_valid_exposition(t);
        cr_expect_eq(sample(t, c->series), c->expect, "%s: %s = %g, want %g", c->what, c->series,
                     sample(t, c->series), c->expect);
        free(t);
        cw_metrics_destroy(m);
    }
}

Test(metrics, topic_labels_come_from_the_config) {
    cw_conf_t conf;
    memset(&conf, 0, sizeof(conf));
    strcpy(conf.kafka_input_topic, "events");
    strcpy(conf.kafka_alert_topic, "churn-alerts");
    strcpy(conf.kafka_score_topic, "account-scores");
    strcpy(conf.kafka_dlq_topic, "events-dlq");
    char err[64];
    cw_metrics_t *m = cw_metrics_new(&conf, err, sizeof(err));
    cr_assert_not_null(m);
    cw_metrics_set_producer(m, CW_METRICS_TOPIC_DLQ, 9, 0);
    cw_metrics_set_lag(m, 0, 5);
    char *t = render(m);
    cr_expect_eq(sample(t, "churnwatch_producer_delivered_total{topic=\"events-dlq\"}"), 9);
    cr_expect_eq(sample(t, "churnwatch_producer_delivered_total{topic=\"churn-alerts\"}"), 0);
    cr_expect_eq(sample(t, "churnwatch_consumer_lag{topic=\"events\",partition=\"0\"}"), 5);
    free(t);
    cw_metrics_destroy(m);
}

Test(metrics, lag_series_disappears_on_revoke) {
    cw_metrics_t *m = new_metrics();
    cw_metrics_set_lag(m, 1, 0);
    cw_metrics_set_lag(m, 2, 9);
    char *t = render(m);
    cr_expect_eq(count_lines_with(t, "churnwatch_consumer_lag{"), 2);
    cr_expect_eq(sample(t, "churnwatch_consumer_lag{topic=\"input\",partition=\"1\"}"), 0);
    free(t);
    cw_metrics_set_lag(m, 2, -1);
    t = render(m);
    cr_expect_eq(count_lines_with(t, "churnwatch_consumer_lag{"), 1);
    cr_expect_eq(sample(t, "churnwatch_consumer_lag{topic=\"input\",partition=\"2\"}"), -1);
    free(t);
    cw_metrics_destroy(m);
}

Test(metrics, accounts_gauge_hidden_when_unknown) {
    cw_metrics_t *m = new_metrics();
    uint64_t c[3] = {1, 2, 3};
    cw_metrics_set_accounts(m, c, 1);
    cw_metrics_set_accounts(m, NULL, 0);
    char *t = render(m);
    cr_expect_eq(count_lines_with(t, "churnwatch_accounts{"), 0);
    free(t);
    cw_metrics_destroy(m);
}

Test(metrics, dead_letter_labels_are_bounded) {
    cw_metrics_t *m = new_metrics();
    char reason[32];
    for (int i = 0; i < CW_METRICS_MAX_LABELS + 10; i++) {
        snprintf(reason, sizeof(reason), "wrong_type:f%d", i);
        cw_metrics_dead_letter(m, reason);
        cw_metrics_dead_letter(m, reason);
    }
    cw_metrics_dead_letter(m, "other"); /* a literal "other" joins the overflow */
    char *t = render(m);
    assert_valid_exposition(t);
    cr_expect_eq(count_lines_with(t, "churnwatch_dead_lettered_total{"), CW_METRICS_MAX_LABELS + 1);
    cr_expect_eq(sample(t, "churnwatch_dead_lettered_total{reason=\"wrong_type:f0\"}"), 2);
    cr_expect_eq(sample(t, "churnwatch_dead_lettered_total{reason=\"wrong_type:f63\"}"), 2);
    cr_expect_eq(sample(t, "churnwatch_dead_lettered_total{reason=\"wrong_type:f64\"}"), -1);
    cr_expect_eq(sample(t, "churnwatch_dead_lettered_total{reason=\"other\"}"), 10 * 2 + 1);
    cr_expect_eq(cw_metrics_get_dead_letters(m, "other"), 21);
    cr_expect_eq(cw_metrics_get_dead_letters(m, "wrong_type:f5"), 2);
    free(t);
    cw_metrics_destroy(m);
}

/* Redis round trips by stage: a count and the seconds of each stage's
 * round trips, the stage named as cw_state names it with '_' for ' '. */
Test(metrics, redis_stages_count_round_trips_and_their_time) {
    cw_metrics_t *m = new_metrics();
    double s = -1;
    cw_metrics_redis_stage(m, "apply read", 0.25);
    cw_metrics_redis_stage(m, "apply read", 0.5);
    cw_metrics_redis_stage(m, "commit", 0.125);
    cw_metrics_redis_stage(m, "commit", -1); /* counted, no time */
    char *t = render(m);
    assert_valid_exposition(t);
    cr_expect_eq(sample(t, "churnwatch_redis_stage_roundtrips_total{stage=\"apply_read\"}"), 2);
    cr_expect_eq(sample(t, "churnwatch_redis_stage_seconds_total{stage=\"apply_read\"}"), 0.75);
    cr_expect_eq(sample(t, "churnwatch_redis_stage_roundtrips_total{stage=\"commit\"}"), 2);
    cr_expect_eq(sample(t, "churnwatch_redis_stage_seconds_total{stage=\"commit\"}"), 0.125);
    cr_expect_eq(sample(t, "churnwatch_redis_stage_roundtrips_total{stage=\"other\"}"), -1);
    cr_expect_eq(cw_metrics_get_redis_stage(m, "apply_read", &s), 2);
    cr_expect_eq(s, 0.75);
    cr_expect_eq(cw_metrics_get_redis_stage(m, "due read", &s), 0);
    cr_expect_eq(s, 0);
    free(t);
    cw_metrics_destroy(m);
}

Test(metrics, long_reason_is_cut_not_overflowed) {
    cw_metrics_t *m = new_metrics();
    char reason[200];
    memset(reason, 'x', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    cw_metrics_dead_letter(m, reason);
    cw_metrics_dead_letter(m, reason);
    char *t = render(m);
    assert_valid_exposition(t);
    char series[256];
    snprintf(series, sizeof(series), "churnwatch_dead_lettered_total{reason=\"%.*s\"}",
             CW_METRICS_LABEL_MAX - 1, reason);
    cr_expect_eq(sample(t, series), 2);
    free(t);
    cw_metrics_destroy(m);
}

Test(metrics, histogram_is_cumulative_with_inf_equal_count) {
    cw_metrics_t *m = new_metrics();
    /* batch buckets: 0.001 0.0025 0.005 0.01 ... 10 */
    static const double obs[] = {0.0005, 0.001, 0.002, 0.003, 0.5, 20.0, -1.0};
    double sum = 0;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        cw_metrics_observe(m, CW_HIST_BATCH, obs[i]);
        sum += obs[i] > 0 ? obs[i] : 0;
    }
    char *t = render(m);
    assert_valid_exposition(t);
    static const struct {
        const char *le;
        double want;
    } buckets[] = {
        {"0.001", 3}, /* 0.0005, 0.001 (le is inclusive), -1 clamped to 0 */
        {"0.0025", 4}, {"0.005", 5}, {"0.25", 5}, {"0.5", 6}, {"10", 6}, {"+Inf", 7},
    };
    char series[128];
    for (size_t i = 0; i < sizeof(buckets) / sizeof(buckets[0]); i++) {
        snprintf(series, sizeof(series), "churnwatch_batch_duration_seconds_bucket{le=\"%s\"}",
                 buckets[i].le);
        cr_expect_eq(sample(t, series), buckets[i].want, "%s = %g", series, sample(t, series));
    }
    cr_expect_eq(sample(t, "churnwatch_batch_duration_seconds_count"), 7);
    cr_expect_float_eq(sample(t, "churnwatch_batch_duration_seconds_sum"), sum, 1e-6);
    /* the other histogram is untouched */
    cr_expect_eq(sample(t, "churnwatch_redis_roundtrip_seconds_count"), 0);
    free(t);
    cw_metrics_destroy(m);
}

Test(metrics, readiness_needs_redis_and_an_assignment) {
    static const struct {
        int up, assigned, ready;
    } cases[] = {{0, 0, 0}, {1, 0, 0}, {0, 3, 0}, {1, 1, 1}, {1, -2, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cw_metrics_t *m = new_metrics();
        cw_metrics_set_redis_up(m, cases[i].up);
        cw_metrics_set_assigned(m, cases[i].assigned);
        int up = -1, as = -1;
        cr_expect_eq(cw_metrics_ready(m, &up, &as), cases[i].ready, "case %zu", i);
        cr_expect_eq(up, cases[i].up);
        cr_expect_eq(as, cases[i].assigned < 0 ? 0 : cases[i].assigned);
        cw_metrics_destroy(m);
    }
    cr_expect_eq(cw_metrics_ready(NULL, NULL, NULL), 0);
}

Test(metrics, null_registry_is_a_no_op) {
    cw_metrics_event_in(NULL, CW_EV_LOGIN);
    cw_metrics_dead_letter(NULL, "x");
    cw_metrics_alert(NULL, CW_REASON_INACTIVE);
    cw_metrics_band_change(NULL, -1, CW_BAND_DANGER);
    cw_metrics_add(NULL, CW_CTR_BATCHES, 1);
    cw_metrics_observe(NULL, CW_HIST_REDIS, 1.0);
    cw_metrics_set_lag(NULL, 0, 1);
    cw_metrics_set_redis_reconnects(NULL, 1);
    cw_metrics_set_producer(NULL, CW_METRICS_TOPIC_ALERT, 1, 1);
    cw_metrics_set_accounts(NULL, NULL, 1);
    cw_metrics_set_redis_up(NULL, 1);
    cw_metrics_set_assigned(NULL, 1);
    cr_expect_eq(cw_metrics_get(NULL, CW_CTR_BATCHES), 0);
    cw_buf_t b = CW_BUF_INIT;
    cw_metrics_render(NULL, &b);
    cr_expect_eq(b.len, 0);
    cw_metrics_destroy(NULL);
}

/* ---- concurrency ---- */

#define WRITERS 4
#define ITERS 50000
#define REASONS 8

typedef struct writer_arg {
    cw_metrics_t *m;
    int id;
} writer_arg_t;

static void *writer(void *p) {
    writer_arg_t *a = p;
    char reason[32];
    for (int i = 0; i < ITERS; i++) {
        cw_metrics_event_in(a->m, (cw_ev_type_t)(i % 2));
        /* every writer races to be first to see each reason */
        snprintf(reason, sizeof(reason), "reason_%d", (i + a->id) % REASONS);
        cw_metrics_dead_letter(a->m, reason);
        cw_metrics_observe(a->m, CW_HIST_REDIS, 0.0001 * (i % 50));
        cw_metrics_add(a->m, CW_CTR_BATCHES, 1);
    }
    return NULL;
}

static volatile int stop_scraper;
static int scrapes, went_backwards, inf_mismatch; /* read after join (no asserts off-thread) */

static void *scraper(void *p) {
    cw_metrics_t *m = p;
    cw_buf_t b = CW_BUF_INIT;
    double last = 0;
    while (!stop_scraper) {
        cw_buf_reset(&b);
        cw_metrics_render(m, &b);
        scrapes++;
        /* counters never go backwards between scrapes */
        double now = sample(b.data, "churnwatch_batches_total");
        went_backwards += now < last;
        last = now;
        /* +Inf always equals _count, even mid-update */
        inf_mismatch += sample(b.data, "churnwatch_redis_roundtrip_seconds_bucket{le=\"+Inf\"}") !=
                        sample(b.data, "churnwatch_redis_roundtrip_seconds_count");
    }
    cw_buf_free(&b);
    return NULL;
}

Test(metrics, concurrent_writers_and_scraper_lose_nothing, .timeout = 60) {
    cw_metrics_t *m = new_metrics();
    pthread_t w[WRITERS], s;
    writer_arg_t args[WRITERS];
    stop_scraper = 0;
    scrapes = went_backwards = inf_mismatch = 0;
    cr_assert_eq(pthread_create(&s, NULL, scraper, m), 0);
    for (int i = 0; i < WRITERS; i++) {
        args[i].m = m;
        args[i].id = i;
        cr_assert_eq(pthread_create(&w[i], NULL, writer, &args[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(w[i], NULL);
    }
    stop_scraper = 1;
    pthread_join(s, NULL);
    cr_expect_gt(scrapes, 0);
    cr_expect_eq(went_backwards, 0);
    cr_expect_eq(inf_mismatch, 0);

    uint64_t total = (uint64_t)WRITERS * ITERS;
    cr_expect_eq(cw_metrics_get(m, CW_CTR_BATCHES), total);
    cr_expect_eq(
        cw_metrics_get_events_in(m, CW_EV_LOGIN) + cw_metrics_get_events_in(m, CW_EV_USAGE), total);
    char *t = render(m);
    assert_valid_exposition(t);
    /* each reason got exactly one slot despite the race on its first sighting */
    cr_expect_eq(count_lines_with(t, "churnwatch_dead_lettered_total{"), REASONS);
    uint64_t dl = 0;
    char reason[32];
    for (int r = 0; r < REASONS; r++) {
        snprintf(reason, sizeof(reason), "reason_%d", r);
        dl += cw_metrics_get_dead_letters(m, reason);
    }
    cr_expect_eq(dl, total);
    cr_expect_eq(sample(t, "churnwatch_redis_roundtrip_seconds_count"), (double)total);
    free(t);
    cw_metrics_destroy(m);
}
