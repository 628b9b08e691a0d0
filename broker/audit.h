/* audit.h - an auditor's questions of the sharing log */
#ifndef ACCORD_BROKER_AUDIT_H
#define ACCORD_BROKER_AUDIT_H

#include "accord/pb.h"
#include "peers.h"

/* Opaque here (broker.h): handlers stage rows and queue answers through it. */
typedef struct broker_t broker_t;

/* Answers an auditor's AuditQuery with one page of log rows and stages a
 * `queried` row saying who asked what and how much they were given. Borrows
 * env and peer. */
void audit_on_query(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

#endif
