/* it_hostile.c - hostile input: a flood of handshakes with keys the agreement does
 * not name, a subscriber that stops reading, PostgreSQL going away and an invalid
 * agreement on SIGHUP; the broker keeps serving the legitimate agencies, keeps
 * its descriptors and memory bounded, says so on /healthz and logs no child */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "accord/keys.h"
#include "accord/nhs.h"
#include "harness.h"

#define NHS_POOL TH_NHS_POOL /* distinct valid NHS numbers the records cycle through */

static th_world_t *world;
static th_proc_t *agents[4]; /* killed at teardown if a test failed first */
static int http_port;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", "rmbc-early-help",
                               NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, TH_RULES_HV_TO_PARTNERS);
    /* Under AddressSanitizer freed memory waits in a quarantine that would look
     * like growth of the broker's RSS, so it is kept small. */
    const char *asan = getenv("ASAN_OPTIONS");
    char *options = acc_xasprintf("%s:quarantine_size_mb=4", asan != NULL ? asan : "");
    setenv("ASAN_OPTIONS", options, 1);
    free(options);
}

static void teardown(void)
{
    for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
        if (agents[i] != NULL) {
            (void)th_proc_stop(&agents[i], SIGKILL, 5000);
        }
    }
    th_world_destroy(&world);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 280);

static long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts accordd with /metrics on a free port and extra settings (one per line). */
static void s_start_broker(const char *extra)
{
    snprintf(world->broker_extra, sizeof(world->broker_extra), "metrics: 127.0.0.1:0\n%s", extra);
    th_broker_start(world);
    http_port = th_broker_metrics_port(world);
}

/* ---- /metrics and /healthz ---- */

/* A plain HTTP/1.0 GET: the body, with the status code in *status. */
static char *s_get(const char *path, int *status)
{
    char *response = th_http_get(http_port, path, status);
    const char *body = strstr(response, "\r\n\r\n");
    cr_assert_not_null(body, "%s", response);
    char *out = strdup(body + 4);
    free(response);
    return out;
}

/* The value of one series ("name" or "name{labels}") in /metrics; -1 if absent. */
static double s_metric(const char *series)
{
    return th_metric(http_port, series);
}

/* Waits until the series reaches at least want (the loop refreshes its figures
 * once a second); returns the last value read. */
static double s_wait_metric(const char *series, double want, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    double value = s_metric(series);
    while (value < want && s_now_ms() < deadline) {
        th_sleep_ms(100);
        value = s_metric(series);
    }
    return value;
}

/* Waits until /healthz answers want; returns the last body (yours) and status. */
static char *s_wait_health(int want, int timeout_ms, int *status)
{
    long deadline = s_now_ms() + timeout_ms;
    char *body = s_get("/healthz", status);
    while (*status != want && s_now_ms() < deadline) {
        free(body);
        th_sleep_ms(200);
        body = s_get("/healthz", status);
    }
    return body;
}

/* ---- what must never leave the broker ---- */

/* The subject fields th_health_visit_json writes, beside the pool's numbers. */
static const char *const s_subject_words[] = {
    "Amelia", "Smith", "2026-05-02", "S60 1AA", "feeding going well", NULL
};

/* The broker's stderr names no child. Returns the number of lines read, so a
 * caller can tell the log was there. */
static size_t s_assert_broker_log_names_no_child(void)
{
    size_t lines = th_assert_broker_log_names_no_child(world, s_subject_words);
    fprintf(stderr, "hostile: %zu lines of the broker's log name no child\n", lines);
    return lines;
}

/* ---- the broker process ---- */

static long s_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s", path);
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* Waits until the broker holds at most most descriptors; returns the last count. */
static long s_wait_fds_at_most(long most, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    long n = s_fd_count(world->broker->pid);
    while (n > most && s_now_ms() < deadline) {
        th_sleep_ms(100);
        n = s_fd_count(world->broker->pid);
    }
    return n;
}

/* ---- records and agents ---- */

