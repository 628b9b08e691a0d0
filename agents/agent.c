/* agent.c - accord-agent: NDJSON records to the broker (publish) and back
 * (subscribe); the two halves are publish.c and subscribe.c */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/harden.h"
#include "accord/log.h"
#include "accord/pbwipe.h"
#include "report.h"

#define HELLO_TIMEOUT_MS      5000
#define AGENT_RESEND_AFTER_MS 10000 /* an unanswered idempotent request is sent again */

/* long-only options (outside the range of a short option's character) */
enum {
    OPT_TIMEOUT = 256,
    OPT_SHARE,
    OPT_STATUS,
    OPT_FIELD,
    OPT_PURPOSE,
    OPT_LOCAL_ID,
    OPT_DOB,
    OPT_JSON,
};

volatile sig_atomic_t agent_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    agent_stop = 1;
}

int agent_print_json(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    int rc = text != NULL && printf("%s\n", text) > 0 && fflush(stdout) == 0 ? 0 : -1;
    free(text);
    return rc;
}

static int64_t s_min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t s_max0(int64_t a)
{
    return a > 0 ? a : 0;
}

int agent_connect(client_t **out, const acc_agent_config_t *config, bool subscribe)
{
    return agent_connect_until(out, config, subscribe, INT64_MAX);
}

int agent_connect_until(client_t **out, const acc_agent_config_t *config, bool subscribe,
                        int64_t deadline_ms)
{
    acc_err_t err;
    if (client_open(out, config, subscribe, &err) != ACC_OK) {
        acc_log_error("agent", "%s", err.msg);
        return EXIT_CONFIG;
    }
    client_set_refusals_final(*out, AGENT_REFUSALS_FINAL);
    client_set_stop(*out, &agent_stop);
    int64_t backoff = AGENT_RETRY_MIN_MS;
    int64_t left = deadline_ms - acc_now_ms();
    while (!agent_stop && left > 0) {
        acc_rc_t rc = client_hello(*out, (int)s_min(HELLO_TIMEOUT_MS, left), &err);
        if (rc == ACC_OK) {
            acc_log_info("agent", "connected to %s as \"%s\"", config->broker, client_agency(*out));
            return EXIT_SUCCESS;
        }
        if (rc == ACC_ERR_PERMISSION || rc == ACC_ERR_INVALID) {
            return agent_stop_refused(rc, &err);
        }
        if (agent_stop) {
            break;
        }
        acc_log_warn("agent", "%s; retrying", err.msg);
        acc_sleep_ms(s_min(backoff, s_max0(deadline_ms - acc_now_ms())));
        backoff = backoff * 2 > AGENT_RETRY_MAX_MS ? AGENT_RETRY_MAX_MS : backoff * 2;
        left = deadline_ms - acc_now_ms();
    }
    if (!agent_stop) {
        acc_log_error("agent", "no answer from the broker at %s in time", config->broker);
    }
    return EXIT_CONNECT;
}

/* The code an answer carries: a result's, or an Error's. */
static Accord__V1__ErrorCode s_answer_code(const Accord__V1__Envelope *env)
{
    switch (env->body_case) {
    case ACCORD__V1__ENVELOPE__BODY_ERROR:
        return env->error->code;
    case ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT:
        return env->outcome_result->code;
    case ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT:
        return env->lookup_result->code;
    case ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT:
        return env->publish_result->code;
    default:
        return ACCORD__V1__ERROR_CODE__OK;
    }
}

/* True when the request is to be sent again: the broker could not take it now,
 * or had forgotten this connection. */
static bool s_is_retry(const Accord__V1__Envelope *env)
{
    Accord__V1__ErrorCode code = s_answer_code(env);
    return code == ACCORD__V1__ERROR_CODE__UNAVAILABLE ||
           code == ACCORD__V1__ERROR_CODE__HELLO_REQUIRED;
}

typedef struct {
    int64_t resend_at_ms; /* 0: sent and waiting */
    int64_t sent_at_ms;
    int64_t backoff_ms;
    uint64_t reconnects; /* the client's count when last sent */
} s_asking_t;

