/*
 * cw_harness.c — process and file helpers of the integration-test harness
 * (see cw_harness.h): temp dirs, spawning children with redirected output,
 * waiting with a timeout, running a command to completion and small file
 * helpers.
 *
 * Children are started with posix_spawnp (stdin from /dev/null, stdout and
 * stderr to files when asked) rather than fork, so the helpers are safe to
 * use from Criterion's test workers. A child that outlives its timeout is
 * SIGKILLed and reaped, so no test leaves zombies behind. Failures of the
 * harness itself abort the test with a Criterion assertion.
 */
#define _GNU_SOURCE /* nftw */
#include "cw_harness.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

char *cw_h_tmpdir(void) {
    char tmpl[] = "/tmp/cw-test-XXXXXX"; /* short: unix socket paths live in here */
    char *dir = mkdtemp(tmpl);
    cr_assert_not_null(dir, "mkdtemp: %s", strerror(errno));
    char *copy = strdup(dir);
    cr_assert_not_null(copy);
    return copy;
}

static int cw_h_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: a leftover file must not fail the test */
    return 0;
}

void cw_h_rmrf(const char *dir) {
    if (!dir || dir[0] == '\0' || strcmp(dir, "/") == 0) {
        return;
    }
    nftw(dir, cw_h_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#define CW_H_SETPRIV "/usr/bin/setpriv"

pid_t cw_h_spawn(const char *const argv[], const char *stdout_path, const char *stderr_path) {
    posix_spawn_file_actions_t fa;
    pid_t pid = -1;
    int rc;

    cr_assert_not_null(argv);
    cr_assert_not_null(argv[0]);
    cr_assert_eq(posix_spawn_file_actions_init(&fa), 0);
    cr_assert_eq(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0), 0);
    if (stdout_path) {
        cr_assert_eq(posix_spawn_file_actions_addopen(&fa, 1, stdout_path,
                                                      O_WRONLY | O_CREAT | O_TRUNC, 0644),
                     0);
    }
    if (stderr_path) {
        cr_assert_eq(posix_spawn_file_actions_addopen(&fa, 2, stderr_path,
                                                      O_WRONLY | O_CREAT | O_TRUNC, 0644),
                     0);
    }
    /* Children must not outlive a test that crashes: a leftover
     * redis-server would hold ctest's output pipe open and hang the suite.
     * util-linux's setpriv sets PR_SET_PDEATHSIG and execs the command
     * (same pid), so the child is SIGKILLed when the test process dies. */
    const char *wrapped[64];
    const char *const *spawn_argv = argv;
    size_t n = 0;
    while (argv[n] != NULL) {
        n++;
    }
    if (n + 5 <= sizeof(wrapped) / sizeof(wrapped[0]) && access(CW_H_SETPRIV, X_OK) == 0) {
        wrapped[0] = CW_H_SETPRIV;
        wrapped[1] = "--pdeathsig";
        wrapped[2] = "KILL";
        wrapped[3] = "--";
        memcpy(&wrapped[4], argv, (n + 1) * sizeof(argv[0]));
        spawn_argv = wrapped;
    }
    /* posix_spawnp takes char *const[]; it does not modify the strings. */
    rc = posix_spawnp(&pid, spawn_argv[0], &fa, NULL, (char *const *)spawn_argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "cannot spawn %s: %s", argv[0], strerror(rc));
    return pid;
}

static int cw_h_status_code(int status) {
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return -1;
}

int cw_h_wait(pid_t pid, int timeout_ms) {
    struct timespec start, now, nap = {0, 5 * 1000000L};
    int status = 0;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return cw_h_status_code(status);
        }
        if (r < 0 && errno != EINTR) {
            cr_assert_fail("waitpid(%d): %s", (int)pid, strerror(errno));
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed =
            (now.tv_sec - start.tv_sec) * 1000L + (now.tv_nsec - start.tv_nsec) / 1000000L;
        if (elapsed >= timeout_ms) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

int cw_h_run(const char *const argv[], int timeout_ms, char **out, size_t *out_len) {
    char path[] = "/tmp/cw-run-XXXXXX";
    int fd = mkstemp(path);
    int code;

    cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
    close(fd);
    code = cw_h_wait(cw_h_spawn(argv, path, NULL), timeout_ms);
    if (out) {
        size_t len = 0;
        *out = cw_h_read_file(path, &len);
        cr_assert_not_null(*out);
        if (out_len) {
            *out_len = len;
        }
    }
    unlink(path);
    return code;
}

int cw_h_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    size_t len = strlen(text);
    int rc = 0;
    if (!f) {
        return -1;
    }
    if (fwrite(text, 1, len, f) != len) {
        rc = -1;
    }
    if (fclose(f) != 0) {
        rc = -1;
    }
    return rc;
}

char *cw_h_read_file(const char *path, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) {
        return NULL;
    }
    for (;;) {
        if (cap - len < 65536) {
            size_t ncap = cap ? cap * 2 : 65536 * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out) {
        *len_out = len;
    }
    return buf;
}
