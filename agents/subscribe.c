/* subscribe.c - accord-agent subscribe: deliveries to stdout or into a spool
 * directory, each handed to the agency's system once and acknowledged after */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "accord/log.h"
#include "accord/logrow.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "agent.h"
#include "notice.h"
#include "seen.h"

#define EXEC_POLL_MS       100
#define EXEC_KILL_GRACE_MS 5000  /* after SIGTERM, before SIGKILL */
#define EXEC_FD_SCAN_MAX   65536 /* descriptors closed in the hook, at most */
#define EXEC_ENV_OWN       7     /* the ACCORD_* variables set for the hook */

typedef struct {
    client_t *client;
    seen_t *seen;
    const char *exec;        /* NULL: none */
    int64_t exec_timeout_ms; /* a hook running longer is stopped */
    char *incoming;          /* spool: DIR/incoming, NULL for stdout */
    char *tmp;               /* spool: DIR/.tmp, same file system as incoming */
} subscriber_t;

extern char **environ;

/* What the hand-over needs of anything the broker delivers: a share, an outcome
 * on a share this agency published, or a notice that a lookup named it. */
typedef struct {
    const char *kind;                    /* ACCORD_KIND: share, outcome or lookup-notice */
    const char *id;                      /* share, outcome or notice id: the file's name, the
                                            journal's key and what is acknowledged */
    const char *from;                    /* the publisher, the reporting agency or the asker */
    const char *record_type;             /* "" for a lookup notice */
    uint8_t key[ACC_LOGROW_SHARE_BYTES]; /* id, parsed */
    bool has_record;                     /* shares: record holds seen_record_hash */
    uint8_t record[SEEN_RECORD_BYTES];
    bool repeat; /* an earlier hand-over of it began and did not finish */
} item_t;

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

/* The line handed over; shares keep the shape they always had (no "kind"). */
static json_t *s_item_json(const Accord__V1__Envelope *env, const item_t *item)
{
    json_t *obj = NULL;
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE) {
        obj = notice_outcome_json(env->outcome_notice);
    } else if (env->body_case == ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE) {
        obj = notice_lookup_json(env->lookup_notice);
    } else {
        obj = s_delivery_json(env->deliver);
    }
    if (obj != NULL && item->repeat) {
        json_object_set_new(obj, "repeat", json_true());
    }
    return obj;
}

static acc_rc_t s_ack(client_t *client, const char *id, acc_err_t *err)
{
    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    ack.share_id = acc_pb_str(id);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    env.deliver_ack = &ack;
    return client_send(client, &env, err);
}

/* ---- the exec hook ---- */

static bool s_is_own_variable(const char *entry)
{
    static const char *const own[EXEC_ENV_OWN] = {
        "ACCORD_FILE=",        "ACCORD_SHARE_ID=", "ACCORD_FROM_AGENCY=", "ACCORD_FROM=",
        "ACCORD_RECORD_TYPE=", "ACCORD_REPEAT=",   "ACCORD_KIND=",
    };
    for (size_t i = 0; i < EXEC_ENV_OWN; i++) {
        if (strncmp(entry, own[i], strlen(own[i])) == 0) {
            return true;
        }
    }
    return false;
}

/* The hook's environment, built before fork (the agent has ZeroMQ's threads, so
 * the child may only call async-signal-safe functions): ours, without any
 * ACCORD_* variable we set, then ours. ACCORD_SHARE_ID is the id a case system
 * dedupes on, for every kind (the file's name too). Neither the record id nor a
 * child's identifier is passed: they are in the file, and the environment is
 * copied into every process the hook starts. The last EXEC_ENV_OWN entries are
 * allocated here; *kept is where they start. */
static char **s_exec_env(const char *path, const item_t *item, size_t *kept)
{
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    char **envp = acc_xcalloc(n + EXEC_ENV_OWN + 1, sizeof(*envp));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s_is_own_variable(environ[i])) {
            envp[k++] = environ[i];
        }
    }
    *kept = k;
    envp[k++] = acc_xasprintf("ACCORD_FILE=%s", path);
    envp[k++] = acc_xasprintf("ACCORD_SHARE_ID=%s", item->id);
    envp[k++] = acc_xasprintf("ACCORD_FROM_AGENCY=%s", item->from);
    envp[k++] = acc_xasprintf("ACCORD_FROM=%s", item->from);
    envp[k++] = acc_xasprintf("ACCORD_RECORD_TYPE=%s", item->record_type);
    envp[k++] = acc_xasprintf("ACCORD_REPEAT=%d", item->repeat ? 1 : 0);
    envp[k++] = acc_xasprintf("ACCORD_KIND=%s", item->kind);
    return envp;
}