/* Writes n health-visit records prefix-00000.. to DIR/name, cycling through the
 * NHS numbers of the pool; with pad > 0 the shared visit_type is that many bytes
 * long, so each delivery is a few KiB. */
static char *s_write_records(const char *name, const char *prefix, int n, size_t pad)
{
    char *path = acc_xasprintf("%s/%s", world->dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    char *visit_type = calloc(pad + 1, 1);
    memset(visit_type, 'v', pad);
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%05d", prefix, i);
        char *json = th_health_visit_json(id, th_nhs((size_t)i % NHS_POOL));
        const char *at = strstr(json, "6-8-week");
        cr_assert_not_null(at);
        if (pad == 0) {
            fputs(json, f);
        } else {
            fprintf(f, "%.*s%s%s", (int)(at - json), json, visit_type, at + strlen("6-8-week"));
        }
        free(json);
    }
    free(visit_type);
    fclose(f);
    return path;
}

static th_proc_t *s_start_publisher(const char *path)
{
    const char *args[] = { "--input", path, NULL };
    return th_agent_start_argv(world, "publish", "rft-health-visiting", args);
}

static th_proc_t *s_start_subscriber(const char *agency, int count)
{
    char arg[32];
    snprintf(arg, sizeof(arg), "--count=%d", count);
    th_proc_t *p = th_agent_start(world, "subscribe", agency, arg);
    cr_assert(th_agent_wait_connected(world, agency, "subscribe"), "%s did not connect", agency);
    return p;
}

/* Reads what the running agents printed: a full pipe would stall them. */
static void s_drain_agents(void)
{
    for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
        if (agents[i] != NULL) {
            th_proc_drain(agents[i]);
        }
    }
}

/* The subscriber printed each record prefix-00000..(n-1) exactly once. */
static void s_check_delivered_once(th_proc_t *sub, const char *prefix, int n)
{
    size_t got = th_proc_wait_lines(sub, (size_t)n, 1000);
    cr_assert_eq(got, (size_t)n, "%zu deliveries of %d records", got, n);
    char *seen = calloc((size_t)n, 1);
    size_t prefix_len = strlen(prefix);
    for (int i = 0; i < n; i++) {
        char *line = th_proc_line(sub, (size_t)i);
        json_t *obj = json_loads(line, 0, NULL);
        cr_assert_not_null(obj, "%s", line);
        const char *rid =
            json_string_value(json_object_get(json_object_get(obj, "record"), "record_id"));
        cr_assert(rid != NULL && strncmp(rid, prefix, prefix_len) == 0 && rid[prefix_len] == '-',
                  "%s", line);
        long k = strtol(rid + prefix_len + 1, NULL, 10);
        cr_assert(k >= 0 && k < n, "%s", rid);
        cr_assert(!seen[k], "%s delivered twice", rid);
        seen[k] = 1;
        json_decref(obj);
        free(line);
    }
    free(seen);
}

/* ---- raw ZeroMQ peers ---- */

static size_t s_hello_frame(uint8_t *buf, size_t len, bool subscribe)
{
    Accord__V1__Hello hello = ACCORD__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.subscribe = subscribe;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 1;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    size_t n = accord__v1__envelope__get_packed_size(&env);
    cr_assert_leq(n, len);
    (void)accord__v1__envelope__pack(&env, buf);
    return n;
}

static void s_set_int(void *socket, int option, int value)
{
    cr_assert_eq(zmq_setsockopt(socket, option, &value, sizeof(value)), 0, "option %d: %s", option,
                 zmq_strerror(zmq_errno()));
}

/* A DEALER with the CURVE key pair given (Z85) and the broker's public key. */
static void *s_dealer(void *ctx, const char *public_z85, const char *secret_z85)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    cr_assert_not_null(s, "%s", zmq_strerror(zmq_errno()));
    cr_assert_eq(zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, world->broker_pub, 40), 0);
    cr_assert_eq(zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, public_z85, 40), 0);
    cr_assert_eq(zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret_z85, 40), 0);
    s_set_int(s, ZMQ_LINGER, 0);
    return s;
}

