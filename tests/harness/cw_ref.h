/*
 * cw_ref.h — the test reference model: what churnwatch *should* report,
 * computed independently of the product's window code, plus the few
 * fixtures the reliability tests need beyond cw_harness.h.
 *
 * Reference. cw_ref_load reads a generated JSON-lines file (the same bytes
 * that are produced to the input topic) and keeps, per account, the valid
 * events compactly (day, type, count, interned user and feature). Validity
 * is judged by the product's decoder, cw_event_decode — its own unit tests
 * cover it, and the tests cross-check the number of rejected lines against
 * the dead-letter topic — but the window arithmetic here is plain counting
 * over the stored events and shares nothing with scoring/ (no day buckets,
 * no bit masks, no HyperLogLog). cw_ref_windows gives an account's true
 * window counts as of a day; cw_ref_explain runs `churnwatch explain
 * ACCOUNT --config F --json` and parses what it reports; cw_ref_check_all
 * compares the two for every account.
 *
 * Alerts. cw_ref_alerts_read consumes an alert topic into a set keyed by
 * alert_id that remembers every distinct content seen for an id (so "one
 * id, one content" can be asserted) and the reason of each.
 *
 * Fixtures. A redis-server with append-only persistence (appendfsync
 * always) that survives SIGKILL with its data, as a real deployment's
 * Redis does — cw_h_redis restarts empty, which no processor can survive
 * with exact counts; and the embedded broker spawned with its pid exposed
 * so a test can freeze it (SIGSTOP/SIGCONT = a network outage for every
 * client). Plus small process helpers: spawn `churnwatch run`, wait for a
 * line in a log file, sleep, a seeded PRNG.
 *
 * Failures inside these helpers abort the test with a Criterion assertion.
 * Ownership: every *_load / *_read / *_start returns a heap object released
 * by the matching *_free / *_stop (NULL accepted); strings returned by
 * accessors are owned by the object.
 */
#ifndef CW_REF_H
#define CW_REF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- reference windows ---- */

#define CW_REF_N_WINDOWS 7

/** @brief Names of the windows, as in `explain --json` "windows" (SPEC §4). */
extern const char *const cw_ref_window_names[CW_REF_N_WINDOWS];

typedef struct cw_ref cw_ref_t;

/**
 * @brief Load a JSON-lines event file. Lines the decoder rejects are
 * counted as malformed; valid events of an unknown type are counted and
 * otherwise ignored (the product skips them too).
 */
cw_ref_t *cw_ref_load(const char *events_path);
/** @brief Free; NULL ok. */
void cw_ref_free(cw_ref_t *ref);
/** @brief Add the "profile" of each account from a `gen --truth` file. */
void cw_ref_load_truth(cw_ref_t *ref, const char *truth_path);

size_t cw_ref_valid(const cw_ref_t *ref);     /* valid events (all types) */
size_t cw_ref_malformed(const cw_ref_t *ref); /* lines the decoder rejected */
size_t cw_ref_accounts(const cw_ref_t *ref);  /* accounts seen (events or truth) */
const char *cw_ref_account_id(const cw_ref_t *ref, size_t i);
/** @brief The account's profile from the truth file ("" when unknown). */
const char *cw_ref_profile(const cw_ref_t *ref, size_t i);
/** @brief Number of valid, known-type events of account i. */
size_t cw_ref_account_events(const cw_ref_t *ref, size_t i);
/** @brief Latest event time of account i (-1 when none). */
int64_t cw_ref_account_last_ms(const cw_ref_t *ref, size_t i);
/** @brief Latest event time over the whole file (-1 when none). */
int64_t cw_ref_max_ts(const cw_ref_t *ref);

/**
 * @brief The true windows of account i as of UTC day `day` (a window of W
 * days holds days [day-W+1, day]); out[] is indexed like
 * cw_ref_window_names.
 */
void cw_ref_windows(const cw_ref_t *ref, size_t i, int64_t day, long out[CW_REF_N_WINDOWS]);

/* ---- explain ---- */

typedef struct cw_ref_explain {
    int rc;                         /* explain's exit code */
    int64_t asof_ms;                /* "as_of_ms" (-1 when rc != 0) */
    long windows[CW_REF_N_WINDOWS]; /* reported windows */
} cw_ref_explain_t;

