/*
 * test_dashboard.c — the dashboard page, end to end, in a real browser:
 * a real redis-server and the embedded broker, `churnwatch gen` traffic
 * replayed through `churnwatch run` with http.listen on a free loopback
 * port, then Debian's headless Chromium loads http://127.0.0.1:PORT/ and
 * the DOM it ends up with (after the page's own fetches ran) must show
 *  - one table row per account of /at-risk?limit=25, in the same order,
 *    each with that account's score and band;
 *  - the summary counts of those rows;
 *  - for /#account=ID, the breakdown panel of that account, with the same
 *    window counts /accounts/ID reports.
 * It also renders a 1280x800 screenshot (a PNG); set
 * CW_DASHBOARD_SCREENSHOT=path to keep it (docs/dashboard.png is made so).
 * Skipped when chromium is not installed (apt-get install chromium), except
 * under CI=true, where scripts/setup.sh has installed it and a skip fails.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "cw_common.h"
#include "cw_conf.h"
#include "cw_harness.h"

#define TOPICS "events,churn-alerts,account-scores,events-dlq"
#define PAGE_LIMIT 25 /* the page's default "Show" value */

static const char *chromium_path(void) {
    static const char *const candidates[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser"};
    const char *env = getenv("CW_CHROMIUM");
    if (env != NULL && access(env, X_OK) == 0) {
        return env;
    }
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        if (access(candidates[i], X_OK) == 0) {
            return candidates[i];
        }
    }
    return NULL;
}

/* ---- a minimal HTTP/1.0 client ---- */

static int http_get(uint16_t port, const char *path, char **body) {
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    ssize_t got;
    while ((got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    close(fd);
    buf[len] = '\0';
    int status = -1;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep != NULL && sscanf(buf, "HTTP/1.%*d %d", &status) == 1) {
        *body = strdup(sep + 4);
    }
    free(buf);
    return status;
}

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* The value of a series: the line that starts with it (not a # HELP line
 * that mentions the name), or -1 when there is none. */
static double metric(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, series, n) == 0) {
            return strtod(p + n, NULL);
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return -1;
}

/* ---- the browser ---- */

/* Load url in headless Chromium; returns the serialised DOM (heap). */
static char *chromium(const char *bin, const char *dir, const char *url, const char *screenshot) {
    char profile[600], dom[600], err[600], shot_arg[700];
    snprintf(profile, sizeof(profile), "%s/chromium-profile", dir);
    snprintf(dom, sizeof(dom), "%s/dom.html", dir);
    snprintf(err, sizeof(err), "%s/chromium.log", dir);
    char profile_arg[700];
    snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", profile);
    const char *argv[24];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--headless";
    argv[n++] = "--no-sandbox";
    argv[n++] = "--disable-gpu";
    argv[n++] = "--disable-quic";
    argv[n++] = "--no-first-run";
    argv[n++] = "--disable-background-networking";
    argv[n++] = "--disable-component-update";
    argv[n++] = "--disable-sync";
    argv[n++] = profile_arg;
    argv[n++] = "--virtual-time-budget=8000";
    if (screenshot != NULL) {
        snprintf(shot_arg, sizeof(shot_arg), "--screenshot=%s", screenshot);
        argv[n++] = shot_arg;
        argv[n++] = "--window-size=1280,800";
        argv[n++] = "--hide-scrollbars";
    } else {
        argv[n++] = "--dump-dom";
    }
    argv[n++] = url;
    argv[n] = NULL;
    pid_t pid = cw_h_spawn(argv, dom, err);
    cr_assert_gt(pid, 0);
    int rc = cw_h_wait(pid, 120000);
    cr_assert_eq(rc, 0, "chromium exited %d (log: %s)", rc, err);
    char *out = cw_h_read_file(dom, NULL);
    cr_assert_not_null(out);
    return out;
}

