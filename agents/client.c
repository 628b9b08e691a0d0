/* client.c - a CURVE DEALER connection to accordd */
#include "client.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "accord/clock.h"
#include "accord/keys.h"
#include "accord/log.h"
#include "accord/pbwipe.h"

#define PROTOCOL_VERSION  1
#define HELLO_CORRELATION UINT64_MAX       /* reserved: never used for requests */
#define BEAT_CORRELATION  (UINT64_MAX - 1) /* reserved: our own Heartbeats */
#define REHELLO_GAP_MS    1000             /* at most one unprompted Hello a second */
#define MONITOR_EVERY_MS  100              /* the monitor is read this often at least */

struct client_t {
    void *ctx;
    void *socket;
    void *monitor;
    bool monitor_due;        /* the last poll saw it ready, or it is new */
    int64_t monitor_read_ms; /* when it was last read */
    const acc_agent_config_t *config;
    bool subscribe;
    bool welcomed_once;
    unsigned auth_failures;  /* handshakes refused in a row (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) */
    unsigned refusals_final; /* so many in a row are the broker's word */
    bool refusal_seen;       /* not_permitted's Error was handed to the caller */
    int64_t auth_failed_ms;  /* when the last one was refused */
    bool not_permitted;      /* the broker answered NOT_PERMITTED outside any request */
    bool protocol_warned;    /* a failed handshake was logged since the last good one */
    char refusal[160];       /* the broker's reason for not_permitted */
    uint64_t handshakes;
    int64_t last_sent_ms;  /* for Heartbeats when idle */
    int64_t last_hello_ms; /* for Hello again after HELLO_REQUIRED */
    int64_t beat_ms;       /* the smaller of our setting and the broker's Welcome */
    int64_t last_recv_ms;  /* the last frame from the broker */
    uint64_t generation;   /* sockets opened so far */
    char agency[128];
    const volatile sig_atomic_t *stop; /* NULL, or set when the program stops */
};

static acc_rc_t s_configure(client_t *self, const uint8_t secret[32], acc_err_t *err)
{
    uint8_t server[ACC_CURVE_KEY_BYTES];
    acc_rc_t rc = acc_keys_decode_z85(server, self->config->broker_key, err);
    if (rc != ACC_OK) {
        return acc_err_set(err, ACC_ERR_INVALID, "broker_key: %s", err->msg);
    }
    char public_z85[ACC_Z85_KEY_CHARS + 1];
    char secret_z85[ACC_Z85_KEY_CHARS + 1];
    char server_z85[ACC_Z85_KEY_CHARS + 1];
    acc_keys_encode_z85(secret_z85, secret);
    acc_keys_encode_z85(server_z85, server);
    (void)zmq_curve_public(public_z85, secret_z85);
    int zero = 0;
    int64_t max_bytes = self->config->max_message_bytes;
    int one = 1;
    int keepalive_idle = 60; /* seconds */
    int ok = zmq_setsockopt(self->socket, ZMQ_CURVE_SERVERKEY, server_z85, ACC_Z85_KEY_CHARS) |
             zmq_setsockopt(self->socket, ZMQ_CURVE_PUBLICKEY, public_z85, ACC_Z85_KEY_CHARS) |
             zmq_setsockopt(self->socket, ZMQ_CURVE_SECRETKEY, secret_z85, ACC_Z85_KEY_CHARS) |
             zmq_setsockopt(self->socket, ZMQ_LINGER, &zero, sizeof(zero)) |
             zmq_setsockopt(self->socket, ZMQ_MAXMSGSIZE, &max_bytes, sizeof(max_bytes)) |
             zmq_setsockopt(self->socket, ZMQ_TCP_KEEPALIVE, &one, sizeof(one)) |
             zmq_setsockopt(self->socket, ZMQ_TCP_KEEPALIVE_IDLE, &keepalive_idle,
                            sizeof(keepalive_idle));
    sodium_memzero(secret_z85, sizeof(secret_z85));
    if (ok != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not configure the connection: %s",
                           zmq_strerror(zmq_errno()));
    }
    return ACC_OK;
}

