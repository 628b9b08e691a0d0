/* publish.c - accord-agent publish: NDJSON records from stdin, a file or a spool
 * directory to the broker, each answered by exactly one result */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "accord/log.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "agent.h"
#include "spool.h"

#define RESEND_AFTER_MS 10000 /* an unanswered publish is sent again (idempotent) */

typedef struct {
    uint64_t id;   /* correlation id: unique for the life of the process */
    uint64_t line; /* where the record is in the input in hand */
    char *record_id;
    char *text;     /* spool: the record as this agent encodes it, for DIR/rejected */
    uint8_t *frame; /* the packed Publish, kept to send again */
    size_t frame_len;
    int64_t sent_at_ms;
    int64_t resend_at_ms; /* 0 = waiting for an answer */
    int64_t backoff_ms;
    bool used;
} pending_t;

typedef struct {
    client_t *client;
    FILE *in;
    pending_t *pending;
    size_t window;
    size_t *by_id;          /* open-addressing map: correlation id -> pending slot + 1, 0 = empty */
    size_t by_id_cap;       /* a power of two, at least twice the window */
    uint64_t next_id;       /* the next correlation id: never reused, never reset per file */
    size_t ignored_settled; /* answers for ids already settled (late or duplicate) */
    size_t ignored_unknown; /* answers for ids this process never sent */
    size_t max_message_bytes; /* the broker's limit as configured for this agent */
    size_t in_flight;
    uint64_t line;
    bool eof;
    size_t accepted;
    size_t refused;
    bool output_failed;
    FILE *results;  /* spool: results of the file in hand, else NULL for stdout */
    FILE *rejected; /* spool: refused records of the file in hand */
} publisher_t;

/* ---- results ---- */

static int s_write_line(FILE *out, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    int rc = text != NULL && fprintf(out, "%s\n", text) > 0 && fflush(out) == 0 ? 0 : -1;
    free(text);
    return rc;
}

/* DIR/rejected holds only bytes this agent produced: a refused record as the
 * agent encodes it from the fields it parsed, or for a line that did not parse,
 * where it was, its length and the SHA-256 of its bytes without the line end,
 * never the line itself: a line that is not a record may be anything at all. */
static void s_reject_write(publisher_t *pub, json_t *obj)
{
    if (s_write_line(pub->rejected, obj) != 0) {
        pub->output_failed = true;
    }
}

/* record_json: the refused record as s_record_text encoded it. */
static void s_reject_record(publisher_t *pub, uint64_t line, const char *record_json,
                            const char *code, const char *reason)
{
    if (pub->rejected == NULL) {
        return;
    }
    json_t *obj =
        json_pack("{s:I, s:s, s:s}", "line", (json_int_t)line, "code", code, "reason", reason);
    json_t *record = record_json != NULL ? json_loads(record_json, 0, NULL) : NULL;
    json_object_set_new(obj, "record", record != NULL ? record : json_null());
    s_reject_write(pub, obj);
}