static void s_send_request(client_t *client, const Accord__V1__Envelope *env, s_asking_t *a,
                           int64_t deadline_ms)
{
    acc_err_t err;
    a->reconnects = client_reconnects(client);
    a->sent_at_ms = acc_now_ms();
    a->resend_at_ms = 0;
    if (client_send(client, env, &err) != ACC_OK) {
        acc_log_warn("agent", "%s; sending again in %lld ms", err.msg, (long long)a->backoff_ms);
        a->resend_at_ms = s_min(a->sent_at_ms + a->backoff_ms, deadline_ms);
        a->backoff_ms = s_min(a->backoff_ms * 2, AGENT_RETRY_MAX_MS);
    }
}

static void s_send_later(s_asking_t *a, const char *why, int64_t deadline_ms)
{
    acc_log_warn("agent", "%s; asking again in %lld ms", why, (long long)a->backoff_ms);
    a->resend_at_ms = s_min(acc_now_ms() + a->backoff_ms, deadline_ms);
    a->backoff_ms = s_min(a->backoff_ms * 2, AGENT_RETRY_MAX_MS);
}

/* A request whose answer may have been lost is due again: the connection was
 * made anew since it went, or (idempotent) it went unanswered too long. */
static bool s_is_due(client_t *client, const s_asking_t *a, bool idempotent)
{
    int64_t now = acc_now_ms();
    if (a->resend_at_ms != 0) {
        return now >= a->resend_at_ms;
    }
    return client_reconnects(client) != a->reconnects ||
           (idempotent && now - a->sent_at_ms >= AGENT_RESEND_AFTER_MS);
}

/* Whether env settles the request: its own answer, not one to try again. */
static bool s_settles(const Accord__V1__Envelope *env, uint64_t correlation_id,
                      Accord__V1__Envelope__BodyCase want, s_asking_t *a, int64_t deadline_ms)
{
    bool ours = env->correlation_id == correlation_id &&
                (env->body_case == want || env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR);
    if (!ours) {
        acc_log_debug("agent", "ignored an answer for correlation id %llu",
                      (unsigned long long)env->correlation_id);
        return false;
    }
    if (s_is_retry(env)) {
        s_send_later(a, acc_pb_code_name(s_answer_code(env)), deadline_ms);
        return false;
    }
    return true;
}

int agent_ask(client_t *client, const Accord__V1__Envelope *env,
              Accord__V1__Envelope__BodyCase want, bool idempotent, int64_t deadline_ms,
              Accord__V1__Envelope **answer)
{
    s_asking_t a = { .backoff_ms = AGENT_RETRY_MIN_MS };
    s_send_request(client, env, &a, deadline_ms);
    while (!agent_stop && acc_now_ms() < deadline_ms) {
        Accord__V1__Envelope *got = NULL;
        acc_err_t err;
        int64_t wait = s_max0(s_min(deadline_ms - acc_now_ms(), 200));
        acc_rc_t rc = client_recv(client, &got, (int)wait, &err);
        if (rc == ACC_ERR_PERMISSION) {
            return agent_stop_refused(rc, &err);
        }
        if (rc == ACC_OK && s_settles(got, env->correlation_id, want, &a, deadline_ms)) {
            *answer = got;
            return EXIT_SUCCESS;
        }
        if (got != NULL) {
            accord__v1__envelope__free_unpacked(got, acc_pb_wiping_allocator());
        }
        if (s_is_due(client, &a, idempotent)) {
            s_send_request(client, env, &a, deadline_ms);
        }
    }
    if (!agent_stop) {
        acc_log_error("agent", "the broker did not answer in time");
    }
    return EXIT_CONNECT;
}

int agent_stop_refused(acc_rc_t rc, const acc_err_t *err)
{
    if (rc == ACC_ERR_PERMISSION) {
        acc_log_error("agent",
                      "%s; stopping (exit %d): an operator must restore the agency to "
                      "the agreement or remove this agent",
                      err->msg, EXIT_NOPERM);
        return EXIT_NOPERM;
    }
    acc_log_error("agent", "%s; stopping (exit %d)", err->msg, EXIT_CONFIG);
    return EXIT_CONFIG;
}

acc_rc_t agent_sync_dir(const char *dir, acc_err_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int saved = errno;
        if (fd >= 0) {
            (void)close(fd);
        }
        return acc_err_set(err, ACC_ERR_IO, "could not sync directory \"%s\": %s", dir,
                           strerror(saved));
    }
    (void)close(fd);
    return ACC_OK;
}