/* ---- 1. a flood of keys the agreement does not name ---- */

#define FLOOD_ROUNDS    4
#define FLOOD_PER_ROUND 64
#define FLOOD_RECORDS   1000

typedef struct {
    void *socket;
    void *monitor;
    int outcome; /* 0 until its handshake ended: a ZMQ_EVENT_HANDSHAKE_* */
    int status;  /* the event's value: the ZAP status code for FAILED_AUTH */
} s_intruder_t;

/* A DEALER with a fresh key pair of its own that connects once (no reconnects,
 * so each one is exactly one handshake) and queues a Hello behind it. */
static void s_intruder_open(void *ctx, s_intruder_t *in, size_t n)
{
    char public_z85[41];
    char secret_z85[41];
    cr_assert_eq(zmq_curve_keypair(public_z85, secret_z85), 0);
    in->socket = s_dealer(ctx, public_z85, secret_z85);
    s_set_int(in->socket, ZMQ_RECONNECT_IVL, -1);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "inproc://hostile-intruder-%zu", n);
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    cr_assert_eq(zmq_socket_monitor(in->socket, endpoint, events), 0);
    in->monitor = zmq_socket(ctx, ZMQ_PAIR);
    cr_assert_eq(zmq_connect(in->monitor, endpoint), 0);
    cr_assert_eq(zmq_connect(in->socket, world->endpoint), 0);
    uint8_t frame[128];
    size_t len = s_hello_frame(frame, sizeof(frame), true);
    cr_assert_eq(zmq_send(in->socket, frame, len, ZMQ_DONTWAIT), (int)len);
    in->outcome = 0;
}

static void s_intruder_close(s_intruder_t *in)
{
    (void)zmq_socket_monitor(in->socket, NULL, 0);
    zmq_close(in->socket);
    zmq_close(in->monitor);
    memset(in, 0, sizeof(*in));
}

/* Reads one monitor event (two frames: event and value, then the address). */
static void s_intruder_event(s_intruder_t *in)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    cr_assert_geq(zmq_msg_recv(&msg, in->monitor, 0), 6);
    uint16_t event = 0;
    uint32_t value = 0;
    memcpy(&event, zmq_msg_data(&msg), sizeof(event));
    memcpy(&value, (const uint8_t *)zmq_msg_data(&msg) + 2, sizeof(value));
    cr_assert(zmq_msg_more(&msg));
    cr_assert_geq(zmq_msg_recv(&msg, in->monitor, 0), 0);
    zmq_msg_close(&msg);
    if (in->outcome == 0) {
        in->outcome = event;
        in->status = (int)value;
    }
}

/* Waits until every intruder's handshake has ended, reading the agents' output
 * meanwhile; returns the most descriptors the broker held while it waited. */
static long s_wait_intruders(s_intruder_t *in, size_t n, int timeout_ms)
{
    zmq_pollitem_t items[FLOOD_PER_ROUND];
    long deadline = s_now_ms() + timeout_ms;
    long peak = 0;
    size_t ended = 0;
    while (ended < n && s_now_ms() < deadline) {
        for (size_t i = 0; i < n; i++) {
            items[i] = (zmq_pollitem_t){ .socket = in[i].monitor, .events = ZMQ_POLLIN };
        }
        cr_assert_geq(zmq_poll(items, (int)n, 50), 0);
        ended = 0;
        for (size_t i = 0; i < n; i++) {
            if (items[i].revents & ZMQ_POLLIN) {
                s_intruder_event(&in[i]);
            }
            ended += in[i].outcome != 0;
        }
        long fds = s_fd_count(world->broker->pid);
        peak = fds > peak ? fds : peak;
        s_drain_agents();
    }
    return peak;
}

