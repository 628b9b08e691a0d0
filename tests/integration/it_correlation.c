/* it_correlation.c - a publish agent settles each record by its own answer only:
 * against a scripted broker (a real CURVE ROUTER speaking the real Envelope
 * protocol) that answers late, twice, out of order and with ids it never sent */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "accord/keys.h"
#include "harness.h"

#define FILE_RECORDS 5
#define WAIT_MS      20000

static th_world_t *world;
static th_proc_t *agent;

/* The scripted broker: one ROUTER, one agent connected to it. */
typedef struct {
    void *ctx;
    void *router;
    uint8_t peer[256]; /* the agent's routing id */
    size_t peer_len;
} s_script_t;

static s_script_t script;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    script.ctx = zmq_ctx_new();
    script.router = zmq_socket(script.ctx, ZMQ_ROUTER);
    cr_assert_not_null(script.router);
    uint8_t secret[ACC_CURVE_KEY_BYTES];
    char path[512];
    snprintf(path, sizeof(path), "%s/broker.curve.secret", world->dir);
    acc_err_t err;
    cr_assert_eq(acc_keys_read_curve_secret(secret, path, &err), ACC_OK, "%s", err.msg);
    int one = 1;
    int zero = 0;
    cr_assert_eq(zmq_setsockopt(script.router, ZMQ_CURVE_SERVER, &one, sizeof(one)), 0);
    cr_assert_eq(zmq_setsockopt(script.router, ZMQ_CURVE_SECRETKEY, secret, sizeof(secret)), 0);
    cr_assert_eq(zmq_setsockopt(script.router, ZMQ_LINGER, &zero, sizeof(zero)), 0);
    cr_assert_eq(zmq_bind(script.router, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof(world->endpoint);
    cr_assert_eq(zmq_getsockopt(script.router, ZMQ_LAST_ENDPOINT, world->endpoint, &len), 0);
}

static void teardown(void)
{
    if (agent != NULL) {
        (void)th_proc_stop(&agent, SIGKILL, 5000);
    }
    zmq_close(script.router);
    zmq_ctx_term(script.ctx);
    th_world_destroy(&world);
}

TestSuite(correlation, .init = setup, .fini = teardown, .timeout = 120);

static void s_send(const Accord__V1__Envelope *env)
{
    size_t len = accord__v1__envelope__get_packed_size(env);
    uint8_t *buf = malloc(len);
    (void)accord__v1__envelope__pack(env, buf);
    cr_assert(zmq_send(script.router, script.peer, script.peer_len, ZMQ_SNDMORE) >= 0);
    cr_assert(zmq_send(script.router, buf, len, 0) >= 0);
    free(buf);
}

/* Answers Hello with Welcome and a Heartbeat with a Heartbeat, as accordd does. */
static bool s_answer_own(const Accord__V1__Envelope *env)
{
    Accord__V1__Envelope out = ACCORD__V1__ENVELOPE__INIT;
    out.correlation_id = env->correlation_id;
    Accord__V1__Welcome welcome = ACCORD__V1__WELCOME__INIT;
    Accord__V1__Heartbeat beat = ACCORD__V1__HEARTBEAT__INIT;
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_HELLO) {
        welcome.protocol_version = 1;
        welcome.agency_id = acc_pb_str("rft-health-visiting");
        welcome.agreement_id = acc_pb_str("scripted");
        out.body_case = ACCORD__V1__ENVELOPE__BODY_WELCOME;
        out.welcome = &welcome;
    } else if (env->body_case == ACCORD__V1__ENVELOPE__BODY_HEARTBEAT) {
        out.body_case = ACCORD__V1__ENVELOPE__BODY_HEARTBEAT;
        out.heartbeat = &beat;
    } else {
        return false;
    }
    s_send(&out);
    return true;
}

/* The next Publish from the agent (Hello and Heartbeats answered on the way), or
 * NULL after timeout_ms; *correlation and record_id get its id and record id. */
static bool s_next_publish(uint64_t *correlation, char *record_id, size_t record_id_len,
                           int timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (spent >= timeout_ms) {
            return false;
        }
        zmq_pollitem_t item = { .socket = script.router, .events = ZMQ_POLLIN };
        if (zmq_poll(&item, 1, timeout_ms - spent) <= 0) {
            continue;
        }
        int n = zmq_recv(script.router, script.peer, sizeof(script.peer), 0);
        cr_assert(n > 0 && (size_t)n <= sizeof(script.peer));
        script.peer_len = (size_t)n;
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        cr_assert(zmq_msg_recv(&msg, script.router, 0) >= 0);
        Accord__V1__Envelope *env =
            accord__v1__envelope__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
        zmq_msg_close(&msg);
        cr_assert_not_null(env, "the agent sent a frame that is not an Envelope");
        bool publish = !s_answer_own(env) && env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH;
        if (publish) {
            *correlation = env->correlation_id;
            snprintf(record_id, record_id_len, "%s", env->publish->record->record_id);
        }
        accord__v1__envelope__free_unpacked(env, NULL);
        if (publish) {
            return true;
        }
    }
}

