/*
 * cw_http.h — the metrics / health / dashboard listener (`http.listen`).
 *
 * A libmicrohttpd daemon with ONE internal polling thread
 * (MHD_USE_INTERNAL_POLLING_THREAD, no thread pool): every request is
 * served on that thread, one after the other, so the listener can own a
 * single cw_state_t (hiredis contexts are not thread-safe; the processor
 * keeps its own) and a few reusable buffers without locks. It reads the
 * processor's counters and readiness through cw_metrics (C11 atomics).
 *
 * Endpoints (GET/HEAD only; JSON unless noted):
 *   /metrics          Prometheus text format (cw_metrics_render)
 *   /healthz          200 while the process serves requests
 *   /readyz           200 when the processor's Redis connection is up and it
 *                     has at least one partition assigned, else 503
 *   /accounts/ID      the `explain` JSON of one account (404 unknown, 503
 *                     when Redis is unavailable)
 *   /at-risk?limit=N  array of the N (default 20, 1..500) lowest-scored
 *                     accounts: rank, account_id, score, the stored score
 *                     snapshot, its top drivers (points lost per signal)
 *                     and, when available, the score history
 *   /history/ID       an account's score history, oldest first
 *   /                 the dashboard page (static files from app/dashboard,
 *                     embedded at build time)
 *
 * Ownership: cw_http_t owns the daemon, its cw_state_t and buffers. It
 * copies the layout; conf and metrics are borrowed and must outlive it
 * (destroy the listener first).
 */
#ifndef CW_HTTP_H
#define CW_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "cw_common.h"
#include "cw_conf.h"
#include "cw_metrics.h"
#include "cw_model.h"
#include "cw_state.h"

typedef struct cw_http cw_http_t;

/* One embedded dashboard file; the table is generated at build time from
 * app/dashboard/ by app/dashboard/embed.cmake. */
typedef struct cw_http_asset {
    const char *path;         /* "/index.html" */
    const char *content_type; /* "text/html; charset=utf-8" */
    const unsigned char *data;
    size_t len;
} cw_http_asset_t;
extern const cw_http_asset_t cw_http_assets[];
extern const size_t cw_http_n_assets;

/*
 * Optional readers of the Redis state, called on the HTTP thread with the
 * listener's own cw_state_t. NULL members turn the feature off: no
 * history in /at-risk and /history/ID answers 501; no churnwatch_accounts
 * gauge in /metrics.
 */
typedef struct cw_http_sources {
    /** Up to max score-history points of an account, NEWEST first, into
     * asof_ms[]/scores[]; CW_NOENT when the account has none. */
    cw_err_t (*history)(cw_state_t *st, const char *account_id, size_t max, int64_t *asof_ms,
                        double *scores, size_t *n_out);
    /** Accounts per band (index cw_band_t) as stored in Redis. */
    cw_err_t (*band_counts)(cw_state_t *st, uint64_t counts[3]);
} cw_http_sources_t;

/**
 * @brief Start listening on conf->http_listen ("HOST:PORT"; port 0 picks a
 * free port, see cw_http_port). Same as cw_http_new_with(..., NULL, ...).
 * @param metrics borrowed; may be NULL (then /metrics is empty and /readyz
 *        answers 503).
 * @returns the listener, or NULL with the reason in errstr.
 */
cw_http_t *cw_http_new(const cw_conf_t *conf, const cw_layout_t *layout, cw_metrics_t *metrics,
                       char *errstr, size_t errstr_size);

/** @brief cw_http_new with optional state readers (copied; may be NULL). */
cw_http_t *cw_http_new_with(const cw_conf_t *conf, const cw_layout_t *layout, cw_metrics_t *metrics,
                            const cw_http_sources_t *sources, char *errstr, size_t errstr_size);

/** @brief The TCP port actually bound (useful with port 0). */
uint16_t cw_http_port(const cw_http_t *h);

/** @brief Stop the listener thread, close connections, free; NULL ok. */
void cw_http_destroy(cw_http_t *h);

/**
 * @brief Split "HOST:PORT" ("[::1]:9090", "0.0.0.0:0") into host and port.
 * @returns 0, or -1 when the text is not HOST:PORT with a port 0..65535.
 */
int cw_http_parse_listen(const char *listen, char *host, size_t host_size, uint16_t *port);

#endif
