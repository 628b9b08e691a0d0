/* publish.h - deciding a partner's Publish: the agreement's checks, the log rows
 * it stages and the answers it queues */
#ifndef ACCORD_BROKER_PUBLISH_H
#define ACCORD_BROKER_PUBLISH_H

#include "accord/pb.h"
#include "peers.h"

/* Opaque here (broker.h): handlers stage rows and queue answers through it. */
typedef struct broker_t broker_t;

/* Decides one Publish, stages its log rows and queues the result and deliveries
 * for the end of the batch. Borrows env and peer. */
void publish_on_publish(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

/* The final answer to a Publish whose rows PostgreSQL refused for their data: a
 * refused row holding only broker-chosen text (no record_id or record_type) and
 * an INVALID_RECORD result, so no retry can fail a batch again. */
void publish_refuse_unwritable(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env);

#endif
