/* agent.c - accord-agent: NDJSON records to the broker (publish) and back (subscribe) */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/config.h"
#include "accord/log.h"
#include "accord/record.h"
#include "client.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE   2
#define EXIT_CONFIG  3
#define EXIT_CONNECT 4
#define EXIT_OUTPUT  5

#define HELLO_TIMEOUT_MS 5000
#define RETRY_MIN_MS     200
#define RETRY_MAX_MS     10000
#define RESEND_AFTER_MS  10000 /* an unanswered publish is sent again (idempotent) */

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_usage(FILE *out)
{
    (void)fprintf(
        out, "usage: accord-agent publish --config FILE [--input FILE]\n"
             "       accord-agent subscribe --config FILE [--count N]\n"
             "\n"
             "publish    reads child records as NDJSON (one JSON object a line; see README.md)\n"
             "           from stdin or --input and sends each to the broker. Prints one JSON\n"
             "           line per record on stdout: accepted (with recipients and share ids),\n"
             "           or refused (with code and reason). While the broker is unreachable or\n"
             "           answers UNAVAILABLE it waits and retries; it never gives up silently.\n"
             "subscribe  prints each record delivered to this agency as one JSON line on\n"
             "           stdout, with its provenance (share id, from, rules, purpose, lawful\n"
             "           basis), and acknowledges it only after the line is written and\n"
             "           flushed. --count N stops after N deliveries.\n"
             "\n"
             "  -c, --config FILE  agent configuration (YAML); see README.md\n"
             "  -h, --help         show this help\n"
             "  -V, --version      show the version\n"
             "\n"
             "Exit status: 0 success (publish: every record accepted), 1 some record refused,\n"
             "2 usage, 3 configuration invalid, 4 could not connect or the broker refused this\n"
             "agent's key, 5 output could not be written.\n");
}

/* ---- publish ---- */

typedef struct {
    uint64_t line; /* correlation id: the input line number */
    char *record_id;
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
    size_t in_flight;
    uint64_t line;
    bool eof;
    size_t accepted;
    size_t refused;
} publisher_t;

static int s_print_json(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    int rc = text != NULL && printf("%s\n", text) > 0 && fflush(stdout) == 0 ? 0 : -1;
    free(text);
    return rc;
}

static void s_print_invalid(uint64_t line, const char *reason)
{
    (void)s_print_json(json_pack("{s:I, s:s, s:s, s:s}", "line", (json_int_t)line, "result",
                                 "refused", "code", "INVALID_INPUT", "reason", reason));
}

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
    p->sent_at_ms = s_now_ms();
    p->resend_at_ms = 0;
    return client_send_raw(pub->client, p->frame, p->frame_len, err);
}

static acc_rc_t s_submit(publisher_t *pub, Accord__V1__ChildRecord *rec, acc_err_t *err)
{
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = rec;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = pub->line;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    pending_t *p = s_slot(pub);
    acc_assert(p != NULL);
    p->used = true;
    p->line = pub->line;
    p->record_id = acc_xstrdup(rec->record_id);
    p->frame_len = accord__v1__envelope__get_packed_size(&env);
    p->frame = acc_xmalloc(p->frame_len);
    (void)accord__v1__envelope__pack(&env, p->frame);
    p->backoff_ms = RETRY_MIN_MS;
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
        Accord__V1__ChildRecord *rec = NULL;
        acc_err_t perr;
        if ((size_t)n > ACC_RECORD_MAX_LINE) {
            s_print_invalid(pub->line, "line is longer than 1 MiB");
            pub->refused++;
        } else if (acc_record_from_json(&rec, buf, (size_t)n, &perr) != ACC_OK) {
            char reason[ACC_ERR_MSG_MAX + 32];
            (void)snprintf(reason, sizeof(reason), "line %llu: %s", (unsigned long long)pub->line,
                           perr.msg);
            s_print_invalid(pub->line, reason);
            acc_log_warn("publish", "%s", reason);
            pub->refused++;
        } else {
            rc = s_submit(pub, rec, err);
            acc_record_free(&rec);
        }
    }
    free(buf);
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
    free(p->frame);
    memset(p, 0, sizeof(*p));
    pub->in_flight--;
}

