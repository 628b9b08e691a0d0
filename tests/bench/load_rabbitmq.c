/* load_rabbitmq.c - bench-load-rabbitmq: the load generator against RabbitMQ as a
 * council would run it for durable sharing: a durable fanout exchange with one
 * durable queue per recipient, persistent messages, publisher confirms (the
 * confirm is the "result"), consumers with manual acknowledgements */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "bench.h"

#define EXCHANGE    "accord-bench"
#define CHANNEL     1
#define FRAME_MAX   131072
#define QUEUE_CHARS 64

typedef struct {
    amqp_connection_state_t amqp;
    uint8_t *payload;
    size_t size;
    uint64_t low_water; /* a multiple confirm covers every tag from here */
} conn_t;

static int s_check(amqp_connection_state_t amqp, const char *what)
{
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(amqp);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
        return 0;
    }
    (void)fprintf(stderr, "bench: rabbitmq %s failed (%s)\n", what,
                  reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                      ? amqp_error_string2(reply.library_error)
                      : "refused by the server");
    return -1;
}

static int s_connect(conn_t **out, const bench_opts_t *opts)
{
    char host[256];
    (void)snprintf(host, sizeof(host), "%s", opts->endpoint);
    char *colon = strrchr(host, ':');
    if (colon == NULL) {
        (void)fprintf(stderr, "bench: --endpoint is HOST:PORT\n");
        return -1;
    }
    *colon = '\0';
    conn_t *c = calloc(1, sizeof(*c));
    c->amqp = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(c->amqp);
    if (sock == NULL || amqp_socket_open(sock, host, atoi(colon + 1)) != AMQP_STATUS_OK) {
        (void)fprintf(stderr, "bench: could not connect to rabbitmq at %s\n", opts->endpoint);
        amqp_destroy_connection(c->amqp);
        free(c);
        return -1;
    }
    amqp_rpc_reply_t login =
        amqp_login(c->amqp, "/", 0, FRAME_MAX, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
    (void)amqp_channel_open(c->amqp, CHANNEL);
    if (login.reply_type != AMQP_RESPONSE_NORMAL || s_check(c->amqp, "channel.open") != 0) {
        (void)fprintf(stderr, "bench: rabbitmq refused the login\n");
        amqp_destroy_connection(c->amqp);
        free(c);
        return -1;
    }
    c->size = opts->size;
    c->payload = malloc(c->size);
    c->low_water = 1;
    *out = c;
    return 0;
}

static void s_close(void **conn)
{
    conn_t *c = *conn;
    (void)amqp_channel_close(c->amqp, CHANNEL, AMQP_REPLY_SUCCESS);
    (void)amqp_connection_close(c->amqp, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c->amqp);
    free(c->payload);
    free(c);
    *conn = NULL;
}

static void s_queue_name(char *out, size_t len, int recipient)
{
    (void)snprintf(out, len, "accord-bench-%d", recipient);
}

/* The exchange and one durable queue per recipient, emptied of an earlier scenario. */
static int s_setup(const bench_opts_t *opts)
{
    conn_t *c = NULL;
    if (s_connect(&c, opts) != 0) {
        return -1;
    }
    (void)amqp_exchange_declare(c->amqp, CHANNEL, amqp_cstring_bytes(EXCHANGE),
                                amqp_cstring_bytes("fanout"), 0, 1, 0, 0, amqp_empty_table);
    int rc = s_check(c->amqp, "exchange.declare");
    for (int i = 1; rc == 0 && i <= opts->recipients; i++) {
        char name[QUEUE_CHARS];
        s_queue_name(name, sizeof(name), i);
        (void)amqp_queue_declare(c->amqp, CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0,
                                 amqp_empty_table);
        rc = s_check(c->amqp, "queue.declare");
        if (rc == 0) {
            (void)amqp_queue_bind(c->amqp, CHANNEL, amqp_cstring_bytes(name),
                                  amqp_cstring_bytes(EXCHANGE), amqp_empty_bytes, amqp_empty_table);
            rc = s_check(c->amqp, "queue.bind");
        }
        if (rc == 0) {
            (void)amqp_queue_purge(c->amqp, CHANNEL, amqp_cstring_bytes(name));
            rc = s_check(c->amqp, "queue.purge");
        }
    }
    void *conn = c;
    s_close(&conn);
    return rc;
}

static int s_pub_open(void **out, const bench_opts_t *opts, int index)
{
    (void)index;
    conn_t *c = NULL;
    if (s_connect(&c, opts) != 0) {
        return -1;
    }
    (void)amqp_confirm_select(c->amqp, CHANNEL);
    if (s_check(c->amqp, "confirm.select") != 0) {
        void *conn = c;
        s_close(&conn);
        return -1;
    }
    *out = c;
    return 0;
}

/* Publish sequence numbers start at 1 on a confirm channel, as the tokens do. */
static int s_pub_send(void *conn, uint64_t token, int64_t sent_ns)
{
    conn_t *c = conn;
    bench_payload_fill(c->payload, c->size, token, sent_ns);
    amqp_basic_properties_t props = { ._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
                                      .delivery_mode = AMQP_DELIVERY_PERSISTENT };
    amqp_bytes_t body = { .len = c->size, .bytes = c->payload };
    if (amqp_basic_publish(c->amqp, CHANNEL, amqp_cstring_bytes(EXCHANGE), amqp_empty_bytes, 0, 0,
                           &props, body) != AMQP_STATUS_OK) {
        (void)fprintf(stderr, "bench: rabbitmq publish failed\n");
        return -1;
    }
    return 0;
}

static void s_on_confirm(conn_t *c, bench_pub_t *pub, uint64_t tag, bool multiple, bool ok)
{
    if (!multiple) {
        bench_pub_result(pub, tag, ok);
        return;
    }
    for (uint64_t t = c->low_water; t <= tag; t++) {
        bench_pub_result(pub, t, ok);
    }
    c->low_water = tag + 1;
}

static int s_pub_poll(void *conn, bench_pub_t *pub, int timeout_ms)
{
    conn_t *c = conn;
    for (int wait_ms = timeout_ms;; wait_ms = 0) {
        struct timeval tv = { .tv_sec = wait_ms / 1000, .tv_usec = (wait_ms % 1000) * 1000 };
        amqp_frame_t frame;
        int st = amqp_simple_wait_frame_noblock(c->amqp, &frame, &tv);
        if (st == AMQP_STATUS_TIMEOUT) {
            amqp_maybe_release_buffers(c->amqp);
            return 0;
        }
        if (st != AMQP_STATUS_OK) {
            (void)fprintf(stderr, "bench: rabbitmq: %s\n", amqp_error_string2(st));
            return -1;
        }
        if (frame.frame_type != AMQP_FRAME_METHOD) {
            continue;
        }
        if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            const amqp_basic_ack_t *ack = frame.payload.method.decoded;
            s_on_confirm(c, pub, ack->delivery_tag, ack->multiple != 0, true);
        } else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            const amqp_basic_nack_t *nack = frame.payload.method.decoded;
            s_on_confirm(c, pub, nack->delivery_tag, nack->multiple != 0, false);
        } else if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            (void)fprintf(stderr, "bench: rabbitmq closed the channel\n");
            return -1;
        }
    }
}