/** @brief Run `churnwatch explain ID --config F --json`; parse what it says.
 * Asserts the output is a JSON object with as_of_ms and every window when
 * rc == 0. */
void cw_ref_explain(const char *config, const char *account_id, cw_ref_explain_t *out);

/**
 * @brief For every account: explain's windows equal the true windows as of
 * explain's own as-of day, which must cover the account's latest event and
 * not lie beyond the data; an account with no valid event is unknown
 * (exit 1). Each mismatch is a failed cr_expect (the first 20 are spelled
 * out). @returns the number of mismatches; *checked = window values compared.
 */
size_t cw_ref_check_all(const cw_ref_t *ref, const char *config, size_t *checked);
/** @brief Same, with the as-of bounded by asof_max_ms instead of the newest
 * event; -1: by the time explain returned (wall mode reads as of now). */
size_t cw_ref_check_all_until(const cw_ref_t *ref, const char *config, int64_t asof_max_ms,
                              size_t *checked);

/* ---- alert sets ---- */

typedef struct cw_ref_alerts cw_ref_alerts_t;

/** @brief Consume an alert topic from the beginning (idle 3 s after at
 * least min_count messages, 120 s at most) into a set keyed by alert_id. */
cw_ref_alerts_t *cw_ref_alerts_read(const char *brokers, const char *topic, size_t min_count);
void cw_ref_alerts_free(cw_ref_alerts_t *a);
size_t cw_ref_alerts_messages(const cw_ref_alerts_t *a); /* messages read */
size_t cw_ref_alerts_ids(const cw_ref_alerts_t *a);      /* distinct alert ids */
/** @brief Ids seen with more than one distinct value (each logged, the first
 * 10 with both contents). */
size_t cw_ref_alerts_conflicts(const cw_ref_alerts_t *a);
/** @brief Ids of `want` absent from `got` (each logged, the first 20 with
 * their content). */
size_t cw_ref_alerts_missing(const cw_ref_alerts_t *want, const cw_ref_alerts_t *got,
                             const char *what);
/** @brief Ids present in both whose (first) contents differ (logged). */
size_t cw_ref_alerts_content_diffs(const cw_ref_alerts_t *a, const cw_ref_alerts_t *b);
/** @brief Messages that are not a JSON object with string alert_id,
 * account_id and reason. */
size_t cw_ref_alerts_invalid(const cw_ref_alerts_t *a);

/* ---- fixtures ---- */

/** @brief A redis-server with appendonly yes / appendfsync always on a unix
 * socket in a fresh temp dir; cw_ref_redis_restart after a kill reloads it. */
typedef struct cw_ref_redis cw_ref_redis_t;
cw_ref_redis_t *cw_ref_redis_start(void);
const char *cw_ref_redis_url(const cw_ref_redis_t *r);
void cw_ref_redis_kill(cw_ref_redis_t *r);    /* SIGKILL (no shutdown, no final save) */
void cw_ref_redis_restart(cw_ref_redis_t *r); /* start again from its append-only file */
void cw_ref_redis_stop(cw_ref_redis_t *r);    /* NULL ok */
/** @brief Integer reply of one command (printf-style), -1 on error / other type. */
long long cw_ref_redis_int(cw_ref_redis_t *r, const char *fmt, ...);

/** @brief `churnwatch broker` as a child whose pid is known (for SIGSTOP). */
typedef struct cw_ref_broker cw_ref_broker_t;
cw_ref_broker_t *cw_ref_broker_start(int partitions, const char *topics_csv);
const char *cw_ref_broker_bootstraps(const cw_ref_broker_t *b);
pid_t cw_ref_broker_pid(const cw_ref_broker_t *b);
void cw_ref_broker_stop(cw_ref_broker_t *b); /* SIGCONT, SIGTERM, wait; NULL ok */

/**
 * @brief Write a churnwatch config for a test: brokers, redis url, group,
 * key prefix, topics "<in>", "<out>-alerts", "<out>-scores", "<out>-dlq",
 * batch size, and consumer-group timeouts short enough for kill tests
 * (session 6 s, heartbeat 0.5 s).
 */
void cw_ref_write_config(const char *path, const char *brokers, const char *redis_url,
                         const char *name, const char *input_topic, const char *out_prefix,
                         int batch_size);
/** @brief Same, with `time.mode` set to time_mode ("event", the default
 * above, or "wall"). */
