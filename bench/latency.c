/*
 * latency.c — event-to-alert latency of a running churnwatch at a fixed
 * offered load (bench/run.sh, phase "latency").
 *
 * The main thread produces a paced stream to the input topic: --rate events
 * per second in total, checked every 200 us against the elapsed time, so
 * the offered load stays fixed whatever the processor does. Most of it is
 * background traffic (logins 45%, usage 50%, support tickets, NPS answers)
 * for --accounts accounts picked with a Zipf(--zipf) skew, stamped with the
 * wall clock. Among it, --probe-rate times a second, a cancellation_notice
 * for a fresh account ("probe-<pid>-<n>"): churnwatch alerts a cancellation
 * notice at once (reason cancellation_notice), so the alert's arrival on
 * the alert topic minus the probe's send time is the event-to-alert
 * latency: producer queue, broker, the processor's consume batch, Redis
 * apply and commit, the alert producer, broker, our consumer. The send time
 * is taken just before rd_kafka_producev(); the receive time when our
 * consumer thread dequeues the alert (both CLOCK_MONOTONIC, one process).
 *
 * The producer lingers --linger-ms (default 5, librdkafka's own default)
 * to form message sets, and that wait is part of the measured latency.
 * The mock broker finds a fetch's offset by walking the partition's list
 * of message sets (rdkafka_mock.c: "FIXME: Maintain an index") and returns
 * one message set per partition per fetch, so with 1 ms the sets hold one
 * or two events, the broker's CPU grows with the length of its log, and a
 * consumer gets a few events per fetch: the broker, not the processor,
 * then bounds what is consumed. A consumer that keeps up reads at the tail,
 * the end of that walk, so fewer partitions (bench/run.sh uses 8) keep the
 * broker's share down too.
 *
 * Probes of the first --warmup seconds are not counted (group join, Redis
 * script load). After --duration seconds of measurement the producer
 * stops, waits up to 10 s for the outstanding alerts, and prints one line:
 * offered and achieved rates, probes sent/answered, latency percentiles.
 *
 * The alert consumer assigns every partition of the alert topic from the
 * beginning (the topic is fresh) with fetch.wait.max.ms = 2: librdkafka's
 * mock broker holds an empty fetch for the full wait, so a long wait would
 * add itself to the measured latency.
 */
#define _GNU_SOURCE /* memmem */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct lat_opts {
    const char *brokers;
    const char *topic;
    const char *alert_topic;
    double rate;       /* total events/s offered */
    double probe_rate; /* probes/s (part of rate) */
    double duration;   /* measured seconds */
    double warmup;     /* seconds before measuring */
    long accounts;     /* background accounts */
    double zipf;       /* skew of the background accounts */
    uint64_t seed;
    const char *linger_ms; /* the producer's linger.ms */
} lat_opts_t;

typedef struct lat_state {
    lat_opts_t o;
    int64_t *sent_ns; /* per probe: send time (0 = not sent) */
    int64_t *recv_ns; /* per probe: first alert time (0 = none yet) */
    long max_probes;
    long n_probes; /* probes sent so far */
    long answered; /* alerts matched (all probes) */
    long stray;    /* alerts for other accounts or duplicates */
    int stop;      /* consumer thread: stop */
    char probe_prefix[64];
    size_t probe_prefix_len;
} lat_state_t;

static int64_t lat_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t lat_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64* */
static uint64_t lat_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static double lat_unif(uint64_t *s) {
    return (double)(lat_rand(s) >> 11) * 0x1.0p-53;
}

static void lat_usage(FILE *out) {
    fputs("usage: latency --brokers B --topic IN --alert-topic ALERTS [--rate EV/S]\n"
          "               [--probe-rate N/S] [--duration S] [--warmup S] [--accounts N]\n"
          "               [--zipf S] [--seed N] [--linger-ms MS]\n",
          out);
}

