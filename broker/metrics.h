/* metrics.h - /metrics (Prometheus text) and /healthz over libmicrohttpd, served
 * from its own thread; the broker's loop updates the figures under a mutex */
#ifndef ACCORD_BROKER_METRICS_H
#define ACCORD_BROKER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"

typedef struct metrics_t metrics_t;

/* Serves on address ("host:port"; port 0 picks a free one, logged). */
ACC_NODISCARD acc_rc_t metrics_open(metrics_t **out, const char *address, acc_err_t *err);
void metrics_destroy(metrics_t **self_p);

/* A log row staged for the next commit: counted only if that commit succeeds. */
void metrics_stage_row(metrics_t *self, const acc_logrow_t *row);
/* The end of a batch: staged counts kept (committed) or dropped, and its size
 * and commit time observed. */
void metrics_commit(metrics_t *self, bool committed, size_t rows, double seconds);

/* Publishes of trusted connections staged without the idempotency lookup. */
void metrics_count_unasked(metrics_t *self, size_t publishes);
/* A batch PostgreSQL refused for a row's data, its publishes committed again one
 * at a time (a trusted connection's repeat, or a row the database would not take). */
void metrics_count_replay(metrics_t *self);

/* An Error answered on the wire (no log row). */
void metrics_count_error(metrics_t *self, const char *code, const char *agency);

/* A message turned away because its agency used its budget ("lookups" or
 * "log_reads") for the second. */
void metrics_count_over_budget(metrics_t *self, const char *budget, const char *agency);

/* Deliveries waiting for each agency, from one count: agencies[i] has counts[i];
 * every other agency shown so far has none. */
void metrics_set_pending_all(metrics_t *self, const char *const *agencies, const int64_t *counts,
                             size_t n);
/* Shows agency's pending deliveries (0 until a count finds some). */
void metrics_name_pending(metrics_t *self, const char *agency);

typedef struct {
    bool database_up;
    const char *agreement_id; /* NULL: none loaded */
    const char *agreement_hash;
    uint64_t handshake_refusals;
    uint64_t reloads_ok;
    uint64_t reloads_refused;
    uint64_t epoch_rotations;
    uint64_t checkpoint_lag; /* rows written since the last signed checkpoint */
} metrics_state_t;

/* The broker's state as /healthz and the gauges see it. */
void metrics_set_state(metrics_t *self, const metrics_state_t *state);

/* The schema version the database records and the one this broker needs:
 * /healthz is 503 while they differ (both 0 until first set). */
void metrics_set_schema(metrics_t *self, int version, int needed);

/* The port actually bound. */
uint16_t metrics_port(const metrics_t *self);

#endif