static acc_rc_t s_monitor(client_t *self, acc_err_t *err)
{
    char endpoint[64];
    (void)snprintf(endpoint, sizeof(endpoint), "inproc://accord-client-monitor-%p-%llu",
                   (void *)self, (unsigned long long)self->generation);
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    if (zmq_socket_monitor(self->socket, endpoint, events) != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not monitor the connection: %s",
                           zmq_strerror(zmq_errno()));
    }
    self->monitor = zmq_socket(self->ctx, ZMQ_PAIR);
    self->monitor_due = true;
    if (self->monitor == NULL || zmq_connect(self->monitor, endpoint) != 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not monitor the connection: %s",
                           zmq_strerror(zmq_errno()));
    }
    return ACC_OK;
}

static void s_close_socket(client_t *self)
{
    if (self->socket != NULL) {
        (void)zmq_socket_monitor(self->socket, NULL, 0);
        zmq_close(self->socket);
        self->socket = NULL;
    }
    if (self->monitor != NULL) {
        int zero = 0;
        (void)zmq_setsockopt(self->monitor, ZMQ_LINGER, &zero, sizeof(zero));
        zmq_close(self->monitor);
        self->monitor = NULL;
    }
}

/* A fresh socket to the broker; a key file is read again each time. */
static acc_rc_t s_open_socket(client_t *self, acc_err_t *err)
{
    self->generation++;
    self->socket = zmq_socket(self->ctx, ZMQ_DEALER);
    acc_assert(self->socket != NULL);
    uint8_t *secret = sodium_malloc(ACC_CURVE_KEY_BYTES);
    acc_assert(secret != NULL);
    acc_rc_t rc = ACC_OK;
    if (self->config->curve_secret != NULL) {
        memcpy(secret, self->config->curve_secret, ACC_CURVE_KEY_BYTES);
    } else if (acc_agent_config_key_on_stdin(self->config)) {
        rc = acc_err_set(err, ACC_ERR_INVALID,
                         "curve_secret_key: stdin is read only by accord-agent at startup; give "
                         "this program a key file");
    } else {
        rc = acc_keys_read_curve_secret(secret, self->config->curve_secret_key, err);
    }
    if (rc == ACC_OK) {
        rc = s_configure(self, secret, err);
    }
    sodium_free(secret);
    if (rc == ACC_OK) {
        rc = s_monitor(self, err);
    }
    if (rc == ACC_OK && zmq_connect(self->socket, self->config->broker) != 0) {
        rc = acc_err_set(err, ACC_ERR_NET, "could not connect to \"%s\": %s", self->config->broker,
                         zmq_strerror(zmq_errno()));
    }
    self->last_recv_ms = acc_now_ms();
    return rc;
}

acc_rc_t client_open(client_t **out, const acc_agent_config_t *config, bool subscribe,
                     acc_err_t *err)
{
    client_t *self = acc_xcalloc(1, sizeof(*self));
    self->config = config;
    self->subscribe = subscribe;
    self->beat_ms = config->heartbeat_ms;
    self->refusals_final = 1;
    self->ctx = zmq_ctx_new();
    acc_assert(self->ctx != NULL);
    acc_rc_t rc = s_open_socket(self, err);
    if (rc != ACC_OK) {
        client_destroy(&self);
        return rc;
    }
    *out = self;
    return ACC_OK;
}

#define CLIENT_CLOSE_LINGER_MS 1000

void client_destroy(client_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    client_t *self = *self_p;
    /* What was sent last (a subscriber's final acknowledgements, above all) may
     * still sit in libzmq's queue: a connection the broker welcomed gets a moment
     * to deliver it, or the share would be delivered again on the next run. One
     * that was never welcomed is given none, so a stop is not held up by a broker
     * that does not answer. */
    if (self->welcomed_once && self->socket != NULL) {
        int linger = CLIENT_CLOSE_LINGER_MS;
        (void)zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof(linger));
    }
    s_close_socket(self);
    zmq_ctx_term(self->ctx);
    free(self);
    *self_p = NULL;
}

/* The broker answers every Heartbeat, so silence for three intervals means the
 * connection is dead even if TCP has not noticed: start a new one. Unsent and
 * unanswered messages are the callers' to send again (they do). */
