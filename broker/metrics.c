/* metrics.c - counters, gauges and histograms for Prometheus, and /healthz */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"

#define SERIES_MAX 4096 /* label sets are agencies x events/codes: bounded by the agreement */
#define LABEL_MAX  128

static const double s_commit_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025,
                                           0.05,  0.1,    0.25,  0.5,  1.0 };
static const double s_batch_buckets[] = { 1, 10, 50, 100, 250, 500, 1000, 5000 };
#define N_COMMIT (sizeof(s_commit_buckets) / sizeof(s_commit_buckets[0]))
#define N_BATCH  (sizeof(s_batch_buckets) / sizeof(s_batch_buckets[0]))

typedef enum {
    SERIES_ROWS,    /* accord_log_rows_total{event,agency} */
    SERIES_REFUSED, /* accord_refused_total{code,agency} */
    SERIES_ERRORS,  /* accord_errors_total{code,agency}: answered, no log row */
    SERIES_PENDING, /* accord_outbox_pending{agency} */
    SERIES_BUDGET,  /* accord_over_budget_total{budget,agency} */
} series_kind_t;

typedef struct {
    series_kind_t kind;
    char a[LABEL_MAX];
    char b[LABEL_MAX];
    double value;
} series_t;

/* Counts for the batch in hand, kept by the broker's thread alone (no lock per
 * row); merged into the series under the lock once the batch commits. */
#define STAGED_MAX 256
typedef struct {
    series_kind_t kind;
    char a[LABEL_MAX]; /* copied: a peer's id may move before the batch commits */
    char b[LABEL_MAX];
    uint64_t count;
} staged_t;

typedef struct {
    uint64_t counts[16];
    uint64_t total;
    double sum;
} histogram_t;

struct metrics_t {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    series_t *series;
    size_t series_count;
    staged_t staged[STAGED_MAX];
    size_t staged_count;
    histogram_t commit_seconds;
    histogram_t batch_rows;
    uint64_t commits_failed;
    uint64_t lookups_skipped; /* publishes of trusted connections, staged unasked */
    uint64_t batch_replays;   /* batches refused for a row's data, committed again */
    metrics_state_t state;
    char agreement_id[LABEL_MAX];
    char agreement_hash[72];
    int schema_version; /* as the database records it */
    int schema_needed;  /* as this broker's migrations end */
    uint16_t port;
};

static series_t *s_series(metrics_t *self, series_kind_t kind, const char *a, const char *b)
{
    a = a != NULL ? a : "";
    b = b != NULL ? b : "";
    for (size_t i = 0; i < self->series_count; i++) {
        series_t *s = &self->series[i];
        if (s->kind == kind && strcmp(s->a, a) == 0 && strcmp(s->b, b) == 0) {
            return s;
        }
    }
    if (self->series_count == SERIES_MAX) {
        return NULL;
    }
    series_t *s = &self->series[self->series_count++];
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    (void)snprintf(s->a, sizeof(s->a), "%s", a);
    (void)snprintf(s->b, sizeof(s->b), "%s", b);
    return s;
}

static void s_observe(histogram_t *h, const double *bounds, size_t n, double value)
{
    for (size_t i = 0; i < n; i++) {
        h->counts[i] += value <= bounds[i] ? 1 : 0;
    }
    h->total++;
    h->sum += value;
}

static void s_stage(metrics_t *self, series_kind_t kind, const char *a, const char *b)
{
    a = a != NULL ? a : "";
    b = b != NULL ? b : "";
    for (size_t i = 0; i < self->staged_count; i++) {
        staged_t *st = &self->staged[i];
        if (st->kind == kind && strcmp(st->a, a) == 0 && strcmp(st->b, b) == 0) {
            st->count++;
            return;
        }
    }
    if (self->staged_count < STAGED_MAX) {
        staged_t *st = &self->staged[self->staged_count++];
        st->kind = kind;
        (void)snprintf(st->a, sizeof(st->a), "%s", a);
        (void)snprintf(st->b, sizeof(st->b), "%s", b);
        st->count = 1;
    }
}