static void s_retry_later(pending_t *p, const char *why)
{
    p->resend_at_ms = s_now_ms() + p->backoff_ms;
    acc_log_warn("publish", "line %llu not accepted yet (%s); retrying in %lld ms",
                 (unsigned long long)p->line, why, (long long)p->backoff_ms);
    p->backoff_ms = p->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : p->backoff_ms * 2;
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

static int s_on_answer(publisher_t *pub, const Accord__V1__Envelope *env)
{
    pending_t *p = s_find(pub, env->correlation_id);
    if (p == NULL) {
        if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
            acc_log_warn("publish", "broker error: %s (%s)", env->error->message,
                         acc_pb_code_name(env->error->code));
        }
        return 0;
    }
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        if (env->error->code == ACCORD__V1__ERROR_CODE__HELLO_REQUIRED) {
            s_retry_later(p, "broker restarted");
            return 0;
        }
        (void)s_print_json(json_pack("{s:I, s:s, s:s, s:s, s:s}", "line", (json_int_t)p->line,
                                     "record_id", p->record_id, "result", "refused", "code",
                                     acc_pb_code_name(env->error->code), "reason",
                                     env->error->message));
        pub->refused++;
        s_release(pub, p);
        return 0;
    }
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT) {
        return 0;
    }
    const Accord__V1__PublishResult *r = env->publish_result;
    if (r->code == ACCORD__V1__ERROR_CODE__UNAVAILABLE) {
        s_retry_later(p, r->reason);
        return 0;
    }
    *(r->code == ACCORD__V1__ERROR_CODE__OK ? &pub->accepted : &pub->refused) += 1;
    int rc = s_print_json(s_result_json(p, r));
    s_release(pub, p);
    return rc;
}

static void s_resend_due(publisher_t *pub)
{
    int64_t now = s_now_ms();
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

static int s_publish_loop(publisher_t *pub)
{
    acc_err_t err;
    while (!s_stop) {
        if (s_fill_window(pub, &err) != ACC_OK) {
            acc_log_warn("publish", "%s", err.msg);
        }
        if (pub->eof && pub->in_flight == 0) {
            break;
        }
        Accord__V1__Envelope *env = NULL;
        acc_rc_t rc = client_recv(pub->client, &env, 200, &err);
        if (rc == ACC_ERR_PERMISSION) {
            acc_log_error("publish", "%s", err.msg);
            return EXIT_CONNECT;
        }
        if (rc == ACC_OK) {
            int out = s_on_answer(pub, env);
            accord__v1__envelope__free_unpacked(env, NULL);
            if (out != 0) {
                return EXIT_OUTPUT;
            }
        }
        s_resend_due(pub);
    }
    acc_log_notice("publish", "done: %zu accepted, %zu refused, %zu unanswered", pub->accepted,
                   pub->refused, pub->in_flight);
    return pub->in_flight > 0 ? EXIT_CONNECT : pub->refused > 0 ? EXIT_REFUSED : EXIT_SUCCESS;
}

/* Connects and says Hello, waiting as long as it takes for a broker that is down;
 * a refused key is final. */
static int s_connect(client_t **out, const acc_agent_config_t *config, bool subscribe)
{
    acc_err_t err;
    if (client_open(out, config, subscribe, &err) != ACC_OK) {
        acc_log_error("agent", "%s", err.msg);
        return EXIT_CONNECT;
    }
    int64_t backoff = RETRY_MIN_MS;
    while (!s_stop) {
        acc_rc_t rc = client_hello(*out, HELLO_TIMEOUT_MS, &err);
        if (rc == ACC_OK) {
            acc_log_info("agent", "connected to %s as \"%s\"", config->broker, client_agency(*out));
            return EXIT_SUCCESS;
        }
        if (rc == ACC_ERR_PERMISSION) {
            acc_log_error("agent", "%s", err.msg);
            return EXIT_CONNECT;
        }
        acc_log_warn("agent", "%s; retrying", err.msg);
        struct timespec ts = { .tv_sec = backoff / 1000, .tv_nsec = (backoff % 1000) * 1000000 };
        (void)nanosleep(&ts, NULL);
        backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
    }
    return EXIT_CONNECT;
}

static int s_publish(const acc_agent_config_t *config, const char *input)
{
    publisher_t pub = { .window = (size_t)config->window, .in = stdin };
    if (input != NULL && (pub.in = fopen(input, "r")) == NULL) {
        acc_log_error("publish", "could not open input \"%s\": %s", input, strerror(errno));
        return EXIT_USAGE;
    }
    int status = s_connect(&pub.client, config, false);
    if (status == EXIT_SUCCESS) {
        pub.pending = acc_xcalloc(pub.window, sizeof(*pub.pending));
        status = s_publish_loop(&pub);
        for (size_t i = 0; i < pub.window; i++) {
            if (pub.pending[i].used) {
                s_release(&pub, &pub.pending[i]);
            }
        }
        free(pub.pending);
    }
    client_destroy(&pub.client);
    if (pub.in != stdin) {
        (void)fclose(pub.in);
    }
    return status;
}

/* ---- subscribe ---- */

static json_t *s_delivery_json(const Accord__V1__Deliver *d)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < d->n_rule_ids; i++) {
        json_array_append_new(rules, json_string(d->rule_ids[i]));
    }
    json_t *record = d->record != NULL ? acc_record_to_json(d->record) : json_object();
    json_t *obj = json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:o}", "share_id", d->share_id, "from",
                            d->from_agency, "rules", rules, "purpose", d->purpose, "lawful_basis",
                            d->lawful_basis, "agreement_hash", d->agreement_hash, "record", record);
    if (d->safeguarding_justification[0] != '\0') {
        json_object_set_new(obj, "safeguarding_justification",
                            json_string(d->safeguarding_justification));
    }
    return obj;
}