static void s_exec_env_free(char **envp, size_t kept)
{
    for (size_t i = kept; envp[i] != NULL; i++) {
        free(envp[i]);
    }
    free(envp);
}

static int s_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > EXEC_FD_SCAN_MAX) {
        return EXEC_FD_SCAN_MAX;
    }
    return (int)rl.rlim_cur;
}

/* In the child: async-signal-safe calls only. Its own process group, so a
 * timeout stops everything it started; stdin /dev/null; stdout to our stderr
 * (stdout is ours); no other descriptor of the agent. */
static void s_exec_child(char *const argv[], char *const envp[], int fd_limit)
{
    (void)setpgid(0, 0);
    (void)signal(SIGPIPE, SIG_DFL); /* ignored by the agent, and an ignore survives execve */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        _exit(127);
    }
    for (int fd = STDERR_FILENO + 1; fd < fd_limit; fd++) {
        (void)close(fd);
    }
    (void)execve("/bin/sh", argv, envp);
    _exit(127);
}

/* Waits for the hook, keeping the broker connection alive; past the deadline
 * its process group gets SIGTERM, then SIGKILL. -1 when it could not be
 * waited for; otherwise its wait status in *status. */
static int s_exec_wait(subscriber_t *sub, pid_t pid, const item_t *item, int *status,
                       bool *timed_out)
{
    int64_t deadline = acc_now_ms() + sub->exec_timeout_ms;
    int64_t kill_at = 0;
    *timed_out = false;
    for (;;) {
        pid_t done = waitpid(pid, status, WNOHANG);
        if (done == pid) {
            break;
        }
        if (done < 0 && errno != EINTR) {
            acc_log_error("subscribe", "lost track of --exec: %s", strerror(errno));
            (void)kill(-pid, SIGKILL);
            return -1;
        }
        int64_t now = acc_now_ms();
        if (!*timed_out && now >= deadline) {
            acc_log_warn("subscribe",
                         "--exec for %s %s ran longer than %lld s; stopping it and its "
                         "process group (SIGTERM)",
                         item->kind, item->id, (long long)(sub->exec_timeout_ms / 1000));
            (void)kill(-pid, SIGTERM);
            *timed_out = true;
            kill_at = now + EXEC_KILL_GRACE_MS;
        } else if (kill_at != 0 && now >= kill_at) {
            acc_log_warn("subscribe", "--exec for %s %s ignored SIGTERM; sending SIGKILL",
                         item->kind, item->id);
            (void)kill(-pid, SIGKILL);
            kill_at = 0;
        }
        client_tick(sub->client);
        acc_sleep_ms(EXEC_POLL_MS);
    }
    if (*timed_out) {
        (void)kill(-pid, SIGKILL); /* whatever of the group outlived its shell */
    }
    return 0;
}

/* Runs CMD through the shell with the delivered file as $1: 0 when it exited 0,
 * its exit status (or 128 + signal) otherwise, -1 when it could not run. */
