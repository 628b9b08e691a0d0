/* broker.c - accordd's event loop: read a batch, commit it, then answer
 *
 * One thread. Each turn of broker_run() is a list of phases; the rules that
 * order them:
 *
 * 1. Nothing that wrote a log row is answered, delivered or acknowledged before
 *    the commit holding that row has ended well (s_end_flight). A Welcome, an
 *    error, or a first result read from the log wrote nothing and leaves in the
 *    turn it was made (s_send_replies), so a Welcome precedes any Deliver.
 * 2. At most one commit is in flight (ledger_commit_start); the next batch is
 *    staged on top of it and chained from its last row. If the flight fails,
 *    the staged batch fails with it: both are answered UNAVAILABLE and the head
 *    goes back to the last committed row. When the flight commits, the staged
 *    batch's commit starts before the committed one's answers and deliveries
 *    are sent, so PostgreSQL is not kept waiting while the loop sends them.
 *    (A second commit in flight, on a second connection and ordered by
 *    advisory locks, was tried: on 2 CPUs it was no faster, as the two
 *    transactions' inserts share the same cores.)
 * 3. Disconnections are read before and after a read pass, so nothing is
 *    answered to, or delivered on, a connection that has ended.
 * 4. A new key epoch starts between commits: for new auditors it waits for
 *    the commit in flight; by age or rows, after a commit has ended well and
 *    before the next one starts.
 * 5. Deliveries are read from the log (delivery_pump) only with nothing staged,
 *    so the cursors they move are the committed ones. A commit may be in flight:
 *    one that has ended in PostgreSQL before the loop sees it end can have its
 *    shares read from the log first, and delivery_send_committed then sends
 *    nothing a connection has already read (at or below its position).
 *
 * Where it may block: zmq_poll (up to POLL_IDLE_MS, less when acknowledgements
 * fall due); the reader connection's lookups (bounded by statement_timeout);
 * the wait for the flight before a new auditors' epoch; and at stop, the final
 * commit. It never blocks on a peer: sends are non-blocking and a peer that
 * does not read is sent nothing more. Nor on the count of pending deliveries
 * /metrics shows, which reads every pending row: ledger_counter counts it on a
 * thread and connection of its own. */
#include "broker.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "accord/clock.h"
#include "accord/keys.h"
#include "accord/log.h"
#include "accord/migrate.h"
#include "accord/pbwipe.h"
#include "accord/validate.h"
#include "audit.h"
#include "broker_internal.h"
#include "lookup.h"
#include "publish.h"
#include "restore.h"

#define POLL_IDLE_MS   1000
#define READ_BATCH_MAX 4096 /* frames read before a commit, whatever they are */

typedef void handler_fn(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

void broker_today(char day[11])
{
    time_t now = time(NULL);
    struct tm tm;
    (void)gmtime_r(&now, &tm);
    (void)strftime(day, 11, "%Y-%m-%d", &tm);
}

void broker_now_text(char out[BROKER_AT_TEXT_MAX])
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    (void)gmtime_r(&ts.tv_sec, &tm);
    char second[24];
    (void)strftime(second, sizeof(second), "%Y-%m-%dT%H:%M:%S", &tm);
    (void)snprintf(out, BROKER_AT_TEXT_MAX, "%s.%06dZ", second, (int)(ts.tv_nsec / 1000) % 1000000);
}

/* ---- what the request handlers read of the broker (broker.h) ---- */

const acc_policy_t *broker_policy(const broker_t *self)
{
    return self->policy;
}

ledger_t *broker_ledger(broker_t *self)
{
    return self->ledger;
}

outcome_t *broker_outcomes(broker_t *self)
{
    return self->outcomes;
}

bool broker_replaying(const broker_t *self)
{
    return self->replaying;
}

bool broker_take_audit_turn(broker_t *self, const peer_t *peer)
{
    if (!peer->who.auditor || peer->who.index >= self->auditor_slots ||
        self->auditor_turns[peer->who.index] == self->turn) {
        return false;
    }
    self->auditor_turns[peer->who.index] = self->turn;
    return true;
}

bool broker_take(broker_t *self, const peer_t *peer, broker_budget_t which,
                 char why[BROKER_BUDGET_WHY_MAX])
{
    bool lookups = which == BROKER_BUDGET_LOOKUPS;
    int64_t per_second =
        lookups ? self->config->lookups_per_second : self->config->log_reads_per_second;
    if (!peer->who.auditor && peer->who.index < self->agency_slots &&
        budget_take(&self->budgets[peer->who.index * BROKER_BUDGETS + which], per_second,
                    acc_now_ms())) {
        return true;
    }
    metrics_count_over_budget(self->metrics, lookups ? "lookups" : "log_reads", peer->id);
    (void)snprintf(why, BROKER_BUDGET_WHY_MAX,
                   lookups ? "this agency asked more than %lld lookups a second "
                             "(lookups_per_second); retry in a second"
                           : "this agency's messages made the broker read the log more than "
                             "%lld times a second (log_reads_per_second); retry in a second",
                   (long long)per_second);
    return false;
}

/* The subject tag lets auditors find a child's rows without the log holding the
 * number: keyed BLAKE2b of the normalised NHS number, or of the publisher's
 * local id qualified by the publisher. Computed here, so that the subject key is
 * read by no other file. */
bool broker_subject_tag(const broker_t *self, const char *agency, const char *nhs,
                        const char *local_id, uint8_t tag[ACC_LOGROW_TAG_BYTES])
{
    char input[512];
    int n = -1;
    if (nhs[0] != '\0') {
        n = snprintf(input, sizeof(input), "nhs:%s", nhs);
    } else if (local_id[0] != '\0') {
        n = snprintf(input, sizeof(input), "local:%s:%s", agency, local_id);
    }
    bool ok = n > 0 && (size_t)n < sizeof(input);
    if (ok) {
        (void)crypto_generichash(tag, ACC_LOGROW_TAG_BYTES, (const uint8_t *)input,
                                 (unsigned long long)n, self->subject_key, 32);
    }
    sodium_memzero(input, sizeof(input));
    return ok;
}

static void s_on_retire(void *ctx, peer_t *p, const char *why);
static void s_resize_agency_counts(broker_t *self);

/* ---- opening ---- */

static acc_rc_t s_set(void *socket, int option, const void *value, size_t len, acc_err_t *err)
{
    if (zmq_setsockopt(socket, option, value, len) != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not set socket option %d: %s", option,
                           zmq_strerror(zmq_errno()));
    }
    return ACC_OK;
}

/* Frames a connection may have waiting to be read: the high-water mark counts
 * frames, so it is set from a byte budget. A peer past it is slowed by TCP, not
 * refused, so a small mark costs a well-behaved agent nothing. */
#define INBOUND_BYTES_MAX ((int64_t)16 * 1024 * 1024)
#define INBOUND_QUEUE_MIN 8

static int s_inbound_queue_max(const acc_broker_config_t *config)
{
    int64_t frames = INBOUND_BYTES_MAX / (config->max_message_bytes * ACC_VALIDATE_CEILING_FACTOR);
    if (frames < INBOUND_QUEUE_MIN) {
        frames = INBOUND_QUEUE_MIN;
    }
    return frames > config->peer_queue_max ? (int)config->peer_queue_max : (int)frames;
}

