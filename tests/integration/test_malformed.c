/*
 * test_malformed.c — 10,000 malformed and fuzzed messages among valid
 * events (issue 4, "Must show" 4).
 *
 * The malformed messages are built here, from a seeded PRNG, in fourteen
 * kinds that are each invalid by SPEC §2 or by JSON itself: random bytes
 * (including empty and NULL values), truncated JSON, wrong field types,
 * oversized (> 64 KiB), deep nesting (top level or inside a required
 * field), huge numbers, invalid UTF-8, NUL bytes, missing required
 * fields, non-object JSON, absurd or impossible timestamps, over-long
 * strings, out-of-range values, and a message key that is not the event's
 * account. They are interleaved at random with a generated valid data set
 * (no malformed lines of its own), keyed by account, on 12 partitions; the
 * delivery reports give each message's (partition, offset).
 *
 * After one `churnwatch run` to idle (exit 0): the dead-letter topic names
 * exactly the malformed messages' positions — every one, no valid one,
 * none twice — each record a JSON object with a reason; and every
 * account's windows equal the independent reference computed from the
 * valid events alone.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_buf.h"
#include "cw_common.h"
#include "cw_harness.h"
#include "cw_ref.h"

#define TOPICS "events,mal-alerts,mal-scores,mal-dlq"
#define PARTITIONS 12
#define N_MALFORMED 10000
#define RUN_TIMEOUT_MS 300000

typedef enum {
    K_RANDOM_BYTES,
    K_TRUNCATED,
    K_WRONG_TYPE,
    K_OVERSIZED,
    K_DEEP_NESTING,
    K_HUGE_NUMBER,
    K_BAD_UTF8,
    K_NUL_BYTES,
    K_MISSING_FIELD,
    K_NOT_OBJECT,
    K_BAD_TIMESTAMP,
    K_TOO_LONG,
    K_OUT_OF_RANGE,
    K_KEY_MISMATCH,
    K__COUNT
} kind_t;

static const char *const kind_names[K__COUNT] = {
    "random_bytes",  "truncated", "wrong_type",   "oversized",   "deep_nesting",
    "huge_number",   "bad_utf8",  "nul_bytes",    "missing",     "not_object",
    "bad_timestamp", "too_long",  "out_of_range", "key_mismatch"};

/* One message to produce. */
typedef struct msg {
    char *key; /* NULL = no key (owned) */
    size_t key_len;
    char *value; /* NULL = null value (owned) */
    size_t len;
    int kind;      /* kind_t, or -1 for a valid event */
    int partition; /* from the delivery report */
    int64_t offset;
    int delivered;
} msg_t;

static void set_value(msg_t *m, const char *data, size_t len) {
    m->value = malloc(len + 1);
    cr_assert_not_null(m->value);
    memcpy(m->value, data, len);
    m->value[len] = '\0';
    m->len = len;
}

static void set_key(msg_t *m, const char *key) {
    m->key = strdup(key);
    cr_assert_not_null(m->key);
    m->key_len = strlen(key);
}

/* A valid login event of account "acct-00001" at a plausible time. */
#define ACCT "acct-00001"
#define GOOD_HEAD "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":\"" ACCT "\","
#define GOOD_TAIL "\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\"}"