static int s_run_exec(subscriber_t *sub, char *path, const item_t *item)
{
    size_t kept = 0;
    char **envp = s_exec_env(path, item, &kept);
    char *command = acc_xstrdup(sub->exec);
    int fd_limit = s_fd_limit();
    pid_t pid = fork();
    if (pid == 0) {
        char sh[] = "sh";
        char dash_c[] = "-c";
        char name[] = "accord-exec";
        char *argv[] = { sh, dash_c, command, name, path, NULL };
        s_exec_child(argv, envp, fd_limit);
    }
    s_exec_env_free(envp, kept);
    free(command);
    if (pid < 0) {
        acc_log_error("subscribe", "could not start --exec: %s", strerror(errno));
        return -1;
    }
    (void)setpgid(pid, pid); /* also here: a timeout may come before the child runs */
    int status = 0;
    bool timed_out = false;
    if (s_exec_wait(sub, pid, item, &status, &timed_out) != 0) {
        return -1;
    }
    if (timed_out) {
        acc_log_warn("subscribe", "--exec for %s %s timed out", item->kind, item->id);
        return 124;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- the hand-over ---- */

static bool s_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Puts the delivery in incoming/ as ID.json: written to .tmp/ and fsync'd, the
 * intent journalled, renamed into place. So an intent with neither file means
 * the file reached incoming/ and the agency's system has taken it. */
static int s_place_file(subscriber_t *sub, const item_t *item, const char *text, const char *path)
{
    char *tmp = acc_xasprintf("%s/%s.json", sub->tmp, item->id);
    char *line = acc_xasprintf("%s\n", text);
    acc_err_t err;
    acc_rc_t rc = agent_write_durably(tmp, line, strlen(line), &err);
    if (rc == ACC_OK) {
        rc = agent_sync_dir(sub->tmp, &err);
    }
    if (rc == ACC_OK) {
        rc = seen_start(sub->seen, item->key, &err);
    }
    if (rc == ACC_OK && rename(tmp, path) != 0) {
        rc = acc_err_set(&err, ACC_ERR_IO, "could not move a delivery into \"%s\": %s",
                         sub->incoming, strerror(errno));
    }
    if (rc == ACC_OK) {
        rc = agent_sync_dir(sub->incoming, &err);
    }
    if (rc != ACC_OK) {
        acc_log_error("subscribe", "%s", err.msg);
    }
    acc_pb_free_wiped(line); /* a child's record */
    free(tmp);
    return rc == ACC_OK ? 0 : -1;
}

/* Into the spool, then the hook if there is one: 0 done, 1 to be retried (the
 * hook failed), -1 the output cannot be written. */
static int s_to_spool(subscriber_t *sub, const item_t *item, const char *text)
{
    char *path = acc_xasprintf("%s/%s.json", sub->incoming, item->id);
    char *tmp = acc_xasprintf("%s/%s.json", sub->tmp, item->id);
    int rc = 0;
    acc_err_t err;
    if (s_exists(path)) {
        if (seen_start(sub->seen, item->key, &err) != ACC_OK) { /* the hook may yet run */
            acc_log_error("subscribe", "%s", err.msg);
            rc = -1;
        }
    } else if (item->repeat && sub->exec == NULL && !s_exists(tmp)) {
        acc_log_notice("subscribe",
                       "%s %s was placed in incoming/ and taken before a crash; "
                       "not placed again",
                       item->kind, item->id);
    } else {
        rc = s_place_file(sub, item, text, path);
    }
    if (rc == 0 && sub->exec != NULL) {
        int code = s_run_exec(sub, path, item);
        if (code != 0) {
            acc_log_warn("subscribe",
                         "--exec exited %d for %s %s; not acknowledged, the broker will "
                         "deliver it again",
                         code, item->kind, item->id);
            rc = 1;
        }
    }
    free(tmp);
    free(path);
    return rc;
}

/* Hands obj (taken) to the agency (stdout or the spool) between an intent and a
 * done in the journal: 0 done, 1 to be retried (the hook failed), -1 the output
 * cannot be written. */
static int s_hand_over(subscriber_t *sub, const item_t *item, json_t *obj)
{
    int rc = 0;
    acc_err_t err;
    if (obj == NULL) {
        acc_log_error("subscribe", "%s %s could not be written as JSON", item->kind, item->id);
        rc = -1;
    } else if (sub->incoming != NULL) {
        char *text = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        rc = text != NULL ? s_to_spool(sub, item, text) : -1;
        acc_pb_free_wiped(text); /* a child's record */
    } else if (seen_start(sub->seen, item->key, &err) != ACC_OK) {
        json_decref(obj);
        acc_log_error("subscribe", "%s", err.msg);
        rc = -1;
    } else if (agent_print_json(obj) != 0) {
        acc_log_error("subscribe", "could not write a delivery to stdout: %s", strerror(errno));
        rc = -1;
    }
    const uint8_t *record = item->has_record ? item->record : NULL;
    if (rc == 0 && seen_add(sub->seen, item->key, record, &err) != ACC_OK) {
        acc_log_error("subscribe", "%s", err.msg);
        rc = -1;
    }
    return rc;
}

/* Already handed over: this id, or (a share, after a restore of the broker's
 * database) the same record under a new share id. Journalled and acknowledged,
 * not handed over. */
static bool s_is_repeat_delivery(subscriber_t *sub, const item_t *item)
{
    if (seen_has(sub->seen, item->key)) {
        acc_log_info("subscribe", "%s %s was already handed over; acknowledged again", item->kind,
                     item->id);
        return true;
    }
    if (!item->has_record || !seen_has_record(sub->seen, item->record)) {
        return false;
    }
    acc_log_notice("subscribe",
                   "share %s from %s carries a record already handed over under another share "
                   "id (as after a restore of the broker's database); acknowledged, not handed "
                   "over again",
                   item->id, item->from);
    acc_err_t err;
    if (seen_add(sub->seen, item->key, item->record, &err) != ACC_OK) {
        acc_log_warn("subscribe", "%s", err.msg);
    }
    return true;
}

/* 1: handed over and acknowledged; 0: acknowledged again, or to be retried;
 * -1: the output cannot be written (stop). */
static int s_deliver(subscriber_t *sub, const Accord__V1__Envelope *env, item_t *item)
{
    bool again = s_is_repeat_delivery(sub, item);
    if (!again) {
        item->repeat = seen_is_started(sub->seen, item->key);
        if (item->repeat) {
            acc_log_notice("subscribe",
                           "%s %s: an earlier hand-over began and did not finish; handing it "
                           "over again (ACCORD_REPEAT=1)",
                           item->kind, item->id);
        }
        int rc = s_hand_over(sub, item, s_item_json(env, item));
        if (rc != 0) {
            return rc < 0 ? -1 : 0;
        }
    }
    acc_err_t err;
    if (s_ack(sub->client, item->id, &err) != ACC_OK) {
        acc_log_warn("subscribe", "%s", err.msg);
    }
    if (again) {
        return 0;
    }
    acc_log_info("subscribe", "received %s %s from %s", item->kind, item->id, item->from);
    return 1;
}

/* What reaches the hook's environment, the seen journal and this log is checked
 * first, as the broker checks what agencies send it. A share: false when it is
 * not one that can be handed over. */
static bool s_share_item(const Accord__V1__Deliver *d, item_t *item)
{
    if (!acc_validate_is_agency_id(d->from_agency) || d->record == NULL ||
        !acc_validate_is_record_id(d->record->record_id) ||
        !acc_validate_is_record_type(d->record->record_type)) {
        acc_log_error("subscribe",
                      "share %s: the broker sent a delivery whose sender, record id or record "
                      "type is missing or not valid; not handed over, not acknowledged",
                      d->share_id);
        return false;
    }
    item->kind = "share";
    item->id = d->share_id;
    item->from = d->from_agency;
    item->record_type = d->record->record_type;
    item->has_record = true;
    seen_record_hash(item->record, d->from_agency, d->record->record_id);
    return true;
}

static bool s_outcome_item(const Accord__V1__OutcomeNotice *n, item_t *item)
{
    acc_err_t err;
    if (notice_outcome_check(n, &err) != ACC_OK) {
        acc_log_error("subscribe",
                      "outcome %s: the broker sent an outcome notice that is not valid (%s); "
                      "not handed over, not acknowledged",
                      n->outcome_id, err.msg);
        return false;
    }
    item->kind = "outcome";
    item->id = n->outcome_id;
    item->from = n->to_agency;
    item->record_type = n->record_type;
    return true;
}

static bool s_lookup_item(const Accord__V1__LookupNotice *n, item_t *item)
{
    acc_err_t err;
    if (notice_lookup_check(n, &err) != ACC_OK) {
        acc_log_error("subscribe",
                      "lookup-notice %s: the broker sent a lookup notice that is not valid "
                      "(%s); not handed over, not acknowledged",
                      n->notice_id, err.msg);
        return false;
    }
    item->kind = "lookup-notice";
    item->id = n->notice_id;
    item->from = n->by_agency;
    item->record_type = "";
    return true;
}

/* The id that the item is filed, journalled and acknowledged under: a uuid, or
 * nothing of it is used (not even in this log). */
static const char *s_item_id(const Accord__V1__Envelope *env)
{
    switch (env->body_case) {
    case ACCORD__V1__ENVELOPE__BODY_DELIVER:
        return env->deliver->share_id;
    case ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE:
        return env->outcome_notice->outcome_id;
    case ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE:
        return env->lookup_notice->notice_id;
    default:
        return NULL;
    }
}

/* 1: handed over and acknowledged; 0: not a delivery, or to be retried;
 * -1: the output cannot be written (stop). */
static int s_on_delivery(subscriber_t *sub, const Accord__V1__Envelope *env)
{
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        acc_log_warn("subscribe", "broker error: %s (%s)", env->error->message,
                     acc_pb_code_name(env->error->code));
        return 0;
    }
    const char *id = s_item_id(env);
    if (id == NULL) {
        return 0;
    }
    item_t item = { 0 };
    acc_err_t err;
    if (acc_uuid_parse(item.key, id, &err) != ACC_OK) {
        acc_log_error("subscribe", "the broker sent a delivery whose id is not a uuid");
        return 0;
    }
    bool ok = false;
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE) {
        ok = s_outcome_item(env->outcome_notice, &item);
    } else if (env->body_case == ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE) {
        ok = s_lookup_item(env->lookup_notice, &item);
    } else {
        ok = s_share_item(env->deliver, &item);
    }
    return ok ? s_deliver(sub, env, &item) : 0;
}