static acc_rc_t s_open_router(broker_t *self, const uint8_t curve_secret[32], acc_err_t *err)
{
    self->router = zmq_socket(self->ctx, ZMQ_ROUTER);
    if (self->router == NULL) {
        return acc_err_set(err, ACC_ERR_NET, "could not create the broker socket: %s",
                           zmq_strerror(zmq_errno()));
    }
    int one = 1;
    int zero = 0;
    /* Frames up to the ceiling are read and, over max_message_bytes, answered
     * TOO_LARGE (acc_validate_frame), so the sender learns why; above it libzmq
     * drops the connection unread. */
    int64_t max_bytes = self->config->max_message_bytes * ACC_VALIDATE_CEILING_FACTOR;
    int queue_max = (int)self->config->peer_queue_max;
    int keepalive_idle = 60; /* seconds */
    acc_rc_t rc = s_set(self->router, ZMQ_CURVE_SERVER, &one, sizeof(one), err);
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_CURVE_SECRETKEY, curve_secret, 32, err);
    }
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_ZAP_DOMAIN, "accord", 6, err);
    }
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_MAXMSGSIZE, &max_bytes, sizeof(max_bytes), err);
    }
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one), err);
    }
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_SNDHWM, &queue_max, sizeof(queue_max), err);
    }
    if (rc == ACC_OK) {
        int in_max = s_inbound_queue_max(self->config);
        rc = s_set(self->router, ZMQ_RCVHWM, &in_max, sizeof(in_max), err);
    }
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_LINGER, &zero, sizeof(zero), err);
    }
    /* TCP keepalive closes a connection whose far end vanished without a FIN.
     * (ZMTP heartbeats would do it sooner, but libzmq 4.3.4 can assert on a
     * connection reset while they run; the agents' Heartbeats cover liveness.) */
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_TCP_KEEPALIVE, &one, sizeof(one), err);
    }
    if (rc == ACC_OK) {
        rc = s_set(self->router, ZMQ_TCP_KEEPALIVE_IDLE, &keepalive_idle, sizeof(keepalive_idle),
                   err);
    }
    if (rc != ACC_OK) {
        return rc;
    }
    if (zmq_bind(self->router, self->config->listen) != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not listen on \"%s\": %s", self->config->listen,
                           zmq_strerror(zmq_errno()));
    }
    size_t len = sizeof(self->endpoint);
    (void)zmq_getsockopt(self->router, ZMQ_LAST_ENDPOINT, self->endpoint, &len);
    return ACC_OK;
}

/* The router's disconnections, so that a connection's state ends with it. */
static acc_rc_t s_open_monitor(broker_t *self, acc_err_t *err)
{
    char endpoint[64];
    (void)snprintf(endpoint, sizeof(endpoint), "inproc://accordd-router-%p", (void *)self);
    if (zmq_socket_monitor(self->router, endpoint, ZMQ_EVENT_DISCONNECTED) != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not watch the broker socket: %s",
                           zmq_strerror(zmq_errno()));
    }
    self->monitor = zmq_socket(self->ctx, ZMQ_PAIR);
    if (self->monitor == NULL || zmq_connect(self->monitor, endpoint) != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not watch the broker socket: %s",
                           zmq_strerror(zmq_errno()));
    }
    int zero = 0;
    return s_set(self->monitor, ZMQ_LINGER, &zero, sizeof(zero), err);
}

static acc_rc_t s_load_policy(broker_t *self, acc_err_t *err)
{
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_rc_t rc = acc_policy_load(&self->policy, self->config->agreement, &diag, err);
    for (size_t i = 0; i < diag.count; i++) {
        acc_log_error("agreement", "%s", diag.lines[i]);
    }
    acc_diag_clear(&diag);
    if (rc == ACC_OK) {
        acc_log_notice("agreement", "loaded \"%s\" hash=%s agencies=%zu rules=%zu",
                       acc_policy_id(self->policy), acc_policy_hash_hex(self->policy),
                       acc_policy_agency_count(self->policy), acc_policy_rule_count(self->policy));
    }
    return rc;
}

static ledger_limits_t s_ledger_limits(const broker_t *self, bool read_only)
{
    return (ledger_limits_t){
        .conninfo = self->config->database,
        .connect_timeout_s = self->config->database_connect_timeout_s,
        .statement_timeout_ms = self->config->database_statement_timeout_ms,
        .query_timeout_ms = self->config->database_query_timeout_ms,
        .read_only = read_only,
    };
}

static acc_rc_t s_open_ledger(broker_t *self, bool read_only, acc_err_t *err)
{
    uint8_t *sign_secret = sodium_malloc(ACC_SIGN_SECRET_BYTES);
    uint8_t *outbox_key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    uint8_t *keep_key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(sign_secret != NULL && outbox_key != NULL && keep_key != NULL);
    /* Both must outlive restarts, so they come from a persistent secret: the
     * pre-0008 outbox's key, and the key sealing the broker's copies of epoch keys. */
    (void)crypto_generichash(outbox_key, ACC_LOGROW_KEY_BYTES, (const uint8_t *)"accord.outbox.v1",
                             16, self->subject_key, 32);
    (void)crypto_generichash(keep_key, ACC_LOGROW_KEY_BYTES, (const uint8_t *)"accord.epochs.v1",
                             16, self->subject_key, 32);
    acc_rc_t rc = acc_keys_read_sign_secret(sign_secret, self->config->signing_key, err);
    if (rc == ACC_OK) {
        const ledger_limits_t limits = s_ledger_limits(self, read_only);
        rc = ledger_open(&self->ledger, &limits, sign_secret, outbox_key, keep_key, err);
    }
    sodium_free(keep_key);
    sodium_free(outbox_key);
    sodium_free(sign_secret);
    return rc;
}

/* --check reads the mark if the state directory exists, and creates nothing. */
static acc_rc_t s_open_mark(broker_t *self, bool check_only, acc_err_t *err)
{
    const char *dir = self->config->state_directory;
    if (check_only && access(dir, F_OK) != 0) {
        acc_log_notice("broker", "state directory \"%s\" does not exist yet; accordd creates it",
                       dir);
        return ACC_OK;
    }
    return hwm_open(&self->mark, dir, !check_only, err);
}

/* The database is compared with the high-water mark before any epoch or row is
 * written, so a database that went back in time hands out no seq twice. */
static acc_rc_t s_guard_and_start(broker_t *self, broker_start_t *start, acc_err_t *err)
{
    restore_plan_t plan = { 0 };
    acc_rc_t rc = s_open_mark(self, start->check_only, err);
    if (rc == ACC_OK) {
        rc = restore_check(self->ledger, self->mark, start->accept_restore && !start->check_only,
                           &plan, err);
        start->behind = rc != ACC_OK && plan.behind;
    }
    if (rc != ACC_OK || start->check_only) {
        return rc;
    }
    ledger_set_epoch_floor(self->ledger, plan.epoch_floor);
    rc = ledger_start_epoch(self->ledger, self->policy, err);
    if (rc == ACC_OK && plan.accepted) {
        rc = restore_record(self->ledger, &plan, acc_policy_hash(self->policy), err);
    }
    if (rc == ACC_OK) {
        rc = ledger_keep_mark(self->ledger, self->mark, err);
    }
    return rc;
}

static acc_rc_t s_open_keys_and_ledger(broker_t *self, uint8_t *curve_secret, broker_start_t *start,
                                       acc_err_t *err)
{
    acc_rc_t rc = acc_keys_read_curve_secret(curve_secret, self->config->curve_secret_key, err);
    if (rc != ACC_OK) {
        return rc;
    }
    self->subject_key = sodium_malloc(32);
    acc_assert(self->subject_key != NULL);
    rc = acc_keys_read_box_secret(self->subject_key, self->config->subject_key, err);
    if (rc == ACC_OK) {
        rc = s_open_ledger(self, start->check_only, err);
    }
    if (rc == ACC_OK) {
        rc = s_guard_and_start(self, start, err);
    }
    if (rc == ACC_OK && !start->check_only) {
        rc = delivery_load(self, err);
    }
    return rc;
}

static void s_observe_row(void *ctx, const acc_logrow_t *row)
{
    metrics_stage_row(ctx, row);
}

/* /metrics and /healthz, and the count of pending deliveries they show: every
 * ten seconds, on a thread and connection of its own, as it reads every pending
 * row (a second with a million pending) and the loop must not wait for it. */
#define METRICS_PENDING_MS 10000

static void s_set_pending(void *ctx, const char *const *agencies, const int64_t *counts, size_t n)
{
    metrics_set_pending_all(ctx, agencies, counts, n);
}

static void s_name_agencies(broker_t *self)
{
    for (size_t i = 0; i < acc_policy_agency_count(self->policy); i++) {
        metrics_name_pending(self->metrics, acc_policy_agency_id(self->policy, i));
    }
}

