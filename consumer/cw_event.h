/*
 * cw_event.h — decoding and validation of one input event (SPEC §2).
 *
 * A Kafka message value is parsed with yajl's streaming parser into a fixed
 * cw_event_t (no heap allocation per event: all strings are copied into
 * fixed arrays inside the struct, bounded by the spec's 128-byte limits).
 * Anything that is not a valid event yields CW_ERROR and a stable,
 * machine-readable reason (e.g. "not_json", "missing_field:account_id",
 * "wrong_type:count", "oversized", "absurd_timestamp") plus a human detail,
 * which the pipeline sends to the dead-letter topic. Unknown event types
 * are not errors: type = CW_EV_UNKNOWN, counted and skipped by the caller.
 *
 * Ownership: the caller owns the cw_event_t and the input bytes; nothing is
 * retained after cw_event_decode returns.
 */
#ifndef CW_EVENT_H
#define CW_EVENT_H

#include "cw_common.h"
#include "cw_conf.h"

#define CW_REASON_MAX 64
#define CW_DETAIL_MAX 160

typedef struct cw_event {
    cw_ev_type_t type;
    char event_id[CW_FIELD_MAX];
    char account_id[CW_FIELD_MAX];
    char user_id[CW_FIELD_MAX]; /* "" when absent */
    char feature[CW_FIELD_MAX]; /* "" when absent */
    char plan[CW_FIELD_MAX];    /* account events; "" when absent */
    int64_t ts_ms;              /* event time, epoch ms */
    int64_t count;              /* usage quantity, >= 1 (default 1) */
    double arr;                 /* account: annual recurring revenue; < 0 when absent */
    int64_t seats;              /* account: seats; < 0 when absent */
    int64_t renewal_ms;         /* account: renewal_date as epoch ms; < 0 when absent */
    int score;                  /* nps: 0..10; -1 when absent */
} cw_event_t;

typedef struct cw_event_limits {
    int64_t now_ms;        /* wall clock used for the "absurd future" check */
    int64_t max_future_ms; /* ts > now + this is absurd */
    int64_t min_ts_ms;     /* ts < this is absurd */
    size_t max_bytes;      /* larger payloads are "oversized" */
} cw_event_limits_t;

/** @brief Limits taken from a config, with now = wall clock. */
cw_event_limits_t cw_event_limits_from_conf(const cw_conf_t *conf);

/**
 * @brief Decode and validate one event.
 * @param data,len   the message value (need not be NUL-terminated)
 * @param key,keylen the message key, may be NULL; when present it must equal
 *                   account_id, else reason "key_mismatch"
 * @param reason     out: stable reason code on CW_ERROR (CW_REASON_MAX bytes)
 * @param detail     out: human detail on CW_ERROR (CW_DETAIL_MAX bytes)
 * @returns CW_OK (ev filled; type may be CW_EV_UNKNOWN) or CW_ERROR.
 */
cw_err_t cw_event_decode(const char *data, size_t len, const char *key, size_t keylen,
                         const cw_event_limits_t *lim, cw_event_t *ev, char *reason, char *detail);

/**
 * @brief Event "value" used by SUM/MEAN aggregations: usage -> count,
 * nps -> score, anything else -> 1.
 */
int64_t cw_event_value(const cw_event_t *ev);

#endif