static int lat_parse(int argc, char **argv, lat_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->rate = 50000;
    o->probe_rate = 100;
    o->duration = 20;
    o->warmup = 5;
    o->accounts = 100000;
    o->zipf = 0.8;
    o->seed = 42;
    o->linger_ms = "5";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            lat_usage(stdout);
            exit(0);
        }
        if (v == NULL) {
            lat_usage(stderr);
            return -1;
        }
        if (strcmp(a, "--brokers") == 0) {
            o->brokers = v;
        } else if (strcmp(a, "--topic") == 0) {
            o->topic = v;
        } else if (strcmp(a, "--alert-topic") == 0) {
            o->alert_topic = v;
        } else if (strcmp(a, "--rate") == 0) {
            o->rate = atof(v);
        } else if (strcmp(a, "--probe-rate") == 0) {
            o->probe_rate = atof(v);
        } else if (strcmp(a, "--duration") == 0) {
            o->duration = atof(v);
        } else if (strcmp(a, "--warmup") == 0) {
            o->warmup = atof(v);
        } else if (strcmp(a, "--accounts") == 0) {
            o->accounts = atol(v);
        } else if (strcmp(a, "--zipf") == 0) {
            o->zipf = atof(v);
        } else if (strcmp(a, "--seed") == 0) {
            o->seed = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--linger-ms") == 0) {
            o->linger_ms = v;
        } else {
            lat_usage(stderr);
            return -1;
        }
        i++;
    }
    if (o->brokers == NULL || o->topic == NULL || o->alert_topic == NULL || o->rate <= 0 ||
        o->probe_rate <= 0 || o->probe_rate >= o->rate || o->duration <= 0 || o->warmup < 0 ||
        o->accounts < 1) {
        lat_usage(stderr);
        return -1;
    }
    return 0;
}

static rd_kafka_t *lat_client(rd_kafka_type_t type, const char *const (*props)[2], size_t n) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "latency: %s: %s\n", props[i][0], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "latency: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf); /* not taken on failure */
    }
    return rk; /* conf is owned by rk on success */
}

/* ---- the alert consumer thread ---- */

static void lat_on_alert(lat_state_t *st, const rd_kafka_message_t *m, int64_t now) {
    const char *key = m->key;
    size_t pl = st->probe_prefix_len;
    char num[32];
    if (key == NULL || m->key_len <= pl || m->key_len - pl >= sizeof(num) ||
        memcmp(key, st->probe_prefix, pl) != 0) {
        __atomic_add_fetch(&st->stray, 1, __ATOMIC_RELAXED);
        return;
    }
    memcpy(num, key + pl, m->key_len - pl);
    num[m->key_len - pl] = '\0';
    long n = atol(num);
    if (n < 0 || n >= st->max_probes || __atomic_load_n(&st->sent_ns[n], __ATOMIC_ACQUIRE) == 0 ||
        st->recv_ns[n] != 0 || memmem(m->payload, m->len, "\"cancellation_notice\"", 21) == NULL) {
        __atomic_add_fetch(&st->stray, 1, __ATOMIC_RELAXED);
        return;
    }
    st->recv_ns[n] = now;
    __atomic_add_fetch(&st->answered, 1, __ATOMIC_RELEASE);
}

