/* broker.h - accordd's state and event loop, shared by the broker's own modules */
#ifndef ACCORD_BROKER_BROKER_H
#define ACCORD_BROKER_BROKER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/config.h"
#include "accord/logrow.h"
#include "accord/pb.h"
#include "accord/policy.h"
#include "delivery.h"
#include "hwm.h"
#include "ledger.h"
#include "metrics.h"
#include "outcome.h"
#include "peers.h"
#include "zap.h"

#define BROKER_RID_MAX          PEERS_RID_MAX
#define BROKER_PROTOCOL_VERSION 1

typedef enum {
    OUT_REPLY,   /* a reply to a request that wrote no row: send now */
    OUT_RESULT,  /* a PublishResult: send only if the batch commits */
    OUT_DELIVER, /* a Deliver: send only if the batch commits */
} out_kind_t;

/* A frame waiting for the end of the batch. */
typedef struct out_t {
    out_kind_t kind;
    uint8_t rid[BROKER_RID_MAX];
    size_t rid_len;
    uint8_t key[PEERS_KEY_BYTES]; /* the connection it answers: a reply goes to rid */
    int fd;                       /* only while that connection still holds it */
    uint64_t correlation_id;
    uint8_t *frame; /* packed Envelope, owned */
    size_t frame_len;
    int answer;         /* the Envelope body it carries (Accord__V1__Envelope__BodyCase) */
    char *record_id;    /* OUT_RESULT: the id an UNAVAILABLE answer echoes (a publish's
                         * record id, an outcome's share id) */
    char *status;       /* OUT_RESULT of an outcome: its status, for that answer */
    size_t from_agency; /* OUT_DELIVER: publisher's agency index (SIZE_MAX: it left) */
    size_t to_agency;   /* OUT_DELIVER: recipient's agency index, in the agreement in
                           force (SIZE_MAX: it left) */
    char *record_type;  /* OUT_DELIVER: for subscriptions */
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    int64_t seq; /* OUT_DELIVER: the share's log sequence */
} out_t;

/* A message taken off the router socket (defined in broker.c). */
typedef struct inmsg_t inmsg_t;

/* What a batch answers once it has committed (or failed): its frames, and the
 * publishes that staged its rows, kept for a replay should PostgreSQL refuse
 * one row's data. */
typedef struct {
    out_t *out;
    size_t out_count;
    size_t out_cap;
    inmsg_t *held;
    size_t held_count;
    size_t held_cap;
    size_t held_bytes;
    size_t rows;        /* rows it committed (flight) */
    int64_t started_us; /* when its commit started (flight) */
} batch_t;

typedef struct broker_t {
    const acc_broker_config_t *config;
    void *ctx;
    void *router;
    zap_t *zap;
    ledger_t *ledger;
    hwm_t *mark; /* the high-water mark in state_directory; NULL under --check */
    acc_policy_t *policy;
    uint8_t *subject_key; /* sodium_malloc, 32 bytes */
    peers_t *peers;
    void *monitor;           /* PAIR socket: the router's disconnections, from libzmq */
    inmsg_t *inbox;          /* one read pass of messages, allocated on first use */
    batch_t staging;         /* the batch being read and staged */
    batch_t flight;          /* the batch whose commit is in flight (ledger_in_flight) */
    bool replaying;          /* committing held publishes one at a time after a data failure */
    outcome_t *outcomes;     /* staged or in flight (outcome.c) */
    delivery_t *delivery;    /* cursors, deliveries in flight, acknowledgements */
    size_t *agency_inflight; /* per agency index: deliveries sent, unacknowledged */
    size_t *agency_inflight_bytes; /* ...and their bytes */
    size_t agency_slots;           /* entries in those two arrays */
    const volatile sig_atomic_t *stop_requested;
    volatile sig_atomic_t *reload_requested;
    char endpoint[256]; /* the endpoint actually bound */
    metrics_t *metrics; /* NULL when metrics is "" */
    uint64_t reloads_ok;
    uint64_t reloads_refused;
    uint64_t epoch_rotations;
    uint64_t turn;         /* loop turns since start (from 1) */
    bool epoch_needed;     /* the auditors changed and their new epoch is not started yet */
    int64_t state_at_ms;   /* last time the metrics' view of the state was refreshed */
    int64_t pending_at_ms; /* ...and of the pending deliveries per agency */
} broker_t;

