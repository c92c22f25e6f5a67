/*
 * test_broker.c — integration tests of `churnwatch broker`, the embedded
 * Kafka-protocol broker, driven as a child process through the harness.
 *
 * They check the contract other tests and the README rely on: the first
 * and only stdout line is 127.0.0.1:PORT; topics are created with the
 * requested partition count (from --topics or from a config file); real
 * clients (librdkafka through the harness, and kcat when installed)
 * round-trip messages with their keys; SIGTERM and SIGINT end it with exit
 * code 0 within 5 s; bad arguments are rejected with exit code 2. One
 * test also drives `churnwatch gen --brokers` against it, since the
 * generator's Kafka output (keyed by account id) feeds the end-to-end tests.
 */
#include "cw_common.h"
#include "cw_harness.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <yajl/yajl_tree.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---- */

/* Number of partitions of topic per the broker's metadata; 0 if absent. */
static int topic_partitions(const char *brokers, const char *topic) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    const struct rd_kafka_metadata *md = NULL;
    int n = 0;

    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    /* all_topics = 1: asking for one topic could auto-create it. */
    cr_assert_eq(rd_kafka_metadata(rk, 1, NULL, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) == 0) {
            n = md->topics[i].partition_cnt;
        }
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return n;
}

/* True when s is exactly "127.0.0.1:PORT\n" with 1 <= PORT <= 65535. */
static int is_loopback_address_line(const char *s) {
    const char *p;
    long port = 0;
    if (strncmp(s, "127.0.0.1:", 10) != 0) {
        return 0;
    }
    p = s + 10;
    if (*p < '1' || *p > '9') {
        return 0;
    }
    while (*p >= '0' && *p <= '9') {
        port = port * 10 + (*p - '0');
        if (port > 65535) {
            return 0;
        }
        p++;
    }
    return p[0] == '\n' && p[1] == '\0';
}

typedef struct spawned {
    pid_t pid;
    char *dir;
    char out[512];
    char err[512];
    char addr[256];
} spawned_t;

/* Spawn `churnwatch broker ARGS...` and wait for its first stdout line. */
static void spawn_broker(spawned_t *s, const char *const *args) {
    const char *argv[16];
    int n = 0;
    argv[n++] = CW_H_BINARY;
    argv[n++] = "broker";
    for (; *args && n < 14; args++) {
        argv[n++] = *args;
    }
    argv[n++] = "--exit-with-parent";
    argv[n] = NULL;
    s->dir = cw_h_tmpdir();
    snprintf(s->out, sizeof(s->out), "%s/out", s->dir);
    snprintf(s->err, sizeof(s->err), "%s/err", s->dir);
    s->pid = cw_h_spawn(argv, s->out, s->err);
    int64_t deadline = cw_time_mono_ms() + 15000;
    for (;;) {
        char *text = cw_h_read_file(s->out, NULL);
        char *nl = text ? strchr(text, '\n') : NULL;
        if (nl) {
            *nl = '\0';
            cw_strlcpy(s->addr, text, sizeof(s->addr));
            free(text);
            return;
        }
        free(text);
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            char *err = cw_h_read_file(s->err, NULL);
            cr_assert_fail("broker exited early: %s", err ? err : "");
        }
        cr_assert_lt(cw_time_mono_ms(), deadline, "no address within 15 s");
        usleep(10000);
    }
}