static void *lat_consumer_main(void *arg) {
    lat_state_t *st = arg;
    char group[96];
    snprintf(group, sizeof(group), "bench-latency-%ld", (long)getpid());
    const char *const props[][2] = {
        {"bootstrap.servers", st->o.brokers}, {"group.id", group},
        {"enable.auto.commit", "false"},      {"auto.offset.reset", "earliest"},
        {"fetch.wait.max.ms", "2"},           {"client.id", "bench-latency-alerts"}};
    rd_kafka_t *rk = lat_client(RD_KAFKA_CONSUMER, props, sizeof(props) / sizeof(props[0]));
    if (rk == NULL) {
        return NULL;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, st->o.alert_topic, NULL);
    int np = 0;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            np = md->topics[0].partition_cnt;
        }
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    if (np <= 0) {
        fprintf(stderr, "latency: no partitions for alert topic %s\n", st->o.alert_topic);
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++) {
        rd_kafka_topic_partition_list_add(l, st->o.alert_topic, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    while (!__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        if (m == NULL) {
            continue;
        }
        int64_t now = lat_mono_ns();
        if (m->err == 0) {
            lat_on_alert(st, m, now);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return NULL;
}

/* ---- the paced producer ---- */

static const char *const lat_features[] = {"reports",   "integrations", "dashboards", "export",
                                           "workflows", "api",          "alerts",     "search"};

/* One background event into buf; returns its length; *acct gets the key. */
static int lat_background(const lat_opts_t *o, const double *cdf, uint64_t *rng, uint64_t id,
                          char *buf, size_t size, char *acct, size_t acct_size) {
    double u = lat_unif(rng);
    long lo = 0, hi = o->accounts - 1;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (cdf[mid] > u) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    unsigned a = (unsigned)lo + 1;
    unsigned user = 1 + (unsigned)(lat_rand(rng) % 20);
    double t = lat_unif(rng);
    int64_t ts = lat_wall_ms();
    snprintf(acct, acct_size, "lat-%06u", a);
    if (t < 0.45) {
        return snprintf(buf, size,
                        "{\"event_id\":\"l-%" PRIu64 "\",\"type\":\"login\",\"account_id\":\"%s\","
                        "\"user_id\":\"u-%06u-%u\",\"ts\":%" PRId64 "}",
                        id, acct, a, user, ts);
    }
    if (t < 0.97) {
        return snprintf(buf, size,
                        "{\"event_id\":\"l-%" PRIu64 "\",\"type\":\"usage\",\"account_id\":\"%s\","
                        "\"user_id\":\"u-%06u-%u\",\"ts\":%" PRId64
                        ",\"feature\":\"%s\",\"count\":%u}",
                        id, acct, a, user, ts, lat_features[lat_rand(rng) % 8],
                        1 + (unsigned)(lat_rand(rng) % 10));
    }
    if (t < 0.985) {
        return snprintf(buf, size,
                        "{\"event_id\":\"l-%" PRIu64
                        "\",\"type\":\"support_ticket\",\"account_id\":\"%s\","
                        "\"user_id\":\"u-%06u-%u\",\"ts\":%" PRId64 "}",
                        id, acct, a, user, ts);
    }
    return snprintf(buf, size,
                    "{\"event_id\":\"l-%" PRIu64 "\",\"type\":\"nps\",\"account_id\":\"%s\","
                    "\"user_id\":\"u-%06u-%u\",\"ts\":%" PRId64 ",\"score\":%u}",
                    id, acct, a, user, ts, (unsigned)(lat_rand(rng) % 11));
}

static int lat_produce(rd_kafka_t *rk, const char *topic, const char *key, const char *val,
                       size_t len) {
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            return 0;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "latency: produce: %s\n", rd_kafka_err2str(err));
            return -1;
        }
        rd_kafka_poll(rk, 10);
    }
}

static int lat_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double lat_pct(const int64_t *v, long n, double p) {
    if (n == 0) {
        return NAN;
    }
    long i = (long)ceil(p * (double)n) - 1;
    i = i < 0 ? 0 : i >= n ? n - 1 : i;
    return (double)v[i] / 1e6;
}

