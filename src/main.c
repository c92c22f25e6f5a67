/*
 * main.c — the churnwatch entry point: dispatches subcommands. Only this
 * file exits; every module returns errors.
 *
 *   churnwatch run --config FILE [--exit-on-idle MS]   the processor
 *   churnwatch broker --partitions N --topics a,b,c    embedded dev broker
 *   churnwatch explain ACCOUNT --config FILE --json    one account's score
 *   churnwatch check-config FILE                       validate a config
 *   churnwatch migrate --config FILE                   move Redis state to this layout
 *   churnwatch config-docs                             print docs/configuration.md
 *   churnwatch gen [...]                               traffic generator
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_broker.h"
#include "cw_common.h"
#include "cw_conf.h"
#include "cw_explain.h"
#include "cw_gen.h"
#include "cw_http.h"
#include "cw_metrics.h"
#include "cw_model.h"
#include "cw_pipeline.h"
#include "cw_state.h"

#define CW_VERSION "0.1.0"

static cw_pipeline_t *g_pipeline; /* for the signal handler */

static void on_signal(int sig) {
    (void)sig;
    if (g_pipeline != NULL) {
        cw_pipeline_stop(g_pipeline);
    }
}

static void usage(FILE *f) {
    fprintf(f,
            "churnwatch " CW_VERSION " — streaming churn-risk processor\n\n"
            "usage: churnwatch COMMAND [options]   (COMMAND --help for details)\n\n"
            "  run --config FILE         consume events, keep Redis state, emit scores and alerts\n"
            "  broker --partitions N --topics a,b,c | --config FILE\n"
            "                            embedded Kafka-protocol development broker\n"
            "  explain ACCOUNT --config FILE [--json]\n"
            "                            an account's health score, signals and windows\n"
            "  check-config FILE         validate a config file (names the bad key)\n"
            "  migrate --config FILE     move Redis state written by an older version to\n"
            "                            this version's key layout (all churnwatch stopped)\n"
            "  config-docs               print the configuration reference (Markdown)\n"
            "  gen [options]             deterministic traffic generator\n"
            "  version                   print the version\n");
}

static int run_main(int argc, char **argv) {
    const char *config = NULL;
    cw_pipeline_opts_t opts = {0};
    char errstr[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--exit-on-idle") == 0 && i + 1 < argc) {
            opts.exit_on_idle_ms = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: churnwatch run --config FILE [--exit-on-idle MS]\n"
                   "  Runs the processor until SIGTERM/SIGINT (drains, commits, exits 0).\n"
                   "  --exit-on-idle MS: also stop once every partition has been at its end\n"
                   "  for MS milliseconds (replays, tests).\n\nConfiguration keys:\n");
            cw_conf_write_help(stdout);
            return 0;
        } else {
            fprintf(stderr, "run: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (config == NULL) {
        fprintf(stderr, "run: --config FILE is required\n");
        return 2;
    }
    cw_conf_t *conf = cw_conf_load(config, errstr, sizeof(errstr));
    if (conf == NULL) {
        fprintf(stderr, "run: %s\n", errstr);
        return 2;
    }
    int lv = cw_log_level_parse(conf->log_level);
    if (lv >= 0) {
        cw_log_level = lv;
    }
    /* Metrics always (a few atomics); the listener only with http.listen. */
    cw_metrics_t *metrics = cw_metrics_new(conf, errstr, sizeof(errstr));
    if (metrics == NULL) {
        CW_LOG(CW_LOG_ERROR, "main", "%s", errstr);
        cw_conf_destroy(conf);
        return 2;
    }
    opts.metrics = metrics; /* borrowed by the pipeline and the listener */
    cw_pipeline_t *pl = cw_pipeline_new(conf, &opts, errstr, sizeof(errstr));
    if (pl == NULL) {
        CW_LOG(CW_LOG_ERROR, "main", "%s", errstr);
        cw_metrics_destroy(metrics);
        cw_conf_destroy(conf);
        return 2;
    }
    cw_http_t *http = NULL;
    cw_layout_t layout;
    if (conf->http_listen[0] != '\0') {
        static const cw_http_sources_t sources = {cw_state_history, cw_state_band_counts};
        if (cw_layout_build(&conf->model, &layout, errstr, sizeof(errstr)) == 0) {
            http = cw_http_new_with(conf, &layout, metrics, &sources, errstr, sizeof(errstr));
        }
        if (http == NULL) {
            CW_LOG(CW_LOG_ERROR, "main", "http.listen %s: %s", conf->http_listen, errstr);
            cw_pipeline_destroy(pl);
            cw_metrics_destroy(metrics);
            cw_conf_destroy(conf);
            return 2;
        }
        CW_LOG(CW_LOG_INFO, "main", "metrics, health and dashboard on http://%s/",
               conf->http_listen);
    }
    g_pipeline = pl;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = cw_pipeline_run(pl);
    g_pipeline = NULL;
    cw_http_destroy(http); /* first: it reads the metrics */
    cw_pipeline_destroy(pl);
    cw_metrics_destroy(metrics);
    cw_conf_destroy(conf);
    return rc;
}

