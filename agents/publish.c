/* publish.c - accord-agent publish: NDJSON records from stdin, a file or a spool
 * directory to the broker, each answered by exactly one result */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/log.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "agent.h"

#define RESEND_AFTER_MS 10000 /* an unanswered publish is sent again (idempotent) */
#define SPOOL_SCAN_MS   500   /* how often an idle spool looks for new files */

typedef struct {
    uint64_t line; /* correlation id: the input line number */
    char *record_id;
    char *text;     /* the input line, for DIR/rejected */
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

/* A refused record goes to DIR/rejected as it was read, with the code and reason. */
static void s_reject(publisher_t *pub, uint64_t line, const char *text, const char *code,
                     const char *reason)
{
    if (pub->rejected == NULL) {
        return;
    }
    json_t *record = text != NULL ? json_loads(text, 0, NULL) : NULL;
    json_t *obj =
        json_pack("{s:I, s:s, s:s}", "line", (json_int_t)line, "code", code, "reason", reason);
    json_object_set_new(obj, record != NULL ? "record" : "text",
                        record != NULL ? record : json_string(text != NULL ? text : ""));
    if (s_write_line(pub->rejected, obj) != 0) {
        pub->output_failed = true;
    }
}

static void s_emit(publisher_t *pub, json_t *result)
{
    if (s_write_line(pub->results != NULL ? pub->results : stdout, result) != 0) {
        pub->output_failed = true;
    }
}

static void s_invalid(publisher_t *pub, uint64_t line, const char *text, const char *reason)
{
    s_emit(pub, json_pack("{s:I, s:s, s:s, s:s}", "line", (json_int_t)line, "result", "refused",
                          "code", "INVALID_INPUT", "reason", reason));
    s_reject(pub, line, text, "INVALID_INPUT", reason);
    pub->refused++;
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
    p->sent_at_ms = agent_now_ms();
    p->resend_at_ms = 0;
    return client_send_raw(pub->client, p->frame, p->frame_len, err);
}

static acc_rc_t s_submit(publisher_t *pub, Accord__V1__ChildRecord *rec, const char *text,
                         acc_err_t *err)
{
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = rec;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = pub->line;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    acc_err_t why;
    Accord__V1__ErrorCode code = acc_validate_publish(&env, pub->max_message_bytes, &why);
    if (code != ACCORD__V1__ERROR_CODE__OK) {
        /* the broker would refuse it for the same reason: it never leaves */
        s_emit(pub, json_pack("{s:I, s:s, s:s, s:s, s:s}", "line", (json_int_t)pub->line,
                              "record_id", rec->record_id, "result", "refused", "code",
                              acc_pb_code_name(code), "reason", why.msg));
        s_reject(pub, pub->line, text, acc_pb_code_name(code), why.msg);
        pub->refused++;
        return ACC_OK;
    }
    pending_t *p = s_slot(pub);
    acc_assert(p != NULL);
    p->used = true;
    p->line = pub->line;
    p->record_id = acc_xstrdup(rec->record_id);
    p->text = pub->rejected != NULL ? acc_xstrdup(text) : NULL;
    p->frame_len = accord__v1__envelope__get_packed_size(&env);
    p->frame = acc_xmalloc(p->frame_len);
    (void)accord__v1__envelope__pack(&env, p->frame);
    p->backoff_ms = AGENT_RETRY_MIN_MS;
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
            s_invalid(pub, pub->line, NULL, "line is longer than 1 MiB");
        } else if (acc_record_from_json(&rec, buf, len, &perr) != ACC_OK) {
            char reason[ACC_ERR_MSG_MAX + 32];
            (void)snprintf(reason, sizeof(reason), "line %llu: %s", (unsigned long long)pub->line,
                           perr.msg);
            acc_log_warn("publish", "%s", reason);
            s_invalid(pub, pub->line, buf, reason);
        } else {
            rc = s_submit(pub, rec, buf, err);
            acc_record_free(&rec);
        }
    }
    acc_pb_free_wiped(buf); /* the last line read, a record's NDJSON */
    return rc;
}

static pending_t *s_find(publisher_t *pub, uint64_t line)
{
    for (size_t i = 0; i < pub->window; i++) {
        if (pub->pending[i].used && pub->pending[i].line == line) {
            return &pub->pending[i];
        }
    }
    return NULL;
}

static void s_release(publisher_t *pub, pending_t *p)
{
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
    p->resend_at_ms = agent_now_ms() + p->backoff_ms;
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
    s_reject(pub, p->line, p->text, acc_pb_code_name(code), reason);
    pub->refused++;
    s_release(pub, p);
}

