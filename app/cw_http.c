/*
 * cw_http.c — the HTTP listener (see cw_http.h): routes, JSON documents
 * built into reusable buffers, and the embedded dashboard files.
 *
 * Threading: libmicrohttpd runs ONE internal polling thread and calls
 * on_request on it for every request, so h->state and the scratch buffers
 * below are only ever touched by that thread. The processor's numbers
 * arrive through cw_metrics (atomics); the account data comes from Redis
 * through the listener's own cw_state_t, connected lazily and reconnected
 * by the next request after a failure (a request never waits for a
 * backoff: Redis down answers 503 at once).
 *
 * Responses are never cached (Cache-Control: no-store): they are live
 * numbers. The dashboard is served with a Content-Security-Policy that
 * allows only its own origin, which also guarantees it uses no CDN.
 */
#include "cw_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <yajl/yajl_tree.h>

#include "cw_explain.h"

#define AT_RISK_DEFAULT 20
#define AT_RISK_MAX 500
#define HISTORY_MAX 90 /* points returned per account (history_len defaults to 30) */
#define N_DRIVERS 3    /* drivers listed per at-risk account */
#define MIN_POINTS_LOST 0.05

#define CT_JSON "application/json"
#define CSP                                                                                        \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

struct cw_http {
    const cw_conf_t *conf;     /* borrowed */
    cw_layout_t layout;        /* copy: the state keeps a pointer to it */
    cw_metrics_t *metrics;     /* borrowed; may be NULL */
    cw_http_sources_t src;     /* optional readers (NULL members = off) */
    cw_state_t *state;         /* owned; HTTP thread only */
    struct MHD_Daemon *daemon; /* owned */
    uint16_t port;             /* bound port */
    cw_buf_t out;              /* response body scratch; HTTP thread only */
    cw_buf_t snap;             /* snapshot scratch; HTTP thread only */
    char (*ids)[CW_FIELD_MAX]; /* AT_RISK_MAX ids; owned */
    double *scores;            /* AT_RISK_MAX scores; owned */
    int64_t hist_ms[HISTORY_MAX];
    double hist_sc[HISTORY_MAX];
};

/* ---- listen address ---- */

int cw_http_parse_listen(const char *listen, char *host, size_t host_size, uint16_t *port) {
    const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;
    if (colon == NULL || colon[1] == '\0' || strlen(colon + 1) > 5) {
        return -1;
    }
    long p = 0;
    for (const char *d = colon + 1; *d != '\0'; d++) {
        if (*d < '0' || *d > '9') {
            return -1;
        }
        p = p * 10 + (*d - '0');
    }
    if (p > 65535) {
        return -1;
    }
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    } else if (memchr(h, ':', hl) != NULL) {
        return -1; /* an IPv6 address must be written in brackets */
    }
    if (hl == 0) {
        h = "0.0.0.0";
        hl = 7;
    }
    if (hl + 1 > host_size) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

/* ---- responses ---- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               const void *data, size_t len, enum MHD_ResponseMemoryMode mode,
                               int html) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, mode);
    if (r == NULL) {
        return MHD_NO;
    }
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff") != MHD_YES ||
        (html && MHD_add_response_header(r, "Content-Security-Policy", CSP) != MHD_YES)) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r); /* the connection keeps its own reference */
    return ret;
}

/* Send h->out as JSON (500 if building it ran out of memory). */
static enum MHD_Result send_json(cw_http_t *h, struct MHD_Connection *c, unsigned status) {
    if (h->out.oom) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        return respond(c, MHD_HTTP_INTERNAL_SERVER_ERROR, CT_JSON, oom, sizeof(oom) - 1,
                       MHD_RESPMEM_PERSISTENT, 0);
    }
    return respond(c, status, CT_JSON, h->out.data != NULL ? h->out.data : "", h->out.len,
                   MHD_RESPMEM_MUST_COPY, 0);
}

static enum MHD_Result send_error(cw_http_t *h, struct MHD_Connection *c, unsigned status,
                                  const char *msg, const char *account_id) {
    cw_buf_reset(&h->out);
    cw_buf_puts(&h->out, "{\"error\":");
    cw_buf_json_str(&h->out, msg, strlen(msg));
    if (account_id != NULL) {
        cw_buf_puts(&h->out, ",\"account_id\":");
        cw_buf_json_str(&h->out, account_id, strlen(account_id));
    }
    cw_buf_puts(&h->out, "}");
    return send_json(h, c, status);
}