/* bytes, len: the line that did not parse, without its line end. */
static void s_reject_unparsed(publisher_t *pub, uint64_t line, const char *bytes, size_t len,
                              const char *reason)
{
    if (pub->rejected == NULL) {
        return;
    }
    uint8_t digest[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(digest, (const uint8_t *)bytes, len);
    (void)sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
    s_reject_write(pub, json_pack("{s:I, s:I, s:s, s:s, s:s}", "line", (json_int_t)line, "bytes",
                                  (json_int_t)len, "sha256", hex, "code", "INVALID_INPUT", "reason",
                                  reason));
}

/* The record as this agent encodes it (compact NDJSON), for DIR/rejected. */
static char *s_record_text(const Accord__V1__ChildRecord *rec)
{
    json_t *obj = acc_record_to_json(rec);
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

static void s_emit(publisher_t *pub, json_t *result)
{
    if (s_write_line(pub->results != NULL ? pub->results : stdout, result) != 0) {
        pub->output_failed = true;
    }
}

static void s_invalid(publisher_t *pub, uint64_t line, const char *bytes, size_t len,
                      const char *reason)
{
    s_emit(pub, json_pack("{s:I, s:s, s:s, s:s}", "line", (json_int_t)line, "result", "refused",
                          "code", "INVALID_INPUT", "reason", reason));
    s_reject_unparsed(pub, line, bytes, len, reason);
    pub->refused++;
}

/* ---- correlation ids: every record sent gets its own, answers find it here ---- */

static size_t s_home(const publisher_t *pub, uint64_t id)
{
    return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (pub->by_id_cap - 1);
}

static void s_map_init(publisher_t *pub)
{
    pub->by_id_cap = 16;
    while (pub->by_id_cap < 2 * pub->window) {
        pub->by_id_cap *= 2;
    }
    pub->by_id = acc_xcalloc(pub->by_id_cap, sizeof(*pub->by_id));
    pub->next_id = 1;
}

static void s_map_put(publisher_t *pub, const pending_t *p)
{
    size_t i = s_home(pub, p->id);
    while (pub->by_id[i] != 0) {
        i = (i + 1) & (pub->by_id_cap - 1);
    }
    pub->by_id[i] = (size_t)(p - pub->pending) + 1;
}

/* The map's index of id, or by_id_cap when it is not pending. */
static size_t s_map_index(const publisher_t *pub, uint64_t id)
{
    for (size_t i = s_home(pub, id); pub->by_id[i] != 0; i = (i + 1) & (pub->by_id_cap - 1)) {
        if (pub->pending[pub->by_id[i] - 1].id == id) {
            return i;
        }
    }
    return pub->by_id_cap;
}

static pending_t *s_find(publisher_t *pub, uint64_t id)
{
    size_t i = s_map_index(pub, id);
    return i == pub->by_id_cap ? NULL : &pub->pending[pub->by_id[i] - 1];
}

/* Linear probing without tombstones: the entries after the hole that would no
 * longer be found from their home slot move back into it. */
static void s_map_remove(publisher_t *pub, uint64_t id)
{
    size_t mask = pub->by_id_cap - 1;
    size_t hole = s_map_index(pub, id);
    acc_assert(hole != pub->by_id_cap);
    pub->by_id[hole] = 0;
    for (size_t i = (hole + 1) & mask; pub->by_id[i] != 0; i = (i + 1) & mask) {
        size_t home = s_home(pub, pub->pending[pub->by_id[i] - 1].id);
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            pub->by_id[hole] = pub->by_id[i];
            pub->by_id[i] = 0;
            hole = i;
        }
    }
}

/* ---- the window of records in flight ---- */

static pending_t *s_slot(publisher_t *pub)
{
    for (size_t i = 0; i < pub->window; i++) {
        if (!pub->pending[i].used) {
            return &pub->pending[i];
        }
    }
    return NULL;
}

static acc_rc_t s_send_pending(publisher_t *pub, pending_t *p, acc_err_t *err)
{
    p->sent_at_ms = acc_now_ms();
    p->resend_at_ms = 0;
    return client_send_raw(pub->client, p->frame, p->frame_len, err);
}

static acc_rc_t s_submit(publisher_t *pub, Accord__V1__ChildRecord *rec, acc_err_t *err)
{
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = rec;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = pub->next_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    acc_err_t why;
    Accord__V1__ErrorCode code = acc_validate_publish(&env, pub->max_message_bytes, &why);
    if (code != ACCORD__V1__ERROR_CODE__OK) {
        /* the broker would refuse it for the same reason: it never leaves */
        s_emit(pub, json_pack("{s:I, s:s, s:s, s:s, s:s}", "line", (json_int_t)pub->line,
                              "record_id", rec->record_id, "result", "refused", "code",
                              acc_pb_code_name(code), "reason", why.msg));
        char *text = pub->rejected != NULL ? s_record_text(rec) : NULL;
        s_reject_record(pub, pub->line, text, acc_pb_code_name(code), why.msg);
        acc_pb_free_wiped(text);
        pub->refused++;
        return ACC_OK;
    }
    pending_t *p = s_slot(pub);
    acc_assert(p != NULL);
    p->used = true;
    p->id = pub->next_id++;
    p->line = pub->line;
    p->record_id = acc_xstrdup(rec->record_id);
    p->text = pub->rejected != NULL ? s_record_text(rec) : NULL;
    p->frame_len = accord__v1__envelope__get_packed_size(&env);
    p->frame = acc_xmalloc(p->frame_len);
    (void)accord__v1__envelope__pack(&env, p->frame);
    p->backoff_ms = AGENT_RETRY_MIN_MS;
    s_map_put(pub, p);
    pub->in_flight++;
    return s_send_pending(pub, p, err);
}

/* Reads input lines and sends their records until the window is full or input ends. */
static acc_rc_t s_fill_window(publisher_t *pub, acc_err_t *err)
{
    char *buf = NULL;
    size_t cap = 0;
    acc_rc_t rc = ACC_OK;
    while (rc == ACC_OK && !pub->eof && pub->in_flight < pub->window) {
        ssize_t n = getline(&buf, &cap, pub->in);
        if (n < 0) {
            pub->eof = true;
            break;
        }
        pub->line++;
        if (strspn(buf, " \t\r\n") == (size_t)n) {
            continue;
        }
        size_t len = (size_t)n;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
            buf[--len] = '\0';
        }
        Accord__V1__ChildRecord *rec = NULL;
        acc_err_t perr;
        if (len > ACC_RECORD_MAX_LINE) {
            s_invalid(pub, pub->line, buf, len, "line is longer than 1 MiB");
        } else if (acc_record_from_json(&rec, buf, len, &perr) != ACC_OK) {
            char reason[ACC_ERR_MSG_MAX + 32];
            (void)snprintf(reason, sizeof(reason), "line %llu: %s", (unsigned long long)pub->line,
                           perr.msg);
            acc_log_warn("publish", "%s", reason);
            s_invalid(pub, pub->line, buf, len, reason);
        } else {
            rc = s_submit(pub, rec, err);
            acc_record_free(&rec);
        }
    }
    acc_pb_free_wiped(buf); /* the last line read, a record's NDJSON */
    return rc;
}