static void s_on_answer(publisher_t *pub, const Accord__V1__Envelope *env)
{
    pending_t *p = s_find(pub, env->correlation_id);
    if (p == NULL) {
        if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
            acc_log_warn("publish", "broker error: %s (%s)", env->error->message,
                         acc_pb_code_name(env->error->code));
        }
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
    int64_t now = agent_now_ms();
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
    acc_log_notice("publish", "done: %zu accepted, %zu refused, %zu unanswered", pub->accepted,
                   pub->refused, pub->in_flight);
    if (in != stdin) {
        (void)fclose(in);
    }
    if (status == EXIT_SUCCESS && !complete) {
        status = EXIT_CONNECT;
    }
    return status != EXIT_SUCCESS ? status : pub->refused > 0 ? EXIT_REFUSED : EXIT_SUCCESS;
}

/* ---- a spool directory ---- */

typedef struct {
    char *incoming;
    char *done;
    char *rejected;
} spool_t;

/* The agency's system writes a file under another name (a leading dot or a .tmp
 * ending) and renames it into incoming/ when it is complete. */
static bool s_is_ready(const char *name)
{
    size_t len = strlen(name);
    return name[0] != '.' && !(len > 4 && strcmp(name + len - 4, ".tmp") == 0);
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The ready files in incoming/, oldest name first; NULL-terminated. */
static char **s_list_incoming(const spool_t *spool, size_t *count)
{
    *count = 0;
    DIR *d = opendir(spool->incoming);
    if (d == NULL) {
        acc_log_error("publish", "could not read \"%s\": %s", spool->incoming, strerror(errno));
        return NULL;
    }
    size_t cap = 16;
    char **names = acc_xcalloc(cap, sizeof(char *));
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!s_is_ready(e->d_name)) {
            continue;
        }
        char *path = acc_xasprintf("%s/%s", spool->incoming, e->d_name);
        struct stat st;
        bool regular = stat(path, &st) == 0 && S_ISREG(st.st_mode);
        free(path);
        if (!regular) {
            continue;
        }
        if (*count + 1 >= cap) {
            cap *= 2;
            names = acc_xrealloc(names, cap * sizeof(char *));
        }
        names[(*count)++] = acc_xstrdup(e->d_name);
    }
    (void)closedir(d);
    names[*count] = NULL;
    qsort(names, *count, sizeof(char *), s_by_name);
    return names;
}

static void s_free_names(char **names)
{
    for (size_t i = 0; names != NULL && names[i] != NULL; i++) {
        free(names[i]);
    }
    free(names);
}

/* A name in done/ not yet taken, so a file sent twice under one name keeps both. */
static char *s_done_name(const spool_t *spool, const char *name)
{
    char *path = acc_xasprintf("%s/%s", spool->done, name);
    for (int n = 2; access(path, F_OK) == 0; n++) {
        free(path);
        path = acc_xasprintf("%s/%s.%d", spool->done, name, n);
    }
    char *base = acc_xstrdup(strrchr(path, '/') + 1);
    free(path);
    return base;
}

static FILE *s_open_tmp(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        acc_log_error("publish", "could not create \"%s\": %s", path, strerror(errno));
    }
    return f;
}

static bool s_close_synced(FILE *f)
{
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    return fclose(f) == 0 && ok;
}

typedef struct {
    char *in;          /* incoming/NAME */
    char *done;        /* done/NAME (NAME.2, ... if taken) */
    char *results;     /* done/NAME.results */
    char *rejected;    /* rejected/NAME */
    char *results_tmp; /* their temporary names while the file is in hand */
    char *rejected_tmp;
} s_paths_t;

static void s_paths_init(s_paths_t *f, const spool_t *spool, const char *name)
{
    char *final = s_done_name(spool, name);
    f->in = acc_xasprintf("%s/%s", spool->incoming, name);
    f->done = acc_xasprintf("%s/%s", spool->done, final);
    f->results = acc_xasprintf("%s/%s.results", spool->done, final);
    f->rejected = acc_xasprintf("%s/%s", spool->rejected, final);
    f->results_tmp = acc_xasprintf("%s/.%s.results.tmp", spool->done, final);
    f->rejected_tmp = acc_xasprintf("%s/.%s.tmp", spool->rejected, final);
    free(final);
}

static void s_paths_free(s_paths_t *f)
{
    (void)unlink(f->results_tmp);
    (void)unlink(f->rejected_tmp);
    free(f->in);
    free(f->done);
    free(f->results);
    free(f->rejected);
    free(f->results_tmp);
    free(f->rejected_tmp);
}

static bool s_rename(const char *from, const char *to)
{
    if (rename(from, to) != 0) {
        acc_log_error("publish", "could not move \"%s\" to \"%s\": %s", from, to, strerror(errno));
        return false;
    }
    return true;
}