/* Map a state/Redis failure to a response. */
static enum MHD_Result send_state_error(cw_http_t *h, struct MHD_Connection *c, cw_err_t err,
                                        const char *account_id) {
    if (err == CW_NOENT) {
        return send_error(h, c, MHD_HTTP_NOT_FOUND, "unknown account", account_id);
    }
    if (err == CW_RETRY) {
        return send_error(h, c, MHD_HTTP_SERVICE_UNAVAILABLE, "redis unavailable", NULL);
    }
    return send_error(h, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "state error", NULL);
}

/* ---- endpoints ---- */

static enum MHD_Result get_metrics(cw_http_t *h, struct MHD_Connection *c) {
    if (h->src.band_counts != NULL && h->metrics != NULL) {
        uint64_t counts[3] = {0, 0, 0};
        cw_err_t r = h->src.band_counts(h->state, counts);
        cw_metrics_set_accounts(h->metrics, counts, r == CW_OK);
    }
    cw_buf_reset(&h->out);
    cw_metrics_render(h->metrics, &h->out);
    if (h->out.oom) {
        return send_error(h, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", NULL);
    }
    return respond(c, MHD_HTTP_OK, CW_METRICS_CONTENT_TYPE, h->out.data != NULL ? h->out.data : "",
                   h->out.len, MHD_RESPMEM_MUST_COPY, 0);
}

static enum MHD_Result get_readyz(cw_http_t *h, struct MHD_Connection *c) {
    int up = 0, assigned = 0;
    int ready = cw_metrics_ready(h->metrics, &up, &assigned);
    cw_buf_reset(&h->out);
    cw_buf_printf(&h->out, "{\"ready\":%s,\"redis\":%s,\"assigned_partitions\":%d}",
                  ready ? "true" : "false", up ? "true" : "false", assigned);
    return send_json(h, c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE);
}

static int valid_id(const char *id) {
    size_t n = strlen(id);
    return n > 0 && n < CW_FIELD_MAX;
}

static enum MHD_Result get_account(cw_http_t *h, struct MHD_Connection *c, const char *id) {
    if (!valid_id(id)) {
        return send_error(h, c, MHD_HTTP_NOT_FOUND, "unknown account", id);
    }
    cw_buf_reset(&h->out);
    cw_err_t r = cw_explain_json(h->conf, &h->layout, h->state, id, -1, &h->out);
    if (r != CW_OK) {
        return send_state_error(h, c, r, id);
    }
    return send_json(h, c, MHD_HTTP_OK);
}

/* Fetch up to HISTORY_MAX points of an account's score history into
 * h->hist_ms/hist_sc (newest first); *n = 0 for none. */
static cw_err_t fetch_history(cw_http_t *h, const char *id, size_t *n) {
    *n = 0;
    cw_err_t r = h->src.history(h->state, id, HISTORY_MAX, h->hist_ms, h->hist_sc, n);
    if (*n > HISTORY_MAX) {
        *n = HISTORY_MAX;
    }
    if (r != CW_OK) {
        *n = 0;
    }
    return r;
}

/* Append the fetched points as [[asof_ms,score],...], oldest first. */
static void put_history(cw_http_t *h, size_t n) {
    cw_buf_puts(&h->out, "[");
    for (size_t i = 0; i < n; i++) {
        size_t k = n - 1 - i;
        cw_buf_printf(&h->out, "%s[%lld,", i > 0 ? "," : "", (long long)h->hist_ms[k]);
        cw_buf_json_num(&h->out, h->hist_sc[k]);
        cw_buf_puts(&h->out, "]");
    }
    cw_buf_puts(&h->out, "]");
}

static enum MHD_Result get_history(cw_http_t *h, struct MHD_Connection *c, const char *id) {
    if (h->src.history == NULL) {
        return send_error(h, c, MHD_HTTP_NOT_IMPLEMENTED, "score history not available", NULL);
    }
    if (!valid_id(id)) {
        return send_error(h, c, MHD_HTTP_NOT_FOUND, "unknown account", id);
    }
    size_t n = 0;
    cw_err_t r = fetch_history(h, id, &n);
    if (r != CW_OK) {
        return send_state_error(h, c, r, id);
    }
    cw_buf_reset(&h->out);
    cw_buf_puts(&h->out, "{\"account_id\":");
    cw_buf_json_str(&h->out, id, strlen(id));
    cw_buf_puts(&h->out, ",\"history\":");
    put_history(h, n);
    cw_buf_puts(&h->out, "}");
    return send_json(h, c, MHD_HTTP_OK);
}

static const char *tree_str(yajl_val obj, const char *key) {
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v != NULL ? YAJL_GET_STRING(v) : NULL;
}

static void put_str_field(cw_buf_t *b, const char *key, const char *v) {
    cw_buf_printf(b, ",\"%s\":", key);
    if (v != NULL) {
        cw_buf_json_str(b, v, strlen(v));
    } else {
        cw_buf_puts(b, "null");
    }
}

typedef struct driver {
    const char *name;
    double normalised;
    double points_lost;
} driver_t;

/*
 * The signals that cost the account the most points: with weights w, the
 * score is 100 * sum(w * n) / sum(w) over the signals that are not
 * missing, so a signal loses 100 * w * (1 - n) / sum(w) points.
 */
static void put_drivers(cw_http_t *h, yajl_val signals) {
    const cw_model_t *model = &h->conf->model;
    driver_t d[CW_MAX_SIGNALS];
    int nd = 0;
    double wsum = 0;
    for (int i = 0; i < model->n_signals && YAJL_IS_OBJECT(signals); i++) {
        const char *path[] = {model->signals[i].name, NULL};
        yajl_val s = yajl_tree_get(signals, path, yajl_t_object);
        const char *pm[] = {"missing", NULL}, *pn[] = {"normalised", NULL};
        yajl_val missing = s != NULL ? yajl_tree_get(s, pm, yajl_t_any) : NULL;
        yajl_val norm = s != NULL ? yajl_tree_get(s, pn, yajl_t_number) : NULL;
        if (norm == NULL || YAJL_IS_TRUE(missing)) {
            continue;
        }
        double n = YAJL_GET_DOUBLE(norm);
        wsum += model->signals[i].weight;
        d[nd].name = model->signals[i].name;
        d[nd].normalised = n;
        d[nd].points_lost = model->signals[i].weight * (1.0 - (n > 1 ? 1 : n < 0 ? 0 : n));
        nd++;
    }
    /* worst first (insertion sort: at most CW_MAX_SIGNALS) */
    for (int i = 1; i < nd; i++) {
        driver_t t = d[i];
        int j = i - 1;
        while (j >= 0 && d[j].points_lost < t.points_lost) {
            d[j + 1] = d[j];
            j--;
        }
        d[j + 1] = t;
    }
    cw_buf_puts(&h->out, ",\"drivers\":[");
    int shown = 0;
    for (int i = 0; i < nd && shown < N_DRIVERS && wsum > 0; i++) {
        double lost = 100.0 * d[i].points_lost / wsum;
        if (lost < MIN_POINTS_LOST) {
            break;
        }
        cw_buf_puts(&h->out, shown > 0 ? ",{\"name\":" : "{\"name\":");
        cw_buf_json_str(&h->out, d[i].name, strlen(d[i].name));
        cw_buf_puts(&h->out, ",\"normalised\":");
        cw_buf_json_num(&h->out, d[i].normalised);
        cw_buf_puts(&h->out, ",\"points_lost\":");
        cw_buf_json_num(&h->out, (double)(int64_t)(lost * 10.0 + 0.5) / 10.0);
        cw_buf_puts(&h->out, "}");
        shown++;
    }
    cw_buf_puts(&h->out, "]");
}

/* One /at-risk item: rank, id, score, fields of the stored snapshot, the
 * drivers, the raw snapshot and the history. */
static cw_err_t put_at_risk_item(cw_http_t *h, size_t i) {
    const char *id = h->ids[i];
    cw_err_t r = cw_state_snapshot(h->state, id, &h->snap);
    yajl_val snap = NULL;
    if (r == CW_OK && !h->snap.oom && h->snap.data != NULL) {
        char err[128];
        snap = yajl_tree_parse(h->snap.data, err, sizeof(err));
        if (snap == NULL || !YAJL_IS_OBJECT(snap)) {
            CW_LOG(CW_LOG_WARN, "http", "stored snapshot of %s is not a JSON object", id);
            yajl_tree_free(snap);
            snap = NULL;
        }
    } else if (r != CW_NOENT && r != CW_OK) {
        return r;
    }
    cw_buf_printf(&h->out, "%s{\"rank\":%zu,\"account_id\":", i > 0 ? "," : "", i + 1);
    cw_buf_json_str(&h->out, id, strlen(id));
    cw_buf_puts(&h->out, ",\"score\":");
    cw_buf_json_num(&h->out, h->scores[i]);
    put_str_field(&h->out, "band", snap != NULL ? tree_str(snap, "band") : NULL);
    put_str_field(&h->out, "tier", snap != NULL ? tree_str(snap, "tier") : NULL);
    put_str_field(&h->out, "phase", snap != NULL ? tree_str(snap, "phase") : NULL);
    put_str_field(&h->out, "as_of", snap != NULL ? tree_str(snap, "as_of") : NULL);
    const char *ps[] = {"signals", NULL}, *pa[] = {"active_reasons", NULL};
    put_drivers(h, snap != NULL ? yajl_tree_get(snap, ps, yajl_t_object) : NULL);
    yajl_val reasons = snap != NULL ? yajl_tree_get(snap, pa, yajl_t_array) : NULL;
    cw_buf_puts(&h->out, ",\"active_reasons\":[");
    size_t n_reasons = 0;
    for (size_t k = 0; reasons != NULL && k < YAJL_GET_ARRAY(reasons)->len; k++) {
        const char *reason = YAJL_GET_STRING(YAJL_GET_ARRAY(reasons)->values[k]);
        if (reason != NULL) {
            cw_buf_puts(&h->out, n_reasons++ > 0 ? "," : "");
            cw_buf_json_str(&h->out, reason, strlen(reason));
        }
    }
    cw_buf_puts(&h->out, "],\"snapshot\":");
    if (snap != NULL) {
        cw_buf_append(&h->out, h->snap.data, h->snap.len); /* parsed above: valid JSON */
    } else {
        cw_buf_puts(&h->out, "null");
    }
    yajl_tree_free(snap);
    if (h->src.history != NULL) {
        size_t n = 0;
        r = fetch_history(h, id, &n);
        if (r != CW_OK && r != CW_NOENT) {
            return r;
        }
        cw_buf_puts(&h->out, ",\"history\":");
        put_history(h, n);
    }
    cw_buf_puts(&h->out, "}");
    return CW_OK;
}

static enum MHD_Result get_at_risk(cw_http_t *h, struct MHD_Connection *c) {
    size_t limit = AT_RISK_DEFAULT;
    const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    if (arg != NULL) {
        char *end = NULL;
        long v = strtol(arg, &end, 10);
        if (arg[0] == '\0' || end == NULL || *end != '\0' || v < 1) {
            return send_error(h, c, MHD_HTTP_BAD_REQUEST, "limit must be an integer >= 1", NULL);
        }
        limit = v > AT_RISK_MAX ? AT_RISK_MAX : (size_t)v;
    }
    size_t n = 0;
    cw_err_t r = cw_state_at_risk(h->state, limit, h->ids, h->scores, &n);
    if (r != CW_OK) {
        return send_state_error(h, c, r, NULL);
    }
    cw_buf_reset(&h->out);
    cw_buf_puts(&h->out, "[");
    for (size_t i = 0; i < n && i < limit; i++) {
        r = put_at_risk_item(h, i);
        if (r != CW_OK) {
            return send_state_error(h, c, r == CW_NOENT ? CW_ERROR : r, NULL);
        }
    }
    cw_buf_puts(&h->out, "]");
    return send_json(h, c, MHD_HTTP_OK);
}

/* The embedded dashboard file served at url, or NULL. */
static const cw_http_asset_t *find_asset(const char *url) {
    if (strcmp(url, "/") == 0) {
        url = "/index.html";
    }
    for (size_t i = 0; i < cw_http_n_assets; i++) {
        if (strcmp(cw_http_assets[i].path, url) == 0) {
            return &cw_http_assets[i];
        }
    }
    return NULL;
}

/* ---- dispatch ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    cw_http_t *h = cls;
    (void)version;
    (void)upload_data;
    (void)req_cls;
    *upload_data_size = 0; /* bodies are ignored */
    CW_LOG(CW_LOG_DEBUG, "http", "%s %s", method, url);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char body[] = "{\"error\":\"method not allowed\"}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
        if (r == NULL) {
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CT_JSON);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/metrics") == 0) {
        return get_metrics(h, c);
    }
    if (strcmp(url, "/healthz") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}";
        return respond(c, MHD_HTTP_OK, CT_JSON, ok, sizeof(ok) - 1, MHD_RESPMEM_PERSISTENT, 0);
    }
    if (strcmp(url, "/readyz") == 0) {
        return get_readyz(h, c);
    }
    if (strncmp(url, "/accounts/", 10) == 0) {
        return get_account(h, c, url + 10);
    }
    if (strcmp(url, "/at-risk") == 0) {
        return get_at_risk(h, c);
    }
    if (strncmp(url, "/history/", 9) == 0) {
        return get_history(h, c, url + 9);
    }
    const cw_http_asset_t *a = find_asset(url);
    if (a != NULL) {
        int html = strncmp(a->content_type, "text/html", 9) == 0;
        return respond(c, MHD_HTTP_OK, a->content_type, a->data, a->len, MHD_RESPMEM_PERSISTENT,
                       html);
    }
    return send_error(h, c, MHD_HTTP_NOT_FOUND, "not found", NULL);
}