/* One round: n intruders at once; returns how many were refused by ZAP. */
static size_t s_flood_round(void *ctx, size_t round, long *peak_fds)
{
    s_intruder_t in[FLOOD_PER_ROUND];
    for (size_t i = 0; i < FLOOD_PER_ROUND; i++) {
        s_intruder_open(ctx, &in[i], round * FLOOD_PER_ROUND + i);
    }
    long peak = s_wait_intruders(in, FLOOD_PER_ROUND, 60000);
    *peak_fds = peak > *peak_fds ? peak : *peak_fds;
    size_t refused = 0;
    for (size_t i = 0; i < FLOOD_PER_ROUND; i++) {
        cr_assert_neq(in[i].outcome, ZMQ_EVENT_HANDSHAKE_SUCCEEDED,
                      "round %zu: a key not in the agreement was admitted", round);
        cr_assert_eq(in[i].outcome, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH,
                     "round %zu intruder %zu: handshake ended with event %d, not a refusal", round,
                     i, in[i].outcome);
        cr_assert_eq(in[i].status, 400, "ZAP status %d", in[i].status);
        refused++;
        s_intruder_close(&in[i]);
    }
    return refused;
}

Test(hostile, a_flood_of_unknown_keys_is_refused_and_costs_no_descriptors_or_memory)
{
    s_start_broker("");
    long fds_before = s_fd_count(world->broker->pid);
    long rss_before = th_proc_rss_kib(world->broker->pid);
    double refusals_before = s_metric("accord_handshake_refusals_total");
    cr_assert_geq(refusals_before, 0, "no accord_handshake_refusals_total in /metrics");

    agents[0] = s_start_subscriber("rmbc-childrens-centres", FLOOD_RECORDS);
    char *path = s_write_records("flood.ndjson", "hv", FLOOD_RECORDS, 0);
    agents[1] = s_start_publisher(path);
    free(path);

    void *ctx = zmq_ctx_new();
    long peak_fds = 0;
    size_t refused = 0;
    for (size_t round = 0; round < FLOOD_ROUNDS; round++) {
        refused += s_flood_round(ctx, round, &peak_fds);
        fprintf(stderr, "hostile: flood round %zu done: broker RSS %ld KiB, %ld fds, %zu results\n",
                round + 1, th_proc_rss_kib(world->broker->pid), s_fd_count(world->broker->pid),
                agents[1]->lines);
    }
    cr_assert_eq(zmq_ctx_term(ctx), 0);
    long rss_flooded = th_proc_rss_kib(world->broker->pid);

    for (long waited = 0; agents[1]->lines < FLOOD_RECORDS && waited < 120000; waited += 50) {
        s_drain_agents();
        th_sleep_ms(50);
    }
    th_assert_all_accepted(agents[1], FLOOD_RECORDS);
    cr_assert_eq(th_proc_wait(&agents[1], 30000), 0, "the publisher failed");
    cr_assert_eq(th_proc_wait_lines(agents[0], FLOOD_RECORDS, 120000), (size_t)FLOOD_RECORDS);
    s_check_delivered_once(agents[0], "hv", FLOOD_RECORDS);
    cr_assert_eq(th_proc_wait(&agents[0], 30000), 0, "the subscriber failed");

    double refusals =
        s_wait_metric("accord_handshake_refusals_total", refusals_before + (double)refused, 10000);
    cr_assert_geq(refusals - refusals_before, (double)refused,
                  "%zu handshakes refused but the broker counted %.0f", refused,
                  refusals - refusals_before);
    cr_assert_eq(th_pg_count(world, "event = 'refused'"), 0, "an intruder's frame was read");
    /* the agents' connections are gone too: back to where the broker started */
    long fds_after = s_wait_fds_at_most(fds_before + 4, 15000);
    long rss_after = th_proc_rss_kib(world->broker->pid);
    fprintf(stderr,
            "hostile: %zu handshakes with unknown keys refused (broker counted %.0f) while "
            "%d records were shared; broker fds %ld before, %ld at most during, %ld after; "
            "RSS %ld KiB before, %ld after the flood, %ld at the end\n",
            refused, refusals - refusals_before, FLOOD_RECORDS, fds_before, peak_fds, fds_after,
            rss_before, rss_flooded, rss_after);
    cr_assert_eq(refused, (size_t)FLOOD_ROUNDS * FLOOD_PER_ROUND);
    cr_assert_leq(fds_after, fds_before + 4, "the broker keeps %ld descriptors after the flood",
                  fds_after - fds_before);
    cr_assert_lt(rss_after - rss_before, 32 * 1024, "broker RSS grew by %ld KiB",
                 rss_after - rss_before);
    th_broker_stop(world);
    cr_assert_gt(s_assert_broker_log_names_no_child(), (size_t)FLOOD_ROUNDS * FLOOD_PER_ROUND);
}