static void s_reconnect_if_silent(client_t *self)
{
    int64_t silent = acc_now_ms() - self->last_recv_ms;
    if (!self->welcomed_once || silent < 3 * self->beat_ms + 1000) {
        return;
    }
    acc_log_warn("client", "no word from the broker for %lld ms; connecting again",
                 (long long)silent);
    s_close_socket(self);
    acc_err_t err;
    if (s_open_socket(self, &err) != ACC_OK) {
        acc_log_warn("client", "%s", err.msg);
    }
}

acc_rc_t client_send_raw(client_t *self, const void *bytes, size_t len, acc_err_t *err)
{
    if (zmq_send(self->socket, bytes, len, 0) < 0) {
        return acc_err_set(err, ACC_ERR_NET, "could not send to the broker: %s",
                           zmq_strerror(zmq_errno()));
    }
    self->last_sent_ms = acc_now_ms();
    return ACC_OK;
}

acc_rc_t client_send(client_t *self, const Accord__V1__Envelope *env, acc_err_t *err)
{
    size_t len = accord__v1__envelope__get_packed_size(env);
    uint8_t *buf = acc_xmalloc(len);
    (void)accord__v1__envelope__pack(env, buf);
    acc_rc_t rc = client_send_raw(self, buf, len, err);
    acc_pb_free_wiped(buf); /* it held a record */
    return rc;
}

static acc_rc_t s_send_hello(client_t *self, acc_err_t *err)
{
    Accord__V1__Hello hello = ACCORD__V1__HELLO__INIT;
    hello.protocol_version = PROTOCOL_VERSION;
    hello.agency_id = self->config->agency;
    hello.n_subscriptions = self->config->subscriptions.count;
    hello.subscriptions = self->config->subscriptions.items;
    hello.subscribe = self->subscribe;
    hello.notices = self->subscribe; /* every subscribing connection reads outcomes and notices */
    hello.software = acc_pb_str("accord-agent " ACCORD_VERSION);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = HELLO_CORRELATION;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    self->last_hello_ms = acc_now_ms();
    return client_send(self, &env, err);
}

void client_tick(client_t *self)
{
    if (!self->welcomed_once || acc_now_ms() - self->last_sent_ms < self->beat_ms) {
        return;
    }
    Accord__V1__Heartbeat beat = ACCORD__V1__HEARTBEAT__INIT;
    beat.sent_at_ms = (uint64_t)acc_now_ms();
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = BEAT_CORRELATION;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &beat;
    acc_err_t err;
    if (client_send(self, &env, &err) != ACC_OK) {
        acc_log_debug("client", "heartbeat not sent: %s", err.msg);
    }
}

/* libzmq need not try again after a refused handshake: a fresh socket a second
 * later asks once more, until the refusals make self->refusals_final in a row. */
static void s_retry_refused(client_t *self)
{
    if (self->auth_failures == 0 || self->auth_failures >= self->refusals_final ||
        acc_now_ms() - self->auth_failed_ms < REHELLO_GAP_MS) {
        return;
    }
    acc_log_warn("client", "the broker refused this agent's key (%u of %u); asking again",
                 self->auth_failures, self->refusals_final);
    self->auth_failed_ms = INT64_MAX / 2; /* until the new socket's answer */
    s_close_socket(self);
    acc_err_t err;
    if (s_open_socket(self, &err) != ACC_OK) {
        acc_log_warn("client", "%s", err.msg);
    }
}

/* The broker forgets a connection when it restarts: every handshake after the
 * first is followed by a new Hello, so the agent carries on unattended. */
