/* zap.c - ZAP (RFC 27) handler: admits only CURVE keys listed in the agreement */
#include "zap.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "accord/keys.h"
#include "accord/log.h"

#define ZAP_ENDPOINT  "inproc://zeromq.zap.01"
#define ZAP_FRAMES    7 /* version, request id, domain, address, identity, mechanism, key */
#define ZAP_FRAME_MAX 256

struct zap_t {
    void *socket;
    uint64_t refused;
};

acc_rc_t zap_open(zap_t **out, void *ctx, acc_err_t *err)
{
    void *socket = zmq_socket(ctx, ZMQ_REP);
    if (socket == NULL || zmq_bind(socket, ZAP_ENDPOINT) != 0) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_NET, "could not bind the ZAP handler: %s",
                                  zmq_strerror(zmq_errno()));
        if (socket != NULL) {
            zmq_close(socket);
        }
        return rc;
    }
    zap_t *self = acc_xcalloc(1, sizeof(*self));
    self->socket = socket;
    *out = self;
    return ACC_OK;
}

void zap_destroy(zap_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    zap_t *self = *self_p;
    int linger = 0;
    (void)zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_close(self->socket);
    free(self);
    *self_p = NULL;
}

void *zap_socket(zap_t *self)
{
    return self->socket;
}

uint64_t zap_refused(const zap_t *self)
{
    return self->refused;
}

typedef struct {
    uint8_t data[ZAP_FRAMES][ZAP_FRAME_MAX];
    size_t len[ZAP_FRAMES];
    size_t count;
} s_request_t;

/* Reads one whole request; false when none is waiting. Extra frames are drained. */
static bool s_read(zap_t *self, s_request_t *req)
{
    req->count = 0;
    int more = 1;
    while (more) {
        uint8_t buf[ZAP_FRAME_MAX];
        int n = zmq_recv(self->socket, buf, sizeof(buf), req->count == 0 ? ZMQ_DONTWAIT : 0);
        if (n < 0) {
            return req->count > 0;
        }
        if (req->count < ZAP_FRAMES) {
            size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf);
            memcpy(req->data[req->count], buf, len);
            req->len[req->count] = len;
        }
        req->count++;
        size_t size = sizeof(more);
        if (zmq_getsockopt(self->socket, ZMQ_RCVMORE, &more, &size) != 0) {
            more = 0;
        }
    }
    return true;
}

static void s_reply(zap_t *self, const s_request_t *req, const char *status, const char *text,
                    const char *user_id)
{
    (void)zmq_send(self->socket, "1.0", 3, ZMQ_SNDMORE);
    (void)zmq_send(self->socket, req->data[1], req->len[1], ZMQ_SNDMORE);
    (void)zmq_send(self->socket, status, strlen(status), ZMQ_SNDMORE);
    (void)zmq_send(self->socket, text, strlen(text), ZMQ_SNDMORE);
    (void)zmq_send(self->socket, user_id, strlen(user_id), ZMQ_SNDMORE);
    (void)zmq_send(self->socket, "", 0, 0);
}

static void s_answer(zap_t *self, const acc_policy_t *policy, const s_request_t *req)
{
    bool curve = req->len[5] == 5 && memcmp(req->data[5], "CURVE", 5) == 0;
    if (!curve || req->len[6] != 32) {
        self->refused++;
        acc_log_warn("zap", "refused a handshake: mechanism is not CURVE");
        s_reply(self, req, "400", "CURVE required", "");
        return;
    }
    acc_principal_t who;
    char fp[17];
    acc_keys_fingerprint(fp, req->data[6]);
    if (!acc_policy_find_key(policy, req->data[6], &who)) {
        self->refused++;
        char address[ZAP_FRAME_MAX + 1];
        memcpy(address, req->data[3], req->len[3]);
        address[req->len[3]] = '\0';
        acc_log_warn("zap", "refused a handshake: key %s is not in the agreement (from %s)", fp,
                     address);
        s_reply(self, req, "400", "key not in the agreement", "");
        return;
    }
    acc_log_debug("zap", "admitted %s \"%s\" key %s", who.auditor ? "auditor" : "agency", who.id,
                  fp);
    /* the key itself, not the id it maps to now: the broker resolves it again on
     * every frame, against whichever agreement is then in force */
    char user_id[2 * 32 + 1];
    (void)sodium_bin2hex(user_id, sizeof(user_id), req->data[6], 32);
    s_reply(self, req, "200", "OK", user_id);
}

void zap_handle(zap_t *self, const acc_policy_t *policy)
{
    s_request_t req;
    while (s_read(self, &req)) {
        if (req.count < ZAP_FRAMES) {
            /* A ZAP request from libzmq is always complete; anything else is a bug. */
            acc_log_error("zap", "malformed ZAP request with %zu frames", req.count);
            s_request_t empty = { .count = 2 };
            s_reply(self, req.count >= 2 ? &req : &empty, "500", "malformed request", "");
            continue;
        }
        s_answer(self, policy, &req);
    }
}