static int s_sub_open(void **out, const bench_opts_t *opts, int index)
{
    conn_t *c = NULL;
    if (s_connect(&c, opts) != 0) {
        return -1;
    }
    char name[QUEUE_CHARS];
    s_queue_name(name, sizeof(name), index + 1);
    (void)amqp_basic_qos(c->amqp, CHANNEL, 0, (uint16_t)opts->window, 0);
    int rc = s_check(c->amqp, "basic.qos");
    if (rc == 0) {
        (void)amqp_basic_consume(c->amqp, CHANNEL, amqp_cstring_bytes(name), amqp_empty_bytes, 0, 0,
                                 0, amqp_empty_table);
        rc = s_check(c->amqp, "basic.consume");
    }
    if (rc != 0) {
        void *conn = c;
        s_close(&conn);
        return -1;
    }
    *out = c;
    return 0;
}

static int s_sub_poll(void *conn, bench_sub_t *sub, int timeout_ms)
{
    conn_t *c = conn;
    for (int wait_ms = timeout_ms;; wait_ms = 0) {
        struct timeval tv = { .tv_sec = wait_ms / 1000, .tv_usec = (wait_ms % 1000) * 1000 };
        amqp_envelope_t env;
        amqp_maybe_release_buffers(c->amqp);
        amqp_rpc_reply_t reply = amqp_consume_message(c->amqp, &env, &tv, 0);
        if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            reply.library_error == AMQP_STATUS_TIMEOUT) {
            return 0;
        }
        if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
            (void)fprintf(stderr, "bench: rabbitmq consume failed\n");
            return -1;
        }
        int64_t sent_ns = bench_payload_sent_ns(env.message.body.bytes, env.message.body.len);
        int st = amqp_basic_ack(c->amqp, CHANNEL, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        if (st != AMQP_STATUS_OK) {
            (void)fprintf(stderr, "bench: rabbitmq ack failed\n");
            return -1;
        }
        bench_sub_delivery(sub, sent_ns);
    }
}

int main(int argc, char **argv)
{
    static const bench_transport_t transport = {
        .name = "rabbitmq",
        .setup = s_setup,
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