static acc_rc_t s_open_metrics(broker_t *self, acc_err_t *err)
{
    acc_rc_t rc = metrics_open(&self->metrics, self->config->metrics, err);
    if (rc != ACC_OK) {
        return rc;
    }
    ledger_set_observer(self->ledger, s_observe_row, self->metrics);
    s_name_agencies(self);
    const ledger_limits_t limits = s_ledger_limits(self, true);
    return ledger_counter_start(&self->counter, &limits, METRICS_PENDING_MS, s_set_pending,
                                self->metrics, err);
}

acc_rc_t broker_open(broker_t **out, const acc_broker_config_t *config, broker_start_t *start,
                     const volatile sig_atomic_t *stop_requested,
                     volatile sig_atomic_t *reload_requested, acc_err_t *err)
{
    broker_t *self = acc_xcalloc(1, sizeof(*self));
    self->config = config;
    self->peers = peers_new(s_on_retire, self);
    self->delivery = delivery_new();
    self->outcomes = outcome_new();
    self->stop_requested = stop_requested;
    self->reload_requested = reload_requested;
    self->ctx = zmq_ctx_new();
    acc_assert(self->ctx != NULL);
    uint8_t *curve_secret = sodium_malloc(32);
    acc_assert(curve_secret != NULL);
    acc_rc_t rc = s_load_policy(self, err);
    if (rc == ACC_OK) {
        s_resize_agency_counts(self);
        rc = s_open_keys_and_ledger(self, curve_secret, start, err);
    }
    /* --check and --accept-restore serve nothing: they bind no socket. */
    bool serve = !start->check_only && !start->accept_restore;
    if (rc == ACC_OK && serve) {
        /* ZAP must be bound before a CURVE server binds, or handshakes skip it. */
        rc = zap_open(&self->zap, self->ctx, err);
    }
    if (rc == ACC_OK && serve) {
        rc = s_open_router(self, curve_secret, err);
    }
    if (rc == ACC_OK && serve) {
        rc = s_open_monitor(self, err);
    }
    if (rc == ACC_OK && serve && config->metrics[0] != '\0') {
        rc = s_open_metrics(self, err);
    }
    sodium_free(curve_secret);
    if (rc != ACC_OK) {
        broker_destroy(&self);
        return rc;
    }
    *out = self;
    return ACC_OK;
}

static void s_out_free(out_t *o)
{
    if (o->frame != NULL) {
        sodium_memzero(o->frame, o->frame_len); /* a Deliver holds a child's record */
    }
    free(o->frame);
    free(o->record_id);
    free(o->record_type);
    free(o->status);
    memset(o, 0, sizeof(*o));
}

static void s_release_held(batch_t *batch);
static void s_hold_if_staged(broker_t *self, inmsg_t *m, size_t staged_before);

void broker_destroy(broker_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    broker_t *self = *self_p;
    outcome_destroy(&self->outcomes);
    batch_t *batches[3] = { &self->staging, &self->flight, &self->answering };
    for (size_t b = 0; b < 3; b++) {
        for (size_t i = 0; i < batches[b]->out_count; i++) {
            s_out_free(&batches[b]->out[i]);
        }
        free(batches[b]->out);
        s_release_held(batches[b]);
        free(batches[b]->held);
    }
    peers_destroy(&self->peers);
    delivery_destroy(&self->delivery);
    free(self->agency_inflight);
    free(self->agency_inflight_bytes);
    free(self->budgets);
    free(self->auditor_turns);
    free(self->inbox);
    if (self->monitor != NULL) {
        zmq_close(self->monitor);
    }
    if (self->router != NULL) {
        zmq_close(self->router);
    }
    zap_destroy(&self->zap);
    if (self->ctx != NULL) {
        zmq_ctx_term(self->ctx);
    }
    ledger_counter_stop(&self->counter); /* before the metrics it writes to */
    metrics_destroy(&self->metrics);
    ledger_destroy(&self->ledger);
    hwm_destroy(&self->mark); /* after the ledger, which borrows it */
    acc_policy_destroy(&self->policy);
    sodium_free(self->subject_key);
    free(self);
    *self_p = NULL;
}

/* ---- peers ---- */

/* A connection that ends, or whose routing id another connection takes, leaves
 * nothing behind: what it had in flight is pending again for its agency's next
 * subscribing connection. */
static void s_on_retire(void *ctx, peer_t *p, const char *why)
{
    broker_t *self = ctx;
    if (p->subscriber && p->known && !p->who.auditor) {
        delivery_forget_connection(self, p->who.index);
        acc_log_notice("router",
                       "connection of %s forgotten (%s): its unacknowledged deliveries are "
                       "pending again",
                       p->id, why);
    } else {
        acc_log_info("router", "connection of %s forgotten (%s)", p->id, why);
    }
}

/* ---- outgoing frames ---- */

out_t *broker_queue(broker_t *self, out_kind_t kind, const peer_t *peer,
                    const Accord__V1__Envelope *env)
{
    if (self->staging.out_count == self->staging.out_cap) {
        self->staging.out_cap = self->staging.out_cap == 0 ? 64 : self->staging.out_cap * 2;
        self->staging.out =
            acc_xrealloc(self->staging.out, self->staging.out_cap * sizeof(*self->staging.out));
    }
    out_t *o = &self->staging.out[self->staging.out_count++];
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    memcpy(o->rid, peer->rid, peer->rid_len);
    o->rid_len = peer->rid_len;
    memcpy(o->key, peer->key, sizeof(o->key));
    o->fd = peer->fd;
    o->correlation_id = env->correlation_id;
    o->answer = (int)env->body_case;
    o->frame_len = accord__v1__envelope__get_packed_size(env);
    o->frame = acc_xmalloc(o->frame_len);
    (void)accord__v1__envelope__pack(env, o->frame);
    return o;
}

void broker_reply_error(broker_t *self, const peer_t *peer, uint64_t correlation_id,
                        Accord__V1__ErrorCode code, const char *message)
{
    Accord__V1__Error error = ACCORD__V1__ERROR__INIT;
    error.code = code;
    error.message = acc_pb_str(message);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_ERROR;
    env.error = &error;
    (void)broker_queue(self, OUT_REPLY, peer, &env);
    metrics_count_error(self->metrics, acc_pb_code_name(code), peer->id);
    acc_log_info("router", "answered %s with %s: %s", peer->id, acc_pb_code_name(code), message);
}