static void s_release(publisher_t *pub, pending_t *p)
{
    s_map_remove(pub, p->id);
    free(p->record_id);
    acc_pb_free_wiped(p->text);  /* the record's NDJSON line */
    acc_pb_free_wiped(p->frame); /* it held a record */
    memset(p, 0, sizeof(*p));
    pub->in_flight--;
}

static void s_release_all(publisher_t *pub)
{
    for (size_t i = 0; i < pub->window; i++) {
        if (pub->pending[i].used) {
            s_release(pub, &pub->pending[i]);
        }
    }
}

static void s_retry_later(pending_t *p, const char *why)
{
    p->resend_at_ms = acc_now_ms() + p->backoff_ms;
    acc_log_warn("publish", "line %llu not accepted yet (%s); retrying in %lld ms",
                 (unsigned long long)p->line, why, (long long)p->backoff_ms);
    p->backoff_ms = p->backoff_ms * 2 > AGENT_RETRY_MAX_MS ? AGENT_RETRY_MAX_MS : p->backoff_ms * 2;
}

static json_t *s_result_json(const pending_t *p, const Accord__V1__PublishResult *r)
{
    bool ok = r->code == ACCORD__V1__ERROR_CODE__OK;
    json_t *obj = json_pack("{s:I, s:s, s:s}", "line", (json_int_t)p->line, "record_id",
                            p->record_id, "result", ok ? "accepted" : "refused");
    if (!ok) {
        json_object_set_new(obj, "code", json_string(acc_pb_code_name(r->code)));
        json_object_set_new(obj, "reason", json_string(r->reason));
        return obj;
    }
    json_object_set_new(obj, "seq", json_integer((json_int_t)r->seq));
    json_t *recipients = json_array();
    for (size_t i = 0; i < r->n_recipients; i++) {
        json_t *rules = json_array();
        for (size_t j = 0; j < r->recipients[i]->n_rule_ids; j++) {
            json_array_append_new(rules, json_string(r->recipients[i]->rule_ids[j]));
        }
        json_array_append_new(recipients,
                              json_pack("{s:s, s:s, s:o}", "agency", r->recipients[i]->agency_id,
                                        "share_id", r->recipients[i]->share_id, "rules", rules));
    }
    json_object_set_new(obj, "recipients", recipients);
    json_t *withheld = json_array();
    for (size_t i = 0; i < r->n_withheld; i++) {
        json_array_append_new(withheld, json_pack("{s:s, s:s}", "agency", r->withheld[i]->agency_id,
                                                  "reason", r->withheld[i]->reason));
    }
    json_object_set_new(obj, "withheld", withheld);
    return obj;
}

