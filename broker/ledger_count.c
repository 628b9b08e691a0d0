/* ledger_count.c - the deliveries pending per agency, counted on a thread and a
 * connection of their own */
#include "ledger_count.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/clock.h"
#include "accord/log.h"
#include "ledger_internal.h"

#define COUNT_TIMEOUT_MS     60000
#define COUNT_PACE           10 /* the wait after a count is at least this many times its length */
#define STOP_CANCEL_EVERY_MS 200

struct ledger_counter_t {
    char *conninfo;
    ledger_limits_t limits; /* its conninfo is the copy above */
    int64_t every_ms;
    ledger_pending_fn *fn;
    void *ctx;
    PGconn *conn; /* the thread's own */
    bool failing; /* the last count failed (logged once) */
    pthread_t thread;
    pthread_mutex_t lock; /* guards stop, done and cancel */
    pthread_cond_t wake;  /* the thread waits on it between counts, the stopper for done */
    bool stop;
    bool done;        /* the thread has finished */
    PGcancel *cancel; /* for conn, while it is open */
};

/* Shares, outcomes and notices to each agency above its cursor in their stream,
 * less those its cursor lists as acknowledged out of order. */
static const char s_count_sql[] =
    "SELECT c.to_agency, sum((SELECT count(*) FROM accord_log l WHERE l.to_agency = "
    "c.to_agency AND l.event IN ('shared', 'outcome', 'notified') AND l.seq > c.acked_to "
    "AND " LEDGER_STREAM_SQL " = c.record_type) - cardinality(c.acked_above)) "
    "FROM accord_cursor c GROUP BY 1";

static void s_close(ledger_counter_t *self)
{
    (void)pthread_mutex_lock(&self->lock);
    if (self->cancel != NULL) {
        PQfreeCancel(self->cancel);
        self->cancel = NULL;
    }
    (void)pthread_mutex_unlock(&self->lock);
    if (self->conn != NULL) {
        PQfinish(self->conn);
        self->conn = NULL;
    }
}

static acc_rc_t s_open(ledger_counter_t *self, acc_err_t *err)
{
    if (self->conn != NULL && PQstatus(self->conn) == CONNECTION_OK) {
        return ACC_OK;
    }
    s_close(self);
    self->conn = ledger_connect(&self->limits);
    if (PQstatus(self->conn) != CONNECTION_OK) {
        return acc_err_set(err, ACC_ERR_DB, "could not connect to PostgreSQL: %s",
                           PQerrorMessage(self->conn));
    }
    char sql[160];
    (void)snprintf(sql, sizeof(sql),
                   "SET default_transaction_read_only = on; SET statement_timeout = %d; "
                   "SET jit = off",
                   COUNT_TIMEOUT_MS);
    PGresult *res = PQexec(self->conn, sql);
    acc_rc_t rc = ACC_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not set the session's limits: %s",
                         PQresultErrorMessage(res));
    }
    PQclear(res);
    if (rc == ACC_OK) {
        (void)pthread_mutex_lock(&self->lock);
        self->cancel = PQgetCancel(self->conn);
        (void)pthread_mutex_unlock(&self->lock);
    }
    return rc;
}

/* until: wait_ms from now on the monotonic clock (the condition's). */
static void s_deadline(struct timespec *until, int64_t wait_ms)
{
    (void)clock_gettime(CLOCK_MONOTONIC, until);
    until->tv_sec += (time_t)(wait_ms / 1000);
    until->tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (until->tv_nsec >= 1000000000L) {
        until->tv_sec++;
        until->tv_nsec -= 1000000000L;
    }
}

static bool s_stopping(ledger_counter_t *self)
{
    (void)pthread_mutex_lock(&self->lock);
    bool stop = self->stop;
    (void)pthread_mutex_unlock(&self->lock);
    return stop;
}

static acc_rc_t s_count(ledger_counter_t *self, acc_err_t *err)
{
    acc_rc_t rc = s_open(self, err);
    if (rc != ACC_OK) {
        return rc;
    }
    if (s_stopping(self)) {
        return acc_err_set(err, ACC_ERR_DB, "stopping");
    }
    PGresult *res = PQexec(self->conn, s_count_sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "%s", PQresultErrorMessage(res));
        PQclear(res);
        return rc;
    }
    size_t n = (size_t)PQntuples(res);
    const char **agencies = acc_xcalloc(n > 0 ? n : 1, sizeof(*agencies));
    int64_t *counts = acc_xcalloc(n > 0 ? n : 1, sizeof(*counts));
    for (size_t i = 0; i < n; i++) {
        agencies[i] = PQgetvalue(res, (int)i, 0);
        counts[i] = strtoll(PQgetvalue(res, (int)i, 1), NULL, 10);
    }
    self->fn(self->ctx, agencies, counts, n);
    free(counts);
    free(agencies);
    PQclear(res);
    return ACC_OK;
}

