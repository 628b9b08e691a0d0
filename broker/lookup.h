/* lookup.h - "who already knows this child": a partner's Lookup answered from the log */
#ifndef ACCORD_BROKER_LOOKUP_H
#define ACCORD_BROKER_LOOKUP_H

#include "accord/pb.h"
#include "peers.h"

/* Opaque here (broker.h): handlers stage rows and queue answers through it. */
typedef struct broker_t broker_t;

/* Answers one Lookup from the log, logs it as a `looked-up` row (or a
 * refusal), and, when the agreement's lookup says notify, stages a `notified`
 * row and notice for each agency named. Borrows env and peer. */
void lookup_on_lookup(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

#endif