static void build_malformed(msg_t *m, int i, cw_ref_rng_t *rng) {
    cw_buf_t b = CW_BUF_INIT;
    /* oversized messages are big: keep them to ~1% so the data fits the
     * mock broker's retention; the other kinds share the rest */
    int kind = K_OVERSIZED;
    if (cw_ref_rng_range(rng, 0, 99) != 0) {
        kind = (int)cw_ref_rng_range(rng, 0, K__COUNT - 2); /* every kind but K_OVERSIZED */
        kind += kind >= K_OVERSIZED;
    }
    m->kind = kind;
    int v = (int)cw_ref_rng_range(rng, 0, 1 << 20);
    switch (kind) {
    case K_RANDOM_BYTES: {
        size_t len = (size_t)cw_ref_rng_range(rng, 0, 512);
        if (v % 17 == 0) {
            m->value = NULL; /* a null value (tombstone) */
            m->len = 0;
            break;
        }
        char *p = malloc(len + 1);
        cr_assert_not_null(p);
        for (size_t k = 0; k < len; k++) {
            p[k] = (char)(cw_ref_rng_next(rng) & 0xff);
        }
        if (len > 0 && p[0] == '{') {
            p[0] = '\x01';
        }
        p[len] = '\0';
        m->value = p;
        m->len = len;
        break;
    }
    case K_TRUNCATED: {
        cw_buf_printf(&b, GOOD_HEAD GOOD_TAIL, i);
        size_t cut = (size_t)cw_ref_rng_range(rng, 0, (long)b.len - 1); /* drops the '}' */
        set_value(m, b.data, cut);
        break;
    }
    case K_WRONG_TYPE: {
        static const char *const forms[] = {
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":\"5\","
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":123,\"user_id\":\"u-1\","
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"user_id\":[\"u-1\"],\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":{\"id\":%d},\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":7,\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":true}",
            "{\"event_id\":\"m-%d\",\"type\":\"nps\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"score\":\"9\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"account\",\"account_id\":\"" ACCT
            "\",\"seats\":\"many\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":null,\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":null,\"user_id\":\"u-1\","
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
        };
        cw_buf_printf(&b, forms[v % (int)(sizeof(forms) / sizeof(forms[0]))], i);
        set_value(m, b.data, b.len);
        break;
    }
    case K_OVERSIZED: {
        cw_buf_printf(&b, GOOD_HEAD "\"user_id\":\"u-1\",\"pad\":\"", i);
        size_t pad = (size_t)cw_ref_rng_range(rng, 65537, 70000);
        for (size_t k = 0; k < pad; k++) {
            cw_buf_append(&b, "x", 1);
        }
        cw_buf_puts(&b, "\",\"ts\":\"2026-05-20T10:00:00Z\"}");
        set_value(m, b.data, b.len);
        break;
    }
    case K_DEEP_NESTING: {
        int depth = (int)cw_ref_rng_range(rng, 100, 8000);
        int form = v % 4;
        if (form == 0 || form == 1) { /* [[[[ ... ]]]] (closed or not) */
            for (int k = 0; k < depth; k++) {
                cw_buf_append(&b, "[", 1);
            }
            for (int k = 0; form == 0 && k < depth; k++) {
                cw_buf_append(&b, "]", 1);
            }
        } else if (form == 2) { /* account_id: {"a":{"a":...}} */
            cw_buf_printf(&b, "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":", i);
            for (int k = 0; k < depth; k++) {
                cw_buf_puts(&b, "{\"a\":");
            }
            cw_buf_puts(&b, "1");
            for (int k = 0; k < depth; k++) {
                cw_buf_append(&b, "}", 1);
            }
            cw_buf_puts(&b, ",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\"}");
        } else { /* ts: [[[[1]]]] */
            cw_buf_printf(&b, GOOD_HEAD "\"user_id\":\"u-1\",\"ts\":", i);
            for (int k = 0; k < depth; k++) {
                cw_buf_append(&b, "[", 1);
            }
            cw_buf_puts(&b, "1779271200000");
            for (int k = 0; k < depth; k++) {
                cw_buf_append(&b, "]", 1);
            }
            cw_buf_puts(&b, "}");
        }
        set_value(m, b.data, b.len);
        break;
    }
    case K_HUGE_NUMBER: {
        static const char *const forms[] = {
            GOOD_HEAD "\"user_id\":\"u-1\",\"ts\":1e308}",
            GOOD_HEAD "\"user_id\":\"u-1\",\"ts\":99999999999999999999999999999}",
            GOOD_HEAD "\"user_id\":\"u-1\",\"ts\":-9223372036854775809}",
            GOOD_HEAD "\"user_id\":\"u-1\",\"ts\":1e99999}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":184467440737095516160,"
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":1e400,"
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"nps\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"score\":1e30,\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":-99999999999999999999999,"
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
        };
        cw_buf_printf(&b, forms[v % (int)(sizeof(forms) / sizeof(forms[0]))], i);
        set_value(m, b.data, b.len);
        break;
    }
    case K_BAD_UTF8: {
        static const char *const bad[] = {"\xff\xfe",         "\xc0\xaf", "\x80", "\xed\xa0\x80",
                                          "\xf5\x80\x80\x80", "\xe2\x82", "\xc3"};
        const char *seq = bad[v % (int)(sizeof(bad) / sizeof(bad[0]))];
        int where = (v / 7) % 3;
        cw_buf_printf(&b,
                      "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"%s%s\","
                      "\"user_id\":\"%s%s\",\"feature\":\"%s%s\",\"ts\":\"2026-05-20T10:00:00Z\"}",
                      i, ACCT, where == 0 ? seq : "", "u-1", where == 1 ? seq : "", "reports",
                      where == 2 ? seq : "");
        set_value(m, b.data, b.len);
        break;
    }
    case K_NUL_BYTES: {
        int form = v % 4;
        if (form == 0) { /* a raw NUL inside a string */
            cw_buf_printf(&b, GOOD_HEAD "\"user_id\":\"u-", i);
            cw_buf_append(&b, "\0", 1);
            cw_buf_puts(&b, "1\",\"ts\":\"2026-05-20T10:00:00Z\"}");
        } else if (form == 1) { /* a valid event followed by NUL and garbage */
            cw_buf_printf(&b, GOOD_HEAD GOOD_TAIL, i);
            cw_buf_append(&b, "\0garbage", 8);
        } else if (form == 2) { /* NUL bytes only */
            cw_buf_append(&b, "\0\0\0\0", 1 + (size_t)(v % 4));
        } else { /* NUL in place of a structural character */
            cw_buf_printf(&b, GOOD_HEAD GOOD_TAIL, i);
            b.data[b.len / 2] = '\0';
        }
        set_value(m, b.data, b.len);
        break;
    }
    case K_MISSING_FIELD: {
        static const char *const forms[] = {
            "{\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\",\"n\":%d}",
            "{\"event_id\":\"m-%d\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"user_id\":\"u-1\","
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\"}",
            "{}",
        };
        cw_buf_printf(&b, forms[v % (int)(sizeof(forms) / sizeof(forms[0]))], i);
        set_value(m, b.data, b.len);
        break;
    }
    case K_NOT_OBJECT: {
        static const char *const forms[] = {
            "[]",
            "\"m-%d\"",
            "%d",
            "null",
            "true",
            "[" GOOD_HEAD GOOD_TAIL "]",
            "  ",
            "{",
            "}",
            "{\"event_id\" \"m-%d\"}",
            "{'event_id':'m-%d'}",
            "{\"a\":1,}",
        };
        cw_buf_printf(&b, forms[v % (int)(sizeof(forms) / sizeof(forms[0]))], i);
        set_value(m, b.data, b.len);
        break;
    }
    case K_BAD_TIMESTAMP: {
        static const char *const ts[] = {"\"1970-01-01T00:00:00Z\"",
                                         "\"2999-12-31T23:59:59Z\"",
                                         "0",
                                         "-5",
                                         "\"2026-02-30T10:00:00Z\"",
                                         "\"2026-13-01T10:00:00Z\"",
                                         "\"2026-05-20T25:00:00Z\"",
                                         "\"not a date\"",
                                         "\"\"",
                                         "\"2026-05-20\"",
                                         "\"2026-05-20T10:00:00\"",
                                         "32503680000000"};
        cw_buf_printf(&b, GOOD_HEAD "\"user_id\":\"u-1\",\"ts\":%s}", i,
                      ts[v % (int)(sizeof(ts) / sizeof(ts[0]))]);
        set_value(m, b.data, b.len);
        break;
    }
    case K_TOO_LONG: {
        char longs[400];
        size_t n = (size_t)cw_ref_rng_range(rng, 129, 390);
        memset(longs, 'z', n);
        longs[n] = '\0';
        int which = v % 4;
        cw_buf_printf(&b,
                      "{\"event_id\":\"%s%d\",\"type\":\"usage\",\"account_id\":\"%s\","
                      "\"user_id\":\"%s\",\"feature\":\"%s\",\"ts\":\"2026-05-20T10:00:00Z\"}",
                      which == 0 ? longs : "m-", i, which == 1 ? longs : ACCT,
                      which == 2 ? longs : "u-1", which == 3 ? longs : "reports");
        set_value(m, b.data, b.len);
        break;
    }
    case K_OUT_OF_RANGE: {
        static const char *const forms[] = {
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":0,"
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":-3,"
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"usage\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"feature\":\"reports\",\"count\":1.5,"
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"nps\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"score\":11,\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"nps\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"score\":-1,\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"m-%d\",\"type\":\"login\",\"account_id\":\"\",\"user_id\":\"u-1\","
            "\"ts\":\"2026-05-20T10:00:00Z\"}",
            "{\"event_id\":\"\",\"type\":\"login\",\"account_id\":\"" ACCT
            "\",\"user_id\":\"u-1\",\"ts\":\"2026-05-20T10:00:00Z\",\"n\":%d}",
        };
        cw_buf_printf(&b, forms[v % (int)(sizeof(forms) / sizeof(forms[0]))], i);
        set_value(m, b.data, b.len);
        break;
    }
    case K_KEY_MISMATCH:
    default:
        m->kind = K_KEY_MISMATCH;
        cw_buf_printf(&b, GOOD_HEAD GOOD_TAIL, i);
        set_value(m, b.data, b.len);
        set_key(m, "acct-99999");
        break;
    }
    cw_buf_free(&b);
    /* keys of the other kinds: none, the account's, or garbage */
    if (m->key == NULL && m->kind != K_KEY_MISMATCH) {
        /* none (1/3), the account's (1/10: its dead letters all share one
         * partition, which the mock broker keeps only ~5 MB of), garbage */
        int k = (int)cw_ref_rng_range(rng, 0, 29);
        if (k < 3) {
            set_key(m, ACCT);
        } else if (k >= 13) {
            char junk[16];
            for (int j = 0; j < 15; j++) {
                junk[j] = (char)('a' + cw_ref_rng_range(rng, 0, 25));
            }
            junk[15] = '\0';
            set_key(m, junk);
        }
    }
}

/* ---- producing with positions ---- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    (void)opaque;
    msg_t *m = rkm->_private;
    if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        m->partition = rkm->partition;
        m->offset = rkm->offset;
        m->delivered = 1;
    }
}

static void produce_all(const char *brokers, msg_t *msgs, size_t n) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK, "%s", errstr);
    cr_assert_eq(rd_kafka_conf_set(conf, "message.max.bytes", "2000000", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK, "%s", errstr);
    cr_assert_eq(rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK, "%s", errstr);
    cr_assert_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK, "%s", errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "producer: %s", errstr);
    conf = NULL; /* owned by rk */
    for (size_t i = 0; i < n; i++) {
        for (;;) {
            /* malformed messages are spread round robin: most are keyless
             * (the sticky partitioner) or keyed "acct-00001", which would
             * pile them into one or two partitions, past what the mock
             * broker keeps (~5 MB each); valid events go by their key */
            int32_t part = msgs[i].kind < 0 ? RD_KAFKA_PARTITION_UA : (int32_t)(i % PARTITIONS);
            rd_kafka_resp_err_t err =
                rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("events"), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_KEY(msgs[i].key, msgs[i].key_len),
                                  RD_KAFKA_V_VALUE(msgs[i].value, msgs[i].len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_OPAQUE(&msgs[i]), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 50);
                continue;
            }
            cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
            break;
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 60000);
    cr_assert_eq(rd_kafka_outq_len(rk), 0, "messages undelivered after 60 s");
    rd_kafka_destroy(rk);
    for (size_t i = 0; i < n; i++) {
        cr_assert(msgs[i].delivered, "message %zu was not delivered", i);
    }
}

/* Valid lines of a file as keyed messages (key = account_id, like the harness). */
static size_t load_valid(const char *path, msg_t **out) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char *line = NULL;
    size_t cap = 0, n = 0, mcap = 0;
    ssize_t len;
    msg_t *msgs = NULL;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        if (len == 0) {
            continue;
        }
        if (n == mcap) {
            mcap = mcap ? mcap * 2 : 4096;
            msgs = realloc(msgs, mcap * sizeof(*msgs));
            cr_assert_not_null(msgs);
        }
        msg_t *m = &msgs[n++];
        memset(m, 0, sizeof(*m));
        m->kind = -1;
        set_value(m, line, (size_t)len);
        const char *k = strstr(line, "\"account_id\":\"");
        cr_assert_not_null(k, "generated line without account_id: %.200s", line);
        k += strlen("\"account_id\":\"");
        const char *e = strchr(k, '"');
        cr_assert_not_null(e);
        m->key = strndup(k, (size_t)(e - k));
        cr_assert_not_null(m->key);
        m->key_len = (size_t)(e - k);
    }
    free(line);
    fclose(f);
    *out = msgs;
    return n;
}

