/*
 * cw_explain.h — `churnwatch explain ACCOUNT --config FILE [--json] [--at TIME]`:
 * reads one account's state from Redis, scores it as of its current time
 * (its partition's event-time watermark in event mode, the wall clock in
 * wall mode, or --at) with the same pure model the processor uses, and
 * prints the breakdown: signals (raw, normalised, weight, contribution),
 * windows, band, tier, phase, last alert.
 */
#ifndef CW_EXPLAIN_H
#define CW_EXPLAIN_H

#include "cw_buf.h"
#include "cw_common.h"
#include "cw_conf.h"
#include "cw_state.h"

/**
 * @brief Build the explain JSON of one account into out (shared by the CLI
 * and the HTTP endpoint). CW_NOENT for an unknown account, CW_RETRY if Redis
 * is unavailable.
 */
cw_err_t cw_explain_json(const cw_conf_t *conf, const cw_layout_t *layout, cw_state_t *st,
                         const char *account_id, int64_t asof_ms, cw_buf_t *out);

/** @brief The `explain` subcommand; returns the process exit code. */
int cw_explain_main(int argc, char **argv);

#endif