void metrics_stage_row(metrics_t *self, const acc_logrow_t *row)
{
    if (self == NULL || row->event == NULL) {
        return;
    }
    /* the agency a row is about: the recipient of a share (or of a lookup's
     * notification), the one who reported an outcome or looked up a child, the
     * asker otherwise */
    bool by_sender = strcmp(row->event, "outcome") == 0 || strcmp(row->event, "looked-up") == 0;
    s_stage(self, SERIES_ROWS, row->event,
            row->to_agency != NULL && !by_sender ? row->to_agency : row->from_agency);
    if (row->error_code != NULL) {
        s_stage(self, SERIES_REFUSED, row->error_code, row->from_agency);
    }
}

void metrics_commit(metrics_t *self, bool committed, size_t rows, double seconds)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    for (size_t i = 0; committed && i < self->staged_count; i++) {
        const staged_t *st = &self->staged[i];
        series_t *s = s_series(self, st->kind, st->a, st->b);
        if (s != NULL) {
            s->value += (double)st->count;
        }
    }
    self->staged_count = 0;
    if (rows > 0) {
        s_observe(&self->batch_rows, s_batch_buckets, N_BATCH, (double)rows);
        s_observe(&self->commit_seconds, s_commit_buckets, N_COMMIT, seconds);
        self->commits_failed += committed ? 0 : 1;
    }
    (void)pthread_mutex_unlock(&self->lock);
}

void metrics_count_unasked(metrics_t *self, size_t publishes)
{
    if (self == NULL || publishes == 0) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    self->lookups_skipped += publishes;
    (void)pthread_mutex_unlock(&self->lock);
}

void metrics_count_replay(metrics_t *self)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    self->batch_replays++;
    (void)pthread_mutex_unlock(&self->lock);
}

/* One more in the counter of kind labelled a, b: at once, not with a batch. */
static void s_count(metrics_t *self, series_kind_t kind, const char *a, const char *b)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    series_t *s = s_series(self, kind, a, b);
    if (s != NULL) {
        s->value += 1;
    }
    (void)pthread_mutex_unlock(&self->lock);
}

void metrics_count_error(metrics_t *self, const char *code, const char *agency)
{
    s_count(self, SERIES_ERRORS, code, agency);
}

void metrics_count_over_budget(metrics_t *self, const char *budget, const char *agency)
{
    s_count(self, SERIES_BUDGET, budget, agency);
}

void metrics_set_pending_all(metrics_t *self, const char *const *agencies, const int64_t *counts,
                             size_t n)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < self->series_count; i++) {
        if (self->series[i].kind == SERIES_PENDING) {
            self->series[i].value = 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        series_t *s = s_series(self, SERIES_PENDING, agencies[i], NULL);
        if (s != NULL) {
            s->value = (double)counts[i];
        }
    }
    (void)pthread_mutex_unlock(&self->lock);
}

void metrics_name_pending(metrics_t *self, const char *agency)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    (void)s_series(self, SERIES_PENDING, agency, NULL);
    (void)pthread_mutex_unlock(&self->lock);
}

void metrics_set_state(metrics_t *self, const metrics_state_t *state)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    self->state = *state;
    (void)snprintf(self->agreement_id, sizeof(self->agreement_id), "%s",
                   state->agreement_id != NULL ? state->agreement_id : "");
    (void)snprintf(self->agreement_hash, sizeof(self->agreement_hash), "%s",
                   state->agreement_hash != NULL ? state->agreement_hash : "");
    self->state.agreement_id = NULL;
    self->state.agreement_hash = NULL;
    (void)pthread_mutex_unlock(&self->lock);
}

void metrics_set_schema(metrics_t *self, int version, int needed)
{
    if (self == NULL) {
        return;
    }
    (void)pthread_mutex_lock(&self->lock);
    self->schema_version = version;
    self->schema_needed = needed;
    (void)pthread_mutex_unlock(&self->lock);
}

/* ---- rendering ---- */

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
} s_text_t;

static void s_printf(s_text_t *t, const char *fmt, ...) ACC_PRINTF(2, 3);

static void s_printf(s_text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap * 2 + (n > 0 ? (size_t)n : 0);
        t->buf = acc_xrealloc(t->buf, t->cap);
    }
}

