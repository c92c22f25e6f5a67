/*
 * test_conf.c — unit tests of the configuration loader (config/cw_conf.c).
 *
 * Table-driven: each table row is a config text and the substring the
 * error message must contain (the full dotted key, the reason). Covered:
 * the minimal file and the default model it loads, comments, unknown keys
 * at every depth, wrong types and out-of-range values, required keys,
 * redis.url and http.listen syntax, environment overrides (env wins), the
 * password never echoed, model validation by path, the generated docs and
 * --help, and that the committed docs/configuration.md is current.
 *
 * Regenerating the docs: `CW_UPDATE_DOCS=1 build/tests/test_conf` rewrites
 * docs/configuration.md (the repo is found from __FILE__) instead of
 * comparing it.
 *
 * Criterion runs every test in its own process, so setenv() in one test
 * does not leak into another; the fixture removes CW_* variables inherited
 * from the shell first.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cw_conf.h"

extern char **environ;

#define MIN_KAFKA "\"brokers\": \"127.0.0.1:9092\", \"input_topic\": \"events\""
#define MIN_REDIS "\"url\": \"tcp://127.0.0.1:6379\""
#define MINIMAL "{\"kafka\": {" MIN_KAFKA "}, \"redis\": {" MIN_REDIS "}}"
/* A minimal file plus extra top-level members (X must start with ','). */
#define WITH(X) "{\"kafka\": {" MIN_KAFKA "}, \"redis\": {" MIN_REDIS "}" X "}"
/* A minimal file whose model has these signals (and other model members). */
#define MODEL(X) WITH(", \"model\": {" X "}")
#define SIG_OK                                                                                     \
    "{\"name\": \"a\", \"events\": \"login\", \"aggregation\": \"count\", \"window_days\": 7, "    \
    "\"normalisation\": \"target\", \"target\": 5, \"weight\": 1}"
#define SIG_B                                                                                      \
    "{\"name\": \"b\", \"events\": [\"usage\"], \"aggregation\": \"sum\", \"window_days\": 30, "   \
    "\"normalisation\": \"target\", \"target\": 60, \"weight\": 1}"

/* Every scalar/object key of the config table, with its environment variable. */
static const struct {
    const char *key;
    const char *env; /* NULL: no override */
} all_keys[] = {
    {"kafka.brokers", "CW_KAFKA_BROKERS"},
    {"kafka.group_id", "CW_KAFKA_GROUP_ID"},
    {"kafka.input_topic", "CW_KAFKA_INPUT_TOPIC"},
    {"kafka.alert_topic", "CW_KAFKA_ALERT_TOPIC"},
    {"kafka.score_topic", "CW_KAFKA_SCORE_TOPIC"},
    {"kafka.dlq_topic", "CW_KAFKA_DLQ_TOPIC"},
    {"kafka.properties", NULL},
    {"kafka.batch_size", "CW_KAFKA_BATCH_SIZE"},
    {"kafka.batch_timeout_ms", "CW_KAFKA_BATCH_TIMEOUT_MS"},
    {"redis.url", "CW_REDIS_URL"},
    {"redis.key_prefix", "CW_REDIS_KEY_PREFIX"},
    {"redis.password", "CW_REDIS_PASSWORD"},
    {"redis.db", "CW_REDIS_DB"},
    {"redis.timeout_ms", "CW_REDIS_TIMEOUT_MS"},
    {"redis.backoff_max_ms", "CW_REDIS_BACKOFF_MAX_MS"},
    {"http.listen", "CW_HTTP_LISTEN"},
    {"time.mode", "CW_TIME_MODE"},
    {"validation.max_future_seconds", "CW_VALIDATION_MAX_FUTURE_SECONDS"},
    {"validation.min_timestamp", "CW_VALIDATION_MIN_TIMESTAMP"},
    {"validation.max_event_bytes", "CW_VALIDATION_MAX_EVENT_BYTES"},
    {"state.history_len", "CW_STATE_HISTORY_LEN"},
    {"log.level", "CW_LOG_LEVEL"},
    {"model", NULL},
};

/* Model keys the docs must describe. */
static const char *const model_doc_keys[] = {
    "model.signals",
    "model.bands",
    "model.tiers.high_arr",
    "model.tiers.low_arr",
    "model.phases.onboarding_days",
    "model.phases.renewal_days",
    "model.key_features",
    "model.alerts.inactive_days",
    "model.alerts.cooldown_days",
    "model.alerts.warmup_days",
    "model.alerts.score_drop_share",
    "model.alerts.cancellation_forces_danger",
    "model.signals[].name",
    "model.signals[].events",
    "model.signals[].feature",
    "model.signals[].aggregation",
    "model.signals[].window_days",
    "model.signals[].baseline_days",
    "model.signals[].normalisation",
    "model.signals[].target",
    "model.signals[].min",
    "model.signals[].max",
    "model.signals[].weight",
    "model.signals[].direction",
    "model.signals[].min_baseline",
    "model.signals[].drop_share",
    "model.signals[].description",
    "model.bands.<tier>.danger_enter",
    "model.bands.<tier>.danger_exit",
    "model.bands.<tier>.caution_enter",
    "model.bands.<tier>.caution_exit",
};

static void clear_cw_env(void) {
    char names[64][128];
    int n = 0;
    for (char **e = environ; *e != NULL && n < 64; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        if (strncmp(*e, "CW_", 3) == 0 && len < sizeof names[0] &&
            strncmp(*e, "CW_UPDATE_DOCS=", 15) != 0) {
            memcpy(names[n], *e, len);
            names[n][len] = '\0';
            n++;
        }
    }
    for (int i = 0; i < n; i++) {
        unsetenv(names[i]);
    }
}

TestSuite(conf, .init = clear_cw_env);