/* How accordd was asked to start, and what stopped it. */
typedef struct {
    bool check_only;     /* --check: read and check everything, write nothing, bind nothing */
    bool accept_restore; /* --accept-restore: continue after the database went back */
    bool behind;         /* out: refused, the database is behind the high-water mark */
} broker_start_t;

/* Opens sockets, the ledger and the agreement named in config (under --check
 * only the ledger, read-only, and the agreement). */
ACC_NODISCARD acc_rc_t broker_open(broker_t **out, const acc_broker_config_t *config,
                                   broker_start_t *start,
                                   const volatile sig_atomic_t *stop_requested,
                                   volatile sig_atomic_t *reload_requested, acc_err_t *err);
void broker_destroy(broker_t **self_p);

/* Runs until a stop is requested, then commits what is staged and returns; or
 * until the database is found gone back in time (broker_is_behind). */
ACC_NODISCARD acc_rc_t broker_run(broker_t *self, acc_err_t *err);

/* True when the broker stopped because the database went back in time. */
bool broker_is_behind(const broker_t *self);

/* Queues env (packed now) for rid. kind says when it may leave. */
out_t *broker_queue(broker_t *self, out_kind_t kind, const peer_t *peer,
                    const Accord__V1__Envelope *env);

/* Sends one frame to rid now, never blocking: one peer that stops reading must
 * not stall everyone else. A peer that has gone is retired. */
typedef enum {
    BROKER_SEND_OK,
    BROKER_SEND_FULL, /* the peer is not reading: its queue is at the high-water mark */
    BROKER_SEND_GONE, /* the peer has disconnected */
} broker_send_rc_t;
broker_send_rc_t broker_send(broker_t *self, const uint8_t *rid, size_t rid_len,
                             const uint8_t *frame, size_t len);

/* Queues an Error reply naming code and message. */
void broker_reply_error(broker_t *self, const peer_t *peer, uint64_t correlation_id,
                        Accord__V1__ErrorCode code, const char *message);

/* What a request handler reads of the broker. Each returns a pointer the broker
 * owns, borrowed for the handler call it was handed self in: the agreement is
 * swapped (SIGHUP) only between the loop's phases, never during a handler. */

/* The agreement in force. */
const acc_policy_t *broker_policy(const broker_t *self);

/* The sharing log: where handlers stage their rows and read what they decide on. */
ledger_t *broker_ledger(broker_t *self);

/* The outcomes staged and not yet committed (outcome.c's table). */
outcome_t *broker_outcomes(broker_t *self);

/* Loop turns since start, counting from 1 (audit.c: at most one page a turn). */
uint64_t broker_turn(const broker_t *self);

/* publish.c: decides one Publish, stages its log rows and queues the result and
 * deliveries for the end of the batch. */
void publish_on_publish(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

/* The day (YYYY-MM-DD, UTC) an agreement's validity is checked against, and the
 * time now as RFC 3339 UTC with microseconds (what notices carry). */
#define BROKER_AT_TEXT_MAX 40
void broker_today(char day[11]);
void broker_now_text(char out[BROKER_AT_TEXT_MAX]);

/* The keyed tag by which the log finds a child's rows: of nhs (a
 * normalised NHS number) when it is not "", else of agency's local_id when that
 * is not ""; false when neither. Callers normalise the number once, where they
 * check it. */
bool broker_subject_tag(const broker_t *self, const char *agency, const char *nhs,
                        const char *local_id, uint8_t tag[ACC_LOGROW_TAG_BYTES]);

/* lookup.c: answers one Lookup (who already knows this child) from the log,
 * logs it as a `looked-up` row (or a refusal), and, when the agreement's lookup
 * says notify, stages a `notified` row and notice for each agency named. */
void lookup_on_lookup(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

/* publish.c: the final answer to a Publish whose rows PostgreSQL refused for
 * their data: a refused row holding only broker-chosen text (no record_id or
 * record_type) and an INVALID_RECORD result, so no retry can fail a batch again. */
void publish_refuse_unwritable(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

/* audit.c: answers an auditor's AuditQuery with one page of log rows and stages
 * a `queried` row saying who asked what and how much they were given. */
void audit_on_query(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

#endif
