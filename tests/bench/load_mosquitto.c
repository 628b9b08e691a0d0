/* load_mosquitto.c - bench-load-mosquitto: the load generator against Mosquitto
 * as a council might run it: QoS 1 both ways (PUBACK is the "result"), persistent
 * subscriber sessions, persistence on in the server's configuration */
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define TOPIC           "accord-bench"
#define KEEPALIVE_S     60
#define CONNECT_WAIT_MS 10000
#define MID_SLOTS       65536 /* MQTT packet ids are 16 bits */

typedef struct {
    struct mosquitto *mosq;
    uint8_t *payload;
    size_t size;
    uint64_t *tokens; /* by packet id */
    bench_pub_t *pub; /* during a poll */
    bench_sub_t *sub;
    bool connected;
    bool subscribed;
} conn_t;

static void s_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    conn_t *c = obj;
    c->connected = rc == 0;
}

static void s_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *qos)
{
    (void)mosq;
    (void)mid;
    conn_t *c = obj;
    c->subscribed = count == 1 && qos[0] == 1;
}

static void s_on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    conn_t *c = obj;
    if (c->pub != NULL && mid >= 0 && mid < MID_SLOTS) {
        bench_pub_result(c->pub, c->tokens[mid], true);
    }
}

/* libmosquitto sends the QoS 1 PUBACK itself once this returns. */
static void s_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    conn_t *c = obj;
    if (c->sub != NULL) {
        bench_sub_delivery(c->sub, bench_payload_sent_ns(msg->payload, (size_t)msg->payloadlen));
    }
}

/* Loops until done(c) or the deadline. */
static int s_loop_until(conn_t *c, bool (*done)(const conn_t *), const char *what)
{
    int64_t deadline = bench_now_ns() + (int64_t)CONNECT_WAIT_MS * 1000000;
    while (!done(c) && bench_now_ns() < deadline) {
        int rc = mosquitto_loop(c->mosq, 100, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            (void)fprintf(stderr, "bench: mosquitto %s: %s\n", what, mosquitto_strerror(rc));
            return -1;
        }
    }
    if (!done(c)) {
        (void)fprintf(stderr, "bench: mosquitto %s: no answer\n", what);
        return -1;
    }
    return 0;
}

static bool s_is_connected(const conn_t *c)
{
    return c->connected;
}

static bool s_is_subscribed(const conn_t *c)
{
    return c->subscribed;
}

static void s_close(void **conn)
{
    conn_t *c = *conn;
    (void)mosquitto_disconnect(c->mosq);
    mosquitto_destroy(c->mosq);
    free(c->payload);
    free(c->tokens);
    free(c);
    *conn = NULL;
}

static int s_connect(void **out, const bench_opts_t *opts, const char *client_id, bool clean)
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
    c->size = opts->size;
    c->payload = malloc(c->size);
    c->tokens = calloc(MID_SLOTS, sizeof(*c->tokens));
    c->mosq = mosquitto_new(client_id, clean, c);
    if (c->mosq == NULL) {
        (void)fprintf(stderr, "bench: mosquitto_new failed\n");
        free(c);
        return -1;
    }
    *out = c;
    (void)mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    (void)mosquitto_max_inflight_messages_set(c->mosq, (unsigned int)opts->window);
    mosquitto_connect_callback_set(c->mosq, s_on_connect);
    mosquitto_subscribe_callback_set(c->mosq, s_on_subscribe);
    mosquitto_publish_callback_set(c->mosq, s_on_publish);
    mosquitto_message_callback_set(c->mosq, s_on_message);
    int rc = mosquitto_connect(c->mosq, host, atoi(colon + 1), KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) {
        (void)fprintf(stderr, "bench: could not connect to mosquitto at %s: %s\n", opts->endpoint,
                      mosquitto_strerror(rc));
        s_close(out);
        return -1;
    }
    if (s_loop_until(c, s_is_connected, "connect") != 0) {
        s_close(out);
        return -1;
    }
    return 0;
}

static int s_setup(const bench_opts_t *opts)
{
    (void)opts;
    return mosquitto_lib_init() == MOSQ_ERR_SUCCESS ? 0 : -1;
}

static int s_pub_open(void **out, const bench_opts_t *opts, int index)
{
    char id[64];
    (void)snprintf(id, sizeof(id), "accord-bench-pub-%d", index);
    return s_connect(out, opts, id, true);
}

static int s_pub_send(void *conn, uint64_t token, int64_t sent_ns)
{
    conn_t *c = conn;
    bench_payload_fill(c->payload, c->size, token, sent_ns);
    int mid = 0;
    int rc = mosquitto_publish(c->mosq, &mid, TOPIC, (int)c->size, c->payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        (void)fprintf(stderr, "bench: mosquitto publish: %s\n", mosquitto_strerror(rc));
        return -1;
    }
    c->tokens[mid & (MID_SLOTS - 1)] = token;
    return 0;
}

static int s_pub_poll(void *conn, bench_pub_t *pub, int timeout_ms)
{
    conn_t *c = conn;
    c->pub = pub;
    int rc = mosquitto_loop(c->mosq, timeout_ms, 1);
    c->pub = NULL;
    if (rc != MOSQ_ERR_SUCCESS) {
        (void)fprintf(stderr, "bench: mosquitto: %s\n", mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

/* A persistent session per recipient: what it has not acknowledged waits for it. */
static int s_sub_open(void **out, const bench_opts_t *opts, int index)
{
    char id[64];
    (void)snprintf(id, sizeof(id), "accord-bench-recipient-%d", index + 1);
    if (s_connect(out, opts, id, false) != 0) {
        return -1;
    }
    conn_t *c = *out;
    int rc = mosquitto_subscribe(c->mosq, NULL, TOPIC, 1);
    if (rc != MOSQ_ERR_SUCCESS || s_loop_until(c, s_is_subscribed, "subscribe") != 0) {
        s_close(out);
        return -1;
    }
    return 0;
}

static int s_sub_poll(void *conn, bench_sub_t *sub, int timeout_ms)
{
    conn_t *c = conn;
    c->sub = sub;
    int rc = mosquitto_loop(c->mosq, timeout_ms, 1);
    c->sub = NULL;
    if (rc != MOSQ_ERR_SUCCESS) {
        (void)fprintf(stderr, "bench: mosquitto: %s\n", mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const bench_transport_t transport = {
        .name = "mosquitto",
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
