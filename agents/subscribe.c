/* subscribe.c - accord-agent subscribe: deliveries to stdout or into a spool
 * directory, each handed to the agency's system once and acknowledged after */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "accord/log.h"
#include "accord/logrow.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "agent.h"
#include "seen.h"

#define EXEC_POLL_MS 100

typedef struct {
    client_t *client;
    seen_t *seen;
    const char *exec; /* NULL: none */
    char *incoming;   /* spool: DIR/incoming, NULL for stdout */
    char *tmp;        /* spool: DIR/.tmp, same file system as incoming */
} subscriber_t;

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

/* Runs CMD through the shell with the delivered file as $1, keeping the broker
 * connection alive while it runs. Its stdout goes to our stderr: stdout is ours. */
static int s_run_exec(subscriber_t *sub, const char *path, const Accord__V1__Deliver *d)
{
    pid_t pid = fork();
    if (pid < 0) {
        acc_log_error("subscribe", "could not start --exec: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            (void)dup2(devnull, STDIN_FILENO);
        }
        (void)dup2(STDERR_FILENO, STDOUT_FILENO);
        (void)setenv("ACCORD_FILE", path, 1);
        (void)setenv("ACCORD_SHARE_ID", d->share_id, 1);
        (void)setenv("ACCORD_FROM", d->from_agency, 1);
        (void)setenv("ACCORD_RECORD_TYPE", d->record != NULL ? d->record->record_type : "", 1);
        execl("/bin/sh", "sh", "-c", sub->exec, "accord-exec", path, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            break;
        }
        if (done < 0 && errno != EINTR) {
            acc_log_error("subscribe", "lost track of --exec: %s", strerror(errno));
            return -1;
        }
        client_tick(sub->client);
        agent_sleep_ms(EXEC_POLL_MS);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Written, fsync'd and renamed into incoming/ before anything else; a file
 * already there from an earlier attempt is the same delivery and is kept. */
static int s_to_spool(subscriber_t *sub, const Accord__V1__Deliver *d, const char *text)
{
    char *path = acc_xasprintf("%s/%s.json", sub->incoming, d->share_id);
    int rc = 0;
    if (access(path, F_OK) != 0) {
        char *tmp = acc_xasprintf("%s/%s.json", sub->tmp, d->share_id);
        size_t len = strlen(text);
        char *line = acc_xasprintf("%s\n", text);
        acc_err_t err;
        rc = agent_write_durably(tmp, line, len + 1, &err) == ACC_OK ? 0 : -1;
        if (rc != 0) {
            acc_log_error("subscribe", "%s", err.msg);
        } else if (rename(tmp, path) != 0) {
            acc_log_error("subscribe", "could not move a delivery into \"%s\": %s", sub->incoming,
                          strerror(errno));
            rc = -1;
        } else if (agent_sync_dir(sub->incoming, &err) != ACC_OK) {
            acc_log_error("subscribe", "%s", err.msg);
            rc = -1;
        }
        free(line);
        free(tmp);
    }
    if (rc == 0 && sub->exec != NULL) {
        int code = s_run_exec(sub, path, d);
        if (code != 0) {
            acc_log_warn("subscribe",
                         "--exec exited %d for share %s; not acknowledged, the broker will "
                         "deliver it again",
                         code, d->share_id);
            rc = 1;
        }
    }
    free(path);
    return rc;
}

/* Hands d to the agency (stdout or the spool) and remembers it: 0 done, 1 to
 * be retried (--exec failed), -1 the output cannot be written. */
static int s_hand_over(subscriber_t *sub, const Accord__V1__Deliver *d, const uint8_t *id)
{
    json_t *obj = s_delivery_json(d);
    int rc = 0;
    if (sub->incoming != NULL) {
        char *text = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        rc = text != NULL ? s_to_spool(sub, d, text) : -1;
        free(text);
    } else if (agent_print_json(obj) != 0) {
        acc_log_error("subscribe", "could not write a delivery to stdout: %s", strerror(errno));
        rc = -1;
    }
    acc_err_t err;
    if (rc == 0 && seen_add(sub->seen, id, &err) != ACC_OK) {
        acc_log_error("subscribe", "%s", err.msg);
        rc = -1;
    }
    return rc;
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
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_DELIVER) {
        return 0;
    }
    const Accord__V1__Deliver *d = env->deliver;
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    acc_err_t err;
    if (acc_uuid_parse(id, d->share_id, &err) != ACC_OK) {
        acc_log_error("subscribe", "the broker sent a delivery whose share id is not a uuid");
        return 0;
    }
    bool again = seen_has(sub->seen, id);
    if (!again) {
        int rc = s_hand_over(sub, d, id);
        if (rc != 0) {
            return rc < 0 ? -1 : 0;
        }
    }
    if (s_ack(sub->client, d->share_id, &err) != ACC_OK) {
        acc_log_warn("subscribe", "%s", err.msg);
    }
    if (again) {
        acc_log_info("subscribe", "share %s was already handed over; acknowledged again",
                     d->share_id);
        return 0;
    }
    acc_log_info("subscribe", "received share %s from %s", d->share_id, d->from_agency);
    return 1;
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
            acc_log_error("subscribe", "%s", err.msg);
            status = EXIT_CONNECT;
        } else if (rc == ACC_OK) {
            int got = s_on_delivery(sub, env);
            accord__v1__envelope__free_unpacked(env, acc_pb_wiping_allocator());
            status = got < 0 ? EXIT_OUTPUT : EXIT_SUCCESS;
            received += got > 0 ? 1 : 0;
        }
    }
    return status;
}

int subscribe_run(const acc_agent_config_t *config, const agent_args_t *args)
{
    subscriber_t sub = { 0 };
    const char *spool = args->spool != NULL ? args->spool : config->subscribe_spool;
    const char *exec = args->exec != NULL ? args->exec : config->exec;
    const char *seen = args->seen != NULL ? args->seen : config->seen_file;
    sub.exec = exec[0] != '\0' ? exec : NULL;
    if (sub.exec != NULL && spool[0] == '\0') {
        acc_log_error("subscribe", "--exec needs --spool: the command is given a file");
        return EXIT_USAGE;
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