/* ---- 2. a subscriber that stops reading ---- */

/* 5000 deliveries of 4 KiB each: 20 MB, far more than the broker's queue for one
 * peer (200 messages) and the kernel's socket buffers (4 MiB at most) hold */
#define STALL_RECORDS 5000
#define STALL_PAD     4000

/* A subscriber for rmbc-childrens-centres that says Hello, is welcomed and then
 * never reads again: its receive queue holds one message and its kernel buffer
 * a few KiB, so the broker's sends to it fill up. */
static void *s_stalled_open(void *ctx)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/rmbc-childrens-centres.curve.secret", world->dir);
    uint8_t secret[ACC_CURVE_KEY_BYTES];
    acc_err_t err;
    cr_assert_eq(acc_keys_read_curve_secret(secret, path, &err), ACC_OK, "%s", err.msg);
    char secret_z85[41];
    char public_z85[41];
    acc_keys_encode_z85(secret_z85, secret);
    cr_assert_eq(zmq_curve_public(public_z85, secret_z85), 0);
    void *s = s_dealer(ctx, public_z85, secret_z85);
    s_set_int(s, ZMQ_RCVHWM, 1);
    s_set_int(s, ZMQ_RCVBUF, 4096);
    cr_assert_eq(zmq_connect(s, world->endpoint), 0);
    uint8_t frame[128];
    size_t len = s_hello_frame(frame, sizeof(frame), true);
    cr_assert_eq(zmq_send(s, frame, len, 0), (int)len);
    zmq_pollitem_t item = { .socket = s, .events = ZMQ_POLLIN };
    cr_assert_eq(zmq_poll(&item, 1, 10000), 1, "no Welcome");
    uint8_t buf[1024];
    int n = zmq_recv(s, buf, sizeof(buf), 0);
    cr_assert_gt(n, 0);
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(NULL, (size_t)n, buf);
    cr_assert_not_null(env);
    cr_assert_eq(env->body_case, ACCORD__V1__ENVELOPE__BODY_WELCOME, "kind %d", env->body_case);
    accord__v1__envelope__free_unpacked(env, NULL);
    return s;
}

/* It still speaks (a Heartbeat a second), so the broker cannot take it for dead:
 * it is alive and simply not reading. */
static void s_stalled_beat(void *s, long *last_ms)
{
    if (s_now_ms() - *last_ms < 1000) {
        return;
    }
    Accord__V1__Heartbeat beat = ACCORD__V1__HEARTBEAT__INIT;
    beat.sent_at_ms = (uint64_t)s_now_ms();
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 2;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &beat;
    uint8_t buf[64];
    size_t len = accord__v1__envelope__get_packed_size(&env);
    cr_assert_leq(len, sizeof(buf));
    (void)accord__v1__envelope__pack(&env, buf);
    cr_assert_eq(zmq_send(s, buf, len, ZMQ_DONTWAIT), (int)len, "%s", zmq_strerror(zmq_errno()));
    *last_ms = s_now_ms();
}

/* Keeps the stalled peer beating and the agents' pipes drained until agent a
 * printed lines lines (or the deadline); returns the broker's peak RSS meanwhile. */
static long s_wait_stalled(void *stalled, long *beat_ms, size_t a, size_t lines, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    long peak = 0;
    while (agents[a]->lines < lines && s_now_ms() < deadline) {
        s_stalled_beat(stalled, beat_ms);
        s_drain_agents();
        long rss = th_proc_rss_kib(world->broker->pid);
        peak = rss > peak ? rss : peak;
        th_sleep_ms(50);
    }
    return peak;
}

