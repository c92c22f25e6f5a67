/*
 * fuzz_event.c — libFuzzer harness for cw_event_decode (consumer/cw_event.c).
 *
 * Every Kafka message value reaches the decoder unfiltered, so it must never
 * crash, read past len, leak or hang, whatever the bytes. Beyond what the
 * sanitizers catch, this harness checks the decoder's contract and aborts
 * (a finding) when it is broken:
 *   - CW_OK: reason/detail untouched; account_id and event_id non-empty and
 *     NUL-terminated valid UTF-8 within CW_FIELD_MAX; ts within the limits; count >= 1;
 *     score, seats, arr, type in range; per-type required fields present;
 *     decoding again with key = account_id gives the same event, and a key
 *     that differs gives "key_mismatch".
 *   - CW_ERROR: reason is a NUL-terminated, known stable code; detail is
 *     NUL-terminated, valid UTF-8 text without control bytes.
 *   - the result is deterministic (same input, same outcome).
 * Limits are fixed (no wall clock), with a small max_bytes so "oversized" is
 * reachable within libFuzzer's input lengths.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cw_event.h"

#define FUZZ_NOW_MS INT64_C(1780272000000)   /* 2026-06-01T00:00:00Z */
#define FUZZ_MIN_TS_MS INT64_C(946684800000) /* 2000-01-01T00:00:00Z */

static const cw_event_limits_t fuzz_limits = {FUZZ_NOW_MS, INT64_C(86400000), FUZZ_MIN_TS_MS, 4000};

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int terminated(const char *s, size_t size) {
    return memchr(s, '\0', size) != NULL;
}

/* 1 when s is valid UTF-8 (shortest forms, no surrogates). */
static int valid_utf8(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s != '\0') {
        size_t k;
        uint32_t cp;
        if (s[0] < 0x80) {
            s++;
            continue;
        } else if ((s[0] & 0xe0) == 0xc0) {
            k = 2;
            cp = s[0] & 0x1f;
        } else if ((s[0] & 0xf0) == 0xe0) {
            k = 3;
            cp = s[0] & 0x0f;
        } else if ((s[0] & 0xf8) == 0xf0) {
            k = 4;
            cp = s[0] & 0x07;
        } else {
            return 0;
        }
        for (size_t i = 1; i < k; i++) {
            if ((s[i] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        s += k;
    }
    return 1;
}

static int known_reason(const char *r) {
    static const char *const exact[] = {"not_json",      "not_object",       "oversized",
                                        "bad_timestamp", "absurd_timestamp", "key_mismatch"};
    static const char *const prefixed[] = {
        "missing_field:", "wrong_type:", "too_long:", "bad_value:", "duplicate_field:"};
    static const char *const fields[] = {"event_id", "type",    "account_id",   "user_id",
                                         "ts",       "feature", "count",        "arr",
                                         "seats",    "plan",    "renewal_date", "score"};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(r, exact[i]) == 0) {
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof(prefixed) / sizeof(prefixed[0]); i++) {
        size_t n = strlen(prefixed[i]);
        if (strncmp(r, prefixed[i], n) == 0) {
            for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
                if (strcmp(r + n, fields[f]) == 0) {
                    return 1;
                }
            }
        }
    }
    return 0;
}

static void check_ok(const cw_event_t *ev) {
    CHECK(terminated(ev->event_id, CW_FIELD_MAX) && ev->event_id[0] != '\0');
    CHECK(terminated(ev->account_id, CW_FIELD_MAX) && ev->account_id[0] != '\0');
    CHECK(terminated(ev->user_id, CW_FIELD_MAX));
    CHECK(terminated(ev->feature, CW_FIELD_MAX));
    CHECK(terminated(ev->plan, CW_FIELD_MAX));
    CHECK(valid_utf8(ev->event_id) && valid_utf8(ev->account_id) && valid_utf8(ev->user_id) &&
          valid_utf8(ev->feature) && valid_utf8(ev->plan));
    CHECK((ev->type >= CW_EV_LOGIN && ev->type < CW_EV__COUNT) || ev->type == CW_EV_UNKNOWN);
    CHECK(ev->ts_ms >= fuzz_limits.min_ts_ms);
    CHECK(ev->ts_ms <= fuzz_limits.now_ms + fuzz_limits.max_future_ms);
    CHECK(ev->count >= 1);
    CHECK(ev->score >= -1 && ev->score <= 10);
    CHECK(ev->seats >= -1);
    CHECK(ev->arr == -1 || ev->arr >= 0);
    if (ev->type == CW_EV_LOGIN || ev->type == CW_EV_USAGE) {
        CHECK(ev->user_id[0] != '\0');
    }
    if (ev->type == CW_EV_USAGE) {
        CHECK(ev->feature[0] != '\0');
    }
    if (ev->type == CW_EV_NPS) {
        CHECK(ev->score >= 0);
    }
}

static int same_event(const cw_event_t *a, const cw_event_t *b) {
    return a->type == b->type && strcmp(a->event_id, b->event_id) == 0 &&
           strcmp(a->account_id, b->account_id) == 0 && strcmp(a->user_id, b->user_id) == 0 &&
           strcmp(a->feature, b->feature) == 0 && strcmp(a->plan, b->plan) == 0 &&
           a->ts_ms == b->ts_ms && a->count == b->count && a->seats == b->seats &&
           a->renewal_ms == b->renewal_ms && a->score == b->score &&
           memcmp(&a->arr, &b->arr, sizeof(a->arr)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    cw_event_t ev;
    cw_event_t ev2;
    char reason[CW_REASON_MAX];
    char detail[CW_DETAIL_MAX];
    char reason2[CW_REASON_MAX];
    char detail2[CW_DETAIL_MAX];

    memset(reason, 'R', sizeof(reason));
    memset(detail, 'D', sizeof(detail));
    cw_err_t rc = cw_event_decode(in, size, NULL, 0, &fuzz_limits, &ev, reason, detail);

    if (rc == CW_OK) {
        /* reason and detail are left untouched on success */
        for (size_t i = 0; i < sizeof(reason); i++) {
            CHECK(reason[i] == 'R');
        }
        for (size_t i = 0; i < sizeof(detail); i++) {
            CHECK(detail[i] == 'D');
        }
        check_ok(&ev);

        /* the matching key changes nothing */
        size_t alen = strlen(ev.account_id);
        CHECK(cw_event_decode(in, size, ev.account_id, alen, &fuzz_limits, &ev2, reason2,
                              detail2) == CW_OK);
        CHECK(same_event(&ev, &ev2));

        /* a key one byte shorter is a mismatch */
        CHECK(cw_event_decode(in, size, ev.account_id, alen - 1, &fuzz_limits, &ev2, reason2,
                              detail2) == CW_ERROR);
        CHECK(strcmp(reason2, "key_mismatch") == 0);
        return 0;
    }

    CHECK(rc == CW_ERROR);
    CHECK(terminated(reason, sizeof(reason)));
    CHECK(known_reason(reason));
    CHECK(terminated(detail, sizeof(detail)) && detail[0] != '\0');
    for (size_t i = 0; detail[i] != '\0'; i++) {
        CHECK((unsigned char)detail[i] >= 0x20 && detail[i] != 0x7f);
    }
    CHECK(valid_utf8(detail));

    /* deterministic: the same bytes give the same reason and detail */
    CHECK(cw_event_decode(in, size, NULL, 0, &fuzz_limits, &ev2, reason2, detail2) == CW_ERROR);
    CHECK(strcmp(reason, reason2) == 0 && strcmp(detail, detail2) == 0);
    return 0;
}