static char *write_docs_string(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cw_conf_write_docs(f);
    cr_assert_eq(fclose(f), 0);
    return text;
}

static char *write_help_string(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cw_conf_write_help(f);
    cr_assert_eq(fclose(f), 0);
    return text;
}

/* Expect the text to be rejected with every needle in the message. */
static void expect_error(const char *json, const char *needle, const char *needle2) {
    char err[512] = "";
    cw_conf_t *conf = cw_conf_parse(json, err, sizeof err);
    cr_expect_null(conf, "accepted: %s", json);
    cw_conf_destroy(conf);
    cr_expect(strstr(err, needle) != NULL, "error \"%s\" lacks \"%s\" (input %s)", err, needle,
              json);
    if (needle2 != NULL) {
        cr_expect(strstr(err, needle2) != NULL, "error \"%s\" lacks \"%s\" (input %s)", err,
                  needle2, json);
    }
}

typedef struct err_case {
    const char *json;
    const char *needle;  /* must appear in errstr */
    const char *needle2; /* and this, when not NULL */
} err_case_t;

static void run_cases(const err_case_t *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        expect_error(cases[i].json, cases[i].needle, cases[i].needle2);
    }
}

Test(conf, minimal_file_loads_default_model) {
    char err[512] = "";
    cw_conf_t *c = cw_conf_parse(MINIMAL, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_expect_str_eq(c->kafka_brokers, "127.0.0.1:9092");
    cr_expect_str_eq(c->kafka_input_topic, "events");
    cr_expect_str_eq(c->kafka_group_id, "churnwatch");
    cr_expect_str_eq(c->kafka_alert_topic, "churn-alerts");
    cr_expect_str_eq(c->kafka_score_topic, "account-scores");
    cr_expect_str_eq(c->kafka_dlq_topic, "events-dlq");
    cr_expect_eq(c->n_kafka_props, 0);
    cr_expect_eq(c->kafka_batch_size, 4096);
    cr_expect_eq(c->kafka_batch_timeout_ms, 100);
    cr_expect_eq(c->kafka_fetch_wake_ms, 100);
    cr_expect_str_eq(c->redis_url, "tcp://127.0.0.1:6379");
    cr_expect_str_eq(c->redis_key_prefix, "cw");
    cr_expect_str_eq(c->redis_password, "");
    cr_expect_eq(c->redis_db, 0);
    cr_expect_eq(c->redis_timeout_ms, 5000);
    cr_expect_eq(c->redis_backoff_max_ms, 5000);
    cr_expect_str_eq(c->http_listen, "");
    cr_expect_eq(c->time_mode, CW_TIME_EVENT);
    cr_expect_eq(c->max_future_ms, INT64_C(86400000));
    cr_expect_eq(c->min_ts_ms, INT64_C(946684800000)); /* 2000-01-01T00:00:00Z */
    cr_expect_eq(c->max_event_bytes, 65536);
    cr_expect_eq(c->history_len, 30);
    cr_expect_str_eq(c->log_level, "info");
    cr_expect_eq(c->retention_days, 90); /* nps window */

    const cw_model_t *m = &c->model;
    static const struct {
        const char *name;
        unsigned types;
        cw_agg_t agg;
        int window, baseline;
        cw_norm_t norm;
        double target, weight;
        int direction;
    } want[] = {
        {"active_user_rate", CW_EV_BIT(CW_EV_LOGIN) | CW_EV_BIT(CW_EV_USAGE), CW_AGG_DISTINCT_USERS,
         30, 0, CW_NORM_SEATS, 0.7, 30, 1},
        {"login_trend", CW_EV_BIT(CW_EV_LOGIN), CW_AGG_COUNT, 7, 28, CW_NORM_TREND, 1.0, 25, 1},
        {"feature_breadth", CW_EV_BIT(CW_EV_USAGE), CW_AGG_DISTINCT_FEATURES, 30, 0, CW_NORM_TARGET,
         5, 15, 1},
        {"usage_volume", CW_EV_BIT(CW_EV_USAGE), CW_AGG_SUM, 30, 0, CW_NORM_TARGET, 60, 10, 1},
        {"support_load", CW_EV_BIT(CW_EV_SUPPORT_TICKET), CW_AGG_COUNT, 30, 0, CW_NORM_TARGET, 6,
         10, -1},
        {"nps", CW_EV_BIT(CW_EV_NPS), CW_AGG_MEAN, 90, 0, CW_NORM_RANGE, 0, 10, 1},
    };
    cr_assert_eq(m->n_signals, 6);
    for (int i = 0; i < 6; i++) {
        const cw_signal_def_t *s = &m->signals[i];
        cr_expect_str_eq(s->name, want[i].name);
        cr_expect_eq(s->types, want[i].types, "%s types", s->name);
        cr_expect_eq(s->agg, want[i].agg, "%s agg", s->name);
        cr_expect_eq(s->window_days, want[i].window, "%s window", s->name);
        cr_expect_eq(s->baseline_days, want[i].baseline, "%s baseline", s->name);
        cr_expect_eq(s->norm, want[i].norm, "%s norm", s->name);
        cr_expect_float_eq(s->target, want[i].target, 1e-12, "%s target", s->name);
        cr_expect_float_eq(s->weight, want[i].weight, 1e-12, "%s weight", s->name);
        cr_expect_eq(s->direction, want[i].direction, "%s direction", s->name);
        cr_expect_str_eq(s->feature, "");
        cr_expect_gt(strlen(s->description), 40, "%s has a description", s->name);
    }
    cr_expect_float_eq(m->signals[1].min_baseline, 25, 1e-12);
    cr_expect_float_eq(m->signals[1].drop_share, 0.5, 1e-12);
    cr_expect_float_eq(m->signals[5].range_min, 0, 1e-12);
    cr_expect_float_eq(m->signals[5].range_max, 10, 1e-12);

    const double bands[3][4] = {{45, 55, 70, 75}, {40, 50, 65, 70}, {40, 50, 65, 70}};
    for (int t = 0; t < 3; t++) {
        cr_expect_float_eq(m->bands[t].danger_enter, bands[t][0], 1e-12, "tier %d", t);
        cr_expect_float_eq(m->bands[t].danger_exit, bands[t][1], 1e-12, "tier %d", t);
        cr_expect_float_eq(m->bands[t].caution_enter, bands[t][2], 1e-12, "tier %d", t);
        cr_expect_float_eq(m->bands[t].caution_exit, bands[t][3], 1e-12, "tier %d", t);
    }
    cr_expect_float_eq(m->tier_high_arr, 5000000, 1e-6);
    cr_expect_float_eq(m->tier_low_arr, 500000, 1e-6);
    cr_expect_eq(m->onboarding_days, 30);
    cr_expect_eq(m->renewal_days, 90);
    cr_assert_eq(m->n_key_features, 2);
    cr_expect_str_eq(m->key_features[0], "reports");
    cr_expect_str_eq(m->key_features[1], "integrations");
    cr_expect_eq(m->inactive_days, 14);
    cr_expect_eq(m->cooldown_days, 7);
    cr_expect_eq(m->warmup_days, 30);
    cr_expect_float_eq(m->score_drop_share, 0, 1e-12);
    cr_expect_eq(m->cancellation_forces_danger, 1);
    cw_conf_destroy(c);
}

Test(conf, every_key_set_and_comments_accepted) {
    static const char json[] =
        "/* a block comment */\n"
        "{\n"
        "  // a line comment\n"
        "  \"kafka\": {\"brokers\": \"k1:9092,k2:9092\", \"group_id\": \"g\",\n"
        "    \"input_topic\": \"in\", \"alert_topic\": \"al\", \"score_topic\": \"sc\",\n"
        "    \"dlq_topic\": \"dl\", \"batch_size\": 500, \"batch_timeout_ms\": 20,\n"
        "    \"properties\": {\"socket.timeout.ms\": 30000, \"enable.idempotence\": true,\n"
        "                   \"client.id\": \"cw // not a comment /* nor this */\"}},\n"
        "  \"redis\": {\"url\": \"unix:///run/redis.sock\", \"key_prefix\": \"t-1.x\",\n"
        "    \"password\": \"pw\", \"db\": 3, \"timeout_ms\": 250, \"backoff_max_ms\": 900},\n"
        "  \"http\": {\"listen\": \"[::1]:9100\"},\n"
        "  \"time\": {\"mode\": \"wall\"},\n"
        "  \"validation\": {\"max_future_seconds\": 60, \"min_timestamp\": "
        "\"2020-01-01T09:00:00+09:00\",\n"
        "    \"max_event_bytes\": 1024},\n"
        "  \"state\": {\"history_len\": 7},\n"
        "  \"log\": {\"level\": \"debug\"}\n"
        "}\n";
    char err[512] = "";
    cw_conf_t *c = cw_conf_parse(json, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_expect_str_eq(c->kafka_brokers, "k1:9092,k2:9092");
    cr_expect_str_eq(c->kafka_group_id, "g");
    cr_expect_str_eq(c->kafka_dlq_topic, "dl");
    cr_expect_eq(c->kafka_batch_size, 500);
    cr_expect_eq(c->kafka_batch_timeout_ms, 20);
    cr_assert_eq(c->n_kafka_props, 3);
    cr_expect_str_eq(c->kafka_props[0].name, "socket.timeout.ms");
    cr_expect_str_eq(c->kafka_props[0].value, "30000");
    cr_expect_str_eq(c->kafka_props[1].value, "true");
    cr_expect_str_eq(c->kafka_props[2].value, "cw // not a comment /* nor this */");
    cr_expect_str_eq(c->redis_url, "unix:///run/redis.sock");
    cr_expect_str_eq(c->redis_key_prefix, "t-1.x");
    cr_expect_str_eq(c->redis_password, "pw");
    cr_expect_eq(c->redis_db, 3);
    cr_expect_eq(c->redis_timeout_ms, 250);
    cr_expect_eq(c->redis_backoff_max_ms, 900);
    cr_expect_str_eq(c->http_listen, "[::1]:9100");
    cr_expect_eq(c->time_mode, CW_TIME_WALL);
    cr_expect_eq(c->max_future_ms, 60000);
    cr_expect_eq(c->min_ts_ms, INT64_C(1577836800000)); /* 2020-01-01T00:00:00Z */
    cr_expect_eq(c->max_event_bytes, 1024);
    cr_expect_eq(c->history_len, 7);
    cr_expect_str_eq(c->log_level, "debug");
    cw_conf_destroy(c);
}

Test(conf, unknown_keys_named_by_full_path) {
    static const err_case_t cases[] = {
        {"{\"kafak\": {}}", "unknown key \"kafak\"", "did you mean \"kafka\""},
        {WITH(", \"kafka\": {}"), "duplicate key \"kafka\"", NULL},
        {"{\"kafka\": {\"brokrs\": \"x:1\"}}", "unknown key \"kafka.brokrs\"",
         "did you mean \"kafka.brokers\""},
        {WITH(", \"http\": {\"listn\": \"\"}"), "unknown key \"http.listn\"", NULL},
        {WITH(", \"validation\": {\"max_future\": 1}"), "unknown key \"validation.max_future\"",
         NULL},
        {WITH(", \"kafka.brokers\": \"x\""), "unknown key \"kafka.brokers\"", "nested"},
        {MODEL("\"signal\": []"), "unknown key \"model.signal\"", "did you mean \"model.signals\""},
        {MODEL("\"signals\": [" SIG_OK "], \"alerts\": {\"cooldown\": 1}"),
         "unknown key \"model.alerts.cooldown\"", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"tiers\": {\"high\": 1}"),
         "unknown key \"model.tiers.high\"", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"medium\": {}}"),
         "unknown key \"model.bands.medium\"", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"high\": {\"danger\": 1}}"),
         "unknown key \"model.bands.high.danger\"", NULL},
        {MODEL("\"signals\": [" SIG_OK ", " SIG_B ", {\"windw\": 3}]"),
         "unknown key \"model.signals[2].windw\"", NULL},
        {MODEL("\"signals\": [{\"name\": \"a\", \"wieght\": 1}]"),
         "unknown key \"model.signals[0].wieght\"", "did you mean \"model.signals[0].weight\""},
        {WITH(", \"log\": {\"level\": \"info\", \"level\": \"debug\"}"),
         "duplicate key \"log.level\"", NULL},
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(conf, wrong_types_and_ranges_named) {
    static const err_case_t cases[] = {
        {"{\"kafka\": {" MIN_KAFKA ", \"batch_size\": \"abc\"}, \"redis\": {" MIN_REDIS "}}",
         "key \"kafka.batch_size\": expected integer in [1,100000], got \"abc\"", NULL},
        {"{\"kafka\": {" MIN_KAFKA ", \"batch_size\": 0}}",
         "key \"kafka.batch_size\": expected integer in [1,100000], got 0", NULL},
        {"{\"kafka\": {" MIN_KAFKA ", \"batch_size\": 1.5}}", "key \"kafka.batch_size\"",
         "got 1.5"},
        {"{\"kafka\": {" MIN_KAFKA ", \"batch_timeout_ms\": 10001}}",
         "key \"kafka.batch_timeout_ms\": expected integer in [1,10000]", NULL},
        {"{\"kafka\": {\"brokers\": 9092}}", "key \"kafka.brokers\": expected a string, got 9092",
         NULL},
        {"{\"kafka\": {\"brokers\": \"a:1,,b:2\"}}", "key \"kafka.brokers\"", "empty entry"},
        {"{\"kafka\": {\"brokers\": \"\"}}", "key \"kafka.brokers\": must not be empty", NULL},
        {"{\"kafka\": {\"input_topic\": \"bad topic\"}}", "key \"kafka.input_topic\"", NULL},
        {"{\"kafka\": {\"properties\": []}}", "key \"kafka.properties\": expected an object", NULL},
        {"{\"kafka\": {\"properties\": {\"group.id\": \"x\"}}}",
         "key \"kafka.properties.group.id\"", "kafka.group_id"},
        {"{\"kafka\": {\"properties\": {\"sasl.password\": null}}}",
         "key \"kafka.properties.sasl.password\": expected a string, number or boolean", NULL},
        {"{\"kafka\": 3}", "key \"kafka\": expected an object, got 3", NULL},
        {"{\"redis\": {\"db\": 16}}", "key \"redis.db\": expected integer in [0,15], got 16", NULL},
        {"{\"redis\": {\"db\": -1}}", "key \"redis.db\"", "got -1"},
        {"{\"redis\": {\"key_prefix\": \"a b\"}}", "key \"redis.key_prefix\"", "[A-Za-z0-9_.-]+"},
        {"{\"redis\": {\"key_prefix\": \"\"}}", "key \"redis.key_prefix\": must not be empty",
         NULL},
        {"{\"redis\": {\"timeout_ms\": true}}", "key \"redis.timeout_ms\"", "got true"},
        {"{\"http\": {\"listen\": \"9100\"}}", "key \"http.listen\"", "HOST:PORT"},
        {"{\"http\": {\"listen\": \"host:70000\"}}", "key \"http.listen\"", NULL},
        {"{\"http\": {\"listen\": \"::1:80\"}}", "key \"http.listen\"", NULL},
        {"{\"time\": {\"mode\": \"replay\"}}", "key \"time.mode\": expected one of \"event\"",
         "got \"replay\""},
        {"{\"validation\": {\"min_timestamp\": \"2000-01-01\"}}",
         "key \"validation.min_timestamp\": expected an RFC 3339 timestamp", NULL},
        {"{\"validation\": {\"max_event_bytes\": 255}}", "key \"validation.max_event_bytes\"",
         "[256,1048576]"},
        {"{\"validation\": {\"max_future_seconds\": -1}}", "key \"validation.max_future_seconds\"",
         NULL},
        {"{\"state\": {\"history_len\": 0}}", "key \"state.history_len\"", "[1,365]"},
        {"{\"log\": {\"level\": \"verbose\"}}", "key \"log.level\"", "\"debug\""},
        {"{\"log\": {\"level\": null}}", "key \"log.level\"", "got null"},
        {"{\"model\": 1}", "key \"model\": expected an object", NULL},
        {"[1]", "top level must be a JSON object", NULL},
        {"{\"kafka\": {\"brokers\": \"" /* 256 bytes */
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}",
         "key \"kafka.brokers\": longer than 255 bytes", NULL},
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(conf, required_keys_and_cross_checks) {
    static const err_case_t cases[] = {
        {"{}", "missing required key \"kafka.brokers\"", "CW_KAFKA_BROKERS"},
        {"{\"kafka\": {\"brokers\": \"b:1\"}, \"redis\": {" MIN_REDIS "}}",
         "missing required key \"kafka.input_topic\"", NULL},
        {"{\"kafka\": {" MIN_KAFKA "}}", "missing required key \"redis.url\"", "CW_REDIS_URL"},
        {"{\"kafka\": {" MIN_KAFKA ", \"alert_topic\": \"events\"}, \"redis\": {" MIN_REDIS "}}",
         "key \"kafka.alert_topic\"", "kafka.input_topic"},
        {"{\"kafka\": {" MIN_KAFKA ", \"dlq_topic\": \"account-scores\"}, \"redis\": {" MIN_REDIS
         "}}",
         "key \"kafka.dlq_topic\"", "kafka.score_topic"},
        {"{\"kafka\": {" MIN_KAFKA "}, \"redis\": {" MIN_REDIS "}", "invalid JSON at line 1",
         "premature EOF"},
        {"{\n  \"kafka\": {" MIN_KAFKA "},\n  \"redis\": {" MIN_REDIS "}\n} junk",
         "invalid JSON at line 4", "trailing garbage"},
        {"", "invalid JSON at line 1", NULL},
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(conf, redis_url_syntax) {
    static const struct {
        const char *url;
        int ok;
    } cases[] = {
        {"tcp://127.0.0.1:6379", 1},   {"tcp://redis.internal:1", 1},
        {"tcp://[::1]:6379", 1},       {"unix:///var/run/redis/redis.sock", 1},
        {"tcp://127.0.0.1", 0},        {"tcp://127.0.0.1:0", 0},
        {"tcp://127.0.0.1:65536", 0},  {"tcp://:6379", 0},
        {"tcp://host:63x9", 0},        {"tcp://host:6379/0", 0},
        {"redis://127.0.0.1:6379", 0}, {"127.0.0.1:6379", 0},
        {"unix://relative.sock", 0},   {"unix:///", 0},
        {"tcp://[::1:6379", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[512], err[512] = "";
        snprintf(json, sizeof json, "{\"kafka\": {" MIN_KAFKA "}, \"redis\": {\"url\": \"%s\"}}",
                 cases[i].url);
        cw_conf_t *c = cw_conf_parse(json, err, sizeof err);
        if (cases[i].ok) {
            cr_expect_not_null(c, "%s rejected: %s", cases[i].url, err);
            if (c != NULL) {
                cr_expect_str_eq(c->redis_url, cases[i].url);
            }
        } else {
            cr_expect_null(c, "%s accepted", cases[i].url);
            cr_expect(strstr(err, "key \"redis.url\"") != NULL, "%s: %s", cases[i].url, err);
            cr_expect(strstr(err, "tcp://HOST:PORT") != NULL, "%s: %s", cases[i].url, err);
        }
        cw_conf_destroy(c);
    }
}

Test(conf, env_overrides_win_over_file) {
    char err[512] = "";
    cr_assert_eq(setenv("CW_KAFKA_BROKERS", "envhost:9093", 1), 0);
    cr_assert_eq(setenv("CW_REDIS_URL", "unix:///tmp/r.sock", 1), 0);
    cr_assert_eq(setenv("CW_REDIS_PASSWORD", "from-env", 1), 0);
    cr_assert_eq(setenv("CW_HTTP_LISTEN", "127.0.0.1:0", 1), 0);
    cr_assert_eq(setenv("CW_KAFKA_BATCH_SIZE", "77", 1), 0);
    cr_assert_eq(setenv("CW_TIME_MODE", "wall", 1), 0);
    cr_assert_eq(setenv("CW_VALIDATION_MAX_FUTURE_SECONDS", "5", 1), 0);
    cw_conf_t *c = cw_conf_parse(WITH(", \"http\": {\"listen\": \"0.0.0.0:80\"}"), err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_expect_str_eq(c->kafka_brokers, "envhost:9093");
    cr_expect_str_eq(c->kafka_input_topic, "events"); /* from the file */
    cr_expect_str_eq(c->redis_url, "unix:///tmp/r.sock");
    cr_expect_str_eq(c->redis_password, "from-env");
    cr_expect_str_eq(c->http_listen, "127.0.0.1:0");
    cr_expect_eq(c->kafka_batch_size, 77);
    cr_expect_eq(c->time_mode, CW_TIME_WALL);
    cr_expect_eq(c->max_future_ms, 5000);
    cw_conf_destroy(c);

    /* required keys may come from the environment alone */
    cr_assert_eq(setenv("CW_KAFKA_INPUT_TOPIC", "in", 1), 0);
    c = cw_conf_load(NULL, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_expect_str_eq(c->kafka_input_topic, "in");
    cr_expect_eq(c->model.n_signals, 6);
    cw_conf_destroy(c);

    /* a bad value from the environment names both the key and the variable */
    cr_assert_eq(setenv("CW_REDIS_DB", "abc", 1), 0);
    c = cw_conf_parse(MINIMAL, err, sizeof err);
    cr_expect_null(c);
    cr_expect(strstr(err, "key \"redis.db\"") != NULL, "%s", err);
    cr_expect(strstr(err, "CW_REDIS_DB") != NULL, "%s", err);
    cr_expect(strstr(err, "got \"abc\"") != NULL, "%s", err);
    cw_conf_destroy(c);
}

Test(conf, password_never_in_errstr) {
    static const char *const cases[] = {
        /* wrong type around it, syntax error right after it, bad value elsewhere */
        WITH(", \"redis\": {\"password\": \"hunter2-secret\", \"db\": 99}"),
        "{\"kafka\": {" MIN_KAFKA "}, \"redis\": {" MIN_REDIS
        ", \"password\": \"hunter2-secret\" \"db\": 1}}",
        "{\"kafka\": {" MIN_KAFKA "}, \"redis\": {" MIN_REDIS
        ", \"password\": \"hunter2-secret\", \"db\": 99}}",
        "{\"redis\": {\"password\": \"hunter2-secret\"}}",
        "{\"kafka\": {" MIN_KAFKA "}, \"redis\": {\"url\": \"tcp://:hunter2-secret@h:1\"}}",
        "{\"kafka\": {" MIN_KAFKA ", \"properties\": {\"sasl.password\": \"hunter2-secret\", "
        "\"x\": {}}}, \"redis\": {" MIN_REDIS "}}",
        "{\"redis\": {\"password\": \"hunter2-secret\x01\"}}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        cw_conf_t *c = cw_conf_parse(cases[i], err, sizeof err);
        cr_expect_null(c, "case %zu accepted", i);
        cw_conf_destroy(c);
        cr_expect_neq(err[0], '\0', "case %zu: no message", i);
        cr_expect(strstr(err, "hunter2") == NULL, "case %zu leaks: %s", i, err);
    }
    /* a number where the password goes: the type is named, not the value */
    char err[512] = "";
    cw_conf_t *c = cw_conf_parse("{\"redis\": {\"password\": 31337}}", err, sizeof err);
    cr_expect_null(c);
    cr_expect(strstr(err, "key \"redis.password\"") != NULL, "%s", err);
    cr_expect(strstr(err, "31337") == NULL, "%s", err);
    /* and from the environment */
    cr_assert_eq(setenv("CW_REDIS_PASSWORD",
                        "hunter2-secret-that-is-far-too-long-"
                        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                        1),
                 0);
    c = cw_conf_parse(MINIMAL, err, sizeof err);
    cr_expect_null(c);
    cr_expect(strstr(err, "redis.password") != NULL, "%s", err);
    cr_expect(strstr(err, "hunter2") == NULL, "%s", err);
}

Test(conf, model_errors_named_by_path) {
    static const err_case_t cases[] = {
        {MODEL("\"signals\": [" SIG_OK ", " SIG_OK "]"), "key \"model.signals[1].name\"",
         "duplicate signal name \"a\""},
        {MODEL("\"signals\": [{\"name\": \"t\", \"events\": [\"login\"], \"aggregation\": "
               "\"count\", \"window_days\": 7, \"normalisation\": \"trend\", \"target\": 1, "
               "\"weight\": 1}]"),
         "missing required key \"model.signals[0].baseline_days\"", NULL},
        {MODEL("\"signals\": [" SIG_OK ", {\"name\": \"u\", \"events\": [\"login\", \"usage\"], "
               "\"aggregation\": \"distinct_users\", \"window_days\": 60, \"normalisation\": "
               "\"seats\", \"target\": 0.7, \"weight\": 1}]"),
         "key \"model.signals[1].window_days\"", "at most 52 days"},
        {MODEL("\"signals\": [{\"name\": \"u\", \"events\": \"usage\", \"aggregation\": "
               "\"distinct_features\", \"window_days\": 30, \"baseline_days\": 28, "
               "\"normalisation\": \"trend\", \"target\": 1, \"weight\": 1}]"),
         "key \"model.signals[0].baseline_days\"", "window_days + baseline_days = 58"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"median\", \"window_days\": 7, \"normalisation\": \"target\", \"target\": 5, "
               "\"weight\": 1}]"),
         "key \"model.signals[0].aggregation\"", "got \"median\""},
        {MODEL("\"signals\": [{\"name\": \"A-1\"}]"), "key \"model.signals[0].name\"",
         "[a-z0-9_]+"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": [\"login\", \"logout\"]}]"),
         "key \"model.signals[0].events[1]\"", "unknown event type \"logout\""},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": []}]"),
         "key \"model.signals[0].events\"", NULL},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\"}]"),
         "missing required key \"model.signals[0].aggregation\"", NULL},
        {MODEL("\"signals\": []"), "key \"model.signals\"", "at least one signal"},
        {MODEL("\"signals\": {}"), "key \"model.signals\": expected an array", NULL},
        {MODEL("\"signals\": [3]"), "key \"model.signals[0]\": expected an object", NULL},
        {MODEL("\"bands\": {}"), "missing required key \"model.signals\"", NULL},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 7, \"normalisation\": \"target\", \"target\": 5, "
               "\"weight\": 0}]"),
         "key \"model.signals\"", "weights sum to 0"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 7, \"normalisation\": \"target\", \"target\": 0, "
               "\"weight\": 1}]"),
         "key \"model.signals[0].target\"", "(0,"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 7, \"normalisation\": \"target\", \"weight\": 1}]"),
         "missing required key \"model.signals[0].target\"", NULL},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"nps\", \"aggregation\": "
               "\"mean\", \"window_days\": 7, \"normalisation\": \"range\", \"min\": 5, "
               "\"max\": 5, \"weight\": 1}]"),
         "key \"model.signals[0].max\"", "greater than min"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"nps\", \"aggregation\": "
               "\"mean\", \"window_days\": 7, \"normalisation\": \"range\", \"max\": 5, "
               "\"weight\": 1}]"),
         "missing required key \"model.signals[0].min\"", NULL},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 7, \"normalisation\": \"target\", \"target\": 5, "
               "\"weight\": 1, \"drop_share\": 0.5}]"),
         "key \"model.signals[0].drop_share\"", "only used with normalisation \"trend\""},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 7, \"baseline_days\": 7, \"normalisation\": "
               "\"trend\", \"target\": 1, \"weight\": 1, \"drop_share\": 0.96}]"),
         "key \"model.signals[0].drop_share\"", "[0,0.95]"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"distinct_features\", \"window_days\": 7, \"normalisation\": \"target\", "
               "\"target\": 1, \"weight\": 1}]"),
         "key \"model.signals[0].events\"", "distinct_features"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"feature\": \"x\", "
               "\"aggregation\": \"count\", \"window_days\": 7, \"normalisation\": \"target\", "
               "\"target\": 1, \"weight\": 1}]"),
         "key \"model.signals[0].feature\"", NULL},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"usage\", \"aggregation\": "
               "\"sum\", \"window_days\": 7, \"normalisation\": \"seats\", \"target\": 1, "
               "\"weight\": 1}]"),
         "key \"model.signals[0].normalisation\"", "seats"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"nps\", \"aggregation\": "
               "\"mean\", \"window_days\": 7, \"baseline_days\": 7, \"normalisation\": "
               "\"trend\", \"target\": 1, \"weight\": 1}]"),
         "key \"model.signals[0].normalisation\"", "mean"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 300, \"baseline_days\": 101, \"normalisation\": "
               "\"trend\", \"target\": 1, \"weight\": 1}]"),
         "key \"model.signals[0].baseline_days\"", "exceeds 400"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"events\": \"login\", \"aggregation\": "
               "\"count\", \"window_days\": 0}]"),
         "key \"model.signals[0].window_days\"", "[1,400]"},
        {MODEL("\"signals\": [{\"name\": \"a\", \"direction\": \"sideways\"}]"),
         "key \"model.signals[0].direction\"", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"default\": {\"danger_exit\": 30}}"),
         "key \"model.bands.default.danger_exit\"", "greater than danger_enter (40)"},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"high\": {\"danger_enter\": 70}}"),
         "key \"model.bands.high.danger_enter\": must be less than danger_exit (50)", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"tech\": {\"caution_enter\": 20}}"),
         "key \"model.bands.tech.caution_enter\"", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"low\": {\"caution_exit\": 101}}"),
         "key \"model.bands.low.caution_exit\"", "[0,100]"},
        {MODEL("\"signals\": [" SIG_OK "], \"bands\": {\"high\": 1}"),
         "key \"model.bands.high\": expected an object", NULL},
        {MODEL("\"signals\": [" SIG_OK "], \"tiers\": {\"high_arr\": 100, \"low_arr\": 100}"),
         "key \"model.tiers.high_arr\"", "model.tiers.low_arr"},
        {MODEL("\"signals\": [" SIG_OK "], \"key_features\": [\"a\", \"a\"]"),
         "key \"model.key_features[1]\"", "duplicate"},
        {MODEL("\"signals\": [" SIG_OK "], \"key_features\": [\"1\", \"2\", \"3\", \"4\", \"5\", "
               "\"6\", \"7\", \"8\", \"9\"]"),
         "key \"model.key_features\"", "at most 8"},
        {MODEL("\"signals\": [" SIG_OK "], \"alerts\": {\"cancellation_forces_danger\": 1}"),
         "key \"model.alerts.cancellation_forces_danger\"", "true or false"},
        {MODEL("\"signals\": [" SIG_OK "], \"alerts\": {\"score_drop_share\": 0.99}"),
         "key \"model.alerts.score_drop_share\"", NULL},
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