broker_send_rc_t broker_send(broker_t *self, const uint8_t *rid, size_t rid_len,
                             const uint8_t *frame, size_t len)
{
    if (zmq_send(self->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
        /* The first frame passed the high-water mark: the rest of the message follows. */
        (void)zmq_send(self->router, frame, len, ZMQ_DONTWAIT);
        return BROKER_SEND_OK;
    }
    int e = zmq_errno();
    if (e == EAGAIN) {
        return BROKER_SEND_FULL;
    }
    peer_t *p = peers_find(self->peers, rid, rid_len);
    if (p != NULL) {
        peers_retire(self->peers, p, zmq_strerror(e));
    }
    return BROKER_SEND_GONE;
}

/* An answer nobody is reading is dropped: the publisher's retry gets the first
 * result again (idempotent publish), so nothing is lost. */
static void s_reply(broker_t *self, const out_t *o, const uint8_t *frame, size_t len)
{
    if (!peers_is_current(self->peers, o->rid, o->rid_len, o->key, o->fd)) {
        /* the connection that asked has ended; its routing id may be someone
         * else's now */
        return;
    }
    if (broker_send(self, o->rid, o->rid_len, frame, len) == BROKER_SEND_FULL) {
        peer_t *p = peers_find(self->peers, o->rid, o->rid_len);
        acc_log_warn("router", "%s is not reading its answers; one dropped",
                     p != NULL ? p->id : "a peer");
    }
}

/* An UNAVAILABLE answer of the kind o was going to be. */
static void s_send_unavailable(broker_t *self, const out_t *o, const char *why)
{
    Accord__V1__PublishResult result = ACCORD__V1__PUBLISH_RESULT__INIT;
    result.record_id = acc_pb_str(o->record_id);
    result.code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    result.reason = acc_pb_str(why);
    Accord__V1__OutcomeResult outcome = ACCORD__V1__OUTCOME_RESULT__INIT;
    outcome.share_id = acc_pb_str(o->record_id);
    outcome.status = acc_pb_str(o->status);
    outcome.code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    outcome.reason = acc_pb_str(why);
    Accord__V1__LookupResult lookup = ACCORD__V1__LOOKUP_RESULT__INIT;
    lookup.code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    lookup.reason = acc_pb_str(why);
    Accord__V1__Error error = ACCORD__V1__ERROR__INIT;
    error.code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    error.message = acc_pb_str(why);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = o->correlation_id;
    if (o->answer == ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT) {
        /* an AuditResult has no code: the query is answered with an Error */
        env.body_case = ACCORD__V1__ENVELOPE__BODY_ERROR;
        env.error = &error;
    } else if (o->answer == ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT) {
        env.body_case = ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT;
        env.outcome_result = &outcome;
    } else if (o->answer == ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT) {
        env.body_case = ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT;
        env.lookup_result = &lookup;
    } else {
        env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT;
        env.publish_result = &result;
    }
    uint8_t buf[1024];
    size_t len = accord__v1__envelope__get_packed_size(&env);
    if (len <= sizeof(buf)) {
        (void)accord__v1__envelope__pack(&env, buf);
        s_reply(self, o, buf, len);
    }
}

#define WHY_UNAVAILABLE "the sharing log cannot be written just now; retry"

/* Answers first, then deliveries: a publisher waits on its answer to send its
 * next record, while a subscriber's delivery waits on nothing of the publisher's,
 * so the answers do not queue behind every recipient's copy in the I/O thread. */
static void s_flush(broker_t *self, batch_t *batch, bool committed, const char *why)
{
    for (size_t i = 0; i < batch->out_count; i++) {
        const out_t *o = &batch->out[i];
        if (o->kind == OUT_REPLY || (o->kind == OUT_RESULT && committed)) {
            s_reply(self, o, o->frame, o->frame_len);
        } else if (o->kind == OUT_RESULT) {
            s_send_unavailable(self, o, why);
        }
    }
    for (size_t i = 0; i < batch->out_count; i++) {
        out_t *o = &batch->out[i];
        if (o->kind == OUT_DELIVER && committed) {
            delivery_send_committed(self, o);
        }
        s_out_free(o);
    }
    batch->out_count = 0;
}

/* After a data failure: answers that wrote no row still go; the held publishes'
 * results and deliveries are dropped unsent, to be made again by their replay;
 * anything else staged (an audit query, an outcome, a lookup) is answered
 * UNAVAILABLE, and its sender tries again. */
static void s_flush_held_out(broker_t *self, batch_t *batch)
{
    for (size_t i = 0; i < batch->out_count; i++) {
        out_t *o = &batch->out[i];
        if (o->kind == OUT_REPLY) {
            s_reply(self, o, o->frame, o->frame_len);
        } else if (o->kind == OUT_RESULT &&
                   (o->record_id == NULL ||
                    o->answer != ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT)) {
            s_send_unavailable(self, o, WHY_UNAVAILABLE); /* not a held publish's */
        }
        s_out_free(o);
    }
    batch->out_count = 0;
}

static void s_replay_held(broker_t *self, batch_t *batch);

/* A checkpoint rides in the batch that reaches the configured number of rows. */
static void s_checkpoint_if_due(broker_t *self, bool force)
{
    size_t pending = ledger_unsigned_rows(self->ledger);
    if (pending > 0 && (force || pending >= (size_t)self->config->checkpoint_rows)) {
        int64_t seq = ledger_checkpoint(self->ledger, acc_policy_hash(self->policy));
        acc_log_info("ledger", "checkpoint staged seq=%lld after %zu rows", (long long)seq,
                     pending);
    }
}

/* A failed rotation keeps the current epoch in force and is tried again later. */
static void s_rotate_epoch_if_due(broker_t *self)
{
    const acc_broker_config_t *cfg = self->config;
    if (!ledger_is_up(self->ledger) ||
        !ledger_is_epoch_due(self->ledger, (uint64_t)cfg->epoch_max_rows, cfg->epoch_max_seconds)) {
        return;
    }
    acc_err_t err;
    if (ledger_start_epoch(self->ledger, self->policy, &err) != ACC_OK) {
        acc_log_warn("ledger", "key epoch not rotated, the current one stays in use: %s", err.msg);
    } else {
        self->epoch_rotations++;
    }
}

/* Acknowledgements answer nobody, so they wait to be written together (see
 * delivery.h): a turn holding only acknowledgements not yet due commits nothing. */
static bool s_commit_can_wait(broker_t *self, bool final)
{
    return !final && ledger_staged(self->ledger) == 0 && self->staging.out_count == 0 &&
           delivery_acks_due_in_ms(self) > 0;
}

static void s_batch_swap(batch_t *a, batch_t *b)
{
    batch_t t = *a;
    *a = *b;
    *b = t;
}

/* The batch in flight has ended: its answers go, or (failed) it and the batch
 * staged on top of it are answered UNAVAILABLE. When PostgreSQL refused it for
 * one row's data, the publishes of both are committed again one at a time.
 * With later, a batch that committed is moved to self->answering unanswered,
 * for s_finish_flight to answer once the next commit has started. */
static void s_end_flight(broker_t *self, bool committed, const acc_err_t *err, bool later)
{
    batch_t *f = &self->flight;
    bool on_data = !committed && ledger_failed_on_data(self->ledger) && f->held_count > 0;
    if (committed) {
        acc_log_debug("ledger", "committed batch rows=%zu", f->rows);
    } else if (on_data) {
        acc_log_warn("ledger",
                     "batch of %zu row(s) refused for its data (%s); committing its %zu "
                     "publish(es) one at a time",
                     f->rows, err->msg, f->held_count);
    } else {
        acc_log_warn("ledger", "batch of %zu row(s) not written, answering UNAVAILABLE: %s",
                     f->rows, err->msg);
    }
    metrics_commit(self->metrics, committed, f->rows, (double)(acc_now_us() - f->started_us) / 1e6);
    delivery_settle(self, committed);
    if (on_data) {
        metrics_count_replay(self->metrics);
        /* the rows staged since chained from it and were dropped with it; their
         * publishes are committed again after its own, in the order they came */
        s_flush_held_out(self, f);
        s_flush_held_out(self, &self->staging);
        s_replay_held(self, f);
        s_replay_held(self, &self->staging);
        s_release_held(&self->staging);
    } else if (!committed) {
        s_flush(self, f, false, WHY_UNAVAILABLE);
        s_flush(self, &self->staging, false, WHY_UNAVAILABLE);
        s_release_held(&self->staging);
    } else if (later) {
        s_batch_swap(&self->flight, &self->answering); /* held until answered */
    } else {
        s_flush(self, f, true, WHY_UNAVAILABLE);
    }
    s_release_held(f);
    f->rows = 0;
    outcome_settle(self->outcomes, self->ledger);
}

/* Answers that wrote no row (a Welcome, an error, a first result again) leave at
 * once rather than wait for a commit in flight: a subscriber's Welcome then comes
 * before the deliveries its Hello started. */
static void s_send_replies(broker_t *self)
{
    batch_t *b = &self->staging;
    size_t kept = 0;
    for (size_t i = 0; i < b->out_count; i++) {
        out_t *o = &b->out[i];
        if (o->kind == OUT_REPLY) {
            s_reply(self, o, o->frame, o->frame_len);
            s_out_free(o);
            continue;
        }
        b->out[kept++] = *o;
    }
    b->out_count = kept;
}

static void s_start_commit(broker_t *self, bool final);

/* Drives the commit in flight; with wait, until it has ended. With next (the
 * loop's own turns, not while stopping), a batch that committed has a new
 * epoch started if one is due, then the staged batch's commit, and only then
 * are its own answers and deliveries sent: PostgreSQL writes the next batch
 * while the loop sends them. */
static void s_finish_flight(broker_t *self, bool wait, bool next)
{
    acc_err_t err;
    acc_err_clear(&err);
    ledger_flight_t state = ledger_commit_poll(self->ledger, wait, &err);
    if (state != LEDGER_DONE && state != LEDGER_FAILED) {
        return;
    }
    bool go_on = state == LEDGER_DONE && !*self->stop_requested;
    s_end_flight(self, state == LEDGER_DONE, &err, next && go_on);
    if (go_on) {
        s_rotate_epoch_if_due(self);
    }
    if (next && go_on) {
        s_start_commit(self, false);
        s_flush(self, &self->answering, true, WHY_UNAVAILABLE);
        s_release_held(&self->answering);
        self->answering.rows = 0;
    }
}

/* Sends the staged batch's commit, unless one is in flight (it waits its turn)
 * or it holds only acknowledgements not yet due. A batch that writes no row is
 * answered at once. */
static void s_start_commit(broker_t *self, bool final)
{
    if (ledger_in_flight(self->ledger) || s_commit_can_wait(self, final)) {
        return;
    }
    delivery_stage(self, final);
    s_checkpoint_if_due(self, final);
    size_t rows = ledger_staged(self->ledger);
    s_batch_swap(&self->staging, &self->flight);
    self->flight.rows = rows;
    self->flight.started_us = acc_now_us();
    acc_err_t err;
    acc_err_clear(&err);
    if (rows == 0) {
        s_end_flight(self, true, &err, false);
        return;
    }
    if (ledger_commit_start(self->ledger, &err) != ACC_OK) {
        s_end_flight(self, false, &err, false);
    }
}

/* ---- handlers ---- */

static void s_on_hello(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    const Accord__V1__Hello *hello = env->hello;
    if (hello->protocol_version != BROKER_PROTOCOL_VERSION) {
        broker_reply_error(self, peer, env->correlation_id,
                           ACCORD__V1__ERROR_CODE__UNSUPPORTED_VERSION,
                           "this broker speaks protocol version 1");
        return;
    }
    if (hello->agency_id[0] != '\0' && strcmp(hello->agency_id, peer->id) != 0) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__SPOOFED,
                           "Hello names an agency other than the one this key belongs to");
        return;
    }
    acc_strlist_clear(&peer->subscriptions);
    peer->subscriptions.items = acc_xcalloc(hello->n_subscriptions, sizeof(char *));
    for (size_t i = 0; i < hello->n_subscriptions; i++) {
        peer->subscriptions.items[i] = acc_xstrdup(hello->subscriptions[i]);
    }
    peer->subscriptions.count = hello->n_subscriptions;
    peer->welcomed = true;
    peer->subscriber = hello->subscribe && !peer->who.auditor && !peer->gone;
    peer->notices = peer->subscriber && hello->notices;
    if (peer->subscriber) {
        delivery_subscribe(self, peer);
    }
    Accord__V1__Welcome welcome = ACCORD__V1__WELCOME__INIT;
    welcome.protocol_version = BROKER_PROTOCOL_VERSION;
    welcome.agency_id = peer->id;
    welcome.agreement_id = acc_pb_str(acc_policy_id(self->policy));
    welcome.agreement_hash = acc_pb_str(acc_policy_hash_hex(self->policy));
    welcome.auditor = peer->who.auditor;
    /* a third of the timeout: one lost beat never costs a connection */
    welcome.heartbeat_ms = (uint32_t)(self->config->peer_timeout_ms / 3);
    Accord__V1__Envelope reply = ACCORD__V1__ENVELOPE__INIT;
    reply.correlation_id = env->correlation_id;
    reply.body_case = ACCORD__V1__ENVELOPE__BODY_WELCOME;
    reply.welcome = &welcome;
    (void)broker_queue(self, OUT_REPLY, peer, &reply);
    acc_log_info("router", "welcomed %s \"%s\"%s subscriptions=%zu",
                 peer->who.auditor ? "auditor" : "agency", peer->id,
                 peer->subscriber ? " as subscriber" : "", hello->n_subscriptions);
}