/* A PublishResult for record_id under correlation: OK with one recipient whose
 * share id is "TAG-RECORD_ID", or code (UNAVAILABLE). */
static void s_answer(uint64_t correlation, const char *record_id, const char *tag,
                     Accord__V1__ErrorCode code)
{
    char share_id[128];
    snprintf(share_id, sizeof(share_id), "%s-%s", tag, record_id);
    Accord__V1__Recipient recipient = ACCORD__V1__RECIPIENT__INIT;
    recipient.agency_id = acc_pb_str("rmbc-childrens-centres");
    recipient.share_id = share_id;
    Accord__V1__Recipient *recipients[] = { &recipient };
    Accord__V1__PublishResult result = ACCORD__V1__PUBLISH_RESULT__INIT;
    result.record_id = acc_pb_str(record_id);
    result.code = code;
    if (code == ACCORD__V1__ERROR_CODE__OK) {
        result.n_recipients = 1;
        result.recipients = recipients;
        result.seq = correlation;
    } else {
        result.reason = acc_pb_str("the log is not writable now; try again");
    }
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = correlation;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT;
    env.publish_result = &result;
    s_send(&env);
}

/* One spool file of FILE_RECORDS health visits PREFIX-1.., renamed into incoming/. */
static void s_spool_file(const char *spool, const char *prefix, size_t nhs_from)
{
    char tmp[600];
    char ready[600];
    snprintf(tmp, sizeof(tmp), "%s/incoming/.%s.tmp", spool, prefix);
    snprintf(ready, sizeof(ready), "%s/incoming/%s.ndjson", spool, prefix);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    for (int i = 1; i <= FILE_RECORDS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        char *json = th_health_visit_json(id, th_nhs(nhs_from + (size_t)i));
        fputs(json, f);
        free(json);
    }
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, ready), 0);
}

/* The ids the agent gave file PREFIX's records, by record number (1-based). */
typedef struct {
    uint64_t id[FILE_RECORDS + 1];
} s_ids_t;

static void s_read_file_publishes(const char *prefix, s_ids_t *ids)
{
    for (int i = 0; i < FILE_RECORDS; i++) {
        uint64_t correlation = 0;
        char record_id[64];
        cr_assert(s_next_publish(&correlation, record_id, sizeof(record_id), WAIT_MS),
                  "the agent did not send %s's records", prefix);
        size_t plen = strlen(prefix);
        cr_assert(strncmp(record_id, prefix, plen) == 0 && record_id[plen] == '-',
                  "%s from the wrong file", record_id);
        int n = atoi(record_id + plen + 1);
        cr_assert(n >= 1 && n <= FILE_RECORDS && ids->id[n] == 0, "%s sent twice", record_id);
        ids->id[n] = correlation;
    }
}

/* Waits for the resend of record_id (after UNAVAILABLE) and returns its id. */
static uint64_t s_expect_resend(const char *record_id)
{
    uint64_t correlation = 0;
    char got[64];
    cr_assert(s_next_publish(&correlation, got, sizeof(got), WAIT_MS),
              "%s was never sent again after UNAVAILABLE: another record's answer settled it",
              record_id);
    cr_assert_str_eq(got, record_id);
    return correlation;
}

/* Every line of done/PREFIX.ndjson.results is accepted with its own answer's share id,
 * each record exactly once. */
static void s_assert_results(const char *spool, const char *prefix)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/done/%s.ndjson.results", spool, prefix);
    char *text = th_slurp(path);
    cr_assert_not_null(text, "no results for %s", prefix);
    bool seen[FILE_RECORDS + 1] = { false };
    size_t lines = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        lines++;
        json_t *r = json_loads(line, 0, NULL);
        cr_assert_not_null(r, "results line is not JSON: %s", line);
        json_int_t n = json_integer_value(json_object_get(r, "line"));
        const char *record_id = json_string_value(json_object_get(r, "record_id"));
        cr_assert(n >= 1 && n <= FILE_RECORDS && !seen[n], "line %lld twice", (long long)n);
        seen[n] = true;
        char want_id[64];
        snprintf(want_id, sizeof(want_id), "%s-%lld", prefix, (long long)n);
        cr_assert_str_eq(record_id, want_id);
        cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "accepted");
        json_t *recipient = json_array_get(json_object_get(r, "recipients"), 0);
        char want_share[80];
        snprintf(want_share, sizeof(want_share), "own-%s", want_id);
        cr_assert_str_eq(json_string_value(json_object_get(recipient, "share_id")), want_share,
                         "%s was settled by another answer", want_id);
        json_decref(r);
    }
    cr_assert_eq(lines, FILE_RECORDS, "%zu results for %s", lines, prefix);
    free(text);
}