static void s_read_monitor(client_t *self)
{
    for (;;) {
        uint8_t event[6];
        int n = zmq_recv(self->monitor, event, sizeof(event), ZMQ_DONTWAIT);
        if (n < 0) {
            return;
        }
        char address[256];
        (void)zmq_recv(self->monitor, address, sizeof(address), 0);
        uint16_t id = 0;
        memcpy(&id, event, sizeof(id));
        /* One refused handshake may be a broker mid-restart; only several in a row
         * are taken as the broker's word. A protocol failure (a wrong broker_key, a
         * broken connection) is retried like any other outage. */
        if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            self->auth_failures++;
            self->auth_failed_ms = acc_now_ms();
        } else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && !self->protocol_warned) {
            acc_log_warn("client", "the CURVE handshake with the broker failed (is broker_key "
                                   "right?); retrying");
            self->protocol_warned = true;
        } else if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            self->auth_failures = 0;
            self->protocol_warned = false;
            self->handshakes++;
            if (self->handshakes > 1 && self->welcomed_once) {
                acc_err_t ignored;
                acc_log_notice("client", "reconnected to the broker; saying Hello again");
                (void)s_send_hello(self, &ignored);
            }
        }
    }
}

/* The broker forgets a connection silent for longer than it allows; it says how
 * often to speak in every Welcome. */
static void s_note_welcome(client_t *self, const Accord__V1__Envelope *env)
{
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_WELCOME) {
        return;
    }
    self->beat_ms = self->config->heartbeat_ms;
    if (env->welcome->heartbeat_ms > 0 && env->welcome->heartbeat_ms < self->beat_ms) {
        self->beat_ms = env->welcome->heartbeat_ms;
    }
}

/* Answers to the library's own messages are consumed here, not handed on. */
static bool s_is_own_answer(const client_t *self, const Accord__V1__Envelope *env)
{
    if (env->correlation_id == BEAT_CORRELATION) {
        return true;
    }
    return self->welcomed_once && env->correlation_id == HELLO_CORRELATION &&
           env->body_case == ACCORD__V1__ENVELOPE__BODY_WELCOME;
}

/* A broker that forgot this connection (it was silent too long) says
 * HELLO_REQUIRED: say Hello again, once a second at most; the caller still sees
 * the error and sends its request again. */
static void s_rehello_if_forgotten(client_t *self, const Accord__V1__Envelope *env)
{
    if (self->welcomed_once && env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR &&
        env->error->code == ACCORD__V1__ERROR_CODE__HELLO_REQUIRED &&
        acc_now_ms() - self->last_hello_ms >= REHELLO_GAP_MS) {
        acc_err_t ignored;
        acc_log_notice("client", "the broker had forgotten this connection; saying Hello again");
        (void)s_send_hello(self, &ignored);
    }
}

/* NOT_PERMITTED that answers no request of ours (correlation 0, or our Hello)
 * is the broker saying this key may not speak at all: its agency was removed
 * from the agreement, or the broker refuses it more connections. */
static void s_note_not_permitted(client_t *self, const Accord__V1__Envelope *env)
{
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_ERROR ||
        env->error->code != ACCORD__V1__ERROR_CODE__NOT_PERMITTED ||
        (env->correlation_id != 0 && env->correlation_id != HELLO_CORRELATION)) {
        return;
    }
    self->not_permitted = true;
    (void)snprintf(self->refusal, sizeof(self->refusal), "%s", env->error->message);
}

/* Reads one frame if one is waiting: ACC_OK with *out set, or with *out NULL. */
static acc_rc_t s_read_frame(client_t *self, Accord__V1__Envelope **out, acc_err_t *err)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    *out = NULL;
    if (zmq_msg_recv(&msg, self->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return ACC_OK;
    }
    self->last_recv_ms = acc_now_ms();
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(
        acc_pb_wiping_allocator(), zmq_msg_size(&msg), zmq_msg_data(&msg));
    sodium_memzero(zmq_msg_data(&msg), zmq_msg_size(&msg)); /* a delivery's bytes */
    zmq_msg_close(&msg);
    if (env == NULL) {
        return acc_err_set(err, ACC_ERR_INVALID, "the broker sent a frame that is not an Envelope");
    }
    s_rehello_if_forgotten(self, env);
    s_note_not_permitted(self, env);
    if (s_is_own_answer(self, env)) {
        s_note_welcome(self, env);
        accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
        return ACC_OK;
    }
    *out = env;
    return ACC_OK;
}