/* libmicrohttpd's own error messages, routed into the JSON log. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        msg[--n] = '\0';
    }
    CW_LOG(CW_LOG_WARN, "http", "%s", msg);
}

/* ---- lifecycle ---- */

cw_http_t *cw_http_new(const cw_conf_t *conf, const cw_layout_t *layout, cw_metrics_t *metrics,
                       char *errstr, size_t errstr_size) {
    return cw_http_new_with(conf, layout, metrics, NULL, errstr, errstr_size);
}

cw_http_t *cw_http_new_with(const cw_conf_t *conf, const cw_layout_t *layout, cw_metrics_t *metrics,
                            const cw_http_sources_t *sources, char *errstr, size_t errstr_size) {
    char host[CW_STR_MAX];
    uint16_t port = 0;
    if (cw_http_parse_listen(conf->http_listen, host, sizeof(host), &port) != 0) {
        snprintf(errstr, errstr_size, "http.listen: '%s' is not HOST:PORT", conf->http_listen);
        return NULL;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || res == NULL) {
        snprintf(errstr, errstr_size, "http.listen: cannot resolve '%s': %s", host,
                 gai != 0 ? gai_strerror(gai) : "no address");
        return NULL;
    }
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof(sa));
    memcpy(&sa, res->ai_addr, res->ai_addrlen < sizeof(sa) ? res->ai_addrlen : sizeof(sa));
    int family = res->ai_family;
    freeaddrinfo(res);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (family == AF_INET6) {
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons(port);
        flags |= MHD_USE_IPv6;
    } else if (family == AF_INET) {
        ((struct sockaddr_in *)&sa)->sin_port = htons(port);
    } else {
        snprintf(errstr, errstr_size, "http.listen: '%s' is not an IP address", host);
        return NULL;
    }

    cw_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(errstr, errstr_size, "http: out of memory");
        return NULL;
    }
    h->conf = conf;
    h->layout = *layout;
    h->metrics = metrics;
    if (sources != NULL) {
        h->src = *sources;
    }
    h->ids = calloc(AT_RISK_MAX, sizeof(*h->ids));
    h->scores = calloc(AT_RISK_MAX, sizeof(*h->scores));
    if (h->ids == NULL || h->scores == NULL) {
        snprintf(errstr, errstr_size, "http: out of memory");
        cw_http_destroy(h);
        return NULL;
    }
    h->state = cw_state_new(conf, &h->layout, errstr, errstr_size);
    if (h->state == NULL) {
        cw_http_destroy(h);
        return NULL;
    }
    h->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                                 mhd_log, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)128, MHD_OPTION_END);
    if (h->daemon == NULL) {
        snprintf(errstr, errstr_size, "http.listen: cannot listen on %s (address in use?)",
                 conf->http_listen);
        cw_http_destroy(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di != NULL ? di->port : port;
    CW_LOG(CW_LOG_INFO, "http", "listening on %s%s%s:%u (/metrics /healthz /readyz /)",
           family == AF_INET6 ? "[" : "", host, family == AF_INET6 ? "]" : "", (unsigned)h->port);
    return h;
}

uint16_t cw_http_port(const cw_http_t *h) {
    return h != NULL ? h->port : 0;
}

void cw_http_destroy(cw_http_t *h) {
    if (h == NULL) {
        return;
    }
    if (h->daemon != NULL) {
        MHD_stop_daemon(h->daemon); /* joins the polling thread */
    }
    cw_state_destroy(h->state);
    cw_buf_free(&h->out);
    cw_buf_free(&h->snap);
    free(h->ids);
    free(h->scores);
    free(h);
}