Test(hostile, a_subscriber_that_stops_reading_stalls_nobody_and_its_deliveries_wait)
{
    /* a queue smaller than the records, so the stalled peer's fills; larger than
     * the agents' window (100) as the README asks */
    s_start_broker("peer_queue_max: 200\npeer_timeout_ms: 5000\n");
    void *ctx = zmq_ctx_new();
    void *stalled = s_stalled_open(ctx);
    long beat_ms = 0;
    agents[0] = s_start_subscriber("rmbc-early-help", STALL_RECORDS);
    long rss_before = th_proc_rss_kib(world->broker->pid);
    char *path = s_write_records("stall.ndjson", "hv", STALL_RECORDS, STALL_PAD);
    agents[1] = s_start_publisher(path);
    free(path);

    long peak = s_wait_stalled(stalled, &beat_ms, 1, STALL_RECORDS / 3, 200000);
    long rss_third = th_proc_rss_kib(world->broker->pid);
    long peak_late = s_wait_stalled(stalled, &beat_ms, 1, STALL_RECORDS, 200000);
    peak = peak_late > peak ? peak_late : peak;
    th_assert_all_accepted(agents[1], STALL_RECORDS);
    cr_assert_eq(th_proc_wait(&agents[1], 30000), 0, "the publisher failed");
    long more = s_wait_stalled(stalled, &beat_ms, 0, STALL_RECORDS, 120000);
    peak = more > peak ? more : peak;
    s_check_delivered_once(agents[0], "hv", STALL_RECORDS);
    cr_assert_eq(th_proc_wait(&agents[0], 30000), 0, "the reading subscriber failed");
    /* held back either when its queue filled or, sooner, when what it was sent
     * sat unread in its TCP send queue */
    cr_assert(th_broker_logged(world, "rmbc-childrens-centres is not keeping up", 0) ||
                  th_broker_logged(world,
                                   "rmbc-childrens-centres holds too much unacknowledged "
                                   "or unread",
                                   0),
              "the stalled subscriber was never held back: the test proves nothing");
    long rss_stalled = th_proc_rss_kib(world->broker->pid);
    cr_assert_lt(peak - rss_before, 32 * 1024, "broker RSS grew by %ld KiB", peak - rss_before);
    /* the last two thirds (13 MB of deliveries for the stalled peer) wait in
     * PostgreSQL, not in the broker's memory */
    cr_assert_lt(rss_stalled - rss_third, 8 * 1024,
                 "broker RSS grew by %ld KiB over the last %d records", rss_stalled - rss_third,
                 STALL_RECORDS - STALL_RECORDS / 3);

    /* the agency's real agent connects, the stalled connection still open and
     * beating: every record arrives exactly once, from what is pending */
    agents[2] = s_start_subscriber("rmbc-childrens-centres", STALL_RECORDS);
    (void)s_wait_stalled(stalled, &beat_ms, 2, STALL_RECORDS, 120000);
    s_check_delivered_once(agents[2], "hv", STALL_RECORDS);
    cr_assert_eq(th_proc_wait(&agents[2], 30000), 0, "the well-behaved subscriber failed");
    /* th_pg_wait_acked_count also asserts that no share is acknowledged twice */
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 2L * STALL_RECORDS, 30000),
                 2L * STALL_RECORDS, "every delivery acknowledged once");
    cr_assert_eq(th_pg_pending_count(world, "true"), 0);
    zmq_close(stalled);
    cr_assert_eq(zmq_ctx_term(ctx), 0);
    fprintf(stderr,
            "hostile: %d records with one subscriber not reading: all accepted, all delivered "
            "to the other, then all once to the agency's agent; broker RSS %ld KiB before, "
            "%ld after a third, %ld at most, %ld at the end of the stall\n",
            STALL_RECORDS, rss_before, rss_third, peak, rss_stalled);
    th_broker_stop(world);
    (void)s_assert_broker_log_names_no_child();
}