acc_rc_t client_recv(client_t *self, Accord__V1__Envelope **out, int timeout_ms, acc_err_t *err)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : acc_now_ms() + timeout_ms;
    for (;;) {
        /* not at every frame: an empty read costs libzmq two system calls, and
         * the poll below says when it has events */
        int64_t now = acc_now_ms();
        if (self->monitor_due || now - self->monitor_read_ms >= MONITOR_EVERY_MS) {
            s_read_monitor(self);
            self->monitor_due = false;
            self->monitor_read_ms = now;
        }
        if (self->auth_failures >= self->refusals_final) {
            return acc_err_set(err, ACC_ERR_PERMISSION,
                               "agency \"%s\" is not permitted: the broker refused its key in %u "
                               "handshake(s) in a row (the key is not in the agreement in force)",
                               self->config->agency, self->auth_failures);
        }
        if (self->not_permitted && self->refusal_seen) {
            return acc_err_set(err, ACC_ERR_PERMISSION,
                               "agency \"%s\" is not permitted: the broker says \"%s\"",
                               self->config->agency, self->refusal);
        }
        acc_rc_t rc = s_read_frame(self, out, err);
        if (self->not_permitted && *out != NULL) {
            self->refusal_seen = true; /* the caller sees the Error itself first */
        }
        if (rc != ACC_OK || *out != NULL) {
            return rc;
        }
        client_tick(self);
        s_reconnect_if_silent(self);
        s_retry_refused(self);
        if (self->stop != NULL && *self->stop) {
            return acc_err_set(err, ACC_ERR_TIMEOUT, "stopping");
        }
        int64_t left = deadline - acc_now_ms();
        if (left <= 0) {
            return acc_err_set(err, ACC_ERR_TIMEOUT, "no answer from the broker at \"%s\"",
                               self->config->broker);
        }
        zmq_pollitem_t items[2] = {
            { .socket = self->socket, .events = ZMQ_POLLIN },
            { .socket = self->monitor, .events = ZMQ_POLLIN },
        };
        (void)zmq_poll(items, 2, left > 1000 ? 1000 : (long)left);
        self->monitor_due = (items[1].revents & ZMQ_POLLIN) != 0;
    }
}

acc_rc_t client_hello(client_t *self, int timeout_ms, acc_err_t *err)
{
    acc_rc_t rc = s_send_hello(self, err);
    while (rc == ACC_OK) {
        Accord__V1__Envelope *env = NULL;
        rc = client_recv(self, &env, timeout_ms, err);
        if (rc != ACC_OK || env == NULL) {
            break;
        }
        if (env->body_case == ACCORD__V1__ENVELOPE__BODY_WELCOME) {
            s_note_welcome(self, env);
            (void)snprintf(self->agency, sizeof(self->agency), "%s", env->welcome->agency_id);
            self->welcomed_once = true;
            accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
            return ACC_OK;
        }
        if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
            /* A wrong agency or protocol version is the configuration's fault and
             * will not mend itself; anything else is retried. */
            bool config = env->error->code == ACCORD__V1__ERROR_CODE__SPOOFED ||
                          env->error->code == ACCORD__V1__ERROR_CODE__UNSUPPORTED_VERSION;
            rc = acc_err_set(err, config ? ACC_ERR_INVALID : ACC_ERR_NET,
                             "the broker refused Hello from \"%s\": %s (%s)", self->config->agency,
                             env->error->message, acc_pb_code_name(env->error->code));
            if (self->not_permitted) {
                rc = acc_err_set(err, ACC_ERR_PERMISSION,
                                 "agency \"%s\" is not permitted: the broker says \"%s\"",
                                 self->config->agency, self->refusal);
            }
        }
        accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
    }
    return rc;
}

void client_set_stop(client_t *self, const volatile sig_atomic_t *stop)
{
    self->stop = stop;
}

void client_set_refusals_final(client_t *self, unsigned refusals)
{
    acc_assert(refusals > 0);
    self->refusals_final = refusals;
}

uint64_t client_reconnects(const client_t *self)
{
    return self->handshakes > 0 ? self->handshakes - 1 : 0;
}

const char *client_agency(const client_t *self)
{
    return self->agency;
}
