/* audit.c - bench-audit: what one auditor's page costs on the log as it stands
 * (run --prefill): the round trip of one AuditQuery page (up to 200 rows) through
 * the broker, over the agents' client library as accord-audit asks it, for three
 * questions an information-governance officer asks:
 *   agency  - every row to or from one agency (`accord-audit log --agency`)
 *   subject - one child's rows with payloads and keys (subject access)
 *   rule    - every row shared under one rule (`accord-audit log --rule`)
 * Each is asked --pages times, at after_seq spread evenly over the log (an
 * auditor looking at any part of it), one question at a time, in two passes:
 *   first    - on the broker just started: its reading session is a new
 *              PostgreSQL backend, which pays a page fault for each 4 KiB of the
 *              server's shared buffers the first time it touches them (about
 *              30 us per 8 KiB buffer on a 2-vCPU VM, a cost pg_prewarm shows
 *              apart from any read: the same blocks cost 3 to 6 us in a session
 *              that has touched the buffers before, whatever holds them);
 *   measured - then, half a step further along the log (so no page the first
 *              pass read is asked again), the broker in service.
 * Prints one JSON line: per question and pass p50, p90 and max ms, pages
 * answered, rows per page, errors. The measured pass is what the targets read. */
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/config.h"
#include "accord/pb.h"
#include "bench.h"
#include "client.h"

#define HELLO_TIMEOUT_MS  10000
#define ANSWER_TIMEOUT_MS 30000
#define PAGE_ROWS         200
#define AUDITOR           "ig-officer"

typedef struct {
    const char *name;
    const char *agency;
    const char *child;
    const char *rule;
    bool payloads;
} question_t;

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* One page: sends the question, waits for its answer. Returns the round trip in
 * ms, or -1 when the broker answered with an error (printed once per question). */
static double s_page(client_t *client, const question_t *q, uint64_t after, uint64_t id,
                     size_t *rows, bool *said, int *fatal)
{
    Accord__V1__AuditQuery query = ACCORD__V1__AUDIT_QUERY__INIT;
    query.agency = acc_pb_str(q->agency);
    query.child = acc_pb_str(q->child);
    query.rule = acc_pb_str(q->rule);
    query.payloads = q->payloads;
    query.limit = PAGE_ROWS;
    query.after_seq = after;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    env.audit_query = &query;
    acc_err_t err;
    int64_t t0 = bench_now_ns();
    if (client_send(client, &env, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench-audit: %s\n", err.msg);
        *fatal = 1;
        return -1;
    }
    for (;;) {
        Accord__V1__Envelope *reply = NULL;
        if (client_recv(client, &reply, ANSWER_TIMEOUT_MS, &err) != ACC_OK) {
            (void)fprintf(stderr, "bench-audit: %s: no answer: %s\n", q->name, err.msg);
            *fatal = 1;
            return -1;
        }
        double ms = (double)(bench_now_ns() - t0) / 1e6;
        if (reply->correlation_id != id) {
            accord__v1__envelope__free_unpacked(reply, NULL);
            continue;
        }
        bool ok = reply->body_case == ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT;
        if (ok) {
            *rows = reply->audit_result->n_rows;
        } else if (!*said) {
            *said = true;
            (void)fprintf(stderr, "bench-audit: %s: the broker answered %s\n", q->name,
                          reply->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR
                              ? reply->error->message
                              : "something else");
        }
        accord__v1__envelope__free_unpacked(reply, NULL);
        return ok ? ms : -1;
    }
}

/* One pass of a question: pages at after_seq = head * (i + shift) / pages, shift
 * 0 or 1/2. */
static json_t *s_question(client_t *client, const question_t *q, int pages, uint64_t head,
                          bool shift, uint64_t *id, int *fatal)
{
    double *ms = calloc((size_t)pages + 1, sizeof(double));
    if (ms == NULL) {
        abort();
    }
    int answered = 0;
    int errors = 0;
    size_t rows_total = 0;
    bool said = false;
    for (int i = 0; i < pages && *fatal == 0; i++) {
        size_t rows = 0;
        uint64_t after = (head * (2 * (uint64_t)i + (shift ? 1 : 0))) / (2 * (uint64_t)pages);
        double t = s_page(client, q, after, ++*id, &rows, &said, fatal);
        if (t < 0) {
            errors++;
            continue;
        }
        ms[answered++] = t;
        rows_total += rows;
    }
    json_t *out;
    if (answered == 0) {
        out = json_pack("{s:i, s:i}", "pages", 0, "errors", errors);
    } else {
        qsort(ms, (size_t)answered, sizeof(double), s_cmp);
        out = json_pack("{s:f, s:f, s:f, s:i, s:f, s:i, s:b}", "p50", ms[answered / 2], "p90",
                        ms[answered * 9 / 10], "max", ms[answered - 1], "pages", answered,
                        "rows_per_page", (double)rows_total / answered, "errors", errors,
                        "payloads", q->payloads);
    }
    free(ms);
    return out;
}

#define QUESTIONS 3

/* Every question, one after the other, each pages times. */
static json_t *s_pass(client_t *client, const question_t questions[QUESTIONS], int pages,
                      uint64_t head, bool shift, uint64_t *id, int *fatal)
{
    json_t *pass = json_object();
    for (size_t i = 0; i < QUESTIONS; i++) {
        json_object_set_new(pass, questions[i].name,
                            s_question(client, &questions[i], pages, head, shift, id, fatal));
    }
    return pass;
}

static uint64_t s_head(const char *conninfo)
{
    PGconn *db = PQconnectdb(conninfo);
    uint64_t head = 0;
    PGresult *res = PQexec(db, "SELECT coalesce(max(seq), 0) FROM accord_log");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        head = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    } else {
        (void)fprintf(stderr, "bench-audit: could not read the log's head: %s", PQerrorMessage(db));
    }
    PQclear(res);
    PQfinish(db);
    return head;
}

