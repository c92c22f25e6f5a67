/*
 * cw_view.h — one account's state as of a time, computed in C from its raw
 * Redis data: the account hash (per-day counters "<day>:<counter>",
 * attributes, facts, last decision), the values of its distinct sets
 * ("<lastday>,<mask>" day masks) and its score history ("<asof>,<score>",
 * newest first). Pure: no I/O, no allocation; cw_state fetches the data
 * with plain HGETALL/LRANGE in one MULTI/EXEC per account and calls
 * cw_view_eval.
 *
 * Why in C: the same arithmetic as a Lua script cost ~80 us of Redis CPU
 * per account read (Lua VM and string building, bench/README.md); Redis
 * CPU is the throughput bottleneck.
 *
 * cw_view_plan_t is what the layout implies for storage: how many days each
 * counter/set keeps and how far back its queries read. cw_state's apply
 * prunes by the same plan, so reads and writes agree on retention.
 *
 * Ownership: every pointer argument is borrowed for the duration of the
 * call; results are written into caller-owned structs.
 */
#ifndef CW_VIEW_H
#define CW_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "cw_account.h"
#include "cw_conf.h"
#include "cw_model.h"

/* A borrowed byte string; p == NULL means absent (a nil reply). */
typedef struct cw_sv {
    const char *p;
    size_t len;
} cw_sv_t;

typedef struct cw_view_plan {
    int cq[CW_MAX_COUNTERS]; /* days counter c's queries read back from the as-of day */
    int cr[CW_MAX_COUNTERS]; /* days counter c keeps (incl. CW_STATE_SLACK_DAYS) */
    int sr[CW_MAX_SETS];     /* days set s keeps (incl. slack) */
    int logins;              /* counter of logins (the logins_7d window's), -1 none */
    int max_retention;       /* longest kept, days (key TTL = this + 2 days) */
} cw_view_plan_t;

/**
 * @brief Derive the storage plan from a layout; slack_days are kept beyond
 * every window. @returns 0, or -1 with errstr naming what is out of range.
 */
int cw_view_plan_build(const cw_conf_t *conf, const cw_layout_t *l, int slack_days,
                       cw_view_plan_t *plan, char *errstr, size_t errstr_size);

/**
 * @brief Evaluate an account as of asof_ms into out (every field but
 * account_id and due_ms, which the caller sets; partition is the hash's
 * "p", -1 when absent).
 * @param hash     2*n_hash views: field, value, field, value, ...
 * @param sets     per layout set s: n_sets[s] member values (NULL/0 when the
 *                 set was not fetched: only sets with queries matter)
 * @param hist     score history entries, newest first
 */
void cw_view_eval(const cw_layout_t *l, const cw_view_plan_t *plan, int64_t asof_ms,
                  const cw_sv_t *hash, size_t n_hash, const cw_sv_t *const *sets,
                  const size_t *n_sets, const cw_sv_t *hist, size_t n_hist,
                  cw_account_state_t *out);

/** @brief Parse a whole decimal integer view ("-12"); 0 ok, -1 otherwise. */
int cw_sv_i64(cw_sv_t v, int64_t *out);
/** @brief Parse a whole number view ("12.5", "1e3"); 0 ok, -1 otherwise. */
int cw_sv_dbl(cw_sv_t v, double *out);

#endif
