/* outcome.h - recipients' reports on what became of a share, and the outcomes
 * staged and not yet committed, which this module owns */
#ifndef ACCORD_BROKER_OUTCOME_H
#define ACCORD_BROKER_OUTCOME_H

#include "accord/pb.h"
#include "ledger.h"
#include "peers.h"

/* The outcomes staged in memory or in flight, not yet known to be committed: a
 * second report on the same share in the meantime is checked against them too.
 * The broker holds one; only this module reads or changes it. */
typedef struct outcome_t outcome_t;

/* Opaque here (broker.h): handlers stage rows and queue answers through it. */
typedef struct broker_t broker_t;

/* An empty table, owned by the caller (never NULL). */
outcome_t *outcome_new(void);
/* Frees the table and NULLs *self_p; accepts NULL and *self_p == NULL. */
void outcome_destroy(outcome_t **self_p);

/* Checks one Outcome against the share it reports on and the share's rules,
 * stages its `outcome` row (or a refusal) and queues the result and, when the
 * rule says so, the notice to the share's publisher. Borrows env and peer. */
void outcome_on_outcome(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

/* After a commit ended (either way), forgets the outcomes staged in memory that
 * ledger now holds, or that were dropped with a failed batch. */
void outcome_settle(outcome_t *self, const ledger_t *ledger);

#endif
