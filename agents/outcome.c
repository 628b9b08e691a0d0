/* outcome.c - accord-agent outcome: a recipient reports what became of a share
 * it received (one from the command line, or NDJSON lines from stdin or a spool
 * directory) and writes each result as one JSON line */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"
#include "accord/logrow.h"
#include "accord/pbwipe.h"
#include "agent.h"
#include "report.h"
#include "spool.h"

typedef struct {
    const acc_agent_config_t *config;
    client_t *client; /* connected at the first report */
    int64_t timeout_ms;
    uint64_t next_id; /* correlation ids */
    bool refused;     /* some report was refused */
} outcome_t;

static bool s_is_uuid(const char *text)
{
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    acc_err_t ignored;
    return acc_uuid_parse(id, text, &ignored) == ACC_OK;
}

/* The result line for the broker's answer: its OutcomeResult, or an Error
 * answering the request (a broker that does not take outcomes says
 * UNKNOWN_MESSAGE). */
static json_t *s_answer_json(const report_t *r, const Accord__V1__Envelope *env)
{
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        return report_result_json(report_share_id(r), report_status(r), env->error->code,
                                  env->error->message, NULL, 0);
    }
    const Accord__V1__OutcomeResult *res = env->outcome_result;
    bool ok = res->code == ACCORD__V1__ERROR_CODE__OK;
    if (ok && !s_is_uuid(res->outcome_id)) {
        return report_result_json(
            report_share_id(r), report_status(r), ACCORD__V1__ERROR_CODE__INTERNAL,
            "the broker answered with an outcome id that is not a uuid", NULL, 0);
    }
    return report_result_json(report_share_id(r), report_status(r), res->code, res->reason,
                              ok ? res->outcome_id : NULL, res->seq);
}

/* Sends one report and waits for its answer: EXIT_SUCCESS with *result, or
 * the exit status to stop with. */
static int s_report(outcome_t *o, const report_t *r, json_t **result)
{
    int64_t deadline = acc_now_ms() + o->timeout_ms;
    if (o->client == NULL) {
        int status = agent_connect_until(&o->client, o->config, false, deadline);
        if (status != EXIT_SUCCESS) {
            return status;
        }
    }
    Accord__V1__Outcome msg = ACCORD__V1__OUTCOME__INIT;
    report_outcome(r, &msg);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = ++o->next_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_OUTCOME;
    env.outcome = &msg;
    Accord__V1__Envelope *answer = NULL;
    /* the broker answers the same status on the same share with its first
     * result, so a report whose answer was lost is sent again */
    int status = agent_ask(o->client, &env, ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT, true,
                           deadline, &answer);
    if (status != EXIT_SUCCESS) {
        return status;
    }
    *result = s_answer_json(r, answer);
    const char *code = json_string_value(json_object_get(*result, "code"));
    acc_log_info("outcome", "share %s status %s: %s", report_share_id(r), report_status(r),
                 code != NULL ? code : "?");
    o->refused |= strcmp(json_string_value(json_object_get(*result, "result")), "ok") != 0;
    accord__v1__envelope__free_unpacked(answer, acc_pb_wiping_allocator());
    return EXIT_SUCCESS;
}

static int s_print(json_t *obj)
{
    if (agent_print_json(obj) != 0) {
        acc_log_error("outcome", "could not write a result to stdout: %s", strerror(errno));
        return EXIT_OUTPUT;
    }
    return EXIT_SUCCESS;
}

static int s_one(outcome_t *o, const agent_args_t *args)
{
    report_t *r = NULL;
    acc_err_t err;
    if (args->status == NULL) {
        (void)fprintf(stderr, "accord-agent outcome: --share needs --status\n");
        return EXIT_USAGE;
    }
    if (report_new(&r, args->share, args->status, args->fields, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-agent outcome: %s\n", err.msg);
        return EXIT_USAGE;
    }
    json_t *result = NULL;
    int status = s_report(o, r, &result);
    report_destroy(&r);
    if (status == EXIT_SUCCESS) {
        status = s_print(result);
    }
    return status;
}

static bool s_is_blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n') {
            return false;
        }
    }
    return true;
}

/* One NDJSON line's result (yours), or NULL with *status the exit status to
 * stop with. */
static json_t *s_line_result(outcome_t *o, uint64_t line, const char *text, size_t len, int *status)
{
    report_t *r = NULL;
    acc_err_t err;
    json_t *result = NULL;
    *status = EXIT_SUCCESS;
    if (report_from_line(&r, text, len, &err) != ACC_OK) {
        result = json_pack("{s:s, s:s, s:s}", "result", "refused", "code", "INVALID_INPUT",
                           "reason", err.msg);
        o->refused = true;
    } else {
        *status = s_report(o, r, &result);
        report_destroy(&r);
    }
    if (*status != EXIT_SUCCESS) {
        acc_log_error("outcome", "line %llu has no result; stopping", (unsigned long long)line);
        return NULL;
    }
    json_object_set_new(result, "line", json_integer((json_int_t)line));
    return result;
}