acc_rc_t agent_make_dir(const char *dir, acc_err_t *err)
{
    /* 0770 less the umask: the unit's UMask=0007 lets the agency's group (its case
     * system) write incoming/ and read what is delivered; elsewhere 0750. */
    if (mkdir(dir, 0770) != 0 && errno != EEXIST) {
        return acc_err_set(err, ACC_ERR_IO, "could not create directory \"%s\": %s", dir,
                           strerror(errno));
    }
    struct stat st;
    if (lstat(dir, &st) != 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not examine directory \"%s\": %s", dir,
                           strerror(errno));
    }
    if (S_ISLNK(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_IO, "\"%s\" is a symbolic link, not a directory", dir);
    }
    if (!S_ISDIR(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_IO, "\"%s\" is not a directory", dir);
    }
    return ACC_OK;
}

/* Writes all of bytes to a new file at tmp (created here: O_EXCL, never through a
 * link), fsync'd; on failure tmp is removed. */
static acc_rc_t s_write_new(const char *tmp, const char *path, const char *bytes, size_t len,
                            acc_err_t *err)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not create a file beside \"%s\": %s", path,
                           strerror(errno));
    }
    size_t off = 0;
    int saved = 0;
    while (off < len && saved == 0) {
        ssize_t n = write(fd, bytes + off, len - off);
        if (n > 0) {
            off += (size_t)n;
        } else if (n == 0 || errno != EINTR) {
            saved = n < 0 ? errno : ENOSPC;
        }
    }
    if (saved == 0 && fsync(fd) != 0) {
        saved = errno;
    }
    (void)close(fd);
    if (saved != 0) {
        (void)unlink(tmp);
        return acc_err_set(err, ACC_ERR_IO, "could not write \"%s\": %s", path, strerror(saved));
    }
    return ACC_OK;
}

acc_rc_t agent_write_durably(const char *path, const char *bytes, size_t len, acc_err_t *err)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? acc_xstrdup(".") : acc_xstrndup(path, (size_t)(slash - path));
    uint8_t nonce[8];
    char hex[2 * sizeof(nonce) + 1];
    randombytes_buf(nonce, sizeof(nonce));
    (void)sodium_bin2hex(hex, sizeof(hex), nonce, sizeof(nonce));
    /* an unpredictable name, so nothing can be planted at it beforehand; a link
     * already at path is replaced by the rename, not followed */
    char *tmp = acc_xasprintf("%s/.%s.%s.tmp", dir, slash == NULL ? path : slash + 1, hex);
    acc_rc_t rc = s_write_new(tmp, path, bytes, len, err);
    if (rc == ACC_OK && rename(tmp, path) != 0) {
        rc = acc_err_set(err, ACC_ERR_IO, "could not move a new file to \"%s\": %s", path,
                         strerror(errno));
        (void)unlink(tmp);
    }
    if (rc == ACC_OK) {
        rc = agent_sync_dir(dir, err);
    }
    free(tmp);
    free(dir);
    return rc;
}

static void s_usage_publish(FILE *out)
{
    (void)fprintf(
        out, "usage: accord-agent publish --config FILE [--input FILE|- | --spool DIR [--once]]\n"
             "\n"
             "publish    sends child records, one JSON object a line (NDJSON; see README.md), to\n"
             "           the broker and gives each exactly one result: accepted (with recipients\n"
             "           and share ids) or refused (with code and reason).\n"
             "           From stdin or --input FILE: results are printed on stdout. With no\n"
             "           spool and no --input, a stdin that is /dev/null, closed or the key\n"
             "           (curve_secret_key: stdin) is refused: exit 78 (nothing to read).\n"
             "           With --spool DIR (or publish_spool in the config): watches DIR/incoming\n"
             "           for files (write them under a name starting with '.' or ending in .tmp,\n"
             "           then rename), sends each, and when every record has its result moves\n"
             "           it to DIR/done, with its results in DIR/done/NAME.results and refused\n"
             "           lines in DIR/rejected/NAME (a record as the agent re-encodes it; a line\n"
             "           that does not parse only as its length and SHA-256). Only regular\n"
             "           files with one link, of at most max_spool_file_bytes (default\n"
             "           256 MiB), owned by the agent's user or by its group (and then not\n"
             "           writable by others) are read; anything else (a link, a FIFO,\n"
             "           another user's file, a file too large, a name over 200\n"
             "           bytes) is moved unread to DIR/rejected/NAME.unread and the reason\n"
             "           logged. A file interrupted by a crash is sent again in full after a\n"
             "           restart; the broker answers records it already accepted with their\n"
             "           first result, so nothing is shared twice. --once stops when incoming/\n"
             "           is empty.\n"
             "           Each record is settled only by the answer to its own correlation id;\n"
             "           late, duplicate and unknown answers are ignored and counted in the\n"
             "           summary lines.\n"
             "           While the broker is unreachable or answers UNAVAILABLE it waits and\n"
             "           retries; it never gives up silently.\n");
}

