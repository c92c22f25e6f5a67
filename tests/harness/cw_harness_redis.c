/*
 * cw_harness_redis.c — a real redis-server for the integration tests (see
 * cw_harness.h): started as a child on a unix socket inside a fresh temp
 * dir, with no TCP port and no persistence, so tests never collide with
 * each other or with a Redis on the machine, and an outage can be
 * simulated by SIGKILLing it and restarted empty on the same socket.
 *
 * Readiness is a PING that answers PONG (at most 10 s); stopping is
 * SHUTDOWN NOSAVE, falling back to SIGKILL, then the temp dir is removed.
 * Any harness failure aborts the test with a Criterion assertion.
 */
#include "cw_harness.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define CW_H_REDIS_READY_MS 10000 /* redis-server must answer PING within this */
#define CW_H_REDIS_STOP_MS 5000   /* and exit within this after SHUTDOWN */

struct cw_h_redis {
    char *dir;              /* temp dir (owned, removed at stop) */
    char sock[PATH_MAX];    /* <dir>/redis.sock */
    char url[PATH_MAX + 8]; /* unix://<sock> */
    char log[PATH_MAX];     /* redis-server's stdout */
    pid_t pid;              /* -1 when not running */
    int starts;             /* number of spawns, for log names */
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A short-lived connection (caller frees with redisFree); NULL when down. */
static redisContext *redis_connect(const cw_h_redis_t *r, int timeout_ms) {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectUnixWithTimeout(r->sock, tv);
    if (c == NULL || c->err) {
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

static int redis_ping(const cw_h_redis_t *r) {
    redisContext *c = redis_connect(r, 200);
    redisReply *rep;
    int ok = 0;
    if (c == NULL) {
        return 0;
    }
    rep = redisCommand(c, "PING");
    ok = rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    freeReplyObject(rep);
    redisFree(c);
    return ok;
}

static void redis_spawn(cw_h_redis_t *r) {
    const char *argv[] = {"redis-server",
                          "--port",
                          "0",
                          "--unixsocket",
                          r->sock,
                          "--unixsocketperm",
                          "700",
                          "--save",
                          "",
                          "--appendonly",
                          "no",
                          "--daemonize",
                          "no",
                          "--dir",
                          r->dir,
                          NULL};
    int64_t deadline;
    unlink(r->sock); /* a stale socket of a killed server */
    snprintf(r->log, sizeof(r->log), "%s/redis-%d.log", r->dir, r->starts++);
    r->pid = cw_h_spawn(argv, r->log, NULL);
    deadline = mono_ms() + CW_H_REDIS_READY_MS;
    for (;;) {
        int status;
        pid_t w = waitpid(r->pid, &status, WNOHANG);
        if (w == r->pid) {
            r->pid = -1;
            cr_assert_fail("redis-server exited at start (status %d), see %s", status, r->log);
        }
        if (redis_ping(r)) {
            return;
        }
        if (mono_ms() > deadline) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &status, 0);
            r->pid = -1;
            cr_assert_fail("redis-server did not answer PING within %d ms, see %s",
                           CW_H_REDIS_READY_MS, r->log);
        }
        usleep(20 * 1000);
    }
}

cw_h_redis_t *cw_h_redis_start(void) {
    cw_h_redis_t *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    /* the code under test writes to sockets the server may have closed */
    signal(SIGPIPE, SIG_IGN);
    r->pid = -1;
    r->dir = cw_h_tmpdir();
    snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir);
    snprintf(r->url, sizeof(r->url), "unix://%s", r->sock);
    redis_spawn(r);
    return r;
}

const char *cw_h_redis_url(const cw_h_redis_t *r) {
    return r->url;
}

const char *cw_h_redis_socket(const cw_h_redis_t *r) {
    return r->sock;
}

void cw_h_redis_kill(cw_h_redis_t *r) {
    int status;
    if (r->pid <= 0) {
        return;
    }
    kill(r->pid, SIGKILL);
    while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR) {
    }
    r->pid = -1;
}

void cw_h_redis_restart(cw_h_redis_t *r) {
    cw_h_redis_kill(r); /* no-op when already down */
    redis_spawn(r);
}

void cw_h_redis_stop(cw_h_redis_t *r) {
    if (r == NULL) {
        return;
    }
    if (r->pid > 0) {
        redisContext *c = redis_connect(r, 1000);
        if (c != NULL) {
            /* the server closes the connection: no reply is expected */
            freeReplyObject(redisCommand(c, "SHUTDOWN NOSAVE"));
            redisFree(c);
            cw_h_wait(r->pid, CW_H_REDIS_STOP_MS); /* SIGKILLs on timeout */
        } else {
            kill(r->pid, SIGTERM);
            cw_h_wait(r->pid, CW_H_REDIS_STOP_MS);
        }
        r->pid = -1;
    }
    cw_h_rmrf(r->dir);
    free(r->dir);
    free(r);
}

long long cw_h_redis_int(cw_h_redis_t *r, const char *fmt, ...) {
    redisContext *c = redis_connect(r, 2000);
    redisReply *rep;
    long long v = -1;
    va_list ap;
    if (c == NULL) {
        return -1;
    }
    va_start(ap, fmt);
    rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
        v = rep->integer;
    } else if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        v = strtoll(rep->str, NULL, 10); /* HGET, ZSCORE, ... */
    }
    freeReplyObject(rep);
    redisFree(c);
    return v;
}
