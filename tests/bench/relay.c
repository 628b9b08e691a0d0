/* relay.c - bench-relay: the transport limit. A ZeroMQ ROUTER with CURVE that does
 * no work: a publisher's frame is answered at once and copied to every subscriber;
 * acknowledgements are read and dropped. Prints "ready endpoint=... key=..."
 *
 * bench-relay --commit CONNINFO --recipients R --size BYTES is the least a durable
 * broker does: each frame's log rows (pgcommit.h: the rows accord writes for a
 * record to R recipients) are committed before the frame is answered and copied,
 * with one commit in flight and the frames read meanwhile in the next, as accordd
 * batches. No checks, no lookups, no sealing, no hashing: the pipeline alone. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "pgcommit.h"

#define RELAY_MAX_SUBSCRIBERS 64
#define RELAY_RID_MAX         256
#define RELAY_HWM             100000
#define RELAY_STOP_MS         100
#define RELAY_READ_MAX        4096 /* frames read before a commit is sent */

typedef struct {
    unsigned char rid[RELAY_RID_MAX];
    size_t len;
} rid_t;

/* A publisher's frame held until its rows are committed. */
typedef struct {
    rid_t from;
    zmq_msg_t body;
} held_t;

typedef struct {
    held_t *items;
    size_t count;
    size_t cap;
} held_list_t;

typedef struct {
    void *router;
    rid_t subs[RELAY_MAX_SUBSCRIBERS];
    size_t sub_count;
    bool durable;
    pgcommit_t pg;
    held_list_t waiting;    /* read, for the next commit */
    held_list_t committing; /* in the commit in flight */
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

static void s_hold(held_list_t *l, const rid_t *from, zmq_msg_t *body)
{
    if (l->count == l->cap) {
        l->cap = l->cap == 0 ? 256 : l->cap * 2;
        l->items = realloc(l->items, l->cap * sizeof(*l->items));
        if (l->items == NULL) {
            abort();
        }
    }
    held_t *h = &l->items[l->count++];
    h->from = *from;
    zmq_msg_init(&h->body);
    (void)zmq_msg_move(&h->body, body);
}

/* Sends the held frames' rows as one commit, unless one is in flight. */
static int s_start(relay_t *r)
{
    if (r->pg.busy || r->waiting.count == 0) {
        return 0;
    }
    held_list_t t = r->committing;
    r->committing = r->waiting;
    r->waiting = t;
    r->waiting.count = 0;
    return pgcommit_start(&r->pg, r->committing.count);
}

/* The commit in flight has ended well: its frames are answered and copied. */
static int s_committed(relay_t *r)
{
    for (size_t i = 0; i < r->committing.count; i++) {
        held_t *h = &r->committing.items[i];
        s_on_publish(r, &h->from, &h->body);
        zmq_msg_close(&h->body);
    }
    r->committing.count = 0;
    return s_start(r);
}

static void s_on_frame(relay_t *r, const rid_t *from, zmq_msg_t *body)
{
    const unsigned char *data = zmq_msg_data(body);
    if (zmq_msg_size(body) == 0) {
        return;
    }
    if (data[0] == 'P' && r->durable) {
        s_hold(&r->waiting, from, body);
    } else if (data[0] == 'P') {
        s_on_publish(r, from, body);
    } else if (data[0] == 'S' && r->sub_count < RELAY_MAX_SUBSCRIBERS) {
        r->subs[r->sub_count++] = *from;
    }
}

static int s_options(relay_t *r, int argc, char **argv, const char **conninfo, int *recipients,
                     size_t *size)
{
    static const struct option longs[] = {
        { "commit", required_argument, NULL, 'c' },
        { "recipients", required_argument, NULL, 'r' },
        { "size", required_argument, NULL, 's' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            *conninfo = optarg;
            r->durable = true;
            break;
        case 'r':
            *recipients = atoi(optarg);
            break;
        case 's':
            *size = (size_t)strtoul(optarg, NULL, 10);
            break;
        default:
            return -1;
        }
    }
    if (optind != argc || *recipients < 1) {
        return -1;
    }
    return 0;
}

/* Reads every frame waiting (up to RELAY_READ_MAX), then sends a commit if due. */
static int s_read(relay_t *r)
{
    for (int i = 0; i < RELAY_READ_MAX; i++) {
        rid_t from;
        int n = zmq_recv(r->router, from.rid, sizeof(from.rid), ZMQ_DONTWAIT);
        if (n < 0) {
            break;
        }
        from.len = (size_t)n;
        zmq_msg_t body;
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, r->router, 0) >= 0) {
            s_on_frame(r, &from, &body);
        }
        zmq_msg_close(&body);
    }
    return r->durable ? s_start(r) : 0;
}

static int s_serve(relay_t *r)
{
    /* A signal that lands between the test of s_stop and a blocking receive would
     * be lost, and the harness would wait on this process for ever: poll with a
     * timeout instead, so s_stop is seen within RELAY_STOP_MS. */
    while (!s_stop) {
        zmq_pollitem_t items[2] = {
            { .socket = r->router, .events = ZMQ_POLLIN },
            { .socket = NULL, .fd = r->durable ? pgcommit_fd(&r->pg) : -1, .events = ZMQ_POLLIN },
        };
        int n = items[1].fd >= 0 ? 2 : 1;
        if (zmq_poll(items, n, RELAY_STOP_MS) <= 0) {
            continue;
        }
        if (n == 2 && (items[1].revents & ZMQ_POLLIN) != 0) {
            int done = pgcommit_collect(&r->pg);
            if (done < 0 || (done > 0 && s_committed(r) != 0)) {
                return -1;
            }
        }
        if ((items[0].revents & ZMQ_POLLIN) != 0 && s_read(r) != 0) {
            return -1;
        }
    }
    return 0;
}

static void s_free_held(held_list_t *l)
{
    for (size_t i = 0; i < l->count; i++) {
        zmq_msg_close(&l->items[i].body);
    }
    free(l->items);
}

int main(int argc, char **argv)
{
    relay_t r = { 0 };
    const char *conninfo = NULL;
    int recipients = 1;
    size_t size = 500;
    if (s_options(&r, argc, argv, &conninfo, &recipients, &size) != 0) {
        (void)fprintf(stderr,
                      "usage: bench-relay [--commit CONNINFO --recipients R --size BYTES]\n");
        return 2;
    }
    if (r.durable && pgcommit_open(&r.pg, conninfo, 0, 1, recipients, size) != 0) {
        pgcommit_close(&r.pg);
        return 1;
    }
    char public_z85[41];
    char secret_z85[41];
    void *ctx = zmq_ctx_new();
    if (ctx == NULL || zmq_curve_keypair(public_z85, secret_z85) != 0) {
        (void)fprintf(stderr, "bench-relay: no CURVE in this libzmq\n");
        return 1;
    }
    r.router = s_bind(ctx, secret_z85);
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
    int rc = s_serve(&r) == 0 ? 0 : 1;
    s_free_held(&r.waiting);
    s_free_held(&r.committing);
    if (r.durable) {
        pgcommit_close(&r.pg);
    }
    zmq_close(r.router);
    zmq_ctx_term(ctx);
    return rc;
}