static void s_usage_subscribe(FILE *out)
{
    (void)fputs(
        "usage: accord-agent subscribe --config FILE [--spool DIR [--exec CMD]\n"
        "                              [--exec-timeout SECONDS]] [--seen FILE] [--count N]\n"
        "\n"
        "subscribe  receives the records shared with this agency, with their provenance\n"
        "           (share id, from, rules, purpose, lawful basis), and acknowledges each\n"
        "           only after it is handed over:\n"
        "           to stdout: printed and flushed;\n"
        "           with --spool DIR (or subscribe_spool): written to DIR/.tmp, fsync'd and\n"
        "           renamed to DIR/incoming/SHARE_ID.json (a file already there is the same\n"
        "           delivery and is not written again);\n"
        "           with --exec CMD (or exec) the command is then run as\n"
        "           `sh -c CMD accord-exec FILE`, in its own process group, with stdin\n"
        "           /dev/null, no other descriptor of the agent, and in its environment\n"
        "           ACCORD_KIND (share, outcome or lookup-notice), ACCORD_FILE,\n"
        "           ACCORD_SHARE_ID (the id to dedupe on: the share's, outcome's or notice's;\n"
        "           the file's name), ACCORD_FROM_AGENCY (also ACCORD_FROM: the publisher,\n"
        "           the agency reporting an outcome, or the agency that looked),\n"
        "           ACCORD_RECORD_TYPE and ACCORD_REPEAT; the delivery is acknowledged only\n"
        "           if it exits 0. A command still running after --exec-timeout SECONDS\n"
        "           (or exec_timeout_s, default 60) is sent SIGTERM, then SIGKILL, with its\n"
        "           process group, and the delivery is left for the broker to send again.\n"
        "           Each hand-over is journalled (in DIR/.seen with --spool, in --seen FILE\n"
        "           or seen_file for stdout, otherwise in memory): an intent, fsync'd\n"
        "           before, and done, fsync'd before the acknowledgement. A share id already\n"
        "           done is acknowledged again without being handed over twice, and so is a\n"
        "           record (the same from agency and record id) already handed over under\n"
        "           another share id, as after a restore of the broker's database.\n"
        "           What can repeat: only a hand-over whose intent is journalled with no\n"
        "           done, because the agent crashed or was stopped during it, or the\n"
        "           command failed or timed out. The command then runs again with the same\n"
        "           ACCORD_SHARE_ID and ACCORD_REPEAT=1 (0 otherwise); on stdout the line\n"
        "           is printed again with \"repeat\":true. A case system dedupes on the\n"
        "           share id. Without --exec a spool file is never placed twice (with\n"
        "           it, a repeat places the file again if the command had moved it).\n"
        "           On stdout without --seen the journal is in memory only: after a\n"
        "           restart, what was printed and not acknowledged is printed again.\n"
        "           --count N stops after N deliveries.\n"
        "           Besides records, the same connection receives, as NDJSON lines of their\n"
        "           own and in the same way (one file each in incoming/, the same journal,\n"
        "           --exec and acknowledgement), what concerns this agency:\n"
        "           {\"kind\":\"outcome\",\"outcome_id\",\"share_id\",\"record_id\",\n"
        "            \"record_type\",\"to_agency\",\"status\",\"fields\":{},\"at\",\"rules\"}\n"
        "           when a recipient reports on a record this agency shared (if the rule\n"
        "           sends outcomes back), and\n"
        "           {\"kind\":\"lookup-notice\",\"notice_id\",\"lookup_id\",\"by_agency\",\n"
        "            \"purpose\",\"at\",\"lookup\",\"subject\":{\"nhs_number\"}}\n"
        "           when another agency's lookup named this one (if the lookup notifies).\n"
        "           Record lines have no \"kind\". Agents before 0.2 are not sent these.\n",
        out);
}

