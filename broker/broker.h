/* broker.h - accordd's broker as main.c and the request handlers see it
 *
 * broker_t is opaque here. Its definition, and the event loop's own types, are in
 * broker_internal.h, which only broker.c and delivery.c include: between them they
 * own the loop's state (sockets, peers, batches, deliveries in flight and their
 * per-agency counts). The request handlers (audit.c, lookup.c, outcome.c,
 * publish.c) need a narrow view and reach it through the functions below:
 * broker_policy(), broker_ledger(), broker_outcomes() to read, broker_take() and
 * broker_take_audit_turn() for what a partner may cost the loop,
 * broker_queue() and broker_reply_error() to answer, broker_subject_tag() for the
 * keyed tag (the key itself stays in broker.c). Each handler's entry point is in
 * its own header (audit.h, lookup.h, outcome.h, publish.h), for the loop's
 * dispatch table.
 *
 * Accessors rather than a context struct handed to each handler: the handlers
 * share one dispatch signature (handler_fn, in broker.c) with the loop's own
 * handlers, and each still needs the broker itself to queue answers and note
 * deliveries, so a context struct would have to carry broker_t along and would
 * narrow nothing. An accessor names each dependency where it is used, so grep
 * shows which handler reads what. lookup.c and outcome.c take what they need once
 * into the struct that holds one request while it is decided. */
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
#include "ledger.h"
#include "outcome.h"
#include "peers.h"

#define BROKER_RID_MAX PEERS_RID_MAX

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

/* The broker: defined in broker_internal.h. */
typedef struct broker_t broker_t;

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
/* Frees the broker and all it owns, NULLs *self_p; accepts NULL and *self_p == NULL. */
void broker_destroy(broker_t **self_p);

/* Runs until a stop is requested, then commits what is staged and returns; or
 * until the database is found gone back in time (broker_is_behind). */
ACC_NODISCARD acc_rc_t broker_run(broker_t *self, acc_err_t *err);

/* True when the broker stopped because the database went back in time. */
bool broker_is_behind(const broker_t *self);

/* Queues env (packed now, so env stays the caller's) for peer. kind says when it
 * may leave. The frame returned is the broker's and valid until the next
 * broker_queue: the caller fills its other fields at once, and strings it puts
 * there (acc_xstrdup) are freed with the frame. */
out_t *broker_queue(broker_t *self, out_kind_t kind, const peer_t *peer,
                    const Accord__V1__Envelope *env);

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

/* True while the publishes of a batch PostgreSQL refused for a row's data are
 * committed again one at a time (publish.c: a repeat found then cost a batch). */
bool broker_replaying(const broker_t *self);

/* Takes this loop turn's audit page for the auditor peer speaks for: false when
 * that auditor already had one this turn, on this connection or another (or
 * peer is not an auditor). A page is a query the loop waits for, so an auditor's
 * key gets one a turn however many connections it opens. */
bool broker_take_audit_turn(broker_t *self, const peer_t *peer);

/* What an agency's messages may make the broker read from the log, in a
 * second: each read is one the loop waits for, so an agency asking faster would
 * hold up everyone else's publishes. */
typedef enum {
    BROKER_BUDGET_LOOKUPS, /* lookups answered (lookups_per_second) */
    BROKER_BUDGET_READS,   /* outcomes decided, acknowledgements of shares not in
                            * flight, repeated publishes answered with their first
                            * result (log_reads_per_second) */
    BROKER_BUDGETS
} broker_budget_t;

#define BROKER_BUDGET_WHY_MAX 160

/* Takes one from the peer's agency's budget: false when it has used them all
 * (a second's worth at once, then that many a second) or the peer is an
 * auditor, with why saying so, rate and setting. A reload of the agreement
 * gives every agency its full second's worth again. */
bool broker_take(broker_t *self, const peer_t *peer, broker_budget_t which,
                 char why[BROKER_BUDGET_WHY_MAX]);

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

#endif
