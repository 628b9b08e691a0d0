/* peers.h - who is speaking: the one place that binds a connection's routing id
 * to its CURVE key and to the agency or auditor that key belongs to */
#ifndef ACCORD_BROKER_PEERS_H
#define ACCORD_BROKER_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/config.h"
#include "accord/policy.h"

#define PEERS_RID_MAX     255
#define PEERS_KEY_BYTES   32
#define PEERS_MAX         4096 /* connections remembered at once */
#define PEERS_PER_KEY_MAX 16   /* connections one key may hold at once */

/* One connection, as the broker knows it. The routing id is only the address to
 * answer: who is speaking is the CURVE key ZAP admitted, checked on every frame. */
typedef struct {
    uint8_t rid[PEERS_RID_MAX]; /* ZeroMQ routing id */
    size_t rid_len;
    uint8_t key[PEERS_KEY_BYTES]; /* the CURVE public key ZAP admitted */
    int fd;                       /* the TCP connection's descriptor in libzmq */
    char id[128];                 /* agency or auditor id the key belongs to */
    acc_principal_t who;          /* id borrowed from the policy in force */
    bool known;                   /* the key is in the policy in force */
    bool welcomed;                /* Hello answered on this connection */
    bool subscriber;              /* Hello asked for deliveries */
    bool notices;                 /* ...and outcomes and lookup notifications too */
    int64_t last_seen_ms;         /* monotonic time of the last frame */
    int64_t last_ack_ms;          /* subscriber: the last acknowledgement (or Hello) */
    acc_strlist_t subscriptions;  /* record types; empty = every allowed type */
    bool gone;                    /* its connection ended: frames it left are still read,
                                     nothing more is sent to it */
    bool closing;                 /* retired: reaped at the end of this loop turn */
    bool backlog;                 /* the outbox may hold more for this subscriber */
    int64_t cursor;               /* highest share seq sent on this connection */
    size_t unread_bound;          /* at least its unread bytes (peers_unread_within) */
    int64_t unread_asked_ms;      /* when the kernel last told them; 0: never */
    uint32_t fresh_run;           /* publishes in a row that repeated no accepted record */
    uint8_t distrust;             /* repeats the log's unique index caught for it */
} peer_t;

typedef struct peers_t peers_t;

/* Called for an entry about to be retired (its connection ended, or another
 * connection now holds its routing id), before it is forgotten. */
typedef void peers_retire_fn(void *ctx, peer_t *peer, const char *why);

/* A frame's identity as libzmq reports it. */
typedef struct {
    const uint8_t *rid;
    size_t rid_len;
    const uint8_t *key; /* PEERS_KEY_BYTES, from the ZAP User-Id */
    int fd;             /* ZMQ_SRCFD of the frame */
    int64_t now_ms;
} peers_frame_t;

typedef enum {
    PEERS_OK,       /* *out is this connection's entry */
    PEERS_TOO_MANY, /* the key already holds PEERS_PER_KEY_MAX connections */
} peers_rc_t;

peers_t *peers_new(peers_retire_fn *retire, void *ctx);
void peers_destroy(peers_t **self_p);

size_t peers_count(const peers_t *self);
peer_t *peers_at(peers_t *self, size_t index);

/* The entry answering to rid, or NULL. */
peer_t *peers_find(peers_t *self, const uint8_t *rid, size_t rid_len);

/* The entry for a frame. An entry under the same routing id that belongs to
 * another key or another connection, or that was retired, is retired now and a
 * fresh entry takes its place, so nothing a departed connection was doing
 * carries over. A new entry's key is resolved in policy (known false if the
 * agreement no longer names it). */
peers_rc_t peers_bind(peers_t *self, const acc_policy_t *policy, const peers_frame_t *frame,
                      peer_t **out);

/* Marks every entry on the connection that used descriptor fd as gone: it ended.
 * Frames it sent before are still read (an acknowledgement counts), but nothing
 * is sent to its routing id, which another connection may take next. */
void peers_disconnected(peers_t *self, int fd);

/* True when a frame for the connection stamped (key, fd) may go to rid now: the
 * entry under rid is that connection and it has not ended, or no entry holds rid. */
bool peers_is_current(peers_t *self, const uint8_t *rid, size_t rid_len,
                      const uint8_t key[PEERS_KEY_BYTES], int fd);

/* Retires p (idempotent): the retire callback runs once, then it is closing. */
void peers_retire(peers_t *self, peer_t *p, const char *why);

/* Resolves every entry's key again in a new policy: an entry whose key the
 * agreement no longer names, or now names for someone else, is retired. */
void peers_rebind(peers_t *self, const acc_policy_t *policy);

/* Bytes sent to p's connection that its far end has not yet taken in (the TCP
 * send queue, which fills when it stops reading); 0 when that cannot be told. */
size_t peers_unread_bytes(const peer_t *p);

/* Whether at most limit bytes sent to p's connection sit unread, as
 * peers_unread_bytes tells, without asking the kernel at every delivery: the
 * queue grows only by what is sent, so the last answer plus what
 * peers_note_sent counted since is a bound on it. The kernel is asked again
 * when that bound passes limit, and at least every PEERS_UNREAD_ASK_MS (other
 * frames to the connection, answers and Welcomes, are not counted). now_ms is
 * monotonic. */
#define PEERS_UNREAD_ASK_MS 100
bool peers_unread_within(peer_t *p, size_t limit, int64_t now_ms);

/* Counts a frame of len bytes sent to p towards its unread bound. */
void peers_note_sent(peer_t *p, size_t len);

/* Trust in a connection's publishes (README, "Idempotent publish"). Every publish's (agency,
 * record_id) is looked up in the log before its rows are staged, so that a repeat gets its first
 * result and nothing twice. A connection whose last PEERS_TRUST_AFTER publishes repeated nothing is
 * trusted: its publishes are staged without the lookup, and the log's unique index on an accepted
 * (agency, record_id) is what catches a repeat. That fails the batch, whose publishes are then
 * committed again one at a time, looked up; the repeat's connection loses trust, and needs twice as
 * long to earn it again each time its repeats cost a batch (up to 2^PEERS_DISTRUST_MAX times as
 * long). */
#define PEERS_TRUST_AFTER  1000
#define PEERS_DISTRUST_MAX 10

/* The entry bound to frame's connection (its routing id, key and descriptor),
 * or NULL: binds nothing, retires nothing. */
peer_t *peers_connection(peers_t *self, const peers_frame_t *frame);

/* Whether p's publishes may skip the lookup. */
bool peers_trusted(const peer_t *p);

/* Counts a publish that was looked up (or, trusted, staged): repeat when the log
 * held the record accepted already; caught_at_commit when that repeat had reached
 * the database unasked and failed its batch. */
void peers_note_publish(peer_t *p, bool repeat, bool caught_at_commit);

/* Forgets every closing entry. */
void peers_reap(peers_t *self);

#endif