void cw_ref_write_config_mode(const char *path, const char *brokers, const char *redis_url,
                              const char *name, const char *input_topic, const char *out_prefix,
                              int batch_size, const char *time_mode);

/** @brief Where cw_ref_gen's data ends (gen --end). */
#define CW_REF_GEN_END "2026-06-01T00:00:00Z"

/** @brief Run `churnwatch gen` (end CW_REF_GEN_END) into events_path
 * and truth_path (truth may be NULL); asserts it exits 0. */
void cw_ref_gen(const char *events_path, const char *truth_path, unsigned seed, int accounts,
                int days, double events_per_day, double malformed_share);
/** @brief Same, ending at `end` (gen --end: RFC 3339, YYYY-MM-DD or "now"). */
void cw_ref_gen_end(const char *events_path, const char *truth_path, unsigned seed, int accounts,
                    int days, double events_per_day, double malformed_share, const char *end);

/* ---- stored decisions ---- */

/** @brief The band counts (P:bands, moved by commits) equal the bands stored
 * on the accounts of P:accounts: every band move was counted once. Each
 * mismatch is a failed cr_expect. @returns the number of accounts with a
 * stored score. */
size_t cw_ref_expect_band_counts(const char *redis_socket, const char *prefix);
/** @brief Every account of ref with a valid event has a stored decision
 * (field "sc"): what wall mode promises once its batch's offsets are
 * stored. Each undecided account is logged (the first 20) and the count is
 * a failed cr_expect when not 0. @returns that count. */
size_t cw_ref_expect_all_decided(const cw_ref_t *ref, const char *redis_socket, const char *prefix);

/** @brief One dead letter as read back: the input position it names. */
typedef struct cw_ref_dlq {
    size_t messages; /* dead-letter messages read */
    size_t distinct; /* distinct (partition, offset) of the input they name */
    size_t invalid;  /* not JSON, or without a reason / partition / offset */
    int *partition;  /* distinct positions (heap, cw_ref_dlq_free) */
    int64_t *offset;
} cw_ref_dlq_t;

/** @brief Consume a dead-letter topic (idle 3 s after min_count messages,
 * 120 s at most). Every record must be a JSON object (UTF-8 validated)
 * with a non-empty "reason" and the input "partition" and "offset". */
void cw_ref_dlq_read(const char *brokers, const char *topic, size_t min_count, cw_ref_dlq_t *out);
/** @brief 1 when (partition, offset) is among the dead letters. */
int cw_ref_dlq_has(const cw_ref_dlq_t *d, int partition, int64_t offset);
void cw_ref_dlq_free(cw_ref_dlq_t *d);

/** @brief Spawn `churnwatch run --config F --exit-on-idle MS`, stdout/stderr
 * to files. */
pid_t cw_ref_spawn_run(const char *config, int exit_on_idle_ms, const char *out_log,
                       const char *err_log);
/** @brief Run `churnwatch run --config F --exit-on-idle MS` to its idle exit,
 * stdout/stderr to DIR/NAME.out and DIR/NAME.err; asserts it exits 0 within
 * timeout_ms (its stderr is printed when not). */
void cw_ref_run_to_idle(const char *config, int exit_on_idle_ms, const char *dir, const char *name,
                        int timeout_ms);
/** @brief Wait until `path` contains `needle` at least `count` times (1 s
 * granularity is too coarse: polls every 20 ms); 1 when it did within
 * timeout_ms, 0 otherwise. Returns 0 early when pid (if > 0) exits. */
int cw_ref_wait_log(const char *path, const char *needle, int count, pid_t pid, int timeout_ms);
/** @brief Occurrences of needle in the file (0 when absent). */
int cw_ref_count_in_file(const char *path, const char *needle);
/** @brief Print a file to stderr (diagnosis after a failure). */
void cw_ref_dump(const char *what, const char *path);
void cw_ref_sleep_ms(int ms);
/** @brief 1 while pid is running (not reaped). */
int cw_ref_alive(pid_t pid);

/** @brief A small deterministic PRNG (splitmix64). */
typedef struct cw_ref_rng {
    uint64_t s;
} cw_ref_rng_t;
uint64_t cw_ref_rng_next(cw_ref_rng_t *r);
/** @brief Uniform integer in [lo, hi]. */
long cw_ref_rng_range(cw_ref_rng_t *r, long lo, long hi);

#endif