static void s_refused(publisher_t *pub, pending_t *p, Accord__V1__ErrorCode code,
                      const char *reason)
{
    s_emit(pub, json_pack("{s:I, s:s, s:s, s:s, s:s}", "line", (json_int_t)p->line, "record_id",
                          p->record_id, "result", "refused", "code", acc_pb_code_name(code),
                          "reason", reason));
    s_reject_record(pub, p->line, p->text, acc_pb_code_name(code), reason);
    pub->refused++;
    s_release(pub, p);
}

/* An answer that settles nothing: its record was settled already (a late answer
 * to a send repeated after 10 s, or the broker answered twice), or the id was
 * never ours. Counted, never applied to another record. */
static void s_ignore(publisher_t *pub, const Accord__V1__Envelope *env)
{
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        acc_log_warn("publish", "broker error: %s (%s)", env->error->message,
                     acc_pb_code_name(env->error->code));
    }
    bool settled = env->correlation_id >= 1 && env->correlation_id < pub->next_id;
    if (settled) {
        pub->ignored_settled++;
    } else {
        pub->ignored_unknown++;
    }
    acc_log_info("publish", "ignored an answer for correlation id %llu: %s",
                 (unsigned long long)env->correlation_id,
                 settled ? "its record was settled already" : "no record was sent with it");
}

static void s_on_answer(publisher_t *pub, const Accord__V1__Envelope *env)
{
    pending_t *p = s_find(pub, env->correlation_id);
    if (p == NULL) {
        s_ignore(pub, env);
        return;
    }
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        if (env->error->code == ACCORD__V1__ERROR_CODE__HELLO_REQUIRED) {
            s_retry_later(p, "the broker restarted or forgot this connection");
            return;
        }
        s_refused(pub, p, env->error->code, env->error->message);
        return;
    }
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT) {
        return;
    }
    const Accord__V1__PublishResult *r = env->publish_result;
    if (r->code == ACCORD__V1__ERROR_CODE__UNAVAILABLE) {
        s_retry_later(p, r->reason);
        return;
    }
    if (r->code != ACCORD__V1__ERROR_CODE__OK) {
        s_refused(pub, p, r->code, r->reason);
        return;
    }
    pub->accepted++;
    s_emit(pub, s_result_json(p, r));
    s_release(pub, p);
}

static void s_resend_due(publisher_t *pub)
{
    int64_t now = acc_now_ms();
    for (size_t i = 0; i < pub->window; i++) {
        pending_t *p = &pub->pending[i];
        acc_err_t err;
        if (p->used && p->resend_at_ms != 0 && p->resend_at_ms <= now &&
            s_send_pending(pub, p, &err) != ACC_OK) {
            s_retry_later(p, err.msg);
        }
        if (p->used && p->resend_at_ms == 0 && now - p->sent_at_ms > RESEND_AFTER_MS) {
            /* Answers can be lost with a connection; the broker answers a repeat
             * with the first result, so sending again is safe. */
            acc_log_warn("publish", "no answer for line %llu yet; sending it again",
                         (unsigned long long)p->line);
            if (s_send_pending(pub, p, &err) != ACC_OK) {
                s_retry_later(p, err.msg);
            }
        }
    }
}

