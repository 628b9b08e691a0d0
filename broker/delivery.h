/* delivery.h - getting each share to its recipient, from the log
 *
 * A share is pending from the commit of its `shared` row until a commit holds its
 * acknowledgement; so are an `outcome` row to a publisher and a `notified` row
 * to an agency a lookup named (schema 0009). What is pending for an agency is
 * read from the log itself: every such row to it above its cursor (one per
 * stream: a record type, "@outcome" or "@notified"; in accord_cursor) that the
 * cursor does not list as acknowledged out of order. Outcomes and notifications
 * go only to a connection whose Hello asked for notices.
 *
 * This module owns the cursors, the deliveries in flight (sent, not yet
 * acknowledged), the paging of a backlog out of the log, redelivery, and the
 * acknowledgements: those of one commit become one `acknowledged` row per
 * agency, listing the share seqs, and the cursors they move are saved in the
 * same transaction.
 *
 * Ordering: delivery_stage runs just before a commit, delivery_settle just
 * after it (with its outcome), and delivery_send_committed for each share the
 * commit made; delivery_pump and delivery_redeliver_due only between commits. */
#ifndef ACCORD_BROKER_DELIVERY_H
#define ACCORD_BROKER_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/rc.h"
#include "peers.h"

typedef struct delivery_t delivery_t;

/* Defined in broker_internal.h: delivery works on the broker's peers, ledger and socket. */
typedef struct broker_t broker_t;
typedef struct out_t out_t;

delivery_t *delivery_new(void);
void delivery_destroy(delivery_t **self_p);

/* Reads every agency's cursors from the log's database (at start). */
ACC_NODISCARD acc_rc_t delivery_load(broker_t *b, acc_err_t *err);

/* A `shared` row to agency to (its id) of record_type is being staged at seq:
 * its cursor is created (just below seq) if the pair is new. */
void delivery_note_share(broker_t *b, const char *to, const char *record_type, int64_t seq);

/* Sends a share the last commit made to its recipient's subscribing
 * connection, unless that connection is behind (it then gets it from the log).
 * o->to_agency indexes the agreement in force (a reload readdresses it); one
 * past its agencies (the agency left it) sends nothing. */
void delivery_send_committed(broker_t *b, const out_t *o);

/* The agreement changed (indices with it), after peers_rebind and with the
 * broker's per-agency counts new and zero: each delivery in flight to an agency
 * whose subscribing connection stays is kept, under the agency's new index, and
 * counted again; one to an agency that left the agreement, or that has no
 * subscribing connection now, is pending again, sent to its next subscriber from
 * the log. Nothing is sent again on a connection that stays. */
void delivery_agreement_changed(broker_t *b);

/* The connection ended or was retired: what it had in flight is pending again. */
void delivery_forget_connection(broker_t *b, size_t agency);

/* A subscriber said Hello: deliveries start again from its oldest pending share
 * on this, its agency's newest connection. */
void delivery_subscribe(broker_t *b, peer_t *peer);

/* An acknowledgement from peer for share_id (text). Answers
 * UNKNOWN_SHARE when nothing to peer's agency is pending under that id. */
void delivery_on_ack(broker_t *b, peer_t *peer, uint64_t correlation_id, const char *share_id_text);

/* Acknowledgements received and not yet committed. */
size_t delivery_acks_waiting(const broker_t *b);

/* Milliseconds until the acknowledgements waiting are due to be written (0: now;
 * -1: none waiting). They are written together, a few times a second. */
int64_t delivery_acks_due_in_ms(const broker_t *b);

/* Stages what the next commit must hold: cursors new with its shares and, when
 * they are due (or final), one `acknowledged` row per agency for the
 * acknowledgements waiting, and the cursors they move. */
void delivery_stage(broker_t *b, bool final);

/* After the commit: what it held is final, or (failed) the acknowledgements it
 * held, and those received since, are undone and their shares pending again. */
void delivery_settle(broker_t *b, bool committed);

/* Feeds each subscriber that is behind from the log, a page at a time. */
void delivery_pump(broker_t *b);

/* Deliveries unacknowledged for too long are sent again, from the oldest. */
void delivery_redeliver_due(broker_t *b);

/* Erases the broker's copy of each epoch key whose shares are all
 * acknowledged; at most every few seconds. */
void delivery_erase_done_epochs(broker_t *b);

/* Deliveries sent and not yet acknowledged. */
size_t delivery_inflight(const broker_t *b);

#endif
