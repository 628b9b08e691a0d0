/* client.h - the accord client library: a CURVE connection to accordd that speaks
 * Envelopes and says Hello again by itself after every reconnect */
#ifndef ACCORD_AGENTS_CLIENT_H
#define ACCORD_AGENTS_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "accord/config.h"
#include "accord/pb.h"
#include "accord/rc.h"

typedef struct client_t client_t;

/* Takes the agent's secret key from config->curve_secret when set (read from
 * standard input at startup), otherwise reads the curve_secret_key file
 * (refused unless mode 0600) at every connect, and connects to the broker
 * named in config. subscribe asks for deliveries on this connection, outcome
 * and lookup notices included (Hello.notices). The connection is asynchronous:
 * nothing has been exchanged when this returns. */
ACC_NODISCARD acc_rc_t client_open(client_t **out, const acc_agent_config_t *config, bool subscribe,
                                   acc_err_t *err);
void client_destroy(client_t **self_p);

/* Sends Hello and waits up to timeout_ms for Welcome. ACC_ERR_PERMISSION as
 * client_recv; ACC_ERR_INVALID when the broker refuses the Hello itself (agency
 * is not the key's, or the protocol version), which retrying will not mend;
 * ACC_ERR_TIMEOUT when it does not answer, ACC_ERR_NET for other refusals. */
ACC_NODISCARD acc_rc_t client_hello(client_t *self, int timeout_ms, acc_err_t *err);

/* Packs and sends env. */
ACC_NODISCARD acc_rc_t client_send(client_t *self, const Accord__V1__Envelope *env, acc_err_t *err);

/* Sends raw bytes as one frame (tests use this for malformed input). */
ACC_NODISCARD acc_rc_t client_send_raw(client_t *self, const void *bytes, size_t len,
                                       acc_err_t *err);

/* Waits up to timeout_ms (-1: forever) for the next Envelope, which the caller
 * frees with accord__v1__envelope__free_unpacked. A Welcome answering an
 * automatic re-Hello is consumed here. ACC_ERR_TIMEOUT when nothing came.
 * ACC_ERR_PERMISSION, final, when the broker definitely refuses this agency:
 * it answered NOT_PERMITTED to no request in particular (its key was removed
 * from the agreement; that Error is returned as an Envelope first, then every
 * later call fails so), or refused the CURVE handshake client_set_refusals_final
 * times in a row (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH); err names the agency. A
 * broker that is down, restarting or unreachable is never reported so. */
ACC_NODISCARD acc_rc_t client_recv(client_t *self, Accord__V1__Envelope **out, int timeout_ms,
                                   acc_err_t *err);

/* Sends a Heartbeat if nothing was sent for heartbeat_ms, so the broker keeps
 * this connection. client_recv does this itself; call it while busy elsewhere. */
void client_tick(client_t *self);

/* How many refused handshakes in a row are final (default 1: the first). With
 * more, a fresh socket asks again a second after each refusal, so one refusal
 * from a broker in the middle of a restart does not stop a service. */
void client_set_refusals_final(client_t *self, unsigned refusals);

/* A flag a signal handler sets to stop the program: while it is set, client_recv
 * (and so client_hello) returns ACC_ERR_TIMEOUT at once instead of waiting out
 * its timeout, so a stop is not held up by a broker that does not answer. The
 * flag must outlive the client. */
void client_set_stop(client_t *self, const volatile sig_atomic_t *stop);

/* How many times the connection was re-established since open. */
uint64_t client_reconnects(const client_t *self);

/* The agency id the broker welcomed us as; "" before the first Welcome. */
const char *client_agency(const client_t *self);

#endif