/* Runs until every record of pub->in has a result (true) or a stop (false). */
static int s_publish_loop(publisher_t *pub, bool *complete)
{
    acc_err_t err;
    *complete = false;
    while (!agent_stop && !pub->output_failed) {
        if (s_fill_window(pub, &err) != ACC_OK) {
            acc_log_warn("publish", "%s", err.msg);
        }
        if (pub->eof && pub->in_flight == 0) {
            *complete = true;
            break;
        }
        Accord__V1__Envelope *env = NULL;
        acc_rc_t rc = client_recv(pub->client, &env, 200, &err);
        if (rc == ACC_ERR_PERMISSION) {
            return agent_stop_refused(rc, &err);
        }
        if (rc == ACC_OK) {
            s_on_answer(pub, env);
            accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
        }
        s_resend_due(pub);
    }
    if (pub->output_failed) {
        acc_log_error("publish", "could not write results: %s", strerror(errno));
        return EXIT_OUTPUT;
    }
    return EXIT_SUCCESS;
}

static void s_start_input(publisher_t *pub, FILE *in)
{
    pub->in = in;
    pub->line = 0;
    pub->eof = false;
    pub->accepted = 0;
    pub->refused = 0;
}

/* ---- stdin or one file ---- */

static int s_publish_stream(publisher_t *pub, const char *input)
{
    FILE *in = stdin;
    if (input != NULL && strcmp(input, "-") != 0 && (in = fopen(input, "r")) == NULL) {
        acc_log_error("publish", "could not open input \"%s\": %s", input, strerror(errno));
        return EXIT_USAGE;
    }
    s_start_input(pub, in);
    bool complete = false;
    int status = s_publish_loop(pub, &complete);
    acc_log_notice("publish",
                   "done: %zu accepted, %zu refused, %zu unanswered; answers ignored: %zu late or "
                   "duplicate, %zu unknown",
                   pub->accepted, pub->refused, pub->in_flight, pub->ignored_settled,
                   pub->ignored_unknown);
    if (in != stdin) {
        (void)fclose(in);
    }
    if (status == EXIT_SUCCESS && !complete) {
        status = EXIT_CONNECT;
    }
    return status != EXIT_SUCCESS ? status : pub->refused > 0 ? EXIT_REFUSED : EXIT_SUCCESS;
}

/* ---- a spool directory ---- */

/* Sends every record of file (incoming/NAME, in hand) and commits its results. */
static int s_spool_send(publisher_t *pub, const spool_t *spool, spool_file_t *file,
                        const char *name)
{
    acc_log_info("publish", "sending %s", name);
    s_start_input(pub, file->in);
    pub->results = file->results;
    pub->rejected = file->rejected;
    bool complete = false;
    int status = s_publish_loop(pub, &complete);
    pub->results = pub->rejected = NULL;
    if (status == EXIT_SUCCESS && complete) {
        status = spool_commit(spool, file, pub->refused > 0) ? EXIT_SUCCESS : EXIT_OUTPUT;
    }
    if (status == EXIT_SUCCESS && complete) {
        acc_log_notice("publish",
                       "%s done: %zu accepted, %zu refused; answers ignored: %zu late or "
                       "duplicate, %zu unknown",
                       name, pub->accepted, pub->refused, pub->ignored_settled,
                       pub->ignored_unknown);
    }
    return status;
}

static int s_spool_file(publisher_t *pub, spool_t *spool, const char *name)
{
    spool_file_t file;
    int taken = spool_take(spool, name, &file);
    if (taken != SPOOL_TAKEN) {
        return taken == SPOOL_SKIPPED ? EXIT_SUCCESS : EXIT_OUTPUT;
    }
    int status = s_spool_send(pub, spool, &file, name);
    spool_release(&file);
    s_release_all(pub);
    return status;
}