static bool s_sync(const char *dir)
{
    acc_err_t err;
    if (agent_sync_dir(dir, &err) != ACC_OK) {
        acc_log_error("publish", "%s", err.msg);
        return false;
    }
    return true;
}

/* Results and rejections go into place first, durably; the input moves to done/
 * last. A crash anywhere before that leaves the input in incoming/, to be sent
 * again in full: the broker answers records it already accepted with their first
 * result, so nothing is shared twice. */
static bool s_spool_commit(const spool_t *spool, const s_paths_t *f, bool any_rejected)
{
    return s_rename(f->results_tmp, f->results) &&
           (!any_rejected || s_rename(f->rejected_tmp, f->rejected)) && s_sync(spool->rejected) &&
           s_sync(spool->done) && s_rename(f->in, f->done) && s_sync(spool->done) &&
           s_sync(spool->incoming);
}

static int s_spool_file(publisher_t *pub, const spool_t *spool, const char *name)
{
    s_paths_t f;
    s_paths_init(&f, spool, name);
    int status = EXIT_OUTPUT;
    FILE *in = fopen(f.in, "r");
    pub->results = s_open_tmp(f.results_tmp);
    pub->rejected = s_open_tmp(f.rejected_tmp);
    if (in == NULL) {
        acc_log_error("publish", "could not read \"%s\": %s", f.in, strerror(errno));
    } else if (pub->results != NULL && pub->rejected != NULL) {
        acc_log_info("publish", "sending %s", name);
        s_start_input(pub, in);
        bool complete = false;
        status = s_publish_loop(pub, &complete);
        bool closed = s_close_synced(pub->results);
        closed = s_close_synced(pub->rejected) && closed;
        pub->results = pub->rejected = NULL;
        if (status == EXIT_SUCCESS && complete) {
            status =
                closed && s_spool_commit(spool, &f, pub->refused > 0) ? EXIT_SUCCESS : EXIT_OUTPUT;
        }
        if (status == EXIT_SUCCESS && complete) {
            acc_log_notice("publish", "%s done: %zu accepted, %zu refused", name, pub->accepted,
                           pub->refused);
        }
    }
    if (pub->results != NULL) {
        (void)fclose(pub->results);
    }
    if (pub->rejected != NULL) {
        (void)fclose(pub->rejected);
    }
    pub->results = pub->rejected = NULL;
    if (in != NULL) {
        (void)fclose(in);
    }
    s_release_all(pub);
    s_paths_free(&f);
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
        accord__v1__envelope__free_unpacked(env,
                                            acc_pb_wiping_allocator()); /* a stray late answer */
    }
    return rc == ACC_ERR_PERMISSION ? agent_stop_refused(rc, &err) : EXIT_SUCCESS;
}

static int s_publish_spool(publisher_t *pub, const char *dir, bool once)
{
    spool_t spool = { .incoming = acc_xasprintf("%s/incoming", dir),
                      .done = acc_xasprintf("%s/done", dir),
                      .rejected = acc_xasprintf("%s/rejected", dir) };
    acc_err_t err;
    int status = EXIT_SUCCESS;
    if (agent_make_dir(dir, &err) != ACC_OK || agent_make_dir(spool.incoming, &err) != ACC_OK ||
        agent_make_dir(spool.done, &err) != ACC_OK ||
        agent_make_dir(spool.rejected, &err) != ACC_OK) {
        acc_log_error("publish", "%s", err.msg);
        status = EXIT_OUTPUT;
    }
    acc_log_notice("publish", "watching %s", spool.incoming);
    while (status == EXIT_SUCCESS && !agent_stop) {
        size_t count = 0;
        char **names = s_list_incoming(&spool, &count);
        if (names == NULL) {
            status = EXIT_OUTPUT;
            break;
        }
        for (size_t i = 0; i < count && status == EXIT_SUCCESS && !agent_stop; i++) {
            status = s_spool_file(pub, &spool, names[i]);
        }
        s_free_names(names);
        if (count == 0 && once) {
            break;
        }
        if (count == 0 && status == EXIT_SUCCESS && !agent_stop) {
            status = s_idle(pub, SPOOL_SCAN_MS);
        }
    }
    free(spool.incoming);
    free(spool.done);
    free(spool.rejected);
    return status;
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
    publisher_t pub = { .window = (size_t)config->window,
                        .max_message_bytes = (size_t)config->max_message_bytes };
    int status = agent_connect(&pub.client, config, false);
    if (status == EXIT_SUCCESS) {
        pub.pending = acc_xcalloc(pub.window, sizeof(*pub.pending));
        status = spool[0] != '\0' ? s_publish_spool(&pub, spool, args->once)
                                  : s_publish_stream(&pub, args->input);
        s_release_all(&pub);
        free(pub.pending);
    }
    client_destroy(&pub.client);
    return status;
}