int main(int argc, char **argv) {
    lat_state_t st;
    pthread_t thr;
    memset(&st, 0, sizeof(st));
    if (lat_parse(argc, argv, &st.o) != 0) {
        return 2;
    }
    const lat_opts_t *o = &st.o;
    st.max_probes = (long)((o->warmup + o->duration) * o->probe_rate) + 16;
    st.sent_ns = calloc((size_t)st.max_probes, sizeof(*st.sent_ns));
    st.recv_ns = calloc((size_t)st.max_probes, sizeof(*st.recv_ns));
    double *cdf = malloc((size_t)o->accounts * sizeof(*cdf));
    if (st.sent_ns == NULL || st.recv_ns == NULL || cdf == NULL) {
        fprintf(stderr, "latency: out of memory\n");
        return 1;
    }
    snprintf(st.probe_prefix, sizeof(st.probe_prefix), "probe-%ld-", (long)getpid());
    st.probe_prefix_len = strlen(st.probe_prefix);
    {
        double sum = 0;
        for (long k = 0; k < o->accounts; k++) {
            sum += pow((double)(k + 1), -o->zipf);
            cdf[k] = sum;
        }
        for (long k = 0; k < o->accounts; k++) {
            cdf[k] /= sum;
        }
    }

    const char *const props[][2] = {{"bootstrap.servers", o->brokers},
                                    {"linger.ms", o->linger_ms},
                                    {"queue.buffering.max.messages", "1000000"},
                                    {"client.id", "bench-latency-producer"}};
    rd_kafka_t *rk = lat_client(RD_KAFKA_PRODUCER, props, sizeof(props) / sizeof(props[0]));
    if (rk == NULL) {
        return 1;
    }
    if (pthread_create(&thr, NULL, lat_consumer_main, &st) != 0) {
        fprintf(stderr, "latency: cannot start the consumer thread\n");
        return 1;
    }

    uint64_t rng = o->seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
    double bg_rate = o->rate - o->probe_rate;
    double total = o->warmup + o->duration;
    long long bg_sent = 0, bg_measured = 0;
    long first_measured = -1;
    char buf[512], acct[64];
    int rc = 0;
    int64_t t0 = lat_mono_ns(), t_measure = t0 + (int64_t)(o->warmup * 1e9);
    for (;;) {
        int64_t now = lat_mono_ns();
        double el = (double)(now - t0) / 1e9;
        if (el >= total) {
            break;
        }
        long long due_bg = (long long)(el * bg_rate);
        long due_probe = (long)(el * o->probe_rate) + 1;
        while (rc == 0 && st.n_probes < due_probe && st.n_probes < st.max_probes) {
            long n = st.n_probes;
            char id[96];
            snprintf(id, sizeof(id), "%s%ld", st.probe_prefix, n);
            int len = snprintf(buf, sizeof(buf),
                               "{\"event_id\":\"p-%ld-%ld\",\"type\":\"cancellation_notice\","
                               "\"account_id\":\"%s\",\"ts\":%" PRId64 "}",
                               (long)getpid(), n, id, lat_wall_ms());
            int64_t sent = lat_mono_ns();
            if (first_measured < 0 && sent >= t_measure) {
                first_measured = n;
            }
            __atomic_store_n(&st.sent_ns[n], sent, __ATOMIC_RELEASE);
            rc = lat_produce(rk, o->topic, id, buf, (size_t)len);
            st.n_probes++;
        }
        while (rc == 0 && bg_sent < due_bg) {
            int len = lat_background(o, cdf, &rng, (uint64_t)bg_sent, buf, sizeof(buf), acct,
                                     sizeof(acct));
            rc = lat_produce(rk, o->topic, acct, buf, (size_t)len);
            bg_sent++;
            bg_measured += now >= t_measure;
        }
        if (rc != 0) {
            break;
        }
        rd_kafka_poll(rk, 0);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    double produce_s = (double)(lat_mono_ns() - t0) / 1e9;
    rd_kafka_flush(rk, 10000);

    /* wait for the outstanding alerts */
    int64_t deadline = lat_mono_ns() + INT64_C(10000000000);
    while (__atomic_load_n(&st.answered, __ATOMIC_ACQUIRE) < st.n_probes &&
           lat_mono_ns() < deadline) {
        usleep(20000);
    }
    __atomic_store_n(&st.stop, 1, __ATOMIC_RELEASE);
    pthread_join(thr, NULL);
    rd_kafka_destroy(rk);

    long n_meas = 0, n_ans = 0;
    int64_t *lat = calloc((size_t)st.max_probes, sizeof(*lat));
    if (lat == NULL) {
        return 1;
    }
    for (long n = first_measured < 0 ? st.n_probes : first_measured; n < st.n_probes; n++) {
        n_meas++;
        if (st.recv_ns[n] != 0) {
            lat[n_ans++] = st.recv_ns[n] - st.sent_ns[n];
        }
    }
    qsort(lat, (size_t)n_ans, sizeof(*lat), lat_cmp_i64);
    double mean = 0;
    for (long i = 0; i < n_ans; i++) {
        mean += (double)lat[i] / 1e6;
    }
    mean = n_ans ? mean / (double)n_ans : NAN;
    printf("offered_rate=%.0f achieved_rate=%.0f produce_seconds=%.1f probes=%ld answered=%ld "
           "missing=%ld stray_alerts=%ld p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f "
           "mean_ms=%.1f\n",
           o->rate, o->duration > 0 ? (double)bg_measured / o->duration + o->probe_rate : 0.0,
           produce_s, n_meas, n_ans, n_meas - n_ans, st.stray, lat_pct(lat, n_ans, 0.50),
           lat_pct(lat, n_ans, 0.90), lat_pct(lat, n_ans, 0.99),
           n_ans ? (double)lat[n_ans - 1] / 1e6 : NAN, mean);
    free(lat);
    free(cdf);
    free(st.sent_ns);
    free(st.recv_ns);
    return rc != 0 || n_ans == 0 ? 1 : 0;
}