Test(conf, model_replaces_default_and_omitted_keys_take_defaults) {
    char err[512] = "";
    cw_conf_t *c = cw_conf_parse(
        MODEL("\"signals\": [" SIG_OK ", {\"name\": \"t\", \"events\": \"login\", \"aggregation\": "
              "\"count\", \"window_days\": 14, \"baseline_days\": 100, \"normalisation\": "
              "\"trend\", \"target\": 1, \"weight\": 2, \"min_baseline\": 1, \"drop_share\": "
              "0.3}], \"bands\": {\"low\": {\"danger_enter\": 30}, \"default\": "
              "{\"caution_exit\": 80}}, \"alerts\": {\"cooldown_days\": 0}"),
        err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_expect_eq(c->model.n_signals, 2);
    cr_expect_eq(c->model.signals[1].baseline_days, 100);
    cr_expect_float_eq(c->model.signals[1].drop_share, 0.3, 1e-12);
    cr_expect_eq(c->retention_days, 114);
    /* default applies to every tier, then low overrides one key */
    cr_expect_float_eq(c->model.bands[CW_TIER_HIGH].danger_enter, 40, 1e-12);
    cr_expect_float_eq(c->model.bands[CW_TIER_HIGH].caution_exit, 80, 1e-12);
    cr_expect_float_eq(c->model.bands[CW_TIER_LOW].danger_enter, 30, 1e-12);
    cr_expect_float_eq(c->model.bands[CW_TIER_LOW].caution_exit, 80, 1e-12);
    cr_expect_float_eq(c->model.bands[CW_TIER_TECH].danger_exit, 50, 1e-12);
    cr_expect_eq(c->model.n_key_features, 0);
    cr_expect_eq(c->model.cooldown_days, 0);
    cr_expect_eq(c->model.inactive_days, 14);
    cr_expect_eq(c->model.warmup_days, 30);
    cr_expect_eq(c->model.cancellation_forces_danger, 1);
    cr_expect_float_eq(c->model.tier_high_arr, 5000000, 1e-6);
    cr_expect_eq(c->model.onboarding_days, 30);
    cw_conf_destroy(c);

    /* short windows: retention is still at least 30 days */
    c = cw_conf_parse(MODEL("\"signals\": [" SIG_OK "]"), err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    cr_expect_eq(c->retention_days, 30);
    cw_conf_destroy(c);
}

Test(conf, load_from_file_and_missing_file) {
    char path[] = "/tmp/cw_conf_test_XXXXXX";
    char err[512] = "";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    cr_assert_not_null(f);
    fputs("// churnwatch\n" MINIMAL "\n", f);
    cr_assert_eq(fclose(f), 0);
    cw_conf_t *c = cw_conf_load(path, err, sizeof err);
    cr_expect_not_null(c, "%s", err);
    cw_conf_destroy(c);

    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\n  \"kafka\": {\n    \"brokers\": \"b:1\",\n    oops\n  }\n}\n", f);
    cr_assert_eq(fclose(f), 0);
    c = cw_conf_load(path, err, sizeof err);
    cr_expect_null(c);
    cr_expect(strstr(err, path) != NULL, "%s", err);
    cr_expect(strstr(err, "line 4") != NULL, "%s", err);
    unlink(path);

    c = cw_conf_load(path, err, sizeof err);
    cr_expect_null(c);
    cr_expect(strstr(err, path) != NULL, "%s", err);
    cr_expect(strstr(err, "cannot open") != NULL, "%s", err);

    /* NULL errstr is allowed */
    c = cw_conf_load(path, NULL, 0);
    cr_expect_null(c);
    cw_conf_destroy(NULL);
}

Test(conf, enum_names) {
    static const struct {
        cw_ev_type_t t;
        const char *name;
    } ev[] = {
        {CW_EV_LOGIN, "login"},     {CW_EV_USAGE, "usage"},
        {CW_EV_ACCOUNT, "account"}, {CW_EV_SUPPORT_TICKET, "support_ticket"},
        {CW_EV_NPS, "nps"},         {CW_EV_CANCELLATION, "cancellation_notice"},
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) {
        cr_expect_str_eq(cw_ev_type_name(ev[i].t), ev[i].name);
        cr_expect_eq(cw_ev_type_parse(ev[i].name, strlen(ev[i].name)), ev[i].t);
    }
    cr_expect_eq(cw_ev_type_parse("login", 4), CW_EV_UNKNOWN); /* "logi" */
    cr_expect_eq(cw_ev_type_parse("loginx", 6), CW_EV_UNKNOWN);
    cr_expect_eq(cw_ev_type_parse("usage_x", 5), CW_EV_USAGE); /* length-bounded */
    cr_expect_eq(cw_ev_type_parse("", 0), CW_EV_UNKNOWN);
    cr_expect_eq(cw_ev_type_parse(NULL, 0), CW_EV_UNKNOWN);
    cr_expect_null(cw_ev_type_name((cw_ev_type_t)42));
    cr_expect_str_eq(cw_band_name(CW_BAND_HEALTHY), "healthy");
    cr_expect_str_eq(cw_band_name(CW_BAND_CAUTION), "caution");
    cr_expect_str_eq(cw_band_name(CW_BAND_DANGER), "danger");
    cr_expect_str_eq(cw_tier_name(CW_TIER_HIGH), "high");
    cr_expect_str_eq(cw_tier_name(CW_TIER_LOW), "low");
    cr_expect_str_eq(cw_tier_name(CW_TIER_TECH), "tech");
    cr_expect_str_eq(cw_phase_name(CW_PHASE_ONBOARDING), "onboarding");
    cr_expect_str_eq(cw_phase_name(CW_PHASE_ADOPTION), "adoption");
    cr_expect_str_eq(cw_phase_name(CW_PHASE_RENEWAL), "renewal");
}

Test(conf, docs_and_help_mention_every_key) {
    char *docs = write_docs_string();
    char *help = write_help_string();
    for (size_t i = 0; i < sizeof all_keys / sizeof all_keys[0]; i++) {
        char cell[128];
        snprintf(cell, sizeof cell, "| `%s` |", all_keys[i].key);
        cr_expect(strstr(docs, cell) != NULL, "docs lack a row for %s", all_keys[i].key);
        cr_expect(strstr(help, all_keys[i].key) != NULL, "help lacks %s", all_keys[i].key);
        if (all_keys[i].env != NULL) {
            cr_expect(strstr(docs, all_keys[i].env) != NULL, "docs lack %s", all_keys[i].env);
            cr_expect(strstr(help, all_keys[i].env) != NULL, "help lacks %s", all_keys[i].env);
        }
    }
    for (size_t i = 0; i < sizeof model_doc_keys / sizeof model_doc_keys[0]; i++) {
        char cell[128];
        snprintf(cell, sizeof cell, "| `%s` |", model_doc_keys[i]);
        cr_expect(strstr(docs, cell) != NULL, "docs lack a row for %s", model_doc_keys[i]);
    }
    /* the default model's signals are listed from the embedded file */
    static const char *const sigs[] = {"active_user_rate", "login_trend",  "feature_breadth",
                                       "usage_volume",     "support_load", "nps"};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        char cell[64];
        snprintf(cell, sizeof cell, "| `%s` |", sigs[i]);
        cr_expect(strstr(docs, cell) != NULL, "docs lack signal %s", sigs[i]);
    }
    cr_expect(strstr(docs, "could not be loaded") == NULL);
    free(docs);
    free(help);
}

