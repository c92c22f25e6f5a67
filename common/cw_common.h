/*
 * cw_common.h — the few things every churnwatch module shares: the error
 * codes returned across module boundaries, the structured logger, time
 * helpers (RFC 3339 and epoch milliseconds, day buckets) and a stable hash.
 *
 * Error model (fluent-bit FLB_OK/FLB_RETRY/FLB_ERROR): CW_OK, CW_RETRY for a
 * transient failure the caller should retry with backoff (Redis down, Kafka
 * queue full), CW_ERROR for a permanent one (a malformed record, a bad
 * config). Constructors report details through `char *errstr, size_t
 * errstr_size` (librdkafka style); only main() exits.
 *
 * Logging: one JSON object per line on stderr, {"ts","level","comp","msg"}.
 * CW_LOG checks the level before evaluating its arguments (Redis serverLog).
 */
#ifndef CW_COMMON_H
#define CW_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef enum {
    CW_OK = 0,    /* success */
    CW_RETRY = 1, /* transient: retry later with backoff */
    CW_ERROR = 2, /* permanent: the input or request is bad */
    CW_NOENT = 3, /* the thing asked for does not exist */
} cw_err_t;

/** @brief Human-readable name of an error code; never NULL. */
const char *cw_err2str(cw_err_t err);

/* ---- logging ---- */
typedef enum {
    CW_LOG_ERROR = 0,
    CW_LOG_WARN = 1,
    CW_LOG_INFO = 2,
    CW_LOG_DEBUG = 3,
} cw_log_level_t;

extern int cw_log_level; /* current threshold; default CW_LOG_INFO */

/** @brief Parse "error|warn|info|debug"; returns -1 when unknown. */
int cw_log_level_parse(const char *s);

/** @brief Write one JSON log line (use CW_LOG, which checks the level first). */
void cw_log_write(cw_log_level_t level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CW_LOG(level, comp, ...)                                                                   \
    do {                                                                                           \
        if ((int)(level) <= cw_log_level) {                                                        \
            cw_log_write((level), (comp), __VA_ARGS__);                                            \
        }                                                                                          \
    } while (0)

/* ---- time ---- */
#define CW_MS_PER_DAY INT64_C(86400000)

/** @brief Wall clock in epoch milliseconds. */
int64_t cw_time_now_ms(void);

/** @brief Monotonic clock in milliseconds (for timeouts, latencies). */
int64_t cw_time_mono_ms(void);
/** @brief Monotonic clock in microseconds (durations). */
int64_t cw_time_mono_us(void);
/** @brief The wall-clock time ms milliseconds from now, as the absolute
 * deadline pthread_cond_timedwait takes. */
struct timespec cw_time_deadline(int ms);

/**
 * @brief Parse an RFC 3339 timestamp ("2026-11-25T05:21:00Z",
 * "...T05:21:00.123+09:00") of exactly len bytes into epoch milliseconds.
 * @returns 0 on success, -1 when the text is not RFC 3339.
 */
int cw_time_parse_rfc3339(const char *s, size_t len, int64_t *ms_out);

/** @brief Format epoch ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 25 bytes). */
void cw_time_format(int64_t ms, char *buf, size_t size);

/** @brief Day index (UTC days since epoch) of an epoch-ms time; floors negatives. */
static inline int64_t cw_time_day(int64_t ms) {
    return ms >= 0 ? ms / CW_MS_PER_DAY : -((-ms + CW_MS_PER_DAY - 1) / CW_MS_PER_DAY);
}

/* ---- misc ---- */
/** @brief 64-bit FNV-1a over len bytes, continuing from h (start with CW_FNV_INIT). */
#define CW_FNV_INIT UINT64_C(0xcbf29ce484222325)
uint64_t cw_fnv1a(uint64_t h, const void *data, size_t len);
/** @brief The hash of (account id of len bytes, partition): the state's
 * batch groups and the apply cache's slots. */
uint64_t cw_hash_account(const char *id, size_t len, int partition);

/** @brief snprintf that never overflows and always NUL-terminates; returns buf. */
char *cw_strlcpy(char *dst, const char *src, size_t size);

/** @brief Write a JSON-escaped copy of s[0..len) into out (no quotes); returns bytes
 * needed excluding NUL (like snprintf). Well-formed UTF-8 is copied as it is;
 * control characters and every byte that is not part of well-formed UTF-8
 * become \u00XX (the byte's value), so the result is always valid JSON. */
size_t cw_json_escape(char *out, size_t out_size, const char *s, size_t len);

#define CW_I64_MAX_CHARS 21 /* "-9223372036854775808" and the NUL */
/** @brief v in decimal into out (CW_I64_MAX_CHARS bytes), NUL-terminated;
 * returns the length. What snprintf("%" PRId64) gives, without the format
 * parsing: Redis command arguments are formatted per field on the hot path. */
size_t cw_fmt_i64(char *out, int64_t v);

#define CW_G_MAX_CHARS 32 /* the longest "%.*g" of a double at precision <= 17, and the NUL */
/** @brief What snprintf(out, CW_G_MAX_CHARS, "%.*g", prec, v) writes (prec in
 * 1..17), NUL-terminated; returns the length. Values printf writes in fixed
 * notation at prec <= 9 are formatted from an integer (score snapshots carry
 * several doubles per decision); an exact tie, or a value within rounding
 * error of one, and every other case goes to snprintf, so the bytes are
 * always printf's. */
size_t cw_fmt_g(char *out, double v, int prec);

#endif
