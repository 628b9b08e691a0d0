/* relay.c - bench-relay: the transport limit. A ZeroMQ ROUTER with CURVE that does
 * no work: a publisher's frame is answered at once and copied to every subscriber;
 * acknowledgements are read and dropped. Prints "ready endpoint=... key=..." */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#define RELAY_MAX_SUBSCRIBERS 64
#define RELAY_RID_MAX         256
#define RELAY_HWM             100000
#define RELAY_STOP_MS         100

typedef struct {
    unsigned char rid[RELAY_RID_MAX];
    size_t len;
} rid_t;

typedef struct {
    void *router;
    rid_t subs[RELAY_MAX_SUBSCRIBERS];
    size_t sub_count;
} relay_t;

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void *s_bind(void *ctx, const char *secret_z85)
{
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1;
    int hwm = RELAY_HWM;
    int zero = 0;
    if (router == NULL || zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, secret_z85, 40) != 0 ||
        zmq_setsockopt(router, ZMQ_SNDHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(router, ZMQ_RCVHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
        zmq_bind(router, "tcp://127.0.0.1:*") != 0) {
        (void)fprintf(stderr, "bench-relay: could not bind: %s\n", zmq_strerror(zmq_errno()));
        return NULL;
    }
    return router;
}

/* A publisher's frame: the answer carries its token back, the frame goes to everyone. */
static void s_on_publish(relay_t *r, const rid_t *from, zmq_msg_t *body)
{
    unsigned char reply[9] = { 'R' };
    if (zmq_msg_size(body) >= 9) {
        memcpy(reply + 1, (const unsigned char *)zmq_msg_data(body) + 1, 8);
    }
    (void)zmq_send(r->router, from->rid, from->len, ZMQ_SNDMORE);
    (void)zmq_send(r->router, reply, sizeof(reply), 0);
    for (size_t i = 0; i < r->sub_count; i++) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        (void)zmq_msg_copy(&copy, body);
        (void)zmq_send(r->router, r->subs[i].rid, r->subs[i].len, ZMQ_SNDMORE);
        if (zmq_msg_send(&copy, r->router, 0) < 0) {
            zmq_msg_close(&copy);
        }
    }
}

static void s_on_frame(relay_t *r, const rid_t *from, zmq_msg_t *body)
{
    const unsigned char *data = zmq_msg_data(body);
    if (zmq_msg_size(body) == 0) {
        return;
    }
    if (data[0] == 'P') {
        s_on_publish(r, from, body);
    } else if (data[0] == 'S' && r->sub_count < RELAY_MAX_SUBSCRIBERS) {
        r->subs[r->sub_count++] = *from;
    }
}

int main(void)
{
    char public_z85[41];
    char secret_z85[41];
    void *ctx = zmq_ctx_new();
    if (ctx == NULL || zmq_curve_keypair(public_z85, secret_z85) != 0) {
        (void)fprintf(stderr, "bench-relay: no CURVE in this libzmq\n");
        return 1;
    }
    relay_t r = { .router = s_bind(ctx, secret_z85) };
    if (r.router == NULL) {
        return 1;
    }
    (void)signal(SIGTERM, s_on_signal);
    (void)signal(SIGINT, s_on_signal);
    char endpoint[256];
    size_t len = sizeof(endpoint);
    (void)zmq_getsockopt(r.router, ZMQ_LAST_ENDPOINT, endpoint, &len);
    (void)printf("ready endpoint=%s key=%s\n", endpoint, public_z85);
    (void)fflush(stdout);
    /* A signal that lands between the test of s_stop and a blocking receive would
     * be lost, and the harness would wait on this process for ever: poll with a
     * timeout instead, so s_stop is seen within RELAY_STOP_MS. */
    zmq_pollitem_t item = { .socket = r.router, .events = ZMQ_POLLIN };
    while (!s_stop) {
        if (zmq_poll(&item, 1, RELAY_STOP_MS) <= 0) {
            continue;
        }
        rid_t from;
        int n = zmq_recv(r.router, from.rid, sizeof(from.rid), ZMQ_DONTWAIT);
        if (n < 0) {
            continue;
        }
        from.len = (size_t)n;
        zmq_msg_t body;
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, r.router, 0) >= 0) {
            s_on_frame(&r, &from, &body);
        }
        zmq_msg_close(&body);
    }
    zmq_close(r.router);
    zmq_ctx_term(ctx);
    return 0;
}