static void s_on_heartbeat(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    Accord__V1__Heartbeat beat = ACCORD__V1__HEARTBEAT__INIT;
    beat.sent_at_ms = env->heartbeat->sent_at_ms;
    Accord__V1__Envelope reply = ACCORD__V1__ENVELOPE__INIT;
    reply.correlation_id = env->correlation_id;
    reply.body_case = ACCORD__V1__ENVELOPE__BODY_HEARTBEAT;
    reply.heartbeat = &beat;
    (void)broker_queue(self, OUT_REPLY, peer, &reply);
}

static void s_on_deliver_ack(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    delivery_on_ack(self, peer, env->correlation_id, env->deliver_ack->share_id);
}

static handler_fn *const s_handlers[] = {
    [ACCORD__V1__ENVELOPE__BODY_HELLO] = s_on_hello,
    [ACCORD__V1__ENVELOPE__BODY_PUBLISH] = publish_on_publish,
    [ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK] = s_on_deliver_ack,
    [ACCORD__V1__ENVELOPE__BODY_HEARTBEAT] = s_on_heartbeat,
    [ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY] = audit_on_query,
    [ACCORD__V1__ENVELOPE__BODY_OUTCOME] = outcome_on_outcome,
    [ACCORD__V1__ENVELOPE__BODY_LOOKUP] = lookup_on_lookup,
};

/* Hands env (NULL when the frame was not an Envelope) to its handler. */
static void s_dispatch(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    if (env == NULL) {
        broker_reply_error(self, peer, 0, ACCORD__V1__ERROR_CODE__MALFORMED,
                           "frame is not an accord.v1.Envelope");
        return;
    }
    size_t kind = (size_t)env->body_case;
    handler_fn *handler =
        kind < sizeof(s_handlers) / sizeof(s_handlers[0]) ? s_handlers[kind] : NULL;
    if (handler == NULL) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__UNKNOWN_MESSAGE,
                           "the broker does not accept this kind of message");
    } else if (!peer->welcomed && kind != ACCORD__V1__ENVELOPE__BODY_HELLO) {
        /* a Heartbeat too: a connection the broker forgot must say Hello again */
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__HELLO_REQUIRED,
                           "send Hello first");
    } else {
        handler(self, peer, env);
    }
}

/* ---- reading ---- */

/* Reads and drops the rest of a multipart message. */
static void s_drain_socket(void *socket)
{
    int more = 1;
    size_t size = sizeof(more);
    while (zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &size) == 0 && more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        (void)zmq_msg_recv(&extra, socket, 0);
        zmq_msg_close(&extra);
    }
}

static void s_drain_frames(broker_t *self)
{
    s_drain_socket(self->router);
}

/* One message off the socket: a routing id and, from a well-behaved peer,
 * exactly one body frame holding an Envelope. */
struct inmsg_t {
    zmq_msg_t rid;
    zmq_msg_t body;
    bool routable;              /* a routing id the broker can answer, and a body */
    bool one_frame;             /* the body was a single frame */
    Accord__V1__Envelope *env;  /* unpacked body; NULL if it is not an Envelope */
    Accord__V1__ErrorCode code; /* acc_validate_frame/envelope's verdict */
    acc_err_t why;              /* ...and its reason */
};

/* The body, validated as raw bytes before protobuf-c sees it and again once
 * unpacked; a Publish's record is validated where its refusal is logged. */
static void s_unpack(const broker_t *self, inmsg_t *m)
{
    const uint8_t *data = zmq_msg_data(&m->body);
    size_t len = zmq_msg_size(&m->body);
    m->code = acc_validate_frame(data, len, (size_t)self->config->max_message_bytes, &m->why);
    if (m->code != ACCORD__V1__ERROR_CODE__OK) {
        return;
    }
    m->env = accord__v1__envelope__unpack(acc_pb_wiping_allocator(), len, data);
    if (m->env != NULL) {
        m->code = acc_validate_envelope(m->env, &m->why);
    }
}

/* Takes one message off the socket; false when none is waiting. */
static bool s_take(broker_t *self, inmsg_t *m)
{
    memset(m, 0, sizeof(*m));
    zmq_msg_init(&m->rid);
    zmq_msg_init(&m->body);
    if (zmq_msg_recv(&m->rid, self->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m->rid);
        zmq_msg_close(&m->body);
        return false;
    }
    m->routable = zmq_msg_more(&m->rid) && zmq_msg_recv(&m->body, self->router, 0) >= 0 &&
                  zmq_msg_size(&m->rid) <= BROKER_RID_MAX;
    m->one_frame = m->routable && !zmq_msg_more(&m->body);
    if (!m->one_frame) {
        s_drain_frames(self);
    } else {
        s_unpack(self, m);
    }
    return true;
}

