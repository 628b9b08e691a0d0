/* load_relay.c - bench-load-relay: the load generator against bench-relay, over
 * the same CURVE DEALER sockets the client library uses, with no accord protocol */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench.h"

typedef struct {
    void *ctx;
    void *socket;
    uint8_t *frame; /* 'P' then the payload */
    size_t frame_len;
} conn_t;

static int s_open(void **out, const bench_opts_t *opts)
{
    char public_z85[41];
    char secret_z85[41];
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL || opts->config == NULL || zmq_curve_keypair(public_z85, secret_z85) != 0) {
        (void)fprintf(stderr, "bench: the relay needs --config SERVER_KEY and CURVE\n");
        free(c);
        return -1;
    }
    c->ctx = zmq_ctx_new();
    c->socket = zmq_socket(c->ctx, ZMQ_DEALER);
    int zero = 0;
    if (zmq_setsockopt(c->socket, ZMQ_CURVE_SERVERKEY, opts->config, 40) != 0 ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_PUBLICKEY, public_z85, 40) != 0 ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_SECRETKEY, secret_z85, 40) != 0 ||
        zmq_setsockopt(c->socket, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
        zmq_connect(c->socket, opts->endpoint) != 0) {
        (void)fprintf(stderr, "bench: could not connect to the relay: %s\n",
                      zmq_strerror(zmq_errno()));
        zmq_close(c->socket);
        zmq_ctx_term(c->ctx);
        free(c);
        return -1;
    }
    c->frame_len = opts->size + 1;
    c->frame = malloc(c->frame_len);
    if (c->frame == NULL) {
        abort();
    }
    c->frame[0] = 'P';
    *out = c;
    return 0;
}

static void s_close(void **conn)
{
    conn_t *c = *conn;
    zmq_close(c->socket);
    zmq_ctx_term(c->ctx);
    free(c->frame);
    free(c);
    *conn = NULL;
}

static int s_pub_open(void **out, const bench_opts_t *opts, int index)
{
    (void)index;
    return s_open(out, opts);
}

static int s_pub_send(void *conn, uint64_t token, int64_t sent_ns)
{
    conn_t *c = conn;
    bench_payload_fill(c->frame + 1, c->frame_len - 1, token, sent_ns);
    if (zmq_send(c->socket, c->frame, c->frame_len, 0) < 0) {
        (void)fprintf(stderr, "bench: could not send: %s\n", zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

/* Waits up to timeout_ms for the first frame, then hands every waiting frame to on. */
static int s_each_frame(conn_t *c, int timeout_ms,
                        void (*on)(conn_t *, void *, const uint8_t *, size_t), void *arg)
{
    zmq_pollitem_t item = { .socket = c->socket, .events = ZMQ_POLLIN };
    if (zmq_poll(&item, 1, timeout_ms) <= 0) {
        return 0;
    }
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, c->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return 0;
        }
        on(c, arg, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
    }
}

static void s_on_result(conn_t *c, void *arg, const uint8_t *data, size_t len)
{
    (void)c;
    if (len == 9 && data[0] == 'R') {
        uint64_t token = 0;
        memcpy(&token, data + 1, sizeof(token));
        bench_pub_result(arg, token, true);
    }
}

static int s_pub_poll(void *conn, bench_pub_t *pub, int timeout_ms)
{
    return s_each_frame(conn, timeout_ms, s_on_result, pub);
}

static int s_sub_open(void **out, const bench_opts_t *opts, int index)
{
    (void)index;
    if (s_open(out, opts) != 0) {
        return -1;
    }
    conn_t *c = *out;
    if (zmq_send(c->socket, "S", 1, 0) < 0) {
        s_close(out);
        return -1;
    }
    return 0;
}

static void s_on_delivery(conn_t *c, void *arg, const uint8_t *data, size_t len)
{
    if (len < 1 || data[0] != 'P') {
        return;
    }
    uint8_t ack[9] = { 'A' };
    uint64_t token = bench_payload_token(data + 1, len - 1);
    memcpy(ack + 1, &token, sizeof(token));
    (void)zmq_send(c->socket, ack, sizeof(ack), 0);
    bench_sub_delivery(arg, bench_payload_sent_ns(data + 1, len - 1));
}

static int s_sub_poll(void *conn, bench_sub_t *sub, int timeout_ms)
{
    return s_each_frame(conn, timeout_ms, s_on_delivery, sub);
}

int main(int argc, char **argv)
{
    static const bench_transport_t transport = {
        .name = "relay",
        .pub_open = s_pub_open,
        .pub_send = s_pub_send,
        .pub_poll = s_pub_poll,
        .pub_close = s_close,
        .sub_open = s_sub_open,
        .sub_poll = s_sub_poll,
        .sub_close = s_close,
    };
    return bench_main(argc, argv, &transport);
}