/* Every subcommand's help, or only command's when it is one. */
static void s_usage(FILE *out, const char *command)
{
    bool all = command == NULL;
    if (all) {
        (void)fputs("usage: accord-agent publish|subscribe|outcome|lookup --config FILE ...\n"
                    "       accord-agent COMMAND --help (one command's help)\n\n",
                    out);
    }
    if (all || strcmp(command, "publish") == 0) {
        s_usage_publish(out);
    }
    if (all || strcmp(command, "subscribe") == 0) {
        (void)fputs(all ? "\n" : "", out);
        s_usage_subscribe(out);
    }
    if (all || strcmp(command, "outcome") == 0) {
        (void)fputs(all ? "\n" : "", out);
        outcome_usage(out);
    }
    if (all || strcmp(command, "lookup") == 0) {
        (void)fputs(all ? "\n" : "", out);
        lookup_usage(out);
    }
    (void)fputs(
        "\n"
        "  -c, --config FILE  agent configuration (YAML); see README.md. With\n"
        "                     curve_secret_key: stdin the secret key is read from standard\n"
        "                     input, which must be a regular file (systemd's\n"
        "                     StandardInput=file:...) with no group or other permissions;\n"
        "                     standard input is then /dev/null (publish needs --input or a\n"
        "                     spool)\n"
        "  -h, --help         show this help (after a command: that command's)\n"
        "  -V, --version      show the version\n"
        "\n"
        "Logs go to stderr, one line each. Exit status (sysexits):\n"
        "   0  done (publish from a stream: every record accepted; outcome: every\n"
        "      outcome logged; lookup: answered)\n"
        "   1  refused: publish from a stream, some record; outcome (not from a\n"
        "      spool), some outcome;\n"
        "      lookup, the lookup (its code and reason on stderr)\n"
        "  64  usage\n"
        "  69  stopped before the broker answered every record (outcome, lookup: the\n"
        "      broker did not answer within --timeout, after retries)\n"
        "  74  results or deliveries could not be written\n"
        "  77  the broker refuses this agency: it answered NOT_PERMITTED or refused the\n"
        "      key's handshake 3 times in a row (its key is not in the agreement in\n"
        "      force); the agent stops instead of retrying. A broker that is down or\n"
        "      unreachable is waited for, never a reason to stop\n"
        "  78  configuration or key unusable (also: the broker says agency is not the\n"
        "      key's own; a subscriber with no spool whose standard output is the\n"
        "      systemd journal, where it would print children's records)\n",
        out);
}

typedef struct {
    const char *command;
    const char *config;
    bool help;
    agent_args_t run;
} s_args_t;

/* A whole decimal number in [min, max], or -1. */
static long s_parse_long(const char *text, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        return -1;
    }
    return v;
}

/* The options of outcome and lookup. */
static int s_parse_ask_option(int opt, s_args_t *args)
{
    acc_err_t err;
    switch (opt) {
    case OPT_TIMEOUT:
        args->run.timeout_s = s_parse_long(optarg, 1, AGENT_TIMEOUT_MAX_S);
        if (args->run.timeout_s < 0) {
            (void)fprintf(stderr, "accord-agent: --timeout must be whole seconds, 1 to %d\n",
                          AGENT_TIMEOUT_MAX_S);
            return EXIT_USAGE;
        }
        break;
    case OPT_SHARE:
        args->run.share = optarg;
        break;
    case OPT_STATUS:
        args->run.status = optarg;
        break;
    case OPT_FIELD:
        if (args->run.fields == NULL) {
            args->run.fields = json_object();
        }
        if (report_field_arg(args->run.fields, optarg, &err) != ACC_OK) {
            (void)fprintf(stderr, "accord-agent: %s\n", err.msg);
            return EXIT_USAGE;
        }
        break;
    case OPT_PURPOSE:
        args->run.purpose = optarg;
        break;
    case OPT_LOCAL_ID:
        args->run.local_id = optarg;
        break;
    case OPT_DOB:
        args->run.dob = optarg;
        break;
    case OPT_JSON:
        args->run.json = true;
        break;
    default:
        s_usage(stderr, NULL);
        return EXIT_USAGE;
    }
    return -1;
}