static int s_open_spool(subscriber_t *sub, const char *dir, const char *seen_path)
{
    acc_err_t err;
    char *journal = NULL;
    if (dir != NULL) {
        sub->incoming = acc_xasprintf("%s/incoming", dir);
        sub->tmp = acc_xasprintf("%s/.tmp", dir);
        if (agent_make_dir(dir, &err) != ACC_OK || agent_make_dir(sub->incoming, &err) != ACC_OK ||
            agent_make_dir(sub->tmp, &err) != ACC_OK) {
            acc_log_error("subscribe", "%s", err.msg);
            return EXIT_OUTPUT;
        }
        journal = seen_path != NULL ? acc_xstrdup(seen_path) : acc_xasprintf("%s/.seen", dir);
    } else if (seen_path != NULL) {
        journal = acc_xstrdup(seen_path);
    }
    acc_rc_t rc = seen_open(&sub->seen, journal, SEEN_KEEP, &err);
    free(journal);
    if (rc != ACC_OK) {
        acc_log_error("subscribe", "%s", err.msg);
        return EXIT_OUTPUT;
    }
    return EXIT_SUCCESS;
}

static int s_subscribe_loop(subscriber_t *sub, long count)
{
    long received = 0;
    int status = EXIT_SUCCESS;
    while (status == EXIT_SUCCESS && !agent_stop && (count <= 0 || received < count)) {
        Accord__V1__Envelope *env = NULL;
        acc_err_t err;
        acc_rc_t rc = client_recv(sub->client, &env, 1000, &err);
        if (rc == ACC_ERR_PERMISSION) {
            status = agent_stop_refused(rc, &err);
        } else if (rc == ACC_OK) {
            int got = s_on_delivery(sub, env);
            accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
            status = got < 0 ? EXIT_OUTPUT : EXIT_SUCCESS;
            received += got > 0 ? 1 : 0;
        }
    }
    return status;
}