/* ---- 3. /healthz: PostgreSQL away, an invalid agreement ---- */

/* Neither a child nor anything secret: the key files' contents, the conninfo. */
static void s_assert_body_clean(const char *body, const char *where)
{
    (void)th_assert_names_no_child(body, where, s_subject_words);
    static const char *const names[] = { "broker", "rft-health-visiting", "rmbc-childrens-centres",
                                         "rmbc-early-help", "ig-officer" };
    static const char *const kinds[] = { "curve", "box", "sign", "subject" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            char path[700];
            snprintf(path, sizeof(path), "%s/%s.%s.secret", world->dir, names[i], kinds[k]);
            if (access(path, R_OK) != 0) {
                continue;
            }
            char *secret = th_slurp(path);
            secret[strcspn(secret, "\n")] = '\0';
            cr_assert(strlen(secret) >= 32, "%s", path);
            secret[16] = '\0'; /* even a part of it */
            cr_assert(strstr(body, secret) == NULL, "%s holds part of %s", where, path);
            free(secret);
        }
    }
    cr_assert(strstr(body, "host=") == NULL && strstr(body, "password") == NULL &&
                  strstr(body, world->dir) == NULL,
              "%s holds connection details: %s", where, body);
}

static Accord__V1__ErrorCode s_publish_one(const char *record_id)
{
    char *json = th_health_visit_json(record_id, th_nhs(0));
    Accord__V1__ErrorCode code = th_publish_code(world, "rft-health-visiting", json, "");
    free(json);
    return code;
}

Test(hostile, healthz_is_503_naming_the_database_while_postgresql_is_down_then_200)
{
    /* a private cluster: stopping the shared one would disturb other tests */
    th_pg_private_start(world);
    s_start_broker("");
    int status = 0;
    char *body = s_wait_health(200, 10000, &status);
    cr_assert_eq(status, 200, "%s", body);
    cr_assert(strstr(body, "ok: agreement test-agreement in force") != NULL, "%s", body);
    free(body);
    cr_assert_eq(s_publish_one("hv-before"), ACCORD__V1__ERROR_CODE__OK);

    th_pg_private_ctl(world, "stop");
    /* an idle broker notices at its next look at what is pending (every ten seconds) */
    body = s_wait_health(503, 30000, &status);
    cr_assert_eq(status, 503, "healthz still %d with PostgreSQL stopped: %s", status, body);
    cr_assert(strstr(body, "the sharing log's database is unreachable") != NULL, "%s", body);
    cr_assert(strstr(body, "ok:") == NULL && strstr(body, "no agreement") == NULL, "%s", body);
    fprintf(stderr, "hostile: /healthz with PostgreSQL stopped: %d %s", status, body);
    s_assert_body_clean(body, "/healthz");
    free(body);
    cr_assert_eq(s_metric("accord_database_up"), 0);
    cr_assert_eq(s_publish_one("hv-during"), ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    body = s_get("/metrics", &status);
    s_assert_body_clean(body, "/metrics");
    free(body);

    th_pg_private_ctl(world, "start");
    /* an idle broker notices by itself that the database is back */
    body = s_wait_health(200, 15000, &status);
    cr_assert_eq(status, 200, "healthz still %d with PostgreSQL back and no traffic: %s", status,
                 body);
    free(body);
    /* as an agent does: send again while the answer is UNAVAILABLE (the broker
     * reconnects with backoff) */
    long deadline = s_now_ms() + 60000;
    int unavailable = 0;
    Accord__V1__ErrorCode code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    while (code == ACCORD__V1__ERROR_CODE__UNAVAILABLE && s_now_ms() < deadline) {
        code = s_publish_one("hv-after");
        unavailable += code == ACCORD__V1__ERROR_CODE__UNAVAILABLE;
        th_sleep_ms(code == ACCORD__V1__ERROR_CODE__UNAVAILABLE ? 200 : 0);
    }
    cr_assert_eq(code, ACCORD__V1__ERROR_CODE__OK, "%s", acc_pb_code_name(code));
    body = s_wait_health(200, 5000, &status);
    fprintf(stderr, "hostile: /healthz with PostgreSQL back (%d UNAVAILABLE before): %d %s",
            unavailable, status, body);
    cr_assert_eq(status, 200, "healthz still %d with PostgreSQL back: %s", status, body);
    cr_assert(strstr(body, "ok: agreement test-agreement in force") != NULL, "%s", body);
    free(body);
    cr_assert_eq(s_metric("accord_database_up"), 1);
    /* the private cluster's log, not the shared one th_pg_count reads */
    PGconn *db = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *res = PQexec(db, "SELECT string_agg(record_id, ',' ORDER BY seq) FROM accord_log "
                               "WHERE event = 'shared' AND to_agency = 'rmbc-early-help'");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(db));
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "hv-before,hv-after",
                     "shared: the record sent while PostgreSQL was down was not logged");
    PQclear(res);
    PQfinish(db);
    th_broker_stop(world);
    (void)s_assert_broker_log_names_no_child();
    th_pg_private_remove(world);
}

