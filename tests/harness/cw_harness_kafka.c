/*
 * cw_harness_kafka.c — the Kafka side of the integration-test harness (see
 * cw_harness.h): the embedded broker as a child process, producing a
 * JSON-lines file keyed by account id, and reading a topic back.
 *
 * The broker is `churnwatch broker --exit-with-parent`, so a crashed test
 * worker does not leave brokers running; its stdout goes to a file in a
 * fresh temp dir that we poll for the first line (the bootstrap address),
 * and its stderr to another file that is printed when something goes
 * wrong. Consumption uses explicit partition assignment from the beginning
 * (no consumer-group rebalance to wait for) and partition-EOF events, so a
 * read is "complete" when every partition is at its end and nothing new
 * arrived for idle_ms.
 */
#include "cw_common.h"
#include "cw_harness.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <yajl/yajl_tree.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CW_H_BROKER_START_MS 15000
#define CW_H_BROKER_STOP_MS 10000

struct cw_h_broker {
    pid_t pid; /* the broker child; -1 once reaped */
    char *dir; /* temp dir holding its stdout/stderr (heap) */
    char out_path[512];
    char err_path[512];
    char bootstraps[256]; /* "127.0.0.1:PORT" */
};

static void cw_h_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Print a child's stderr file to ours (for diagnosis of a failure). */
static void cw_h_dump(const char *what, const char *path) {
    char *text = cw_h_read_file(path, NULL);
    fprintf(stderr, "---- %s (%s) ----\n%s\n---- end ----\n", what, path, text ? text : "(none)");
    free(text);
}

cw_h_broker_t *cw_h_broker_start(int partitions, const char *topics_csv) {
    cw_h_broker_t *b = calloc(1, sizeof(*b));
    char parts[32];
    const char *argv[10];
    int n = 0;
    int64_t deadline;

    cr_assert_not_null(b);
    b->dir = cw_h_tmpdir();
    snprintf(b->out_path, sizeof(b->out_path), "%s/broker.out", b->dir);
    snprintf(b->err_path, sizeof(b->err_path), "%s/broker.err", b->dir);
    snprintf(parts, sizeof(parts), "%d", partitions);
    argv[n++] = CW_H_BINARY;
    argv[n++] = "broker";
    argv[n++] = "--partitions";
    argv[n++] = parts;
    if (topics_csv && topics_csv[0]) {
        argv[n++] = "--topics";
        argv[n++] = topics_csv;
    }
    argv[n++] = "--exit-with-parent";
    argv[n] = NULL;
    b->pid = cw_h_spawn(argv, b->out_path, b->err_path);

    deadline = cw_time_mono_ms() + CW_H_BROKER_START_MS;
    for (;;) {
        char *text = cw_h_read_file(b->out_path, NULL);
        char *nl = text ? strchr(text, '\n') : NULL;
        int status;
        if (nl) {
            *nl = '\0';
            cw_strlcpy(b->bootstraps, text, sizeof(b->bootstraps));
            free(text);
            break;
        }
        free(text);
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = -1;
            cw_h_dump("broker stderr", b->err_path);
            cr_assert_fail("broker exited before printing its address");
        }
        if (cw_time_mono_ms() > deadline) {
            cw_h_dump("broker stderr", b->err_path);
            cr_assert_fail("broker printed no address within %d ms", CW_H_BROKER_START_MS);
        }
        cw_h_sleep_ms(10);
    }
    cr_assert(strncmp(b->bootstraps, "127.0.0.1:", 10) == 0, "unexpected broker address '%s'",
              b->bootstraps);
    return b;
}

const char *cw_h_broker_bootstraps(const cw_h_broker_t *b) {
    return b->bootstraps;
}

void cw_h_broker_stop(cw_h_broker_t *b) {
    if (!b) {
        return;
    }
    if (b->pid > 0) {
        kill(b->pid, SIGTERM);
        int code = cw_h_wait(b->pid, CW_H_BROKER_STOP_MS);
        if (code != 0) {
            cw_h_dump("broker stderr", b->err_path);
        }
        cr_expect_eq(code, 0, "broker exited with %d after SIGTERM (-1 = timeout)", code);
        b->pid = -1;
    }
    cw_h_rmrf(b->dir);
    free(b->dir);
    free(b);
}

/* ---- producing ---- */