/* The CURVE key ZAP admitted for the connection body came on (its User-Id). */
static bool s_frame_key(zmq_msg_t *body, uint8_t key[PEERS_KEY_BYTES])
{
    const size_t hex_len = (size_t)PEERS_KEY_BYTES * 2;
    const char *hex = zmq_msg_gets(body, "User-Id");
    size_t len = 0;
    return hex != NULL && strlen(hex) == hex_len &&
           sodium_hex2bin(key, PEERS_KEY_BYTES, hex, hex_len, NULL, &len, NULL) == 0 &&
           len == PEERS_KEY_BYTES;
}

/* One key may hold only so many connections: the answer goes to the surplus
 * one, which gets no entry. */
/* UNAVAILABLE, not NOT_PERMITTED: the key is admitted, only not this many times at
 * once, and an agent stops for good (exit 77) on NOT_PERMITTED. */
static void s_refuse_connection(broker_t *self, const peers_frame_t *frame)
{
    peer_t *surplus = acc_xcalloc(1, sizeof(*surplus));
    memcpy(surplus->rid, frame->rid, frame->rid_len);
    surplus->rid_len = frame->rid_len;
    memcpy(surplus->key, frame->key, sizeof(surplus->key));
    surplus->fd = frame->fd;
    acc_principal_t who;
    (void)snprintf(surplus->id, sizeof(surplus->id), "%s",
                   acc_policy_find_key(self->policy, frame->key, &who) ? who.id : "unknown");
    char message[96];
    (void)snprintf(message, sizeof(message), "too many connections for this key (limit %d)",
                   PEERS_PER_KEY_MAX);
    broker_reply_error(self, surplus, 0, ACCORD__V1__ERROR_CODE__UNAVAILABLE, message);
    free(surplus);
}

/* Who sent m is decided here, on every frame, from the key and the connection,
 * never from the routing id alone. NULL when the frame gets no entry (answered). */
static peer_t *s_bind_sender(broker_t *self, inmsg_t *m)
{
    uint8_t key[PEERS_KEY_BYTES];
    if (!s_frame_key(&m->body, key)) {
        acc_log_error("router", "a frame without a CURVE identity was dropped");
        return NULL;
    }
    peers_frame_t frame = { .rid = zmq_msg_data(&m->rid),
                            .rid_len = zmq_msg_size(&m->rid),
                            .key = key,
                            .fd = zmq_msg_get(&m->body, ZMQ_SRCFD),
                            .now_ms = acc_now_ms() };
    peer_t *peer = NULL;
    if (peers_bind(self->peers, self->policy, &frame, &peer) == PEERS_TOO_MANY) {
        s_refuse_connection(self, &frame);
        return NULL;
    }
    return peer;
}

static void s_handle_routable(broker_t *self, inmsg_t *m)
{
    peer_t *peer = s_bind_sender(self, m);
    if (peer == NULL) {
        return;
    }
    if (!m->one_frame) {
        broker_reply_error(self, peer, 0, ACCORD__V1__ERROR_CODE__MALFORMED,
                           "a message must be exactly one Envelope frame");
    } else if (!peer->known) {
        broker_reply_error(self, peer, 0, ACCORD__V1__ERROR_CODE__NOT_PERMITTED,
                           "this key is no longer in the agreement");
        peers_retire(self->peers, peer, "its key is not in the agreement in force");
    } else if (m->code != ACCORD__V1__ERROR_CODE__OK) {
        broker_reply_error(self, peer, m->env != NULL ? m->env->correlation_id : 0, m->code,
                           m->why.msg);
    } else {
        size_t staged = ledger_staged(self->ledger);
        s_dispatch(self, peer, m->env);
        s_hold_if_staged(self, m, staged);
    }
}

/* A publish that staged rows is kept until its batch commits: if PostgreSQL
 * refuses the batch for one row's data, the batch's publishes are committed
 * again one at a time, so one poisoned record fails nobody else's. */
static void s_hold_if_staged(broker_t *self, inmsg_t *m, size_t staged_before)
{
    if (self->replaying || m->env == NULL ||
        m->env->body_case != ACCORD__V1__ENVELOPE__BODY_PUBLISH ||
        ledger_staged(self->ledger) == staged_before) {
        return;
    }
    if (self->staging.held_count == self->staging.held_cap) {
        self->staging.held_cap = self->staging.held_cap == 0 ? 64 : self->staging.held_cap * 2;
        self->staging.held =
            acc_xrealloc(self->staging.held, self->staging.held_cap * sizeof(*self->staging.held));
    }
    inmsg_t *h = &self->staging.held[self->staging.held_count++];
    memset(h, 0, sizeof(*h));
    zmq_msg_init(&h->rid);
    zmq_msg_init(&h->body);
    (void)zmq_msg_move(&h->rid, &m->rid);
    (void)zmq_msg_move(&h->body, &m->body);
    h->routable = true;
    h->one_frame = true;
    self->staging.held_bytes += zmq_msg_size(&h->body);
}

static void s_release_held(batch_t *batch)
{
    for (size_t i = 0; i < batch->held_count; i++) {
        inmsg_t *h = &batch->held[i];
        if (zmq_msg_size(&h->body) > 0) {
            sodium_memzero(zmq_msg_data(&h->body), zmq_msg_size(&h->body));
        }
        zmq_msg_close(&h->body);
        zmq_msg_close(&h->rid);
    }
    batch->held_count = 0;
    batch->held_bytes = 0;
}

/* Acts on one message taken off the socket, and releases it. */
static void s_handle(broker_t *self, inmsg_t *m)
{
    if (m->routable) {
        s_handle_routable(self, m);
    }
    if (m->env != NULL) {
        accord__v1__envelope__free_unpacked(m->env, acc_pb_wiping_allocator());
    }
    /* the frame held a child's record in clear */
    if (zmq_msg_size(&m->body) > 0) {
        sodium_memzero(zmq_msg_data(&m->body), zmq_msg_size(&m->body));
    }
    zmq_msg_close(&m->body);
    zmq_msg_close(&m->rid);
}

/* Commits what one replayed publish staged and answers it; false (nothing
 * answered yet) when PostgreSQL refused its data. */
static bool s_commit_one(broker_t *self)
{
    acc_err_t err;
    delivery_stage(self, false); /* a new cursor goes with its first share */
    bool committed = ledger_commit(self->ledger, &err) == ACC_OK;
    delivery_settle(self, committed);
    outcome_settle(self->outcomes, self->ledger);
    if (!committed && ledger_failed_on_data(self->ledger)) {
        return false;
    }
    s_flush(self, &self->staging, committed, WHY_UNAVAILABLE);
    return true;
}

/* One held publish again, alone in its batch; if its own rows are refused for
 * their data, it gets a final refusal whose row holds only the broker's text. */
static void s_replay_one(broker_t *self, inmsg_t *m)
{
    s_unpack(self, m);
    peer_t *peer = s_bind_sender(self, m);
    if (peer != NULL && m->env != NULL && m->code == ACCORD__V1__ERROR_CODE__OK && peer->known &&
        peer->welcomed) {
        publish_on_publish(self, peer, m->env);
        if (!s_commit_one(self)) {
            s_flush_held_out(self, &self->staging);
            publish_refuse_unwritable(self, peer, m->env);
            if (!s_commit_one(self)) {
                s_flush(self, &self->staging, false, WHY_UNAVAILABLE);
            }
        }
    }
    if (m->env != NULL) {
        accord__v1__envelope__free_unpacked(m->env, acc_pb_wiping_allocator());
        m->env = NULL;
    }
}

static void s_replay_held(broker_t *self, batch_t *batch)
{
    self->replaying = true;
    for (size_t i = 0; i < batch->held_count; i++) {
        s_replay_one(self, &batch->held[i]);
    }
    self->replaying = false;
}

/* Whether the message came on a connection trusted to publish new records (see
 * peers.h), judged before its frame is bound: an entry that is not that very
 * connection is not trusted. */