Test(conf, committed_docs_are_current) {
    static const char tail[] = "tests/unit/test_conf.c";
    char root[1024], path[1100];
    const char *file = __FILE__;
    size_t flen = strlen(file), tlen = strlen(tail);
    cr_assert(flen >= tlen && strcmp(file + flen - tlen, tail) == 0, "__FILE__ = %s", file);
    cr_assert_lt(flen - tlen, sizeof root);
    memcpy(root, file, flen - tlen);
    root[flen - tlen] = '\0';
    snprintf(path, sizeof path, "%sdocs/configuration.md", root[0] ? root : "./");

    char *want = write_docs_string();
    const char *update = getenv("CW_UPDATE_DOCS");
    if (update != NULL && strcmp(update, "1") == 0) {
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "cannot write %s", path);
        cr_assert_eq(fputs(want, f) >= 0, 1);
        cr_assert_eq(fclose(f), 0);
        cr_log_info("wrote %s", path);
    }
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s missing: run CW_UPDATE_DOCS=1 test_conf", path);
    char *have = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&have, &cap, '\0', f);
    fclose(f);
    cr_assert_geq(n, 0);
    cr_expect(strcmp(have, want) == 0, "%s is stale: run CW_UPDATE_DOCS=1 test_conf", path);
    free(have);
    free(want);
}