static void s_usage(FILE *out)
{
    (void)fprintf(out,
                  "usage: bench-audit --config DIR --db CONNINFO --child NHS_NUMBER\n"
                  "                   [--scenario NAME] [--pages N] [--agency ID] [--rule ID]\n"
                  "Connects as auditor " AUDITOR " (DIR/" AUDITOR ".yaml) and prints one JSON "
                  "line.\nExit: 0 done, 1 failed, 2 usage.\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        { "scenario", required_argument, NULL, 'n' }, { "config", required_argument, NULL, 'c' },
        { "db", required_argument, NULL, 'D' },       { "pages", required_argument, NULL, 'p' },
        { "agency", required_argument, NULL, 'a' },   { "child", required_argument, NULL, 'k' },
        { "rule", required_argument, NULL, 'r' },     { NULL, 0, NULL, 0 },
    };
    const char *scenario = "audit";
    const char *dir = NULL;
    const char *conninfo = NULL;
    const char *agency = "bench-recipient-1";
    const char *child = NULL;
    const char *rule = "bench-rule-3";
    int pages = 50;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'n':
            scenario = optarg;
            break;
        case 'c':
            dir = optarg;
            break;
        case 'D':
            conninfo = optarg;
            break;
        case 'p':
            pages = atoi(optarg);
            break;
        case 'a':
            agency = optarg;
            break;
        case 'k':
            child = optarg;
            break;
        case 'r':
            rule = optarg;
            break;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (dir == NULL || conninfo == NULL || child == NULL || pages < 1 || optind != argc) {
        s_usage(stderr);
        return 2;
    }
    char path[1024];
    (void)snprintf(path, sizeof(path), "%s/" AUDITOR ".yaml", dir);
    acc_agent_config_t config;
    acc_err_t err;
    if (acc_agent_config_load(&config, path, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench-audit: %s\n", err.msg);
        return 1;
    }
    client_t *client = NULL;
    if (client_open(&client, &config, false, &err) != ACC_OK ||
        client_hello(client, HELLO_TIMEOUT_MS, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench-audit: %s\n", err.msg);
        client_destroy(&client);
        acc_agent_config_clear(&config);
        return 1;
    }
    uint64_t head = s_head(conninfo);
    const question_t questions[QUESTIONS] = {
        { .name = "agency", .agency = agency },
        { .name = "subject", .child = child, .payloads = true },
        { .name = "rule", .rule = rule },
    };
    uint64_t id = 0;
    int fatal = 0;
    json_t *first = s_pass(client, questions, pages, head, false, &id, &fatal);
    json_t *answers = s_pass(client, questions, pages, head, true, &id, &fatal);
    json_t *obj = json_pack("{s:s, s:s, s:I, s:i, s:o, s:o}", "scenario", scenario, "transport",
                            "audit", "log_rows", (json_int_t)head, "page_rows", PAGE_ROWS,
                            "audit_first", first, "audit", answers);
    char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6));
    (void)printf("%s\n", text);
    free(text);
    json_decref(obj);
    client_destroy(&client);
    acc_agent_config_clear(&config);
    return fatal == 0 ? 0 : 1;
}
