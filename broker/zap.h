/* zap.h - the ZeroMQ authentication handler: admits only keys named in the agreement */
#ifndef ACCORD_BROKER_ZAP_H
#define ACCORD_BROKER_ZAP_H

#include <stdint.h>

#include "accord/policy.h"
#include "accord/rc.h"

typedef struct zap_t zap_t;

/* Binds the ZAP endpoint in ctx. Must happen before any CURVE server binds. */
ACC_NODISCARD acc_rc_t zap_open(zap_t **out, void *ctx, acc_err_t *err);
void zap_destroy(zap_t **self_p);

/* The socket to poll for requests. */
void *zap_socket(zap_t *self);

/* Answers every waiting request: 200 with the client key in hex as User-Id when
 * the key is in policy, 400 otherwise (logged with the key's fingerprint). */
void zap_handle(zap_t *self, const acc_policy_t *policy);

/* Handshakes refused since start. */
uint64_t zap_refused(const zap_t *self);

#endif
