/*
 * cw_harness.h — the integration-test harness: real servers on loopback,
 * started and stopped by the tests themselves.
 *
 *  - redis-server on a unix socket inside a fresh temp dir (no TCP port,
 *    no persistence), restartable on the same socket for outage tests;
 *  - the embedded broker as a child process (`churnwatch broker`), whose
 *    first stdout line is its bootstrap address;
 *  - process helpers (spawn, wait with timeout, kill) and small Kafka
 *    helpers (produce JSON lines keyed by account_id, consume a topic).
 *
 * Failures inside the harness abort the test with a Criterion assertion.
 * Ownership: every *_start returns a heap object freed by its *_stop;
 * strings returned by accessors are owned by the object.
 */
#ifndef CW_HARNESS_H
#define CW_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- redis (cw_harness_redis.c) ---- */
typedef struct cw_h_redis cw_h_redis_t;
cw_h_redis_t *cw_h_redis_start(void);
const char *cw_h_redis_url(const cw_h_redis_t *r);    /* "unix:///tmp/.../redis.sock" */
const char *cw_h_redis_socket(const cw_h_redis_t *r); /* "/tmp/.../redis.sock" */
void cw_h_redis_kill(cw_h_redis_t *r);                /* SIGKILL the server (outage starts) */
void cw_h_redis_restart(cw_h_redis_t *r);             /* start again on the same socket, empty */
void cw_h_redis_stop(cw_h_redis_t *r);                /* stop and remove the temp dir; NULL ok */
/** @brief Run one command (printf-style, hiredis redisCommand) and return the
 * integer reply, or a string reply (HGET, ZSCORE) as an integer; -1 on
 * error/other type. */
long long cw_h_redis_int(cw_h_redis_t *r, const char *fmt, ...);

/* ---- broker (cw_harness_kafka.c) ---- */
typedef struct cw_h_broker cw_h_broker_t;
/** @brief Spawn `churnwatch broker --partitions N --topics csv`, wait for its address. */
cw_h_broker_t *cw_h_broker_start(int partitions, const char *topics_csv);
const char *cw_h_broker_bootstraps(const cw_h_broker_t *b);
void cw_h_broker_stop(cw_h_broker_t *b); /* SIGTERM, wait; NULL ok */

/** @brief Produce every line of a JSON-lines file to topic, key = the line's
 * "account_id" string when present (else no key). Waits for delivery.
 * @returns lines produced. */
size_t cw_h_produce_file(const char *brokers, const char *topic, const char *path);
/** @brief Like cw_h_produce_file, but line i goes to partition i % partitions
 * whatever its key (an account's events spread over several partitions, as
 * after a producer changed its keying); partitions <= 0: by key. */
size_t cw_h_produce_file_spread(const char *brokers, const char *topic, const char *path,
                                int partitions);

/** @brief One consumed message (copied; freed by cw_h_msgs_free). */
typedef struct cw_h_msg {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    int partition;
    int64_t offset;
} cw_h_msg_t;
/** @brief Consume a topic from the beginning until idle_ms pass with no
 * message (after at least min_count messages, or timeout_ms overall). */
cw_h_msg_t *cw_h_consume_all(const char *brokers, const char *topic, size_t min_count, int idle_ms,
                             int timeout_ms, size_t *n_out);
void cw_h_msgs_free(cw_h_msg_t *msgs, size_t n);

/* ---- processes and files (cw_harness.c) ---- */
/** @brief A fresh temp dir (heap string, caller frees); removed by cw_h_rmrf. */
char *cw_h_tmpdir(void);
void cw_h_rmrf(const char *dir);
/** @brief posix_spawn argv with stdout/stderr redirected to files (NULL = inherit). */
pid_t cw_h_spawn(const char *const argv[], const char *stdout_path, const char *stderr_path);
/** @brief Wait up to timeout_ms; returns the exit code, 128+sig if signalled,
 * or -1 on timeout (the child is then SIGKILLed and reaped). */
int cw_h_wait(pid_t pid, int timeout_ms);
/** @brief Run argv to completion (timeout_ms), capturing stdout into *out
 * (heap, caller frees; may be NULL). Returns the exit code like cw_h_wait. */
int cw_h_run(const char *const argv[], int timeout_ms, char **out, size_t *out_len);
int cw_h_write_file(const char *path, const char *text);
char *cw_h_read_file(const char *path, size_t *len_out); /* heap, caller frees; NULL if absent */

/** @brief Path of the built churnwatch binary and the source dir. */
#define CW_H_BINARY CW_BINARY
#define CW_H_SOURCE_DIR CW_SOURCE_DIR

#endif