/* One count, its failure logged once (not when it was cancelled to stop);
 * answers how long it took. */
static int64_t s_count_once(ledger_counter_t *self)
{
    int64_t started = acc_now_ms();
    acc_err_t err;
    if (s_count(self, &err) == ACC_OK) {
        if (self->failing) {
            acc_log_notice("metrics", "pending deliveries counted again");
        }
        self->failing = false;
    } else {
        if (!self->failing && !s_stopping(self)) {
            acc_log_warn("metrics", "pending deliveries not counted: %s", err.msg);
        }
        self->failing = true;
        s_close(self); /* connect afresh next time */
    }
    return acc_now_ms() - started;
}

/* Waits wait_ms, or until told to stop; answers false to stop. */
static bool s_wait(ledger_counter_t *self, int64_t wait_ms)
{
    struct timespec until;
    s_deadline(&until, wait_ms);
    (void)pthread_mutex_lock(&self->lock);
    int rc = 0;
    while (!self->stop && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&self->wake, &self->lock, &until);
    }
    bool go_on = !self->stop;
    (void)pthread_mutex_unlock(&self->lock);
    return go_on;
}

static void *s_run(void *arg)
{
    ledger_counter_t *self = arg;
    while (!s_stopping(self)) {
        int64_t took = s_count_once(self);
        if (!s_wait(self,
                    took * COUNT_PACE > self->every_ms ? took * COUNT_PACE : self->every_ms)) {
            break;
        }
    }
    s_close(self);
    (void)pthread_mutex_lock(&self->lock);
    self->done = true;
    (void)pthread_cond_broadcast(&self->wake);
    (void)pthread_mutex_unlock(&self->lock);
    return NULL;
}

acc_rc_t ledger_counter_start(ledger_counter_t **out, const ledger_limits_t *limits,
                              int64_t every_ms, ledger_pending_fn *fn, void *ctx, acc_err_t *err)
{
    ledger_counter_t *self = acc_xcalloc(1, sizeof(*self));
    self->conninfo = acc_xstrdup(limits->conninfo);
    self->limits = *limits;
    self->limits.conninfo = self->conninfo;
    self->every_ms = every_ms;
    self->fn = fn;
    self->ctx = ctx;
    pthread_condattr_t attr;
    acc_assert(pthread_condattr_init(&attr) == 0);
    acc_assert(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    acc_assert(pthread_cond_init(&self->wake, &attr) == 0);
    (void)pthread_condattr_destroy(&attr);
    acc_assert(pthread_mutex_init(&self->lock, NULL) == 0);
    int rc = pthread_create(&self->thread, NULL, s_run, self);
    if (rc != 0) {
        (void)pthread_cond_destroy(&self->wake);
        (void)pthread_mutex_destroy(&self->lock);
        free(self->conninfo);
        free(self);
        return acc_err_set(err, ACC_ERR_IO, "could not start the pending counter: %s",
                           strerror(rc));
    }
    *out = self;
    return ACC_OK;
}

void ledger_counter_stop(ledger_counter_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    ledger_counter_t *self = *self_p;
    /* A cancel that reaches PostgreSQL before the count's query is ignored, so
     * it is sent again until the thread has finished. */
    (void)pthread_mutex_lock(&self->lock);
    self->stop = true;
    (void)pthread_cond_broadcast(&self->wake);
    while (!self->done) {
        if (self->cancel != NULL) {
            char why[256];
            (void)PQcancel(self->cancel, why, (int)sizeof(why));
        }
        struct timespec until;
        s_deadline(&until, STOP_CANCEL_EVERY_MS);
        (void)pthread_cond_timedwait(&self->wake, &self->lock, &until);
    }
    (void)pthread_mutex_unlock(&self->lock);
    (void)pthread_join(self->thread, NULL);
    (void)pthread_cond_destroy(&self->wake);
    (void)pthread_mutex_destroy(&self->lock);
    free(self->conninfo);
    free(self);
    *self_p = NULL;
}