/* One line of stdin: its result printed, or the exit status to stop with. */
static int s_line(outcome_t *o, uint64_t line, const char *text, size_t len)
{
    int status = EXIT_SUCCESS;
    json_t *result = s_line_result(o, line, text, len, &status);
    return result != NULL ? s_print(result) : status;
}

static int s_stream(outcome_t *o)
{
    char *buf = NULL;
    size_t cap = 0;
    uint64_t line = 0;
    int status = EXIT_SUCCESS;
    while (status == EXIT_SUCCESS && !agent_stop) {
        errno = 0;
        ssize_t n = getline(&buf, &cap, stdin);
        if (n < 0) {
            if (errno != 0) {
                acc_log_error("outcome", "could not read stdin: %s", strerror(errno));
                status = EXIT_USAGE;
            }
            break;
        }
        line++;
        if (!s_is_blank(buf, (size_t)n)) {
            status = s_line(o, line, buf, (size_t)n);
        }
    }
    free(buf);
    return status == EXIT_SUCCESS && agent_stop ? EXIT_CONNECT : status;
}

/* ---- a spool directory ---- */

/* Writes obj (its reference taken) as one line of out; false if it could not. */
static bool s_write_line(FILE *out, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    bool ok = text != NULL && fprintf(out, "%s\n", text) > 0 && fflush(out) == 0;
    free(text);
    return ok;
}

/* A result in done/.NAME.results.tmp and, when refused, where and why (never the
 * line itself: it may be anything at all) in rejected/.NAME.tmp. */
static bool s_spool_result(spool_file_t *file, json_t *result, size_t *refused)
{
    const char *verdict = json_string_value(json_object_get(result, "result"));
    bool ok = true;
    if (verdict == NULL || strcmp(verdict, "ok") != 0) {
        (*refused)++;
        ok = s_write_line(file->rejected,
                          json_pack("{s:O?, s:O?, s:O?}", "line", json_object_get(result, "line"),
                                    "code", json_object_get(result, "code"), "reason",
                                    json_object_get(result, "reason")));
    }
    return s_write_line(file->results, result) && ok;
}

/* Reports every line of file->in: EXIT_SUCCESS with *complete when all have a
 * result, EXIT_SUCCESS without it at a stop, else the exit status to stop with. */
static int s_spool_lines(outcome_t *o, spool_file_t *file, size_t *refused, bool *complete)
{
    char *buf = NULL;
    size_t cap = 0;
    uint64_t line = 0;
    int status = EXIT_SUCCESS;
    ssize_t n = 0;
    while (status == EXIT_SUCCESS && !agent_stop && (n = getline(&buf, &cap, file->in)) >= 0) {
        line++;
        if (s_is_blank(buf, (size_t)n)) {
            continue;
        }
        json_t *result = s_line_result(o, line, buf, (size_t)n, &status);
        if (result != NULL && !s_spool_result(file, result, refused)) {
            acc_log_error("outcome", "could not write results: %s", strerror(errno));
            status = EXIT_OUTPUT;
        }
    }
    *complete = status == EXIT_SUCCESS && n < 0 && !ferror(file->in);
    if (status == EXIT_SUCCESS && ferror(file->in)) {
        acc_log_error("outcome", "could not read an incoming file: %s", strerror(errno));
        status = EXIT_OUTPUT;
    }
    acc_pb_free_wiped(buf); /* the last line read, an outcome's fields */
    return status;
}

static int s_spool_file(outcome_t *o, spool_t *spool, const char *name)
{
    spool_file_t file;
    int taken = spool_take(spool, name, &file);
    if (taken != SPOOL_TAKEN) {
        return taken == SPOOL_SKIPPED ? EXIT_SUCCESS : EXIT_OUTPUT;
    }
    acc_log_info("outcome", "reporting %s", name);
    size_t refused = 0;
    bool complete = false;
    int status = s_spool_lines(o, &file, &refused, &complete);
    if (status == EXIT_SUCCESS && complete) {
        status = spool_commit(spool, &file, refused > 0) ? EXIT_SUCCESS : EXIT_OUTPUT;
        if (status == EXIT_SUCCESS) {
            acc_log_notice("outcome", "%s done: %zu refused", name, refused);
        }
    }
    spool_release(&file);
    return status;
}

static int s_spool_each(void *ctx, spool_t *spool, const char *name)
{
    return s_spool_file(ctx, spool, name);
}

static int s_spool_idle(void *ctx, int64_t ms)
{
    (void)ctx;
    acc_sleep_ms(ms);
    return EXIT_SUCCESS;
}