typedef struct cw_h_dr {
    size_t delivered;
    size_t failed;
    rd_kafka_resp_err_t first_err;
} cw_h_dr_t;

static void cw_h_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    cw_h_dr_t *dr = opaque;
    (void)rk;
    if (m->err) {
        if (dr->failed++ == 0) {
            dr->first_err = m->err;
        }
    } else {
        dr->delivered++;
    }
}

static void cw_h_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    CW_LOG(level <= 3   ? CW_LOG_ERROR
           : level == 4 ? CW_LOG_WARN
                        : CW_LOG_DEBUG,
           "harness", "rdkafka %s: %s", fac, buf);
}

static rd_kafka_conf_t *cw_h_conf(const char *const props[][2], size_t n) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK, "%s: %s", props[i][0], errstr);
    }
    rd_kafka_conf_set_log_cb(conf, cw_h_log_cb);
    return conf;
}

/* The "account_id" string of a JSON line (NUL-terminated line of len
 * bytes) into key; returns its length, or -1 when there is none. Valid
 * JSON is read with yajl; text that does not parse (a malformed test
 * line) is scanned for "account_id": "..." without escapes. */
static int cw_h_line_key(const char *line, char *key, size_t key_size) {
    char errbuf[128];
    yajl_val root = yajl_tree_parse(line, errbuf, sizeof(errbuf));
    if (root) {
        static const char *path[] = {"account_id", NULL};
        yajl_val v = YAJL_IS_OBJECT(root) ? yajl_tree_get(root, path, yajl_t_string) : NULL;
        int len = -1;
        if (v && strlen(v->u.string) < key_size) {
            cw_strlcpy(key, v->u.string, key_size);
            len = (int)strlen(key);
        }
        yajl_tree_free(root);
        return len;
    }
    const char *p = strstr(line, "\"account_id\"");
    if (!p) {
        return -1;
    }
    p += strlen("\"account_id\"");
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p++ != ':') {
        return -1;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p++ != '"') {
        return -1;
    }
    const char *end = strchr(p, '"');
    if (!end || memchr(p, '\\', (size_t)(end - p)) || (size_t)(end - p) >= key_size) {
        return -1;
    }
    memcpy(key, p, (size_t)(end - p));
    key[end - p] = '\0';
    return (int)(end - p);
}

size_t cw_h_produce_file(const char *brokers, const char *topic, const char *path) {
    return cw_h_produce_file_spread(brokers, topic, path, 0);
}

size_t cw_h_produce_file_spread(const char *brokers, const char *topic, const char *path,
                                int partitions) {
    const char *const props[][2] = {{"bootstrap.servers", brokers},
                                    {"linger.ms", "5"},
                                    {"message.max.bytes", "2000000"},
                                    {"queue.buffering.max.messages", "1000000"}};
    rd_kafka_conf_t *conf = cw_h_conf(props, sizeof(props) / sizeof(props[0]));
    cw_h_dr_t dr = {0, 0, RD_KAFKA_RESP_ERR_NO_ERROR};
    char errstr[512];
    char key[256];
    char *line = NULL;
    size_t cap = 0, produced = 0;
    ssize_t len;
    FILE *f = fopen(path, "r");

    cr_assert_not_null(f, "cannot open %s: %s", path, strerror(errno));
    rd_kafka_conf_set_dr_msg_cb(conf, cw_h_dr_cb);
    rd_kafka_conf_set_opaque(conf, &dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "producer: %s", errstr);
    conf = NULL; /* owned by rk */

    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        if (len == 0) {
            continue;
        }
        int klen = cw_h_line_key(line, key, sizeof(key));
        const char *kp = klen >= 0 ? key : NULL; /* no account_id: no key */
        size_t kl = klen >= 0 ? (size_t)klen : 0;
        for (;;) {
            int32_t part =
                partitions > 0 ? (int32_t)(produced % (size_t)partitions) : RD_KAFKA_PARTITION_UA;
            rd_kafka_resp_err_t err =
                rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_KEY(kp, kl), RD_KAFKA_V_VALUE(line, (size_t)len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 50);
                continue;
            }
            cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
            break;
        }
        produced++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    fclose(f);

    rd_kafka_flush(rk, 30000);
    int left = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    cr_assert_eq(left, 0, "%d messages undelivered after 30 s", left);
    cr_assert_eq(dr.failed, 0, "%zu deliveries failed, first: %s", dr.failed,
                 rd_kafka_err2str(dr.first_err));
    cr_assert_eq(dr.delivered, produced, "delivered %zu of %zu", dr.delivered, produced);
    return produced;
}