/* Replaces agreement.yaml with text (NULL: removes it) and sends SIGHUP; waits
 * until the broker has counted one more refused reload. */
static void s_reload_refused(const char *text, double refused_before)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/agreement.yaml", world->dir);
    if (text == NULL) {
        cr_assert_eq(unlink(path), 0);
    } else {
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
    }
    cr_assert_eq(kill(world->broker->pid, SIGHUP), 0);
    double refused = s_wait_metric("accord_agreement_reloads_total{result=\"refused\"}",
                                   refused_before + 1, 10000);
    cr_assert_eq(refused, refused_before + 1, "the reload was not refused");
}

/* An invalid agreement on disk and SIGHUP: the old one stays in force. /healthz
 * stays 200 and names the agreement still in force; the refusal shows in the
 * log and in accord_agreement_reloads_total{result="refused"}, not on /healthz. */
Test(hostile, an_invalid_agreement_on_sighup_leaves_the_old_one_in_force_and_healthz_ok)
{
    s_start_broker("");
    int status = 0;
    char *body = s_wait_health(200, 10000, &status);
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    char agreement[600];
    snprintf(agreement, sizeof(agreement), "%s/agreement.yaml", world->dir);
    char *good = th_slurp(agreement);
    char *unknown_agency = strdup(good);
    char *to = strstr(unknown_agency, "rmbc-early-help]");
    cr_assert_not_null(to);
    memcpy(to, "rmbc-nobody-xx]", strlen("rmbc-nobody-xx]"));
    const char *const bad[] = {
        unknown_agency,                           /* a rule to an agency it does not list */
        "agreement: [this is: not {an agreement", /* not even YAML */
        "",                                       /* empty */
        NULL,                                     /* gone */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s_reload_refused(bad[i], (double)i);
        body = s_wait_health(200, 0, &status);
        cr_assert_eq(status, 200, "bad agreement %zu: healthz %d %s", i, status, body);
        cr_assert(strstr(body, "ok: agreement test-agreement in force") != NULL, "%s", body);
        s_assert_body_clean(body, "/healthz");
        free(body);
        char id[32];
        snprintf(id, sizeof(id), "hv-reload-%zu", i);
        cr_assert_eq(s_publish_one(id), ACCORD__V1__ERROR_CODE__OK,
                     "bad agreement %zu: the old one is not in force", i);
    }
    cr_assert_eq(th_pg_count(world, "event = 'shared' AND to_agency = 'rmbc-early-help'"), 4,
                 "the old rule kept sharing with both recipients");
    cr_assert(th_broker_logged(world, "reload refused; agreement", 0));
    cr_assert_eq(s_metric("accord_agreement_reloads_total{result=\"ok\"}"), 0);
    fprintf(stderr, "hostile: 4 invalid agreements refused on SIGHUP; /healthz stayed 200 \"ok: "
                    "agreement test-agreement in force\"\n");
    free(unknown_agency);
    free(good);
    th_broker_stop(world);
    (void)s_assert_broker_log_names_no_child();
}