/* Undo the HTML serialiser's escaping of attribute values / text. */
static void unescape_html(char *s) {
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&quot;", '"'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&#39;", '\''}};
    char *w = s;
    for (const char *r = s; *r != '\0';) {
        size_t i;
        for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
            size_t l = strlen(ents[i].ent);
            if (strncmp(r, ents[i].ent, l) == 0) {
                *w++ = ents[i].c;
                r += l;
                break;
            }
        }
        if (i == sizeof(ents) / sizeof(ents[0])) {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* Copy the attribute/text value that starts at p and ends at `end`. */
static void copy_until(const char *p, char end, char *out, size_t size) {
    size_t i = 0;
    while (p[i] != '\0' && p[i] != end && i + 1 < size) {
        out[i] = p[i];
        i++;
    }
    out[i] = '\0';
    unescape_html(out);
}

/* Text of the element with id="id" (its first text run). */
static void text_of_id(const char *dom, const char *id, char *out, size_t size) {
    char needle[96];
    snprintf(needle, sizeof(needle), "id=\"%s\"", id);
    const char *p = strstr(dom, needle);
    cr_assert_not_null(p, "no element #%s in the page", id);
    p = strchr(p, '>');
    cr_assert_not_null(p);
    copy_until(p + 1, '<', out, size);
}

typedef struct api_item {
    char id[CW_FIELD_MAX];
    double score;
    char band[16];
} api_item_t;

Test(dashboard, headless_chromium_shows_the_at_risk_accounts, .timeout = 600) {
    const char *bin = chromium_path();
    if (bin == NULL) {
        /* scripts/setup.sh installs it, so CI must have it: a skip there
         * would be a test that cannot fail */
        const char *ci = getenv("CI");
        cr_assert(ci == NULL || ci[0] == '\0', "CI=%s but chromium is not installed", ci);
        cr_skip_test("chromium is not installed (apt-get install chromium)");
    }
    cw_h_redis_t *redis = cw_h_redis_start();
    cw_h_broker_t *broker = cw_h_broker_start(4, TOPICS);
    const char *brokers = cw_h_broker_bootstraps(broker);
    char *dir = cw_h_tmpdir();
    char cfg[512], events[512], log[512], conf[2048];
    snprintf(cfg, sizeof(cfg), "%s/churnwatch.json", dir);
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(log, sizeof(log), "%s/run.log", dir);
    uint16_t port = free_port();
    snprintf(conf, sizeof(conf),
             "{ /* test_dashboard */\n"
             "  \"kafka\": {\"brokers\": \"%s\", \"group_id\": \"dash-it\", \"input_topic\": "
             "\"events\",\n"
             "            \"alert_topic\": \"churn-alerts\", \"score_topic\": \"account-scores\",\n"
             "            \"dlq_topic\": \"events-dlq\"},\n"
             "  \"redis\": {\"url\": \"%s\", \"key_prefix\": \"dash\"},\n"
             "  \"http\": {\"listen\": \"127.0.0.1:%u\"}\n}\n",
             brokers, cw_h_redis_url(redis), (unsigned)port);
    cr_assert_eq(cw_h_write_file(cfg, conf), 0);
    const char *gen[] = {CW_H_BINARY, "gen",  "--seed", "5",          "--accounts",       "120",
                         "--days",    "60",   "--end",  "2026-06-01", "--events-per-day", "2",
                         "--out",     events, NULL};
    cr_assert_eq(cw_h_run(gen, 120000, NULL, NULL), 0, "gen failed");

    const char *run[] = {CW_H_BINARY, "run", "--config", cfg, NULL};
    pid_t pid = cw_h_spawn(run, NULL, log);
    cr_assert_gt(pid, 0);
    size_t lines = cw_h_produce_file(brokers, "events", events);
    cr_assert_gt(lines, 0);

    /* wait until every line is consumed and the processor is idle */
    double prev = -1, last_in = -1;
    int settled = 0;
    for (int i = 0; i < 600 && !settled; i++) {
        char *m = NULL;
        if (http_get(port, "/metrics", &m) == 200) {
            double in = 0;
            for (const char *p = m; (p = strstr(p, "churnwatch_events_in_total{")) != NULL; p++) {
                in += strtod(strchr(p, ' ') + 1, NULL);
            }
            for (const char *p = m; (p = strstr(p, "churnwatch_dead_lettered_total{")) != NULL;
                 p++) {
                in += strtod(strchr(p, ' ') + 1, NULL);
            }
            double snaps = metric(m, "churnwatch_snapshots_total ");
            settled = in == (double)lines && snaps > 0 && snaps == prev;
            prev = snaps;
            last_in = in;
        }
        free(m);
        if (!settled) {
            usleep(500 * 1000);
        }
    }
    cr_assert(settled,
              "the processor did not consume all %zu lines (counted %.0f, %.0f snapshots; log: %s)",
              lines, last_in, prev, log);

    /* what the API says */
    char *body = NULL;
    char path[256];
    snprintf(path, sizeof(path), "/at-risk?limit=%d", PAGE_LIMIT);
    cr_assert_eq(http_get(port, path, &body), 200);
    char err[256];
    yajl_val arr = yajl_tree_parse(body, err, sizeof(err));
    cr_assert(arr != NULL && YAJL_IS_ARRAY(arr), "at-risk: %s", err);
    size_t n = YAJL_GET_ARRAY(arr)->len;
    cr_assert_gt(n, 0, "no scored accounts");
    api_item_t *api = calloc(n, sizeof(*api));
    int counts[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        yajl_val it = YAJL_GET_ARRAY(arr)->values[i];
        const char *pid_path[] = {"account_id", NULL}, *ps[] = {"score", NULL},
                   *pb[] = {"band", NULL};
        yajl_val id = yajl_tree_get(it, pid_path, yajl_t_string);
        yajl_val sc = yajl_tree_get(it, ps, yajl_t_number);
        yajl_val band = yajl_tree_get(it, pb, yajl_t_string);
        cr_assert(id != NULL && sc != NULL && band != NULL);
        cw_strlcpy(api[i].id, YAJL_GET_STRING(id), sizeof(api[i].id));
        api[i].score = YAJL_GET_DOUBLE(sc);
        cw_strlcpy(api[i].band, YAJL_GET_STRING(band), sizeof(api[i].band));
        counts[0] += strcmp(api[i].band, "danger") == 0;
        counts[1] += strcmp(api[i].band, "caution") == 0;
        counts[2] += strcmp(api[i].band, "healthy") == 0;
    }
    yajl_tree_free(arr);
    free(body);

    /* what the browser shows */
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", (unsigned)port);
    char *dom = chromium(bin, dir, url, NULL);
    const char *tbody = strstr(dom, "<tbody id=\"rows\">");
    cr_assert_not_null(tbody, "no table body in the page");
    const char *tend = strstr(tbody, "</tbody>");
    cr_assert_not_null(tend);
    size_t rows = 0;
    for (const char *p = tbody; (p = strstr(p, "<tr ")) != NULL && p < tend; p++) {
        const char *next = strstr(p + 1, "<tr ");
        const char *row_end = next != NULL && next < tend ? next : tend;
        const char *a = strstr(p, "data-account=\"");
        cr_assert(a != NULL && a < row_end, "row %zu has no data-account", rows);
        char id[CW_FIELD_MAX * 2], score[32], band[32];
        copy_until(a + 14, '"', id, sizeof(id));
        cr_assert_lt(rows, n, "more rows than the API returned");
        cr_expect_str_eq(id, api[rows].id, "row %zu", rows);
        const char *s = strstr(a, "class=\"n\">");
        cr_assert(s != NULL && s < row_end, "row %zu has no score", rows);
        copy_until(s + 10, '<', score, sizeof(score));
        cr_expect(api[rows].score - strtod(score, NULL) < 0.051 &&
                      strtod(score, NULL) - api[rows].score < 0.051,
                  "row %zu shows score %s, API %g", rows, score, api[rows].score);
        const char *b = strstr(a, "class=\"pill ");
        cr_assert(b != NULL && b < row_end, "row %zu has no band", rows);
        copy_until(strchr(b, '>') + 1, '<', band, sizeof(band));
        cr_expect_str_eq(band, api[rows].band, "row %zu", rows);
        rows++;
    }
    cr_expect_eq(rows, n, "the page shows %zu rows, the API %zu accounts", rows, n);
    char text[64];
    text_of_id(dom, "sum-total", text, sizeof(text));
    cr_expect_eq(atoi(text), (int)n);
    text_of_id(dom, "sum-danger", text, sizeof(text));
    cr_expect_eq(atoi(text), counts[0]);
    text_of_id(dom, "sum-caution", text, sizeof(text));
    cr_expect_eq(atoi(text), counts[1]);
    text_of_id(dom, "sum-healthy", text, sizeof(text));
    cr_expect_eq(atoi(text), counts[2]);
    cr_expect_not_null(strstr(dom, "class=\"status ok\""), "the page reports a loading error");
    free(dom);

    /* the breakdown of the most at-risk account, opened by its link */
    snprintf(path, sizeof(path), "/accounts/%s", api[0].id);
    cr_assert_eq(http_get(port, path, &body), 200);
    yajl_val ex = yajl_tree_parse(body, err, sizeof(err));
    cr_assert_not_null(ex);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/#account=%s", (unsigned)port, api[0].id);
    dom = chromium(bin, dir, url, NULL);
    const char *detail = strstr(dom, "id=\"detail\"");
    cr_assert_not_null(detail);
    const char *tag_end = strchr(detail, '>');
    char needle[CW_FIELD_MAX + 32];
    snprintf(needle, sizeof(needle), "data-account=\"%s\"", api[0].id);
    const char *da = strstr(detail, needle);
    cr_expect(da != NULL && da < tag_end, "the detail panel is not open on %s", api[0].id);
    static const char *const windows[] = {"logins_7d", "logins_30d", "active_users_30d",
                                          "usage_30d", "features_30d"};
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        const char *wpath[] = {"windows", windows[w], NULL};
        yajl_val v = yajl_tree_get(ex, wpath, yajl_t_number);
        cr_assert_not_null(v, "explain has no %s", windows[w]);
        snprintf(needle, sizeof(needle), "data-window=\"%s\"", windows[w]);
        const char *cell = strstr(detail, needle);
        cr_assert_not_null(cell, "the panel shows no %s", windows[w]);
        cell = strstr(cell, "class=\"v\">");
        cr_assert_not_null(cell);
        char shown[32], digits[32];
        copy_until(cell + 10, '<', shown, sizeof(shown));
        size_t k = 0;
        for (const char *c = shown; *c != '\0' && k + 1 < sizeof(digits); c++) {
            if (*c != ',') {
                digits[k++] = *c; /* toLocaleString groups thousands */
            }
        }
        digits[k] = '\0';
        cr_expect_eq(atoll(digits), YAJL_GET_INTEGER(v), "%s: page %s, API %lld", windows[w], shown,
                     YAJL_GET_INTEGER(v));
    }
    yajl_tree_free(ex);
    free(body);
    free(dom);

    /* a screenshot for people (kept when CW_DASHBOARD_SCREENSHOT is set) */
    char shot[600];
    const char *keep = getenv("CW_DASHBOARD_SCREENSHOT");
    snprintf(shot, sizeof(shot), "%s", keep != NULL && keep[0] != '\0' ? keep : "");
    if (shot[0] == '\0') {
        snprintf(shot, sizeof(shot), "%s/dashboard.png", dir);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", (unsigned)port);
    free(chromium(bin, dir, url, shot));
    size_t png_len = 0;
    char *png = cw_h_read_file(shot, &png_len);
    cr_assert_not_null(png, "no screenshot written");
    cr_expect_gt(png_len, 10000);
    cr_expect_eq(memcmp(png, "\x89PNG\r\n\x1a\n", 8), 0, "the screenshot is not a PNG");
    free(png);

    kill(pid, SIGTERM);
    cr_expect_eq(cw_h_wait(pid, 30000), 0, "churnwatch run did not exit 0 on SIGTERM");
    free(api);
    cw_h_broker_stop(broker);
    cw_h_redis_stop(redis);
    cw_h_rmrf(dir);
    free(dir);
}
