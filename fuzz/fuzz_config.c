/*
 * fuzz_config.c — libFuzzer harness for cw_conf_parse (config/cw_conf.c).
 *
 * Config files are operator input, not attacker input, but the loader is a
 * hand-written table-driven validator over yajl and a crash there would be a
 * crash at startup with a confusing message instead of "bad key X". The
 * harness hands the bytes over as a NUL-terminated copy (the API takes a C
 * string), destroys whatever comes back, and checks the contract: either a
 * config, or NULL with a non-empty, NUL-terminated message in errstr.
 * Logging is silenced so findings are not drowned in "bad key" lines.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cw_common.h"
#include "cw_conf.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    cw_log_level = -1; /* below CW_LOG_ERROR: nothing is logged */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char errstr[512];
    char *text = malloc(size + 1); /* owned here, freed below */

    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    memset(errstr, 'E', sizeof(errstr));
    errstr[0] = '\0';

    cw_conf_t *conf = cw_conf_parse(text, errstr, sizeof(errstr));
    if (conf == NULL) {
        if (memchr(errstr, '\0', sizeof(errstr)) == NULL || errstr[0] == '\0') {
            abort(); /* a rejection must say why */
        }
    }
    cw_conf_destroy(conf);
    conf = NULL;
    free(text);
    return 0;
}