static void s_histogram(s_text_t *t, const char *name, const char *help, const histogram_t *h,
                        const double *bounds, size_t n)
{
    s_printf(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t i = 0; i < n; i++) {
        s_printf(t, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                 (unsigned long long)h->counts[i]);
    }
    s_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name,
             (unsigned long long)h->total, name, h->sum, name, (unsigned long long)h->total);
}

typedef struct {
    series_kind_t kind;
    const char *name;
    const char *type;
    const char *help;
    const char *label_a;
    const char *label_b; /* NULL: one label */
} s_family_t;

static const s_family_t s_families[] = {
    { SERIES_ROWS, "accord_log_rows_total", "counter",
      "Log rows committed, by event and the agency the row is about.", "event", "agency" },
    { SERIES_REFUSED, "accord_refused_total", "counter",
      "Records refused, by error code and publishing agency.", "code", "agency" },
    { SERIES_ERRORS, "accord_errors_total", "counter",
      "Errors answered on the wire without a log row, by code and agency.", "code", "agency" },
    { SERIES_PENDING, "accord_outbox_pending", "gauge",
      "Deliveries waiting for the agency's acknowledgement.", "agency", NULL },
    { SERIES_BUDGET, "accord_over_budget_total", "counter",
      "Messages answered UNAVAILABLE because the agency used its lookups or reads of the "
      "log for the second.",
      "budget", "agency" },
};

static void s_family(s_text_t *t, const metrics_t *self, const s_family_t *f)
{
    s_printf(t, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    for (size_t i = 0; i < self->series_count; i++) {
        const series_t *s = &self->series[i];
        if (s->kind != f->kind) {
            continue;
        }
        if (f->label_b != NULL) {
            s_printf(t, "%s{%s=\"%s\",%s=\"%s\"} %.0f\n", f->name, f->label_a, s->a, f->label_b,
                     s->b, s->value);
        } else {
            s_printf(t, "%s{%s=\"%s\"} %.0f\n", f->name, f->label_a, s->a, s->value);
        }
    }
}

static char *s_render_metrics(metrics_t *self, size_t *len)
{
    s_text_t t = { .buf = acc_xmalloc(4096), .cap = 4096 };
    (void)pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < sizeof(s_families) / sizeof(s_families[0]); i++) {
        s_family(&t, self, &s_families[i]);
    }
    s_histogram(&t, "accord_commit_seconds", "Time to write one batch to the log.",
                &self->commit_seconds, s_commit_buckets, N_COMMIT);
    s_histogram(&t, "accord_batch_rows", "Log rows per committed batch.", &self->batch_rows,
                s_batch_buckets, N_BATCH);
    const metrics_state_t *st = &self->state;
    s_printf(&t,
             "# TYPE accord_commits_failed_total counter\naccord_commits_failed_total %llu\n"
             "# TYPE accord_publish_lookups_skipped_total counter\n"
             "accord_publish_lookups_skipped_total %llu\n"
             "# TYPE accord_batch_replays_total counter\naccord_batch_replays_total %llu\n"
             "# TYPE accord_handshake_refusals_total counter\n"
             "accord_handshake_refusals_total %llu\n"
             "# TYPE accord_agreement_reloads_total counter\n"
             "accord_agreement_reloads_total{result=\"ok\"} %llu\n"
             "accord_agreement_reloads_total{result=\"refused\"} %llu\n"
             "# TYPE accord_agreement_info gauge\n"
             "accord_agreement_info{id=\"%s\",hash=\"%s\"} 1\n"
             "# TYPE accord_epoch_rotations_total counter\naccord_epoch_rotations_total %llu\n"
             "# TYPE accord_checkpoint_lag_rows gauge\naccord_checkpoint_lag_rows %llu\n"
             "# TYPE accord_database_up gauge\naccord_database_up %d\n",
             (unsigned long long)self->commits_failed, (unsigned long long)self->lookups_skipped,
             (unsigned long long)self->batch_replays, (unsigned long long)st->handshake_refusals,
             (unsigned long long)st->reloads_ok, (unsigned long long)st->reloads_refused,
             self->agreement_id, self->agreement_hash, (unsigned long long)st->epoch_rotations,
             (unsigned long long)st->checkpoint_lag, st->database_up ? 1 : 0);
    (void)pthread_mutex_unlock(&self->lock);
    *len = t.len;
    return t.buf;
}

