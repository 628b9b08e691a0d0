/* broker_internal.h - broker_t in full, and the event loop's own types, for the
 * modules that own the loop's state: broker.c and delivery.c only. Every other
 * module sees broker_t through broker.h, opaque. */
#ifndef ACCORD_BROKER_BROKER_INTERNAL_H
#define ACCORD_BROKER_BROKER_INTERNAL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/config.h"
#include "accord/policy.h"
#include "broker.h"
#include "budget.h"
#include "delivery.h"
#include "hwm.h"
#include "ledger.h"
#include "ledger_count.h"
#include "metrics.h"
#include "outcome.h"
#include "peers.h"
#include "zap.h"

#define BROKER_PROTOCOL_VERSION 1

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

/* The broker's whole state: one per accordd, made by broker_open and freed by
 * broker_destroy, which free every pointer here the broker owns. */
struct broker_t {
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
    batch_t answering;       /* a committed batch, answered while the next one commits */
    bool replaying;          /* committing held publishes one at a time after a data failure */
    outcome_t *outcomes;     /* staged or in flight (outcome.c) */
    delivery_t *delivery;    /* cursors, deliveries in flight, acknowledgements */
    size_t *agency_inflight; /* per agency index: deliveries sent, unacknowledged */
    size_t *agency_inflight_bytes; /* ...and their bytes */
    budget_t *budgets;             /* per agency index: BROKER_BUDGETS of them */
    size_t agency_slots;           /* entries in those three arrays */
    uint64_t *auditor_turns;       /* per auditor index: the loop turn of its last page */
    size_t auditor_slots;          /* entries in auditor_turns */
    const volatile sig_atomic_t *stop_requested;
    volatile sig_atomic_t *reload_requested;
    char endpoint[256];        /* the endpoint actually bound */
    metrics_t *metrics;        /* NULL when metrics is "" */
    ledger_counter_t *counter; /* counts the pending deliveries /metrics shows */
    uint64_t reloads_ok;
    uint64_t reloads_refused;
    uint64_t epoch_rotations;
    uint64_t turn;       /* loop turns since start (from 1) */
    bool epoch_needed;   /* the auditors changed and their new epoch is not started yet */
    int64_t state_at_ms; /* last time the metrics' view of the state was refreshed */
};

/* Sends one frame to rid now, never blocking: one peer that stops reading must
 * not stall everyone else. A peer that has gone is retired. */
typedef enum {
    BROKER_SEND_OK,
    BROKER_SEND_FULL, /* the peer is not reading: its queue is at the high-water mark */
    BROKER_SEND_GONE, /* the peer has disconnected */
} broker_send_rc_t;
broker_send_rc_t broker_send(broker_t *self, const uint8_t *rid, size_t rid_len,
                             const uint8_t *frame, size_t len);

#endif