static bool s_sender_trusted(broker_t *self, inmsg_t *m, const uint8_t key[PEERS_KEY_BYTES])
{
    peers_frame_t frame = { .rid = zmq_msg_data(&m->rid),
                            .rid_len = zmq_msg_size(&m->rid),
                            .key = key,
                            .fd = zmq_msg_get(&m->body, ZMQ_SRCFD) };
    const peer_t *p = peers_connection(self->peers, &frame);
    return p != NULL && peers_trusted(p);
}

/* Asks the log once whether any record published in msgs was accepted before,
 * rather than once per record; a trusted connection's records are not asked
 * about at all. On failure each publish asks for itself. */
static void s_prefetch_publishes(broker_t *self, inmsg_t *msgs, size_t n)
{
    /* asked: [0, count); taken as new: [n, n + unasked) */
    const char **from = acc_xmalloc(2 * n * sizeof(*from));
    const char **ids = acc_xmalloc(2 * n * sizeof(*ids));
    size_t count = 0;
    size_t unasked = 0;
    bool may_presume = ledger_may_presume_new(self->ledger);
    for (size_t i = 0; i < n; i++) {
        const Accord__V1__Envelope *env = msgs[i].env;
        uint8_t key[PEERS_KEY_BYTES];
        acc_principal_t who;
        if (env != NULL && env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH &&
            env->publish->record != NULL &&
            acc_validate_is_record_id(env->publish->record->record_id) &&
            s_frame_key(&msgs[i].body, key) && acc_policy_find_key(self->policy, key, &who) &&
            !who.auditor) {
            size_t at = count;
            if (may_presume && s_sender_trusted(self, &msgs[i], key)) {
                at = n + unasked++;
            } else {
                count++;
            }
            from[at] = who.id;
            ids[at] = env->publish->record->record_id;
        }
    }
    ledger_presume_new(self->ledger, unasked, from + n, ids + n);
    metrics_count_unasked(self->metrics, unasked);
    acc_err_t err;
    if (ledger_prefetch_publishes(self->ledger, count, from, ids, &err) != ACC_OK) {
        acc_log_debug("ledger", "%s", err.msg);
    }
    free(from);
    free(ids);
}

#define READ_PASS_MAX  512 /* messages taken off the socket, then handled, at a time */
#define HELD_BYTES_MAX ((size_t)64 * 1024 * 1024) /* publishes kept for a replay, per batch */

/* A batch's staged rows and a pass's frames are bounded in bytes as well as in
 * number, so large records cannot make one batch hold gigabytes. */
#define BATCH_BYTES_MAX ((size_t)4 * 1024 * 1024)
#define PASS_BYTES_MAX  ((size_t)2 * 1024 * 1024)

/* Messages to take in the next pass: each stages at most a few rows, so a batch
 * stays near batch_max_rows. 0 when the batch is full. */
static size_t s_pass_size(const broker_t *self, size_t taken)
{
    size_t max_rows = (size_t)self->config->batch_max_rows;
    size_t staged = ledger_staged(self->ledger);
    if (taken >= READ_BATCH_MAX || staged >= max_rows ||
        self->staging.held_bytes >= HELD_BYTES_MAX ||
        ledger_staged_bytes(self->ledger) >= BATCH_BYTES_MAX) {
        return 0;
    }
    return max_rows - staged < READ_PASS_MAX ? max_rows - staged : READ_PASS_MAX;
}

/* Reads what is waiting, up to a batch: a pass at a time, each pass's earlier
 * publishes looked up in one query before its messages are handled in order. */
static void s_read_batch(broker_t *self)
{
    if (self->inbox == NULL) {
        self->inbox = acc_xmalloc(READ_PASS_MAX * sizeof(*self->inbox));
    }
    inmsg_t *msgs = self->inbox;
    size_t taken = 0;
    size_t want;
    while ((want = s_pass_size(self, taken)) > 0) {
        size_t n = 0;
        size_t bytes = 0;
        while (n < want && bytes < PASS_BYTES_MAX && s_take(self, &msgs[n])) {
            bytes += zmq_msg_size(&msgs[n].body);
            n++;
        }
        s_prefetch_publishes(self, msgs, n);
        for (size_t i = 0; i < n; i++) {
            s_handle(self, &msgs[i]);
        }
        taken += n;
        if (n < want && bytes < PASS_BYTES_MAX) {
            break; /* nothing more waiting */
        }
    }
}

/* ---- the loop ---- */

/* Agents send a Heartbeat whenever they have sent nothing else for a while, so a
 * peer silent for peer_timeout_ms is dead: what it had in flight goes back to
 * pending again and reaches its next connection. */
static void s_forget_silent_peers(broker_t *self)
{
    int64_t now = acc_now_ms();
    for (size_t i = 0; i < peers_count(self->peers); i++) {
        peer_t *p = peers_at(self->peers, i);
        if (!p->closing && now - p->last_seen_ms > self->config->peer_timeout_ms) {
            peers_retire(self->peers, p, "silent for longer than peer_timeout_ms");
        }
    }
}

/* The router's monitor reports each connection that ends, with its descriptor:
 * the entries that spoke on it are retired before any frame is read or sent
 * this turn, so a routing id its owner left behind reaches nobody else. */
static void s_read_disconnections(broker_t *self)
{
    for (;;) {
        zmq_msg_t event;
        zmq_msg_init(&event);
        if (zmq_msg_recv(&event, self->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&event);
            return;
        }
        const uint8_t *data = zmq_msg_data(&event);
        if (zmq_msg_size(&event) == 6) {
            uint16_t kind = (uint16_t)(data[0] | data[1] << 8);
            uint32_t fd = (uint32_t)data[2] | (uint32_t)data[3] << 8 | (uint32_t)data[4] << 16 |
                          (uint32_t)data[5] << 24;
            if (kind == ZMQ_EVENT_DISCONNECTED) {
                peers_disconnected(self->peers, (int)fd);
            }
        }
        zmq_msg_close(&event);
        s_drain_socket(self->monitor); /* the endpoint frame */
    }
}

/* What the broker counts per agency (deliveries in flight, their bytes, the
 * budgets) and per auditor (the turn of its last page), by index into the
 * agreement in force: sized afresh for it, all counts at zero. */
static void s_resize_agency_counts(broker_t *self)
{
    free(self->agency_inflight);
    free(self->agency_inflight_bytes);
    free(self->budgets);
    self->agency_slots = acc_policy_agency_count(self->policy);
    self->agency_inflight = acc_xcalloc(self->agency_slots + 1, sizeof(size_t));
    self->agency_inflight_bytes = acc_xcalloc(self->agency_slots + 1, sizeof(size_t));
    self->budgets = acc_xcalloc((self->agency_slots + 1) * BROKER_BUDGETS, sizeof(budget_t));
    free(self->auditor_turns);
    self->auditor_slots = acc_policy_auditor_count(self->policy);
    self->auditor_turns = acc_xcalloc(self->auditor_slots + 1, sizeof(uint64_t));
}

/* An agency index from the old agreement in the fresh one, by id; SIZE_MAX when
 * the agency left it. */
static size_t s_agency_in(const acc_policy_t *old, const acc_policy_t *fresh, size_t agency)
{
    size_t index = SIZE_MAX;
    if (agency >= acc_policy_agency_count(old) ||
        !acc_policy_find_agency(fresh, acc_policy_agency_id(old, agency), &index)) {
        return SIZE_MAX;
    }
    return index;
}

/* The Delivers of the batches committing and staged were addressed by index into
 * the old agreement, and are sent once their commit ends, under the fresh one:
 * each is addressed again by its agency's id, or (its agency left) sends nothing
 * and its share waits in the log. */
static void s_readdress_waiting_delivers(broker_t *self, const acc_policy_t *fresh)
{
    batch_t *batches[2] = { &self->staging, &self->flight };
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < batches[k]->out_count; i++) {
            out_t *o = &batches[k]->out[i];
            if (o->kind == OUT_DELIVER) {
                o->from_agency = s_agency_in(self->policy, fresh, o->from_agency);
                o->to_agency = s_agency_in(self->policy, fresh, o->to_agency);
            }
        }
    }
}