/* Waits for new files while keeping the connection alive; EXIT_NOPERM when the
 * broker refuses this agency meanwhile. */
static int s_idle(publisher_t *pub, int64_t ms)
{
    Accord__V1__Envelope *env = NULL;
    acc_err_t err;
    acc_rc_t rc = client_recv(pub->client, &env, (int)ms, &err);
    if (rc == ACC_OK) {
        s_on_answer(pub, env); /* a late answer: nothing is pending, so it is counted */
        accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
    }
    return rc == ACC_ERR_PERMISSION ? agent_stop_refused(rc, &err) : EXIT_SUCCESS;
}

static int s_spool_each(void *ctx, spool_t *spool, const char *name)
{
    return s_spool_file(ctx, spool, name);
}

static int s_spool_idle(void *ctx, int64_t ms)
{
    return s_idle(ctx, ms);
}

static int s_publish_spool(publisher_t *pub, const char *dir, int64_t max_file_bytes, bool once)
{
    spool_t *spool = NULL;
    acc_err_t err;
    if (spool_open(&spool, dir, max_file_bytes, "publish", &err) != ACC_OK) {
        acc_log_error("publish", "%s", err.msg);
        return EXIT_OUTPUT;
    }
    acc_log_notice("publish", "watching %s", spool_incoming(spool));
    int status = spool_watch(spool, once, s_spool_each, s_spool_idle, pub);
    acc_log_notice("publish", "spool stopped; answers ignored: %zu late or duplicate, %zu unknown",
                   pub->ignored_settled, pub->ignored_unknown);
    spool_destroy(&spool);
    return status;
}

/* Standard input as the source of records, unless it cannot be one: a service
 * (systemd gives it /dev/null, or its key) would read nothing, exit 0 and be
 * restarted for ever. A pipe, a file or a terminal is a real source. */
static bool s_stdin_is_input(const acc_agent_config_t *config, const char **why)
{
    struct stat in;
    struct stat null;
    if (strcmp(config->curve_secret_key, "stdin") == 0) {
        *why = "standard input carries the agent's key (curve_secret_key: stdin)";
        return false;
    }
    if (fstat(STDIN_FILENO, &in) != 0) {
        *why = "standard input is closed";
        return false;
    }
    if (S_ISCHR(in.st_mode) && stat("/dev/null", &null) == 0 && in.st_rdev == null.st_rdev) {
        *why = "standard input is /dev/null";
        return false;
    }
    return true;
}

int publish_run(const acc_agent_config_t *config, const agent_args_t *args)
{
    const char *spool = args->spool != NULL ? args->spool : config->publish_spool;
    if (args->input != NULL && spool[0] != '\0' && args->spool != NULL) {
        acc_log_error("publish", "--input and --spool cannot be used together");
        return EXIT_USAGE;
    }
    if (args->input != NULL) {
        spool = "";
    }
    const char *why = NULL;
    if (spool[0] == '\0' && args->input == NULL && !s_stdin_is_input(config, &why)) {
        /* EX_CONFIG: the unit's RestartPreventExitStatus stops the restart loop */
        acc_log_error("publish",
                      "publish has nothing to read: no spool (publish_spool in the config, or "
                      "--spool DIR), no --input FILE, and %s",
                      why);
        return EX_CONFIG;
    }
    publisher_t pub = { .window = (size_t)config->window,
                        .max_message_bytes = (size_t)config->max_message_bytes };
    int status = agent_connect(&pub.client, config, false);
    if (status == EXIT_SUCCESS) {
        pub.pending = acc_xcalloc(pub.window, sizeof(*pub.pending));
        s_map_init(&pub);
        status = spool[0] != '\0'
                     ? s_publish_spool(&pub, spool, config->max_spool_file_bytes, args->once)
                     : s_publish_stream(&pub, args->input);
        s_release_all(&pub);
        free(pub.by_id);
        free(pub.pending);
    }
    client_destroy(&pub.client);
    return status;
}