static char *s_render_health(metrics_t *self, size_t *len, unsigned int *status)
{
    s_text_t t = { .buf = acc_xmalloc(512), .cap = 512 };
    (void)pthread_mutex_lock(&self->lock);
    const metrics_state_t *st = &self->state;
    if (!st->database_up) {
        s_printf(&t, "the sharing log's database is unreachable\n");
    }
    if (self->schema_version != self->schema_needed) {
        s_printf(&t, "schema at version %d, this broker needs %d\n", self->schema_version,
                 self->schema_needed);
    }
    if (self->agreement_id[0] == '\0') {
        s_printf(&t, "no agreement is loaded\n");
    }
    *status = t.len == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    if (t.len == 0) {
        s_printf(&t, "ok: agreement %s in force\n", self->agreement_id);
    }
    (void)pthread_mutex_unlock(&self->lock);
    *len = t.len;
    return t.buf;
}

/* libmicrohttpd's callback: its signature is fixed. */
// NOLINTBEGIN(readability-function-size,readability-non-const-parameter)
static enum MHD_Result s_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_len, void **req_cls)
// NOLINTEND(readability-function-size,readability-non-const-parameter)
{
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)req_cls;
    metrics_t *self = cls;
    unsigned int status = MHD_HTTP_OK;
    size_t len = 0;
    char *body = NULL;
    const char *type = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = acc_xstrdup("only GET\n");
        len = strlen(body);
    } else if (strcmp(url, "/metrics") == 0) {
        body = s_render_metrics(self, &len);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(url, "/healthz") == 0) {
        body = s_render_health(self, &len, &status);
    } else {
        status = MHD_HTTP_NOT_FOUND;
        body = acc_xstrdup("try /metrics or /healthz\n");
        len = strlen(body);
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    (void)MHD_add_response_header(response, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response(conn, status, response);
    MHD_destroy_response(response);
    return rc;
}

acc_rc_t metrics_open(metrics_t **out, const char *address, acc_err_t *err)
{
    const char *colon = strrchr(address, ':');
    char host[64];
    if (colon == NULL || (size_t)(colon - address) >= sizeof(host)) {
        return acc_err_set(err, ACC_ERR_INVALID, "metrics: \"%s\" is not host:port", address);
    }
    (void)snprintf(host, sizeof(host), "%.*s", (int)(colon - address), address);
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (*end != '\0' || port < 0 || port > 65535 || inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "metrics: \"%s\" must be an IPv4 address and port, e.g. "
                           "127.0.0.1:9464",
                           address);
    }
    metrics_t *self = acc_xcalloc(1, sizeof(*self));
    (void)pthread_mutex_init(&self->lock, NULL);
    self->series = acc_xcalloc(SERIES_MAX, sizeof(*self->series));
    self->daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                         s_handle, self, MHD_OPTION_SOCK_ADDR, &sin, MHD_OPTION_CONNECTION_LIMIT,
                         16U, MHD_OPTION_CONNECTION_TIMEOUT, 10U, MHD_OPTION_END);
    if (self->daemon == NULL) {
        metrics_destroy(&self);
        return acc_err_set(err, ACC_ERR_NET, "metrics: could not listen on %s", address);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info != NULL ? info->port : (uint16_t)port;
    acc_log_notice("metrics", "serving /metrics and /healthz on http://%s:%u", host,
                   (unsigned)self->port);
    *out = self;
    return ACC_OK;
}

void metrics_destroy(metrics_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    metrics_t *self = *self_p;
    if (self->daemon != NULL) {
        MHD_stop_daemon(self->daemon);
    }
    (void)pthread_mutex_destroy(&self->lock);
    free(self->series);
    free(self);
    *self_p = NULL;
}

uint16_t metrics_port(const metrics_t *self)
{
    return self->port;
}