Test(malformed, ten_thousand_dead_lettered, .timeout = 900) {
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(PARTITIONS, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char events[512], cfg[512], out_log[512], err_log[512];
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(cfg, sizeof(cfg), "%s/mal.json", dir);
    snprintf(out_log, sizeof(out_log), "%s/run.out", dir);
    snprintf(err_log, sizeof(err_log), "%s/run.err", dir);
    cw_ref_write_config(cfg, brokers, cw_h_redis_url(redis), "mal", "events", "mal", 2000);

    /* the valid data set, and the reference from it */
    cw_ref_gen(events, NULL, 51, 200, 30, 4.0, 0.0);
    cw_ref_t *ref = cw_ref_load(events);
    cr_assert_eq(cw_ref_malformed(ref), 0, "gen --malformed-share 0 wrote malformed lines");
    msg_t *valid = NULL;
    size_t n_valid = load_valid(events, &valid);
    cr_assert_eq(n_valid, cw_ref_valid(ref));

    /* interleave N_MALFORMED malformed messages at random positions */
    size_t n = n_valid + N_MALFORMED;
    msg_t *msgs = calloc(n, sizeof(*msgs));
    cr_assert_not_null(msgs);
    cw_ref_rng_t rng = {4242};
    size_t vi = 0, mi = 0;
    size_t per_kind[K__COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t left_v = n_valid - vi, left_m = N_MALFORMED - mi;
        int bad = left_v == 0 || (left_m > 0 && cw_ref_rng_next(&rng) % (left_v + left_m) < left_m);
        if (bad) {
            build_malformed(&msgs[i], (int)mi, &rng);
            per_kind[msgs[i].kind]++;
            mi++;
        } else {
            msgs[i] = valid[vi++];
        }
    }
    free(valid); /* the strings moved into msgs */
    for (int k = 0; k < K__COUNT; k++) {
        cr_log_info("malformed kind %-13s %zu", kind_names[k], per_kind[k]);
        cr_expect_gt(per_kind[k], 0, "no message of kind %s", kind_names[k]);
    }
    produce_all(brokers, msgs, n);

    pid_t pid = cw_ref_spawn_run(cfg, 3000, out_log, err_log);
    int rc = cw_h_wait(pid, RUN_TIMEOUT_MS);
    if (rc != 0) {
        cw_ref_dump("run stderr", err_log);
    }
    cr_assert_eq(rc, 0, "churnwatch run exited %d on malformed input", rc);

    /* the dead letters name exactly the malformed messages */
    cw_ref_dlq_t dlq;
    cw_ref_dlq_read(brokers, "mal-dlq", N_MALFORMED, &dlq);
    cr_expect_eq(dlq.invalid, 0, "%zu dead letters are not JSON with a reason and position",
                 dlq.invalid);
    cr_expect_eq(dlq.messages, N_MALFORMED, "%zu dead letters for %d malformed messages",
                 dlq.messages, N_MALFORMED);
    size_t missing[K__COUNT] = {0}, missing_total = 0, valid_dlq = 0;
    for (size_t i = 0; i < n; i++) {
        int has = cw_ref_dlq_has(&dlq, msgs[i].partition, msgs[i].offset);
        if (msgs[i].kind >= 0 && !has) {
            if (missing_total < 20) {
                cr_log_error("not dead-lettered (%s) p%d@%lld: %.160s", kind_names[msgs[i].kind],
                             msgs[i].partition, (long long)msgs[i].offset,
                             msgs[i].value != NULL ? msgs[i].value : "(null)");
            }
            missing[msgs[i].kind]++;
            missing_total++;
        } else if (msgs[i].kind < 0 && has) {
            if (valid_dlq < 20) {
                cr_log_error("valid event dead-lettered p%d@%lld: %.160s", msgs[i].partition,
                             (long long)msgs[i].offset, msgs[i].value);
            }
            valid_dlq++;
        }
    }
    for (int k = 0; k < K__COUNT; k++) {
        cr_expect_eq(missing[k], 0, "%zu of %zu malformed messages of kind %s not dead-lettered",
                     missing[k], per_kind[k], kind_names[k]);
    }
    cr_expect_eq(valid_dlq, 0, "%zu valid events were dead-lettered", valid_dlq);
    cr_expect_eq(dlq.distinct, N_MALFORMED, "dead letters name %zu distinct positions",
                 dlq.distinct);
    cw_ref_dlq_free(&dlq);

    /* the valid events, counted exactly */
    size_t checked = 0;
    size_t bad = cw_ref_check_all(ref, cfg, &checked);
    cr_log_info("%zu window counts checked, %zu wrong", checked, bad);

    for (size_t i = 0; i < n; i++) {
        free(msgs[i].key);
        free(msgs[i].value);
    }
    free(msgs);
    cw_ref_free(ref);
    cw_h_rmrf(dir);
    free(dir);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
}