static int s_parse_option(int opt, s_args_t *args)
{
    switch (opt) {
    case 'c':
        args->config = optarg;
        break;
    case 'i':
        args->run.input = optarg;
        break;
    case 'n':
        args->run.count = s_parse_long(optarg, 1, LONG_MAX);
        if (args->run.count < 0) {
            (void)fprintf(stderr, "accord-agent: --count must be a whole number of 1 or more\n");
            return EXIT_USAGE;
        }
        break;
    case 't':
        args->run.exec_timeout_s = s_parse_long(optarg, 1, EXEC_TIMEOUT_MAX_S);
        if (args->run.exec_timeout_s < 0) {
            (void)fprintf(stderr, "accord-agent: --exec-timeout must be whole seconds, 1 to %d\n",
                          EXEC_TIMEOUT_MAX_S);
            return EXIT_USAGE;
        }
        break;
    case 's':
        args->run.spool = optarg;
        break;
    case 'e':
        args->run.exec = optarg;
        break;
    case 'S':
        args->run.seen = optarg;
        break;
    case 'o':
        args->run.once = true;
        break;
    case 'h':
        args->help = true;
        break;
    case 'V':
        (void)printf("accord-agent %s\n", ACCORD_VERSION);
        return EXIT_SUCCESS;
    default:
        return s_parse_ask_option(opt, args);
    }
    return -1;
}

static bool s_is_command(const char *command)
{
    static const char *const commands[] = { "publish", "subscribe", "outcome", "lookup" };
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(command, commands[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int s_usage_error(const char *command, const char *why)
{
    (void)fprintf(stderr, "accord-agent %s: %s (see accord-agent %s --help)\n", command, why,
                  command);
    return EXIT_USAGE;
}

/* What each command needs besides --config; -1 when it is all there. */
static int s_check_args(s_args_t *args, int rest, char **positional)
{
    const agent_args_t *run = &args->run;
    bool lookup = strcmp(args->command, "lookup") == 0;
    bool outcome = strcmp(args->command, "outcome") == 0;
    if (lookup && rest == 1 && run->local_id == NULL) {
        args->run.nhs = positional[0];
    } else if (rest != 0 || (lookup && run->local_id == NULL)) {
        return s_usage_error(args->command, lookup ? "give one NHS number or --local-id ID --dob "
                                                     "YYYY-MM-DD"
                                                   : "unexpected argument");
    }
    if (lookup && (run->purpose == NULL || run->purpose[0] == '\0')) {
        return s_usage_error(args->command, "--purpose is required: one the agreement lists");
    }
    if (lookup && run->dob != NULL && run->local_id == NULL) {
        return s_usage_error(args->command, "--dob goes with --local-id");
    }
    if (outcome && run->share == NULL && (run->status != NULL || run->fields != NULL)) {
        return s_usage_error(args->command, "--status and --field go with --share (without it, "
                                            "outcomes are read as NDJSON from stdin)");
    }
    if (outcome && run->share != NULL && run->status == NULL) {
        return s_usage_error(args->command, "--share needs --status");
    }
    if (outcome && run->share != NULL && run->spool != NULL) {
        return s_usage_error(args->command, "--spool and --share cannot be used together");
    }
    if (outcome && run->once && run->spool == NULL) {
        return s_usage_error(args->command, "--once goes with --spool");
    }
    return -1;
}

static int s_parse_args(int argc, char **argv, s_args_t *args)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 'c' },
        { "input", required_argument, NULL, 'i' },
        { "count", required_argument, NULL, 'n' },
        { "spool", required_argument, NULL, 's' },
        { "exec", required_argument, NULL, 'e' },
        { "seen", required_argument, NULL, 'S' },
        { "once", no_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "exec-timeout", required_argument, NULL, 't' },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "share", required_argument, NULL, OPT_SHARE },
        { "status", required_argument, NULL, OPT_STATUS },
        { "field", required_argument, NULL, OPT_FIELD },
        { "purpose", required_argument, NULL, OPT_PURPOSE },
        { "local-id", required_argument, NULL, OPT_LOCAL_ID },
        { "dob", required_argument, NULL, OPT_DOB },
        { "json", no_argument, NULL, OPT_JSON },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:i:n:s:e:S:ohV", options, NULL)) != -1) {
        int status = s_parse_option(opt, args);
        if (status >= 0) {
            return status;
        }
    }
    args->command = optind < argc ? argv[optind] : NULL;
    bool known = args->command != NULL && s_is_command(args->command);
    if (args->help) {
        s_usage(stdout, known ? args->command : NULL);
        return EXIT_SUCCESS;
    }
    if (!known || args->config == NULL) {
        s_usage(stderr, NULL);
        return EXIT_USAGE;
    }
    return s_check_args(args, argc - optind - 1, argv + optind + 1);
}