static int check_config_main(int argc, char **argv) {
    char errstr[512];
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: churnwatch check-config FILE\n"
               "  Exit 0 when FILE is a valid configuration; otherwise print the\n"
               "  offending key and exit 1.\n");
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: churnwatch check-config FILE\n");
        return 2;
    }
    cw_conf_t *conf = cw_conf_load(argv[1], errstr, sizeof(errstr));
    if (conf == NULL) {
        fprintf(stderr, "%s: %s\n", argv[1], errstr);
        return 1;
    }
    cw_layout_t layout;
    if (cw_layout_build(&conf->model, &layout, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], errstr);
        cw_conf_destroy(conf);
        return 1;
    }
    printf("%s: ok (%d signals, state kept %d days)\n", argv[1], conf->model.n_signals,
           layout.retention_days);
    cw_conf_destroy(conf);
    return 0;
}

static int migrate_main(int argc, char **argv) {
    const char *config = NULL;
    char errstr[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: churnwatch migrate --config FILE\n"
                   "  Move the Redis state written by a churnwatch that kept distinct-set\n"
                   "  members in keys of their own (P:s:{id}:<set>) into the account hashes\n"
                   "  and mark the keyspace with key layout " CW_STATE_LAYOUT ". This version\n"
                   "  refuses to start on such a keyspace until then. Stop every churnwatch\n"
                   "  using the keyspace first; events wait in Kafka meanwhile. Safe to run\n"
                   "  again (it resumes); exit 0 when done, 1 on errors.\n");
            return 0;
        } else {
            fprintf(stderr, "migrate: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (config == NULL) {
        fprintf(stderr, "usage: churnwatch migrate --config FILE\n");
        return 2;
    }
    cw_conf_t *conf = cw_conf_load(config, errstr, sizeof(errstr));
    if (conf == NULL) {
        fprintf(stderr, "%s: %s\n", config, errstr);
        return 1;
    }
    cw_layout_t layout;
    cw_state_t *st = NULL;
    uint64_t keys = 0;
    int rc = 1;
    if (cw_layout_build(&conf->model, &layout, errstr, sizeof(errstr)) != 0 ||
        (st = cw_state_new(conf, &layout, errstr, sizeof(errstr))) == NULL) {
        fprintf(stderr, "%s: %s\n", config, errstr);
    } else if (cw_state_migrate(st, &keys, errstr, sizeof(errstr)) != CW_OK) {
        fprintf(stderr, "migrate: %s\n", errstr);
    } else {
        printf("migrate: %" PRIu64 " set keys moved into account hashes; keyspace \"%s\" has "
               "key layout " CW_STATE_LAYOUT "\n",
               keys, conf->redis_key_prefix);
        rc = 0;
    }
    cw_state_destroy(st);
    cw_conf_destroy(conf);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0) {
        return run_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "broker") == 0) {
        return cw_broker_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "explain") == 0) {
        return cw_explain_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "check-config") == 0) {
        return check_config_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "migrate") == 0) {
        return migrate_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "config-docs") == 0) {
        if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
            printf("usage: churnwatch config-docs\n"
                   "  Print the configuration reference (Markdown), generated from the\n"
                   "  config table; docs/configuration.md is this output.\n");
            return 0;
        }
        if (argc > 2) {
            fprintf(stderr, "config-docs: unexpected argument '%s'\n", argv[2]);
            return 2;
        }
        cw_conf_write_docs(stdout);
        return 0;
    } else if (strcmp(cmd, "gen") == 0) {
        return cw_gen_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("churnwatch %s\n", CW_VERSION);
        return 0;
    } else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "churnwatch: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
