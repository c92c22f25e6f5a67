/*
 * cw_explain.c — the explain subcommand (see cw_explain.h). It never writes
 * to Redis: it reads the account, recomputes score and band exactly as the
 * processor would at that as-of time, and prints them.
 */
#include "cw_explain.h"

#include <stdio.h>
#include <string.h>

#include "cw_alert.h"
#include "cw_model.h"

cw_err_t cw_explain_json(const cw_conf_t *conf, const cw_layout_t *layout, cw_state_t *st,
                         const char *account_id, int64_t asof_ms, cw_buf_t *out) {
    cw_account_state_t acct;
    cw_score_t score;
    cw_err_t r = cw_state_connect(st);
    if (r != CW_OK) {
        return r;
    }
    r = cw_state_read(st, account_id, asof_ms, &acct);
    if (r != CW_OK) {
        return r;
    }
    cw_model_score(&conf->model, layout, &acct, &score);
    cw_band_t band = score.forced_danger ? CW_BAND_DANGER
                                         : cw_alert_band(&conf->model, score.tier, score.score,
                                                         acct.has_score, (cw_band_t)acct.band);
    cw_alert_explain_json(&conf->model, layout, &acct, &score, band, out);
    return out->oom ? CW_ERROR : CW_OK;
}

static void usage(FILE *f) {
    fprintf(f, "usage: churnwatch explain ACCOUNT --config FILE [--json] [--at RFC3339]\n"
               "  Print an account's health score breakdown: each signal's raw value,\n"
               "  normalised score, weight and contribution; the window counts; band,\n"
               "  tier, phase and the last alert. --json prints one JSON object.\n"
               "  Exit 0 on success, 1 for an unknown account, 2 on errors.\n");
}

int cw_explain_main(int argc, char **argv) {
    const char *account = NULL, *config = NULL, *at = NULL;
    int json = 0;
    char errstr[512];
    int64_t asof = -1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc) {
            at = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && account == NULL) {
            account = argv[i];
        } else {
            fprintf(stderr, "explain: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (account == NULL || config == NULL) {
        usage(stderr);
        return 2;
    }
    if (at != NULL && cw_time_parse_rfc3339(at, strlen(at), &asof) != 0) {
        fprintf(stderr, "explain: --at '%s' is not an RFC 3339 time\n", at);
        return 2;
    }
    cw_conf_t *conf = cw_conf_load(config, errstr, sizeof(errstr));
    if (conf == NULL) {
        fprintf(stderr, "explain: %s\n", errstr);
        return 2;
    }
    cw_layout_t layout;
    if (cw_layout_build(&conf->model, &layout, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "explain: %s\n", errstr);
        cw_conf_destroy(conf);
        return 2;
    }
    cw_state_t *st = cw_state_new(conf, &layout, errstr, sizeof(errstr));
    if (st == NULL) {
        fprintf(stderr, "explain: %s\n", errstr);
        cw_conf_destroy(conf);
        return 2;
    }
    cw_buf_t out = CW_BUF_INIT;
    cw_err_t r = cw_explain_json(conf, &layout, st, account, asof, &out);
    int rc = 0;
    if (r == CW_NOENT) {
        fprintf(stderr, "explain: unknown account '%s'\n", account);
        rc = 1;
    } else if (r != CW_OK) {
        fprintf(stderr, "explain: cannot read account '%s' from %s: %s\n", account, conf->redis_url,
                cw_err2str(r));
        rc = 2;
    } else if (json) {
        printf("%s\n", out.data);
    } else {
        /* human form: the same document, one key per line is enough here */
        printf("%s\n", out.data);
    }
    cw_buf_free(&out);
    cw_state_destroy(st);
    cw_conf_destroy(conf);
    return rc;
}