Test(correlation, late_duplicate_and_unknown_answers_settle_no_other_record)
{
    char spool[512];
    snprintf(spool, sizeof(spool), "%s/hv.spool", world->dir);
    char incoming[600];
    snprintf(incoming, sizeof(incoming), "%s/incoming", spool);
    cr_assert_eq(mkdir(spool, 0750), 0);
    cr_assert_eq(mkdir(incoming, 0750), 0);
    s_spool_file(spool, "a", 0);
    s_spool_file(spool, "b", 5);
    (void)th_agent_config(world, "rft-health-visiting", NULL);
    const char *args[] = { "--spool", spool, "--once", NULL };
    agent = th_agent_start_argv(world, "publish", "rft-health-visiting", args);

    /* file a: answered out of order, a-5 first UNAVAILABLE, then its resend OK */
    s_ids_t a = { { 0 } };
    s_read_file_publishes("a", &a);
    for (int i = FILE_RECORDS - 1; i >= 1; i--) {
        char rid[16];
        snprintf(rid, sizeof(rid), "a-%d", i);
        s_answer(a.id[i], rid, "own", ACCORD__V1__ERROR_CODE__OK);
    }
    s_answer(a.id[5], "a-5", "own", ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    uint64_t again = s_expect_resend("a-5");
    s_answer(again, "a-5", "own", ACCORD__V1__ERROR_CODE__OK);

    /* file b: b-5 is UNAVAILABLE; then a's answers arrive again, late (a-5 twice),
     * and an answer with an id the agent never used; then b's own, out of order and
     * b-2 twice */
    s_ids_t b = { { 0 } };
    s_read_file_publishes("b", &b);
    s_answer(b.id[5], "b-5", "own", ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    s_answer(a.id[5], "a-5", "late", ACCORD__V1__ERROR_CODE__OK);
    s_answer(a.id[5], "a-5", "late", ACCORD__V1__ERROR_CODE__OK);
    for (int i = 1; i < FILE_RECORDS; i++) {
        char rid[16];
        snprintf(rid, sizeof(rid), "a-%d", i);
        s_answer(a.id[i], rid, "late", ACCORD__V1__ERROR_CODE__OK);
    }
    s_answer((uint64_t)1 << 40, "nobody", "late", ACCORD__V1__ERROR_CODE__OK);
    const int order[] = { 4, 2, 3, 1, 2 };
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        char rid[16];
        snprintf(rid, sizeof(rid), "b-%d", order[i]);
        s_answer(b.id[order[i]], rid, "own", ACCORD__V1__ERROR_CODE__OK);
    }
    again = s_expect_resend("b-5");
    s_answer(again, "b-5", "own", ACCORD__V1__ERROR_CODE__OK);

    /* --once: the agent finishes b and stops; Heartbeats are answered meanwhile */
    char done_b[600];
    snprintf(done_b, sizeof(done_b), "%s/done/b.ndjson", spool);
    uint64_t ignored_id = 0;
    char ignored_rid[64];
    for (int i = 0; i < WAIT_MS / 100 && access(done_b, F_OK) != 0; i++) {
        cr_assert(!s_next_publish(&ignored_id, ignored_rid, sizeof(ignored_rid), 100),
                  "%s sent again after it was settled", ignored_rid);
    }
    cr_assert_eq(th_proc_wait(&agent, WAIT_MS), 0, "the publish agent failed");
    s_assert_results(spool, "a");
    s_assert_results(spool, "b");
    for (int i = 1; i <= FILE_RECORDS; i++) {
        cr_assert_neq(a.id[i], b.id[i], "record %d of both files went out under one id", i);
    }
    char log[600];
    snprintf(log, sizeof(log), "%s/rft-health-visiting.publish.log", world->dir);
    cr_assert(th_file_wait(log, "answers ignored: 7 late or duplicate, 1 unknown", 1000),
              "the agent did not count the answers it ignored");
    fprintf(stderr, "correlation: 10 records in two files, each settled by its own answer; "
                    "7 late or duplicate answers and 1 unknown ignored\n");
}