static int s_spool(outcome_t *o, const char *dir, bool once)
{
    spool_t *spool = NULL;
    acc_err_t err;
    if (spool_open(&spool, dir, o->config->max_spool_file_bytes, "outcome", &err) != ACC_OK) {
        acc_log_error("outcome", "%s", err.msg);
        return EXIT_OUTPUT;
    }
    acc_log_notice("outcome", "watching %s", spool_incoming(spool));
    int status = spool_watch(spool, once, s_spool_each, s_spool_idle, o);
    acc_log_notice("outcome", "spool stopped");
    spool_destroy(&spool);
    return status;
}

int outcome_run(const acc_agent_config_t *config, const agent_args_t *args)
{
    outcome_t o = { .config = config };
    o.timeout_ms = 1000 * (args->timeout_s > 0 ? args->timeout_s : AGENT_TIMEOUT_DEFAULT_S);
    int status = EXIT_SUCCESS;
    if (args->spool != NULL) {
        /* refusals are answered in DIR/rejected, as the publisher's are */
        status = s_spool(&o, args->spool, args->once);
        o.refused = false;
    } else {
        status = args->share != NULL ? s_one(&o, args) : s_stream(&o);
    }
    client_destroy(&o.client);
    if (status == EXIT_SUCCESS && o.refused) {
        status = EXIT_REFUSED;
    }
    return status;
}

void outcome_usage(FILE *out)
{
    (void)fputs(
        "usage: accord-agent outcome --config FILE --share ID --status STATUS\n"
        "                            [--field NAME=TEXT ...] [--field NAME:=VALUE ...]\n"
        "                            [--timeout SECONDS]\n"
        "       accord-agent outcome --config FILE [--timeout SECONDS] < outcomes.ndjson\n"
        "       accord-agent outcome --config FILE --spool DIR [--once] [--timeout SECONDS]\n"
        "\n"
        "outcome    reports what became of a record shared with this agency (a referral's\n"
        "           outcome), when the agreement's rule for it takes outcomes. ID is the\n"
        "           share id the record was delivered with (\"share_id\" in the delivered\n"
        "           line, ACCORD_SHARE_ID for --exec). STATUS is received, accepted,\n"
        "           declined or closed, as far as the rule allows them, and only forward:\n"
        "           received, then accepted or declined, then closed.\n"
        "           --field NAME=TEXT gives a field as text (dates and enum values are\n"
        "           text); --field NAME:=VALUE a number or true/false (HTTPie's way),\n"
        "           e.g. --field decision_date=2026-11-21 --field visits:=2. Only the\n"
        "           fields the rule lists under outcomes are taken.\n"
        "           Prints the result as one JSON line:\n"
        "           {\"share_id\",\"status\",\"result\":\"ok\"|\"refused\",\"code\",\"reason\",\n"
        "            \"outcome_id\",\"seq\"} (outcome_id and seq when logged). Codes when\n"
        "           refused: UNKNOWN_SHARE, NOT_RECIPIENT, STATUS_NOT_ALLOWED,\n"
        "           STATUS_OUT_OF_ORDER, INVALID_FIELD, AGREEMENT_NOT_IN_FORCE, MALFORMED.\n"
        "           Reporting the status a share already has is answered ok with the\n"
        "           first outcome_id, so running it again is safe.\n"
        "           Without --share, reads NDJSON from stdin, one outcome a line:\n"
        "           {\"share_id\":\"...\",\"status\":\"accepted\",\"fields\":{\"visits\":2}}\n"
        "           and prints one result line for each, with \"line\":N (a line that is\n"
        "           not an outcome: \"code\":\"INVALID_INPUT\"). Blank lines are skipped.\n"
        "           With --spool DIR: watches DIR/incoming for files of such lines (write\n"
        "           them under a name starting with '.' or ending in .tmp, then rename),\n"
        "           reports every line, writes the result lines to DIR/done/NAME.results\n"
        "           and the refused ones (line, code, reason; never the line itself) to\n"
        "           DIR/rejected/NAME, then moves the file to DIR/done/NAME. Files are\n"
        "           taken as publish --spool takes them (a link, a FIFO, another user's\n"
        "           file or one over max_spool_file_bytes is moved unread to\n"
        "           DIR/rejected/NAME.unread). A file interrupted by a crash or a stop\n"
        "           stays in incoming/ and is reported again in full: a repeated outcome\n"
        "           is answered ok with its first outcome_id. --once stops when\n"
        "           incoming/ is empty. Refusals go to DIR/rejected, not the exit status.\n"
        "           While the broker is unreachable or answers UNAVAILABLE the same\n"
        "           outcome is sent again, for up to --timeout SECONDS (default 30) each;\n"
        "           then it stops with exit 69, and lines not yet printed were not\n"
        "           reported (or their answer was lost: sending them again is safe).\n"
        "           Exit 0 when every outcome is logged (with --spool: every file\n"
        "           done), 1 when any was refused (not with --spool).\n",
        out);
}