/* True when standard output is the systemd journal: systemd names the stream it
 * connects in $JOURNAL_STREAM as "device:inode". */
static bool s_stdout_is_journal(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    struct stat st;
    if (stream == NULL || fstat(STDOUT_FILENO, &st) != 0) {
        return false;
    }
    char mine[64];
    (void)snprintf(mine, sizeof(mine), "%llu:%llu", (unsigned long long)st.st_dev,
                   (unsigned long long)st.st_ino);
    return strcmp(stream, mine) == 0;
}

int subscribe_run(const acc_agent_config_t *config, const agent_args_t *args)
{
    subscriber_t sub = { 0 };
    const char *spool = args->spool != NULL ? args->spool : config->subscribe_spool;
    const char *exec = args->exec != NULL ? args->exec : config->exec;
    const char *seen = args->seen != NULL ? args->seen : config->seen_file;
    sub.exec = exec[0] != '\0' ? exec : NULL;
    sub.exec_timeout_ms =
        1000 * (args->exec_timeout_s > 0 ? args->exec_timeout_s : config->exec_timeout_s);
    if (sub.exec != NULL && spool[0] == '\0') {
        acc_log_error("subscribe", "--exec needs --spool: the command is given a file");
        return EXIT_USAGE;
    }
    if (spool[0] == '\0' && s_stdout_is_journal()) {
        acc_log_error("subscribe",
                      "no spool: this agent would print the records it receives into the "
                      "journal (standard output is the journal); set subscribe_spool");
        return EXIT_CONFIG;
    }
    int status = s_open_spool(&sub, spool[0] != '\0' ? spool : NULL, seen[0] != '\0' ? seen : NULL);
    if (status == EXIT_SUCCESS) {
        status = agent_connect(&sub.client, config, true);
    }
    if (status == EXIT_SUCCESS) {
        status = s_subscribe_loop(&sub, args->count);
    }
    client_destroy(&sub.client);
    seen_destroy(&sub.seen);
    free(sub.incoming);
    free(sub.tmp);
    return status;
}