/* ---- consuming ---- */

cw_h_msg_t *cw_h_consume_all(const char *brokers, const char *topic, size_t min_count, int idle_ms,
                             int timeout_ms, size_t *n_out) {
    static unsigned group_seq = 0;
    char group[128];
    char errstr[512];
    snprintf(group, sizeof(group), "cw-harness-%d-%u-%lld", (int)getpid(), group_seq++,
             (long long)cw_time_now_ms());
    const char *const props[][2] = {
        {"bootstrap.servers", brokers},        {"group.id", group},
        {"enable.partition.eof", "true"},      {"auto.offset.reset", "earliest"},
        {"enable.auto.commit", "false"},       {"fetch.wait.max.ms", "50"},
        {"fetch.message.max.bytes", "2000000"}};
    rd_kafka_conf_t *conf = cw_h_conf(props, sizeof(props) / sizeof(props[0]));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "consumer: %s", errstr);
    conf = NULL; /* owned by rk */

    int64_t start = cw_time_mono_ms();
    int64_t deadline = start + timeout_ms;

    /* Find the partitions; the topic may not exist yet. */
    int n_parts = 0;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    cr_assert_not_null(rkt);
    while (n_parts == 0 && cw_time_mono_ms() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                n_parts = md->topics[0].partition_cnt;
            }
            rd_kafka_metadata_destroy(md);
        }
        if (n_parts == 0) {
            cw_h_sleep_ms(100);
        }
    }
    rd_kafka_topic_destroy(rkt);

    size_t n = 0, cap = 0;
    cw_h_msg_t *msgs = NULL;
    if (n_parts > 0) {
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n_parts);
        for (int p = 0; p < n_parts; p++) {
            rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, parts);
        rd_kafka_topic_partition_list_destroy(parts);
        cr_assert_eq(aerr, RD_KAFKA_RESP_ERR_NO_ERROR, "assign: %s", rd_kafka_err2str(aerr));

        char *eof = calloc((size_t)n_parts, 1);
        int n_eof = 0;
        int64_t last = cw_time_mono_ms();
        cr_assert_not_null(eof);
        for (;;) {
            int64_t now = cw_time_mono_ms();
            if (now >= deadline) {
                break;
            }
            if (n >= min_count && n_eof == n_parts && now - last >= idle_ms) {
                break;
            }
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
            if (!m) {
                continue;
            }
            int p = m->partition;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (p >= 0 && p < n_parts && !eof[p]) {
                    eof[p] = 1;
                    n_eof++;
                }
            } else if (m->err) {
                /* Informational (librdkafka retries by itself). */
                CW_LOG(CW_LOG_DEBUG, "harness", "consume %s: %s", topic,
                       rd_kafka_message_errstr(m));
            } else {
                if (n == cap) {
                    cap = cap ? cap * 2 : 1024;
                    msgs = realloc(msgs, cap * sizeof(*msgs));
                    cr_assert_not_null(msgs);
                }
                cw_h_msg_t *o = &msgs[n++];
                o->key = NULL;
                o->key_len = m->key_len;
                if (m->key) {
                    o->key = malloc(m->key_len + 1);
                    cr_assert_not_null(o->key);
                    memcpy(o->key, m->key, m->key_len);
                    o->key[m->key_len] = '\0';
                }
                o->value_len = m->len;
                o->value = malloc(m->len + 1);
                cr_assert_not_null(o->value);
                if (m->len) {
                    memcpy(o->value, m->payload, m->len);
                }
                o->value[m->len] = '\0';
                o->partition = p;
                o->offset = m->offset;
                if (p >= 0 && p < n_parts && eof[p]) {
                    eof[p] = 0;
                    n_eof--;
                }
                last = cw_time_mono_ms();
            }
            rd_kafka_message_destroy(m);
        }
        free(eof);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    *n_out = n;
    return msgs;
}

void cw_h_msgs_free(cw_h_msg_t *msgs, size_t n) {
    if (!msgs) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(msgs[i].key);
        free(msgs[i].value);
    }
    free(msgs);
}
