/*
 * cw_broker.c — `churnwatch broker`, the embedded Kafka-protocol broker for
 * development, demos and tests.
 *
 * librdkafka's mock cluster (rdkafka_mock.h) runs inside an rd_kafka_t
 * handle: rd_kafka_mock_cluster_new() starts a thread serving the Kafka
 * protocol on a loopback listener (librdkafka 2.0.2 binds 127.0.0.1 on a
 * port the kernel picks; its API offers no way to choose the port, so this
 * command offers no --port). We create one producer handle only to own the
 * cluster, create the requested topics with the requested partition count,
 * print the bootstrap address as the only line of standard output (so a
 * script or test harness can read it), and then sleep until SIGTERM or
 * SIGINT. Everything else — including librdkafka's own log lines, routed
 * through the log callback — goes to standard error as JSON lines.
 *
 * The mock cluster keeps its log in memory (librdkafka caps each partition
 * at about 5 MB and drops the oldest segments), supports producers,
 * idempotent/transactional producers, consumer groups and offset commits,
 * and auto-creates unknown topics; that is enough for the real churnwatch
 * consumer and for kcat.
 *
 * `--exit-with-parent` makes the broker shut down when the process that
 * started it goes away, so a crashed test does not leave brokers behind.
 */
#include "cw_broker.h"

#include "cw_common.h"
#include "cw_conf.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BROKER_COMP "broker"
#define BROKER_MAX_TOPICS 64
#define BROKER_TOPIC_MAX 249 /* Kafka's topic name limit */
#define BROKER_DEFAULT_PARTITIONS 6
#define BROKER_MAX_PARTITIONS 10000

typedef struct broker_opts {
    int partitions;                                       /* partitions per topic */
    char topics[BROKER_MAX_TOPICS][BROKER_TOPIC_MAX + 1]; /* topic names, deduplicated */
    int n_topics;
    const char *config_path; /* --config, or NULL */
    int exit_with_parent;    /* stop when the parent exits */
} broker_opts_t;

static volatile sig_atomic_t broker_stop_signal = 0;

static void broker_on_signal(int sig) {
    broker_stop_signal = sig;
}

static void broker_usage(FILE *out) {
    fputs("usage: churnwatch broker [--partitions N] [--topics a,b,c] [--config FILE]\n"
          "                         [--exit-with-parent]\n"
          "\n"
          "Runs librdkafka's mock Kafka cluster (one broker) on 127.0.0.1 until SIGTERM\n"
          "or SIGINT. The first and only line on standard output is the bootstrap\n"
          "address, 127.0.0.1:PORT (the port is chosen by the kernel; librdkafka 2.0.2\n"
          "offers no way to pick it). Logs go to standard error as JSON lines.\n"
          "\n"
          "  --partitions N      partitions of every created topic (default 6)\n"
          "  --topics a,b,c      topics to create (comma-separated)\n"
          "  --config FILE       also create the config's kafka.input_topic,\n"
          "                      alert_topic, score_topic and dlq_topic\n"
          "  --exit-with-parent  shut down when the parent process exits (test harnesses)\n"
          "  --help              this text\n"
          "\n"
          "Data lives in memory only: about 5 MB per partition, oldest dropped first.\n"
          "Unknown topics are auto-created on first use.\n",
          out);
}

/* Kafka topic names: 1..249 chars of [a-zA-Z0-9._-], not "." or "..". */
static int broker_topic_valid(const char *t, size_t len) {
    if (len == 0 || len > BROKER_TOPIC_MAX) {
        return 0;
    }
    if ((len == 1 && t[0] == '.') || (len == 2 && t[0] == '.' && t[1] == '.')) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Add one topic (len bytes of t) unless already present. Returns 0, or -1
 * with a logged error. */
static int broker_add_topic(broker_opts_t *o, const char *t, size_t len) {
    if (!broker_topic_valid(t, len)) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "invalid topic name '%.*s' (use 1-249 of [a-zA-Z0-9._-])",
               (int)(len > 300 ? 300 : len), t);
        return -1;
    }
    for (int i = 0; i < o->n_topics; i++) {
        if (strlen(o->topics[i]) == len && memcmp(o->topics[i], t, len) == 0) {
            return 0;
        }
    }
    if (o->n_topics >= BROKER_MAX_TOPICS) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "too many topics (at most %d)", BROKER_MAX_TOPICS);
        return -1;
    }
    memcpy(o->topics[o->n_topics], t, len);
    o->topics[o->n_topics][len] = '\0';
    o->n_topics++;
    return 0;
}

/* Split a comma-separated list; empty items are an error. */
static int broker_add_topic_list(broker_opts_t *o, const char *csv) {
    const char *p = csv;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (broker_add_topic(o, p, len) != 0) {
            return -1;
        }
        if (!comma) {
            return 0;
        }
        p = comma + 1;
    }
}

/* Parse "--name value" or "--name=value" at argv[*i]. Returns 1 and sets
 * *val when argv[*i] is this option, 0 when it is another one, -1 when the
 * value is missing. */
static int broker_opt(int argc, char **argv, int *i, const char *name, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) {
        return 0;
    }
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') {
        return 0;
    }
    if (*i + 1 >= argc) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "option %s needs a value", name);
        return -1;
    }
    (*i)++;
    *val = argv[*i];
    return 1;
}

