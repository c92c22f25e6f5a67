/*
 * consume_rate.c — the raw consume-only rate of a topic, and the offset
 * checks the benchmark relies on (bench/run.sh).
 *
 * Default mode: a fresh consumer group (bench-consume-<pid>-<ms>) subscribes
 * to the topic from the beginning and does nothing but take messages off
 * librdkafka's consumer queue in batches (rd_kafka_consume_batch_queue, the
 * call churnwatch itself uses) and destroy them, until every partition has
 * reported end-of-partition and the expected number of messages was seen.
 * It prints one line of key=value pairs: messages, bytes, the time from
 * process start (cold: handle creation, group join) and from the first
 * message, and the two rates. This is the ceiling a processor on the same
 * broker can reach: churnwatch decodes, coalesces, writes Redis and scores
 * on top of exactly this.
 *
 * --offsets: print the low/high watermarks summed over the topic's
 * partitions and how many partitions lost data (low watermark > 0: the
 * mock cluster's ~5 MB-per-partition retention dropped old messages).
 *
 * --committed GROUP: print the sum of GROUP's committed offsets next to the
 * high watermarks, to check that a processor committed (i.e. finished with)
 * exactly every produced message.
 *
 * Output goes to stdout (one line); diagnostics to stderr. Exit 0 on
 * success, 1 when a check fails (count mismatch, timeout), 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CR_BATCH 10000 /* messages per consume call, as churnwatch's default */
#define CR_MAX_PARTITIONS 4096

typedef struct cr_opts {
    const char *brokers;
    const char *topic;
    long long expect;      /* messages expected (-1: unknown) */
    int timeout_s;         /* give up after this long */
    int offsets;           /* --offsets mode */
    const char *committed; /* --committed GROUP mode */
} cr_opts_t;

static double cr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cr_usage(FILE *out) {
    fputs("usage: consume_rate --brokers B --topic T [--expect N] [--timeout S]\n"
          "       consume_rate --brokers B --topic T --offsets\n"
          "       consume_rate --brokers B --topic T --committed GROUP\n",
          out);
}

static int cr_parse(int argc, char **argv, cr_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->expect = -1;
    o->timeout_s = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--offsets") == 0) {
            o->offsets = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            cr_usage(stdout);
            exit(0);
        }
        if (v == NULL) {
            cr_usage(stderr);
            return -1;
        }
        if (strcmp(a, "--brokers") == 0) {
            o->brokers = v;
        } else if (strcmp(a, "--topic") == 0) {
            o->topic = v;
        } else if (strcmp(a, "--expect") == 0) {
            o->expect = atoll(v);
        } else if (strcmp(a, "--timeout") == 0) {
            o->timeout_s = atoi(v);
        } else if (strcmp(a, "--committed") == 0) {
            o->committed = v;
        } else {
            cr_usage(stderr);
            return -1;
        }
        i++;
    }
    if (o->brokers == NULL || o->topic == NULL) {
        cr_usage(stderr);
        return -1;
    }
    return 0;
}

static rd_kafka_t *cr_consumer_new(const char *brokers, const char *group) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", brokers},
                              {"group.id", group},
                              {"auto.offset.reset", "earliest"},
                              {"enable.auto.commit", "false"},
                              {"enable.partition.eof", "true"},
                              {"client.id", "bench-consume-rate"},
                              /* as churnwatch's consumer (cw_consumer.c) */
                              {"fetch.wait.max.ms", "50"}};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "consume_rate: %s: %s\n", props[i][0], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "consume_rate: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf); /* not taken on failure */
        return NULL;
    }
    conf = NULL; /* owned by rk */
    return rk;
}

/* Number of partitions of topic, or -1. */
static int cr_partition_count(rd_kafka_t *rk, const char *topic) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int n = -1;
    if (rkt == NULL) {
        return -1;
    }
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            n = md->topics[0].partition_cnt;
        }
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    return n;
}