static void spawned_cleanup(spawned_t *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        cw_h_wait(s->pid, 5000);
    }
    cw_h_rmrf(s->dir);
    free(s->dir);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int kcat_available(void) {
    const char *path = getenv("PATH");
    char buf[4096];
    if (!path) {
        return 0;
    }
    cw_strlcpy(buf, path, sizeof(buf));
    for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir;
         dir = strtok_r(NULL, ":", &save)) {
        char exe[4200];
        snprintf(exe, sizeof(exe), "%s/kcat", dir);
        if (access(exe, X_OK) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- tests ---- */

Test(broker, produce_and_consume_1000_keyed_messages, .timeout = 120) {
    cw_h_broker_t *b = cw_h_broker_start(6, "t-in,t-out");
    const char *addr = cw_h_broker_bootstraps(b);
    char *dir = cw_h_tmpdir();
    char path[512];
    enum { N = 1000 };
    char **want = calloc(N, sizeof(char *));
    cr_assert_not_null(want);

    /* 1000 JSON lines; every 50th has no account_id and goes unkeyed. */
    snprintf(path, sizeof(path), "%s/in.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < N; i++) {
        char line[256], key[32] = "";
        if (i % 50 == 49) {
            snprintf(line, sizeof(line), "{\"event_id\":\"e-%d\",\"type\":\"login\"}", i);
        } else {
            snprintf(key, sizeof(key), "acct-%05d", (i * 7) % 53);
            snprintf(line, sizeof(line),
                     "{\"event_id\":\"e-%d\",\"type\":\"login\",\"account_id\":\"%s\"}", i, key);
        }
        fprintf(f, "%s\n", line);
        size_t need = strlen(key) + strlen(line) + 2;
        want[i] = malloc(need);
        snprintf(want[i], need, "%s|%s", key, line);
    }
    cr_assert_eq(fclose(f), 0);

    cr_assert_eq(cw_h_produce_file(addr, "t-in", path), (size_t)N);
    size_t n = 0;
    cw_h_msg_t *m = cw_h_consume_all(addr, "t-in", N, 300, 60000, &n);
    cr_assert_eq(n, (size_t)N, "consumed %zu of %d", n, N);

    /* Same (key, value) multiset; one partition per key; dense offsets. */
    char **got = calloc(N, sizeof(char *));
    int64_t next_offset[6] = {0};
    int key_part[53];
    int parts_used = 0;
    cr_assert_not_null(got);
    for (int k = 0; k < 53; k++) {
        key_part[k] = -1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t need = m[i].key_len + m[i].value_len + 2;
        got[i] = malloc(need);
        snprintf(got[i], need, "%s|%s", m[i].key ? m[i].key : "", m[i].value);
        cr_assert(m[i].partition >= 0 && m[i].partition < 6);
        cr_expect_eq(m[i].offset, next_offset[m[i].partition], "offsets are dense per partition");
        next_offset[m[i].partition] = m[i].offset + 1;
        if (m[i].key) {
            int k = atoi(m[i].key + 5);
            cr_assert(k >= 0 && k < 53);
            cr_expect(key_part[k] < 0 || key_part[k] == m[i].partition,
                      "key %s seen on partitions %d and %d", m[i].key, key_part[k], m[i].partition);
            key_part[k] = m[i].partition;
        }
    }
    for (int p = 0; p < 6; p++) {
        parts_used += next_offset[p] > 0;
    }
    cr_expect_geq(parts_used, 4, "53 keys should spread over most of 6 partitions");
    qsort(want, N, sizeof(char *), cmp_str);
    qsort(got, N, sizeof(char *), cmp_str);
    for (int i = 0; i < N; i++) {
        cr_assert_str_eq(got[i], want[i]);
        free(got[i]);
        free(want[i]);
    }
    free(got);
    free(want);
    cw_h_msgs_free(m, n);
    cr_expect_eq(topic_partitions(addr, "t-out"), 6);
    cw_h_broker_stop(b);
    cw_h_rmrf(dir);
    free(dir);
}

Test(broker, creates_topics_with_requested_partitions, .timeout = 120) {
    static const struct {
        int partitions;
        const char *csv;
        const char *topics[4];
    } cases[] = {
        {1, "a", {"a"}},
        {3, "x,y,z,x", {"x", "y", "z"}},
        {12, "one.two_three-4", {"one.two_three-4"}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        cw_h_broker_t *b = cw_h_broker_start(cases[c].partitions, cases[c].csv);
        for (int t = 0; t < 4 && cases[c].topics[t]; t++) {
            cr_expect_eq(topic_partitions(cw_h_broker_bootstraps(b), cases[c].topics[t]),
                         cases[c].partitions, "case %zu topic %s", c, cases[c].topics[t]);
        }
        cw_h_broker_stop(b);
    }
}

Test(broker, kcat_round_trip, .timeout = 120) {
    if (!kcat_available()) {
        cr_skip_test("kcat is not on PATH");
    }
    cw_h_broker_t *b = cw_h_broker_start(3, "kc-in,kc-out");
    const char *addr = cw_h_broker_bootstraps(b);
    char *dir = cw_h_tmpdir();
    char path[512], text[64];
    enum { N = 200 };

    /* kcat produces "key:value" lines; the harness consumer reads them. */
    snprintf(path, sizeof(path), "%s/kv.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < N; i++) {
        fprintf(f, "k%d:v%d\n", i, i);
    }
    cr_assert_eq(fclose(f), 0);
    const char *prod[] = {"kcat", "-b", addr, "-P", "-t", "kc-in", "-K:", "-l", path, NULL};
    cr_assert_eq(cw_h_run(prod, 30000, NULL, NULL), 0, "kcat -P failed");
    size_t n = 0;
    cw_h_msg_t *m = cw_h_consume_all(addr, "kc-in", N, 300, 60000, &n);
    cr_assert_eq(n, (size_t)N);
    int seen[N] = {0};
    for (size_t i = 0; i < n; i++) {
        cr_assert_not_null(m[i].key);
        int k = atoi(m[i].key + 1);
        cr_assert(k >= 0 && k < N);
        snprintf(text, sizeof(text), "v%d", k);
        cr_expect_str_eq(m[i].value, text);
        seen[k]++;
    }
    for (int i = 0; i < N; i++) {
        cr_expect_eq(seen[i], 1, "k%d seen %d times", i, seen[i]);
    }
    cw_h_msgs_free(m, n);

    /* The harness produces; kcat consumes with keys. */
    snprintf(path, sizeof(path), "%s/ev.jsonl", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < N; i++) {
        fprintf(f, "{\"account_id\":\"acct-%d\",\"n\":%d}\n", i % 10, i);
    }
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(cw_h_produce_file(addr, "kc-out", path), (size_t)N);
    const char *cons[] = {"kcat",      "-b", addr, "-C", "-t",       "kc-out", "-o",
                          "beginning", "-e", "-q", "-f", "%k\t%s\n", NULL};
    char *out = NULL;
    size_t out_len = 0;
    cr_assert_eq(cw_h_run(cons, 30000, &out, &out_len), 0, "kcat -C failed");
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int key = -1, num = -1;
        cr_assert_eq(sscanf(l, "acct-%d\t{\"account_id\":\"acct-%*d\",\"n\":%d}", &key, &num), 2,
                     "line '%s'", l);
        cr_expect_eq(key, num % 10);
        lines++;
    }
    cr_expect_eq(lines, N);
    free(out);
    cw_h_broker_stop(b);
    cw_h_rmrf(dir);
    free(dir);
}

Test(broker, config_file_topics, .timeout = 60) {
    char *dir = cw_h_tmpdir();
    char cfg[512];
    spawned_t s = {0};
    snprintf(cfg, sizeof(cfg), "%s/cw.json", dir);
    cr_assert_eq(cw_h_write_file(cfg, "/* broker test */\n"
                                      "{\n"
                                      "  \"kafka\": {\n"
                                      "    \"brokers\": \"127.0.0.1:9\",\n"
                                      "    \"group_id\": \"cw-test\",\n"
                                      "    \"input_topic\": \"cfg-events\",\n"
                                      "    \"alert_topic\": \"cfg-alerts\",\n"
                                      "    \"score_topic\": \"cfg-scores\",\n"
                                      "    \"dlq_topic\": \"cfg-dlq\"\n"
                                      "  },\n"
                                      "  \"redis\": {\n"
                                      "    \"url\": \"unix:///tmp/cw-none.sock\",\n"
                                      "    \"key_prefix\": \"cw\"\n"
                                      "  }\n"
                                      "}\n"),
                 0);
    const char *args[] = {"--config", cfg, "--partitions", "3", "--topics", "extra", NULL};
    spawn_broker(&s, args);
    static const char *const topics[] = {"cfg-events", "cfg-alerts", "cfg-scores", "cfg-dlq",
                                         "extra"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        cr_expect_eq(topic_partitions(s.addr, topics[i]), 3, "topic %s", topics[i]);
    }
    kill(s.pid, SIGTERM);
    cr_expect_eq(cw_h_wait(s.pid, 5000), 0);
    s.pid = -1;
    spawned_cleanup(&s);
    cw_h_rmrf(dir);
    free(dir);
}

Test(broker, signal_exits_zero_within_5s_and_stdout_is_one_address_line, .timeout = 60) {
    static const int sigs[] = {SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        spawned_t s = {0};
        const char *args[] = {"--partitions", "2", "--topics", "sig", NULL};
        spawn_broker(&s, args);
        cr_expect_gt(topic_partitions(s.addr, "sig"), 0, "broker serves before the signal");
        int64_t t0 = cw_time_mono_ms();
        kill(s.pid, sigs[i]);
        int code = cw_h_wait(s.pid, 5000);
        int64_t took = cw_time_mono_ms() - t0;
        s.pid = -1;
        cr_expect_eq(code, 0, "signal %d: exit code %d (-1 = still running after 5 s)", sigs[i],
                     code);
        cr_expect_lt(took, 5000);
        char *out = cw_h_read_file(s.out, NULL);
        cr_assert_not_null(out);
        cr_expect(is_loopback_address_line(out), "stdout must be exactly '127.0.0.1:PORT\\n': '%s'",
                  out);
        free(out);
        spawned_cleanup(&s);
    }
}

Test(broker, usage_errors_exit_2, .timeout = 60) {
    static const struct {
        const char *args[4];
        int code;
    } cases[] = {
        {{"--partitions", "0", NULL}, 2}, {{"--partitions", "6x", NULL}, 2},
        {{"--partitions", NULL}, 2},      {{"--topics", "bad topic", NULL}, 2},
        {{"--topics", "a,,b", NULL}, 2},  {{"--config", "/nonexistent/cw.json", NULL}, 2},
        {{"--port", "9092", NULL}, 2},    {{"--help", NULL}, 0},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const char *argv[8] = {CW_H_BINARY, "broker"};
        int n = 2;
        for (int k = 0; cases[c].args[k]; k++) {
            argv[n++] = cases[c].args[k];
        }
        argv[n] = NULL;
        char *out = NULL;
        int code = cw_h_run(argv, 10000, &out, NULL);
        cr_expect_eq(code, cases[c].code, "case %zu (%s): exit %d", c, cases[c].args[0], code);
        if (cases[c].code == 0) {
            cr_expect(strstr(out, "usage: churnwatch broker") != NULL);
        } else {
            cr_expect_str_empty(out, "nothing on stdout on error");
        }
        free(out);
    }
}

Test(broker, gen_produces_every_line_keyed_by_account, .timeout = 120) {
    cw_h_broker_t *b = cw_h_broker_start(4, "gen-events");
    const char *addr = cw_h_broker_bootstraps(b);
    char *dir = cw_h_tmpdir();
    char truth[512];
    snprintf(truth, sizeof(truth), "%s/truth.jsonl", dir);
    const char *argv[] = {
        CW_H_BINARY, "gen",        "--seed",  "3",          "--accounts",        "40",
        "--days",    "5",          "--end",   "2026-06-01", "--brokers",         addr,
        "--topic",   "gen-events", "--truth", truth,        "--malformed-share", "0.05",
        NULL};
    char *out = NULL;
    cr_assert_eq(cw_h_run(argv, 60000, &out, NULL), 0, "gen --brokers failed");
    cr_expect_str_empty(out, "with --brokers and no --out nothing goes to stdout");
    free(out);

    /* The summary is the truth file's last line. */
    char *text = cw_h_read_file(truth, NULL);
    cr_assert_not_null(text);
    char *last = strstr(text, "{\"summary\"");
    cr_assert_not_null(last);
    char err[256];
    yajl_val root = yajl_tree_parse(last, err, sizeof(err));
    cr_assert_not_null(root, "summary: %s", err);
    const char *lp[] = {"summary", "lines", NULL};
    const char *mp[] = {"summary", "malformed", "missing_account_id", NULL};
    const char *dp[] = {"summary", "kafka", "delivered", NULL};
    yajl_val lines = yajl_tree_get(root, lp, yajl_t_number);
    yajl_val unkeyed = yajl_tree_get(root, mp, yajl_t_number);
    yajl_val delivered = yajl_tree_get(root, dp, yajl_t_number);
    cr_assert(lines && unkeyed && delivered);
    size_t want = (size_t)YAJL_GET_INTEGER(lines);
    size_t want_unkeyed = (size_t)YAJL_GET_INTEGER(unkeyed);
    cr_expect_eq((size_t)YAJL_GET_INTEGER(delivered), want);
    yajl_tree_free(root);
    free(text);
    cr_assert_gt(want, 500u);
    cr_assert_gt(want_unkeyed, 0u);

    size_t n = 0, n_unkeyed = 0;
    cw_h_msg_t *m = cw_h_consume_all(addr, "gen-events", want, 300, 60000, &n);
    cr_expect_eq(n, want, "consumed %zu of %zu", n, want);
    for (size_t i = 0; i < n; i++) {
        if (!m[i].key) {
            n_unkeyed++;
            cr_expect(strstr(m[i].value, "\"account_id\"") == NULL, "unkeyed: %s", m[i].value);
            continue;
        }
        char needle[200];
        snprintf(needle, sizeof(needle), "\"account_id\":\"%s\"", m[i].key);
        cr_expect(strstr(m[i].value, needle) != NULL, "key %s matches the line", m[i].key);
    }
    cr_expect_eq(n_unkeyed, want_unkeyed);
    cw_h_msgs_free(m, n);
    cw_h_broker_stop(b);
    cw_h_rmrf(dir);
    free(dir);
}