/* Indices into the agreement change with it: the per-agency counts start again
 * for the new one, and the deliveries in flight on connections that stay are
 * carried over to it and counted again; acknowledgements already received stand. */
static void s_carry_deliveries_over(broker_t *self)
{
    s_resize_agency_counts(self);
    delivery_agreement_changed(self);
}

static bool s_has_box_key(const acc_policy_t *policy, const uint8_t *box_key)
{
    for (size_t i = 0; i < acc_policy_auditor_count(policy); i++) {
        if (sodium_memcmp(acc_policy_auditor_box_key(policy, i), box_key, 32) == 0) {
            return true;
        }
    }
    return false;
}

/* True when the auditors able to open the current epoch differ between old and
 * fresh: an auditor removed must not read what is logged from now on, and one
 * added should be able to. */
static bool s_auditors_changed(const acc_policy_t *old, const acc_policy_t *fresh)
{
    if (acc_policy_auditor_count(old) != acc_policy_auditor_count(fresh)) {
        return true;
    }
    for (size_t i = 0; i < acc_policy_auditor_count(old); i++) {
        if (!s_has_box_key(fresh, acc_policy_auditor_box_key(old, i))) {
            return true;
        }
    }
    return false;
}

static void s_start_epoch_for_auditors(broker_t *self)
{
    s_finish_flight(self, true, false); /* an epoch is started between commits */
    acc_err_t err;
    if (ledger_start_epoch(self->ledger, self->policy, &err) != ACC_OK) {
        /* retried before the next row is staged: nothing is written under the
         * old auditors' key once the new agreement is in force */
        self->epoch_needed = true;
        acc_log_warn("ledger", "new key epoch for the new auditors not started yet: %s", err.msg);
        return;
    }
    self->epoch_needed = false;
    self->epoch_rotations++;
    acc_log_notice("ledger", "new key epoch started: the auditors changed with the agreement");
}

/* A new agreement is checked as a whole before it replaces the old one. Every
 * connection's key is resolved again: a revoked or rotated key stops at its next
 * frame. */
static void s_reload(broker_t *self)
{
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    acc_policy_t *fresh = NULL;
    if (acc_policy_load(&fresh, self->config->agreement, &diag, &err) != ACC_OK) {
        for (size_t i = 0; i < diag.count; i++) {
            acc_log_error("agreement", "%s", diag.lines[i]);
        }
        acc_log_error("agreement", "reload refused; agreement %s stays in force",
                      acc_policy_hash_hex(self->policy));
        self->reloads_refused++;
        acc_diag_clear(&diag);
        return;
    }
    acc_diag_clear(&diag);
    bool auditors_changed = s_auditors_changed(self->policy, fresh);
    peers_rebind(self->peers, fresh);
    peers_reap(self->peers);
    s_readdress_waiting_delivers(self, fresh);
    acc_policy_destroy(&self->policy);
    self->policy = fresh;
    s_carry_deliveries_over(self);
    acc_log_notice("agreement", "reloaded \"%s\" hash=%s", acc_policy_id(self->policy),
                   acc_policy_hash_hex(self->policy));
    self->reloads_ok++;
    if (self->metrics != NULL) {
        s_name_agencies(self);
    }
    if (auditors_changed) {
        s_start_epoch_for_auditors(self);
    }
}

#define METRICS_STATE_MS 1000

/* The schema can change under a running broker (a newer broker migrated it, or
 * an operator restored an older dump): /healthz says so instead of "ok". */
static void s_update_schema(broker_t *self)
{
    int version = 0;
    acc_err_t err;
    if (ledger_schema_version(self->ledger, &version, &err) != ACC_OK) {
        acc_log_warn("metrics", "schema version not read: %s", err.msg);
        return;
    }
    metrics_set_schema(self->metrics, version, acc_migrate_latest());
}

/* The figures /metrics and /healthz show that the loop owns: refreshed once a
 * second (the schema version a cheap query). The pending deliveries per agency
 * are counted off the loop (s_open_metrics). */
static void s_update_metrics(broker_t *self)
{
    int64_t now = acc_now_ms();
    if (self->metrics == NULL || now - self->state_at_ms < METRICS_STATE_MS) {
        return;
    }
    self->state_at_ms = now;
    if (!ledger_is_up(self->ledger)) {
        /* an idle broker would otherwise notice PostgreSQL is back only when
         * traffic arrives, and a monitor gating traffic on /healthz would wait
         * forever; the ledger reconnects with its own backoff */
        if (!ledger_in_flight(self->ledger) && ledger_staged(self->ledger) == 0) {
            ledger_tick(self->ledger);
        }
    }
    metrics_state_t st = { .database_up = ledger_is_up(self->ledger),
                           .agreement_id = acc_policy_id(self->policy),
                           .agreement_hash = acc_policy_hash_hex(self->policy),
                           .handshake_refusals = zap_refused(self->zap),
                           .reloads_ok = self->reloads_ok,
                           .reloads_refused = self->reloads_refused,
                           .epoch_rotations = self->epoch_rotations,
                           .checkpoint_lag = ledger_unsigned_rows(self->ledger) };
    metrics_set_state(self->metrics, &st);
    if (!st.database_up) {
        return;
    }
    s_update_schema(self);
}

/* Idle, the loop wakes once a second; with acknowledgements waiting, when they
 * are due. */
static long s_poll_timeout_ms(const broker_t *self)
{
    int64_t due = delivery_acks_due_in_ms(self);
    return due < 0 || due > POLL_IDLE_MS ? POLL_IDLE_MS : (long)due;
}

/* Waits for the router (unless the staged batch is full: it waits for the
 * commit in flight), ZAP, and the answer to the commit in flight. */
static acc_rc_t s_poll(broker_t *self)
{
    zmq_pollitem_t items[3] = { { .socket = zap_socket(self->zap), .events = ZMQ_POLLIN } };
    int n = 1;
    if (s_pass_size(self, 0) > 0) {
        items[n++] = (zmq_pollitem_t){ .socket = self->router, .events = ZMQ_POLLIN };
    }
    int fd = ledger_commit_fd(self->ledger);
    if (fd >= 0) {
        items[n++] = (zmq_pollitem_t){ .socket = NULL, .fd = fd, .events = ZMQ_POLLIN };
    }
    if (zmq_poll(items, n, s_poll_timeout_ms(self)) < 0 && zmq_errno() != EINTR) {
        return ACC_ERR_NET;
    }
    return ACC_OK;
}

bool broker_is_behind(const broker_t *self)
{
    return self->ledger != NULL && ledger_is_behind(self->ledger);
}

acc_rc_t broker_run(broker_t *self, acc_err_t *err)
{
    acc_log_notice("broker", "listening on %s", self->endpoint);
    (void)printf("ready endpoint=%s\n", self->endpoint);
    (void)fflush(stdout);
    while (!*self->stop_requested) {
        self->turn++;
        if (s_poll(self) != ACC_OK) {
            return acc_err_set(err, ACC_ERR_NET, "could not poll sockets: %s",
                               zmq_strerror(zmq_errno()));
        }
        s_read_disconnections(self);
        if (self->epoch_needed) {
            s_start_epoch_for_auditors(self);
        }
        zap_handle(self->zap, self->policy);
        s_finish_flight(self, false, true);
        s_read_batch(self);
        s_read_disconnections(self); /* again: no answer to a connection that ended */
        s_send_replies(self);
        s_finish_flight(self, false, true);
        s_start_commit(self, false);
        if (ledger_is_behind(self->ledger)) {
            return acc_err_set(err, ACC_ERR_DB,
                               "stopped: the database went back in time under the broker");
        }
        delivery_pump(self);
        delivery_redeliver_due(self);
        delivery_erase_done_epochs(self);
        s_forget_silent_peers(self);
        peers_reap(self->peers);
        s_update_metrics(self);
        if (*self->reload_requested) {
            *self->reload_requested = 0;
            s_reload(self);
        }
    }
    s_finish_flight(self, true, false);
    s_start_commit(self, true); /* with a final signed checkpoint */
    s_finish_flight(self, true, false);
    acc_log_notice("broker", "stopped; %zu deliveries were awaiting acknowledgement",
                   delivery_inflight(self));
    return ACC_OK;
}