/* Returns 0 to run, 1 when --help was printed, -1 on a usage error. */
static int broker_parse(int argc, char **argv, broker_opts_t *o) {
    const char *topics_csv = NULL;
    memset(o, 0, sizeof(*o));
    o->partitions = BROKER_DEFAULT_PARTITIONS;

    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        int r;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            broker_usage(stdout);
            return 1;
        }
        if (strcmp(argv[i], "--exit-with-parent") == 0) {
            o->exit_with_parent = 1;
            continue;
        }
        if ((r = broker_opt(argc, argv, &i, "--partitions", &val)) != 0) {
            char *end = NULL;
            long n;
            if (r < 0) {
                return -1;
            }
            errno = 0;
            n = strtol(val, &end, 10);
            if (errno != 0 || end == val || *end != '\0' || n < 1 || n > BROKER_MAX_PARTITIONS) {
                CW_LOG(CW_LOG_ERROR, BROKER_COMP,
                       "--partitions must be an integer in 1..%d, not '%s'", BROKER_MAX_PARTITIONS,
                       val);
                return -1;
            }
            o->partitions = (int)n;
            continue;
        }
        if ((r = broker_opt(argc, argv, &i, "--topics", &val)) != 0) {
            if (r < 0) {
                return -1;
            }
            topics_csv = val;
            continue;
        }
        if ((r = broker_opt(argc, argv, &i, "--config", &val)) != 0) {
            if (r < 0) {
                return -1;
            }
            o->config_path = val;
            continue;
        }
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "unknown argument '%s' (see broker --help)", argv[i]);
        return -1;
    }

    if (o->config_path) {
        char errstr[512];
        cw_conf_t *conf = cw_conf_load(o->config_path, errstr, sizeof(errstr));
        int rc = 0;
        if (!conf) {
            CW_LOG(CW_LOG_ERROR, BROKER_COMP, "config %s: %s", o->config_path, errstr);
            return -1;
        }
        const char *cfg_topics[] = {conf->kafka_input_topic, conf->kafka_alert_topic,
                                    conf->kafka_score_topic, conf->kafka_dlq_topic};
        for (size_t k = 0; k < sizeof(cfg_topics) / sizeof(cfg_topics[0]) && rc == 0; k++) {
            if (cfg_topics[k][0] != '\0') {
                rc = broker_add_topic(o, cfg_topics[k], strlen(cfg_topics[k]));
            }
        }
        cw_conf_destroy(conf);
        if (rc != 0) {
            return -1;
        }
    }
    if (topics_csv && broker_add_topic_list(o, topics_csv) != 0) {
        return -1;
    }
    return 0;
}

/* librdkafka log callback (called from librdkafka threads): syslog levels
 * mapped onto ours. cw_log_write emits each line with one write. */
static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    cw_log_level_t l = level <= 3   ? CW_LOG_ERROR
                       : level == 4 ? CW_LOG_WARN
                       : level <= 6 ? CW_LOG_INFO
                                    : CW_LOG_DEBUG;
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL) {
        l = CW_LOG_DEBUG; /* expected: the owning handle never connects */
    }
    CW_LOG(l, "rdkafka", "%s: %s", fac, buf);
}

int cw_broker_main(int argc, char **argv) {
    broker_opts_t *o = calloc(1, sizeof(*o)); /* ~16 KB of topic names: keep it off the stack */
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    struct sigaction sa, old_term, old_int;
    char errstr[512];
    int rc = 1;
    int pr;
    pid_t parent = getppid();

    if (!o) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "out of memory");
        return 1;
    }
    pr = broker_parse(argc, argv, o);
    if (pr != 0) {
        free(o);
        return pr > 0 ? 0 : 2;
    }

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    /* The handle only owns the cluster; it never connects anywhere (its
     * "no bootstrap.servers" warning is demoted to debug in the log cb). */
    if (rd_kafka_conf_set(conf, "client.id", "churnwatch-broker", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "librdkafka config: %s", errstr);
        rd_kafka_conf_destroy(conf);
        free(o);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "cannot create librdkafka handle: %s", errstr);
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes conf only on success */
        free(o);
        return 1;
    }
    conf = NULL; /* owned by rk now */

    mcluster = rd_kafka_mock_cluster_new(rk, 1);
    if (!mcluster) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "cannot start the mock cluster (see librdkafka log)");
        goto out;
    }
    for (int i = 0; i < o->n_topics; i++) {
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mcluster, o->topics[i], o->partitions, 1);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            CW_LOG(CW_LOG_ERROR, BROKER_COMP, "cannot create topic %s: %s", o->topics[i],
                   rd_kafka_err2str(err));
            goto out;
        }
        CW_LOG(CW_LOG_INFO, BROKER_COMP, "created topic %s with %d partitions", o->topics[i],
               o->partitions);
    }

    /* Handlers go in before the address is announced: whoever reads the
     * address may signal us right away. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = broker_on_signal;
    sigemptyset(&sa.sa_mask);
    broker_stop_signal = 0;
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);

    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
    if (printf("%s\n", bootstraps) < 0 || fflush(stdout) != 0) {
        CW_LOG(CW_LOG_ERROR, BROKER_COMP, "cannot write the bootstrap address to stdout");
    } else {
        CW_LOG(CW_LOG_INFO, BROKER_COMP, "listening on %s (%d topics, %d partitions each)",
               bootstraps, o->n_topics, o->partitions);
        while (!broker_stop_signal) {
            /* Serves any queued events and doubles as the sleep. */
            rd_kafka_poll(rk, 200);
            if (o->exit_with_parent && getppid() != parent) {
                CW_LOG(CW_LOG_INFO, BROKER_COMP, "parent process exited; shutting down");
                break;
            }
        }
        if (broker_stop_signal) {
            CW_LOG(CW_LOG_INFO, BROKER_COMP, "signal %d: shutting down", (int)broker_stop_signal);
        }
        rc = 0;
    }
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);

out:
    /* The cluster must go before the handle that owns it. */
    if (mcluster) {
        rd_kafka_mock_cluster_destroy(mcluster);
    }
    rd_kafka_destroy(rk);
    free(o);
    return rc;
}