/* The secret key is read once, here, before any connection or exec hook: from
 * standard input (then /dev/null) with curve_secret_key: stdin. */
static int s_load_key(acc_agent_config_t *config, const s_args_t *args)
{
    bool records_on_stdin = strcmp(args->command, "publish") == 0 && args->run.input == NULL &&
                            args->run.spool == NULL && config->publish_spool[0] == '\0';
    bool outcomes_on_stdin =
        strcmp(args->command, "outcome") == 0 && args->run.share == NULL && args->run.spool == NULL;
    if (acc_agent_config_key_on_stdin(config) && (records_on_stdin || outcomes_on_stdin)) {
        acc_log_error("agent",
                      "%s: curve_secret_key: stdin takes standard input for the key; "
                      "give %s",
                      args->config,
                      records_on_stdin ? "records with --input FILE or --spool DIR"
                                       : "one outcome with --share and --status, or --spool DIR");
        return EXIT_USAGE;
    }
    acc_err_t err;
    if (acc_agent_config_read_key(config, &err) != ACC_OK) {
        acc_log_error("agent", "%s: %s", args->config, err.msg);
        return EXIT_CONFIG;
    }
    return EXIT_SUCCESS;
}

static int s_run(const acc_agent_config_t *config, const s_args_t *args)
{
    if (strcmp(args->command, "publish") == 0) {
        return publish_run(config, &args->run);
    }
    if (strcmp(args->command, "subscribe") == 0) {
        return subscribe_run(config, &args->run);
    }
    if (strcmp(args->command, "outcome") == 0) {
        return outcome_run(config, &args->run);
    }
    return lookup_run(config, &args->run);
}

static int s_main(const s_args_t *args)
{
    acc_err_t err;
    if (acc_process_harden(&err) != ACC_OK) { /* before any key or record is read */
        (void)fprintf(stderr, "accord-agent: %s\n", err.msg);
        return EXIT_CONFIG;
    }
    if (sodium_init() < 0) {
        return EXIT_CONFIG;
    }
    acc_agent_config_t config;
    if (acc_agent_config_load(&config, args->config, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-agent: %s\n", err.msg);
        return EXIT_CONFIG;
    }
    acc_log_level_t level = ACC_LOG_INFO;
    if (acc_log_level_parse(&level, config.log_level) != ACC_OK) {
        (void)fprintf(stderr,
                      "accord-agent: %s: log_level must be error, warn, notice, info or "
                      "debug\n",
                      args->config);
        acc_agent_config_clear(&config);
        return EXIT_CONFIG;
    }
    acc_log_setup(level);
    int status = s_load_key(&config, args);
    if (status != EXIT_SUCCESS) {
        acc_agent_config_clear(&config);
        return status;
    }
    struct sigaction sa = { .sa_handler = s_on_signal };
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
    status = s_run(&config, args);
    acc_agent_config_clear(&config);
    return status;
}

int main(int argc, char **argv)
{
    s_args_t args = { 0 };
    int status = s_parse_args(argc, argv, &args);
    if (status < 0) {
        status = s_main(&args);
    }
    json_decref(args.run.fields);
    return status;
}