static acc_rc_t s_ack(client_t *client, const char *share_id, acc_err_t *err)
{
    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    ack.share_id = acc_pb_str(share_id);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    env.deliver_ack = &ack;
    return client_send(client, &env, err);
}

/* Written and flushed first, acknowledged second: a crash in between means a
 * redelivery, never a loss. */
static int s_on_delivery(client_t *client, const Accord__V1__Envelope *env)
{
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        acc_log_warn("subscribe", "broker error: %s (%s)", env->error->message,
                     acc_pb_code_name(env->error->code));
        return 0;
    }
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_DELIVER) {
        return 0;
    }
    if (s_print_json(s_delivery_json(env->deliver)) != 0) {
        acc_log_error("subscribe", "could not write a delivery to stdout: %s", strerror(errno));
        return -1;
    }
    acc_err_t err;
    if (s_ack(client, env->deliver->share_id, &err) != ACC_OK) {
        acc_log_warn("subscribe", "%s", err.msg);
    }
    acc_log_info("subscribe", "received share %s from %s", env->deliver->share_id,
                 env->deliver->from_agency);
    return 1;
}

static int s_subscribe(const acc_agent_config_t *config, long count)
{
    client_t *client = NULL;
    int status = s_connect(&client, config, true);
    long received = 0;
    while (status == EXIT_SUCCESS && !s_stop && (count <= 0 || received < count)) {
        Accord__V1__Envelope *env = NULL;
        acc_err_t err;
        acc_rc_t rc = client_recv(client, &env, 1000, &err);
        if (rc == ACC_ERR_PERMISSION) {
            acc_log_error("subscribe", "%s", err.msg);
            status = EXIT_CONNECT;
        } else if (rc == ACC_OK) {
            int got = s_on_delivery(client, env);
            accord__v1__envelope__free_unpacked(env, NULL);
            status = got < 0 ? EXIT_OUTPUT : EXIT_SUCCESS;
            received += got > 0 ? 1 : 0;
        }
    }
    client_destroy(&client);
    return status;
}

/* ---- main ---- */

typedef struct {
    const char *command;
    const char *config;
    const char *input;
    long count;
} s_args_t;

static int s_parse_args(int argc, char **argv, s_args_t *args)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 'c' }, { "input", required_argument, NULL, 'i' },
        { "count", required_argument, NULL, 'n' },  { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },      { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:i:n:hV", options, NULL)) != -1) {
        if (opt == 'c') {
            args->config = optarg;
        } else if (opt == 'i') {
            args->input = optarg;
        } else if (opt == 'n') {
            args->count = strtol(optarg, NULL, 10);
        } else if (opt == 'h') {
            s_usage(stdout);
            return EXIT_SUCCESS;
        } else if (opt == 'V') {
            (void)printf("accord-agent %s\n", ACCORD_VERSION);
            return EXIT_SUCCESS;
        } else {
            s_usage(stderr);
            return EXIT_USAGE;
        }
    }
    args->command = optind + 1 == argc ? argv[optind] : NULL;
    bool known = args->command != NULL &&
                 (strcmp(args->command, "publish") == 0 || strcmp(args->command, "subscribe") == 0);
    if (!known || args->config == NULL) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    return -1;
}

int main(int argc, char **argv)
{
    s_args_t args = { 0 };
    int status = s_parse_args(argc, argv, &args);
    if (status >= 0) {
        return status;
    }
    if (sodium_init() < 0) {
        return EXIT_CONFIG;
    }
    acc_agent_config_t config;
    acc_err_t err;
    if (acc_agent_config_load(&config, args.config, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-agent: %s\n", err.msg);
        return EXIT_CONFIG;
    }
    acc_log_level_t level = ACC_LOG_INFO;
    if (acc_log_level_parse(&level, config.log_level) != ACC_OK) {
        (void)fprintf(stderr,
                      "accord-agent: %s: log_level must be error, warn, notice, info or "
                      "debug\n",
                      args.config);
        acc_agent_config_clear(&config);
        return EXIT_CONFIG;
    }
    acc_log_setup(level);
    struct sigaction sa = { .sa_handler = s_on_signal };
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
    status = strcmp(args.command, "publish") == 0 ? s_publish(&config, args.input)
                                                  : s_subscribe(&config, args.count);
    acc_agent_config_clear(&config);
    return status;
}