/* --offsets and --committed: sums over the topic's partitions. */
static int cr_offsets(const cr_opts_t *o) {
    char group[128];
    snprintf(group, sizeof(group), "%s", o->committed ? o->committed : "bench-offsets");
    rd_kafka_t *rk = cr_consumer_new(o->brokers, group);
    if (rk == NULL) {
        return 1;
    }
    int np = cr_partition_count(rk, o->topic);
    if (np <= 0) {
        fprintf(stderr, "consume_rate: no metadata for topic %s\n", o->topic);
        rd_kafka_destroy(rk);
        return 1;
    }
    long long low_sum = 0, high_sum = 0, committed_sum = 0;
    int dropped = 0, uncommitted = 0, rc = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, o->topic, p, &lo, &hi, 10000);
        if (err) {
            fprintf(stderr, "consume_rate: watermarks of %s [%d]: %s\n", o->topic, p,
                    rd_kafka_err2str(err));
            rc = 1;
            continue;
        }
        low_sum += lo;
        high_sum += hi;
        dropped += lo > 0;
        rd_kafka_topic_partition_list_add(l, o->topic, p);
    }
    if (o->committed != NULL) {
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, 10000);
        if (err) {
            fprintf(stderr, "consume_rate: committed offsets of %s: %s\n", o->committed,
                    rd_kafka_err2str(err));
            rc = 1;
        } else {
            for (int i = 0; i < l->cnt; i++) {
                if (l->elems[i].offset >= 0) {
                    committed_sum += l->elems[i].offset;
                } else {
                    uncommitted++;
                }
            }
        }
        printf("partitions=%d high_sum=%lld committed_sum=%lld uncommitted_partitions=%d\n", np,
               high_sum, committed_sum, uncommitted);
    } else {
        printf("partitions=%d low_sum=%lld high_sum=%lld partitions_with_dropped_data=%d\n", np,
               low_sum, high_sum, dropped);
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}

/* Default mode: consume everything once, as fast as the client can. */
static int cr_consume(const cr_opts_t *o) {
    char group[128];
    static unsigned char eof[CR_MAX_PARTITIONS];
    rd_kafka_message_t **msgs = calloc(CR_BATCH, sizeof(*msgs));
    double t0 = cr_now(), t_first = 0, t_last = 0;
    long long n = 0, bytes = 0;
    int np, n_eof = 0, rc = 0;

    if (msgs == NULL) {
        return 1;
    }
    snprintf(group, sizeof(group), "bench-consume-%ld-%lld", (long)getpid(),
             (long long)(t0 * 1000));
    rd_kafka_t *rk = cr_consumer_new(o->brokers, group);
    if (rk == NULL) {
        free(msgs);
        return 1;
    }
    np = cr_partition_count(rk, o->topic);
    if (np <= 0 || np > CR_MAX_PARTITIONS) {
        fprintf(stderr, "consume_rate: topic %s: bad partition count %d\n", o->topic, np);
        rd_kafka_destroy(rk);
        free(msgs);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, o->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        fprintf(stderr, "consume_rate: subscribe: %s\n", rd_kafka_err2str(err));
        rc = 1;
    }
    while (rc == 0 && (n_eof < np || (o->expect >= 0 && n < o->expect))) {
        ssize_t k = rd_kafka_consume_batch_queue(q, 100, msgs, CR_BATCH);
        int got_data = 0;
        if (cr_now() - t0 > o->timeout_s) {
            fprintf(stderr, "consume_rate: timeout after %d s (%lld messages)\n", o->timeout_s, n);
            rc = 1;
        }
        for (ssize_t i = 0; i < k; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (m->partition >= 0 && m->partition < np && !eof[m->partition]) {
                    eof[m->partition] = 1;
                    n_eof++;
                }
            } else if (m->err) {
                fprintf(stderr, "consume_rate: %s\n", rd_kafka_message_errstr(m));
            } else {
                if (n == 0) {
                    t_first = cr_now();
                }
                n++;
                got_data = 1;
                bytes += (long long)m->len;
                if (m->partition >= 0 && m->partition < np && eof[m->partition]) {
                    eof[m->partition] = 0; /* more data arrived after an EOF */
                    n_eof--;
                }
            }
            rd_kafka_message_destroy(m);
        }
        if (got_data) {
            t_last = cr_now(); /* end = the last message taken, not the EOF after it */
        }
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(msgs);
    if (o->expect >= 0 && n != o->expect) {
        fprintf(stderr, "consume_rate: consumed %lld messages, expected %lld\n", n, o->expect);
        rc = 1;
    }
    double cold = t_last - t0, warm = t_last - t_first;
    printf("messages=%lld bytes=%lld seconds_cold=%.3f seconds_from_first=%.3f "
           "rate_cold=%.0f rate_from_first=%.0f\n",
           n, bytes, cold, warm, cold > 0 ? (double)n / cold : 0.0,
           warm > 0 ? (double)n / warm : 0.0);
    return rc;
}

int main(int argc, char **argv) {
    cr_opts_t o;
    if (cr_parse(argc, argv, &o) != 0) {
        return 2;
    }
    if (o.offsets || o.committed != NULL) {
        return cr_offsets(&o);
    }
    return cr_consume(&o);
}
