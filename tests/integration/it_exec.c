/* it_exec.c - the subscribe agent's hand-over: its key on standard input as
 * systemd gives it, an exec hook that can reach no secret and is stopped when
 * it hangs, exactly-once across kill -9, and a record the broker delivers again
 * under a new share id after a restore */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define CC      "rmbc-childrens-centres"
#define NOBODY  65534
#define WAIT_MS 30000

static th_world_t *world;
static char dir[64]; /* this test's own files, beside the world's */

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", CC, NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "redeliver_after_ms: 1000\n");
    th_broker_start(world);
    snprintf(world->listen, sizeof(world->listen), "%s", world->endpoint); /* same after restart */
    snprintf(dir, sizeof(dir), "/tmp/accord-it-exec.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(chmod(dir, 0755), 0);
}

static void s_remove_tree(const char *path)
{
    char *cmd = acc_xasprintf("rm -rf -- '%s'", path); /* our own mkdtemp directory */
    cr_assert_eq(system(cmd), 0);
    free(cmd);
}

static void teardown(void)
{
    th_world_destroy(&world);
    s_remove_tree(dir);
}

TestSuite(exec, .init = setup, .fini = teardown, .timeout = 240);

static char *s_path(const char *name)
{
    return acc_xasprintf("%s/%s", dir, name);
}

static void s_write(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(path, mode), 0);
}

/* agent.yaml for the children's centres with its key on standard input. */
static char *s_stdin_config(void)
{
    char *path = s_path("cc.agent.yaml");
    char *text = acc_xasprintf("broker: \"%s\"\nbroker_key: \"%s\"\nagency: %s\n"
                               "curve_secret_key: stdin\nlog_level: info\n",
                               world->endpoint, world->broker_pub, CC);
    s_write(path, text, 0644);
    free(text);
    return path;
}

static char *s_key_path(void)
{
    return acc_xasprintf("%s/%s.curve.secret", world->dir, CC);
}

/* A spool directory owned by uid (the agent's user). */
static char *s_spool(uid_t uid)
{
    char *spool = s_path("spool");
    cr_assert_eq(mkdir(spool, 0700), 0);
    cr_assert_eq(chown(spool, uid, uid), 0);
    return spool;
}

static void s_publish(const char *record_id)
{
    char *json = th_health_visit_json(record_id, th_nhs(0));
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
}

/* The share id of record_id's one `shared` row (yours to free). */
static char *s_share_id(const char *record_id)
{
    char *sql = acc_xasprintf("SELECT share_id::text FROM accord_log WHERE event = 'shared' AND "
                              "record_id = '%s'",
                              record_id);
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_eq(PQntuples(res), 1, "%s is shared %d times", record_id, PQntuples(res));
    char *id = acc_xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    free(sql);
    return id;
}

static bool s_wait_exists(const char *path, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (access(path, F_OK) == 0) {
            return true;
        }
        th_sleep_ms(50);
    }
    return false;
}

/* The names in incoming/, one a line. */
static size_t s_incoming(const char *spool, char *first, size_t first_len)
{
    char *incoming = acc_xasprintf("%s/incoming", spool);
    DIR *d = opendir(incoming);
    cr_assert_not_null(d, "%s", incoming);
    size_t n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.') {
            if (n++ == 0 && first != NULL) {
                snprintf(first, first_len, "%s", e->d_name);
            }
        }
    }
    closedir(d);
    free(incoming);
    return n;
}

static bool s_is_gone(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *stat = access(path, F_OK) == 0 ? th_slurp(path) : NULL;
    bool gone = stat == NULL || strstr(stat, ") Z ") != NULL; /* a zombie has stopped */
    free(stat);
    return gone;
}

static pid_t s_read_pid(const char *path)
{
    char *text = th_slurp(path);
    pid_t pid = (pid_t)strtol(text, NULL, 10);
    free(text);
    cr_assert_gt(pid, 1);
    return pid;
}

Test(exec, an_agent_with_its_key_on_stdin_delivers_and_its_hook_reaches_no_secret)
{
    char *config = s_stdin_config();
    char *spool = s_spool(NOBODY);
    char *key = s_key_path();
    char *hook = s_path("probe.sh");
    char *script = acc_xasprintf(
        "out=\"$(dirname \"$1\")/../probe\"\n"
        "{\n"
        "echo \"share=$ACCORD_SHARE_ID repeat=$ACCORD_REPEAT from=$ACCORD_FROM_AGENCY\"\n"
        "if (exec 3</proc/$PPID/mem) 2>/dev/null; then echo mem=open; else echo mem=refused; fi\n"
        "if cat /proc/$PPID/fd/0 >/dev/null 2>&1; then echo agent-fd0=open; "
        "else echo agent-fd0=refused; fi\n"
        "if cat '%s' >/dev/null 2>&1; then echo keyfile=open; else echo keyfile=refused; fi\n"
        "echo \"stdin=$(readlink /proc/self/fd/0) bytes=$(wc -c)\"\n"
        "echo \"inherited=$(ls -l /proc/self/fd | grep -c -e socket: -e anon_inode -e seen)\"\n"
        "grep SigIgn /proc/self/status\n"
        "} > \"$out.tmp\" 2>&1\n"
        "mv \"$out.tmp\" \"$out\"\n",
        key);
    s_write(hook, script, 0644);
    char *exec = acc_xasprintf(". %s", hook); /* sourced: $PPID is the agent */
    const char *extra[] = { "--spool", spool, "--exec", exec, NULL };
    th_proc_t *agent = th_agent_start_keyed(world, config, "subscribe", key, "65534", extra);
    char *log = acc_xasprintf("%s.subscribe.log", config);
    cr_assert(th_file_wait(log, "connected to", WAIT_MS), "the agent did not connect");

    s_publish("hv-stdin-1");
    char *probe = acc_xasprintf("%s/probe", spool);
    cr_assert(s_wait_exists(probe, WAIT_MS), "the hook did not run");
    char *seen = th_slurp(probe);
    char name[NAME_MAX + 1] = "";
    cr_assert_eq(s_incoming(spool, name, sizeof(name)), 1);
    char *expect = acc_xasprintf("share=%.36s repeat=0 from=rft-health-visiting", name);
    cr_assert(strstr(seen, expect) != NULL, "%s", seen);
    cr_assert(strstr(seen, "mem=refused") != NULL, "the hook opened the agent's memory: %s", seen);
    cr_assert(strstr(seen, "agent-fd0=refused") != NULL, "%s", seen);
    cr_assert(strstr(seen, "keyfile=refused") != NULL, "%s", seen);
    cr_assert(strstr(seen, "stdin=/dev/null bytes=0") != NULL, "%s", seen);
    cr_assert(strstr(seen, "inherited=0") != NULL, "the hook inherited descriptors: %s", seen);
    cr_assert(strstr(seen, "SigIgn:\t0000000000000000") != NULL, "signals stay ignored: %s", seen);
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 1, WAIT_MS), 1);
    struct stat st;
    cr_assert_eq(stat(spool, &st), 0);
    char *incoming = acc_xasprintf("%s/incoming", spool);
    cr_assert_eq(stat(incoming, &st), 0);
    cr_assert_eq(st.st_uid, NOBODY, "the agent ran as its own user");
    cr_assert_eq(th_proc_stop(&agent, SIGTERM, 10000), 0);
    free(incoming);
    free(expect);
    free(seen);
    free(probe);
    free(log);
    free(exec);
    free(script);
    free(hook);
    free(key);
    free(spool);
    free(config);
}

Test(exec, a_key_on_stdin_that_others_may_read_or_that_is_not_a_file_is_refused)
{
    char *config = s_stdin_config();
    char *key = s_key_path();
    char *loose = s_path("loose.curve.secret");
    char *text = th_slurp(key);
    s_write(loose, text, 0644);
    const char *extra[] = { NULL };
    th_proc_t *agent = th_agent_start_keyed(world, config, "subscribe", loose, NULL, extra);
    cr_assert_eq(th_proc_wait(&agent, 20000), 78);
    char *log_path = acc_xasprintf("%s.subscribe.log", config);
    char *log = th_slurp(log_path);
    cr_assert(strstr(log, "refusing the key on standard input: readable or writable by group or "
                          "others (mode 0644)") != NULL,
              "%s", log);
    cr_assert(strstr(log, text) == NULL, "the key is not logged");
    free(log);

    /* a pipe, as from a shell, is not the file systemd opens */
    char *cc_config = acc_xasprintf("%s/%s.agent.yaml", world->dir, CC);
    char *yaml = th_slurp(config);
    s_write(cc_config, yaml, 0644);
    agent = th_agent_start(world, "subscribe", CC, NULL);
    cr_assert_eq(th_proc_wait(&agent, 20000), 78);
    char *cc_log = acc_xasprintf("%s/%s.subscribe.log", world->dir, CC);
    log = th_slurp(cc_log);
    cr_assert(strstr(log, "the key on standard input is not a regular file") != NULL, "%s", log);
    free(log);
    free(cc_log);
    free(yaml);
    free(cc_config);
    free(log_path);
    free(text);
    free(loose);
    free(key);
    free(config);
}

Test(exec, a_hook_that_hangs_is_stopped_left_unacknowledged_and_run_again_once_it_behaves)
{
    char *spool = s_spool(0);
    char *hook = s_path("hang.sh");
    s_write(hook,
            "d=\"$(dirname \"$1\")/..\"\n"
            "if [ -e \"$d/behave\" ]; then echo \"$ACCORD_SHARE_ID $ACCORD_REPEAT\" >> "
            "\"$d/handed\"; exit 0; fi\n"
            "sleep 600 &\n"
            "echo $! > \"$d/sleeper.tmp\"; mv \"$d/sleeper.tmp\" \"$d/sleeper\"\n"
            "wait\n",
            0644);
    char *exec = acc_xasprintf(". %s", hook);
    const char *extra[] = { "--spool", spool, "--exec", exec, "--exec-timeout=1", NULL };
    th_proc_t *agent = th_agent_start_argv(world, "subscribe", CC, extra);
    cr_assert(th_agent_wait_connected(world, CC, "subscribe"));
    s_publish("hv-hang-1");

    char *sleeper = acc_xasprintf("%s/sleeper", spool);
    cr_assert(s_wait_exists(sleeper, WAIT_MS), "the hook did not start");
    pid_t pid = s_read_pid(sleeper);
    char *log = acc_xasprintf("%s/%s.subscribe.log", world->dir, CC);
    cr_assert(th_file_wait(log, "timed out", WAIT_MS), "no timeout was logged");
    for (int waited = 0; !s_is_gone(pid) && waited < WAIT_MS; waited += 50) {
        th_sleep_ms(50);
    }
    cr_assert(s_is_gone(pid), "the hook's child outlived the timeout");
    cr_assert_eq(th_pg_acked_count(world, "true"), 0, "a timed-out hook acknowledged");

    char *behave = acc_xasprintf("%s/behave", spool);
    s_write(behave, "", 0644);
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 1, WAIT_MS), 1,
                 "redelivered and handed over once the hook behaves");
    char name[NAME_MAX + 1] = "";
    cr_assert_eq(s_incoming(spool, name, sizeof(name)), 1);
    char *handed_path = acc_xasprintf("%s/handed", spool);
    char *handed = th_slurp(handed_path);
    char *expect = acc_xasprintf("%.36s 1\n", name); /* an earlier run began: ACCORD_REPEAT=1 */
    cr_assert_str_eq(handed, expect);
    cr_assert_eq(th_proc_stop(&agent, SIGTERM, 10000), 0);
    free(expect);
    free(handed);
    free(handed_path);
    free(behave);
    free(log);
    free(sleeper);
    free(exec);
    free(hook);
    free(spool);
}

Test(exec, a_hook_cut_by_kill_9_runs_once_more_with_the_same_share_id_and_accord_repeat)
{
    char *spool = s_spool(0);
    char *hook = s_path("slow.sh");
    s_write(hook,
            "d=\"$(dirname \"$1\")/..\"\n"
            "echo \"$ACCORD_SHARE_ID $ACCORD_REPEAT\" >> \"$d/runs\"\n"
            "if [ \"$ACCORD_REPEAT\" = 0 ]; then\n"
            "  echo $$ > \"$d/hook.tmp\"; mv \"$d/hook.tmp\" \"$d/hook\"; exec sleep 600\n"
            "fi\n"
            "exit 0\n",
            0644);
    char *exec = acc_xasprintf(". %s", hook);
    const char *extra[] = { "--spool", spool, "--exec", exec, NULL };
    th_proc_t *agent = th_agent_start_argv(world, "subscribe", CC, extra);
    cr_assert(th_agent_wait_connected(world, CC, "subscribe"));
    s_publish("hv-crash-1");
    char *marker = acc_xasprintf("%s/hook", spool);
    cr_assert(s_wait_exists(marker, WAIT_MS), "the hook did not start");
    pid_t hook_group = s_read_pid(marker);

    cr_assert_eq(th_proc_stop(&agent, SIGKILL, 10000), 128 + SIGKILL);
    (void)kill(-hook_group, SIGKILL); /* the orphaned hook: it is ours to end */
    cr_assert_eq(th_pg_acked_count(world, "true"), 0);

    agent = th_agent_start_argv(world, "subscribe", CC, extra);
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 1, WAIT_MS), 1);
    char name[NAME_MAX + 1] = "";
    cr_assert_eq(s_incoming(spool, name, sizeof(name)), 1, "exactly one file in the spool");
    char *runs_path = acc_xasprintf("%s/runs", spool);
    char *runs = th_slurp(runs_path);
    char *expect = acc_xasprintf("%.36s 0\n%.36s 1\n", name, name);
    cr_assert_str_eq(runs, expect);
    char *log = acc_xasprintf("%s/%s.subscribe.log", world->dir, CC);
    cr_assert(th_file_wait(log, "handing it over again (ACCORD_REPEAT=1)", 1000));
    cr_assert_eq(th_proc_stop(&agent, SIGTERM, 10000), 0);
    free(log);
    free(expect);
    free(runs);
    free(runs_path);
    free(marker);
    free(exec);
    free(hook);
    free(spool);
}

Test(exec, a_record_delivered_again_under_a_new_share_id_reaches_the_spool_once)
{
    char *spool = s_spool(0);
    const char *extra[] = { "--spool", spool, NULL };
    th_proc_t *agent = th_agent_start_argv(world, "subscribe", CC, extra);
    cr_assert(th_agent_wait_connected(world, CC, "subscribe"));
    /* a backup taken before the publish */
    th_broker_stop(world);
    th_pg_snapshot(world);
    th_broker_start(world);
    s_publish("hv-restored-1");
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 1, WAIT_MS), 1);
    cr_assert_eq(s_incoming(spool, NULL, 0), 1);
    char *first_share = s_share_id("hv-restored-1");

    /* The database restored from that backup: the broker has forgotten the
     * publish, and the operator accepts the loss as after any restore. */
    th_broker_stop(world);
    th_pg_snapshot_restore(world);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-restored-1'"), 0);
    cr_assert_eq(th_broker_run_once(world, "--accept-restore"), 0);
    th_broker_start(world);
    s_publish("hv-restored-1");
    char *second_share = s_share_id("hv-restored-1");
    cr_assert_str_neq(second_share, first_share, "the broker shared it again under a new share id");
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 1, WAIT_MS), 1);
    cr_assert_eq(th_pg_pending_count(world, "true"), 0);
    cr_assert_eq(s_incoming(spool, NULL, 0), 1, "the record reached the spool once");
    char *log_path = acc_xasprintf("%s/%s.subscribe.log", world->dir, CC);
    cr_assert(th_file_wait(log_path, "already handed over under another share id", 1000));
    cr_assert_eq(th_proc_stop(&agent, SIGTERM, 10000), 0);
    char *log = th_slurp(log_path);
    cr_assert(strstr(log, "hv-restored-1") == NULL, "the agent logged a record id");
    th_assert_names_no_child(log, "the subscriber's log", NULL);
    free(log);
    free(log_path);
    free(second_share);
    free(first_share);
    free(spool);
}

Test(exec, a_publisher_with_its_key_on_stdin_needs_its_records_from_elsewhere)
{
    char *config = s_stdin_config();
    char *key = s_key_path();
    const char *extra[] = { NULL };
    th_proc_t *agent = th_agent_start_keyed(world, config, "publish", key, NULL, extra);
    cr_assert_eq(th_proc_wait(&agent, 20000), 64);
    char *log_path = acc_xasprintf("%s.publish.log", config);
    char *log = th_slurp(log_path);
    cr_assert(strstr(log, "curve_secret_key: stdin takes standard input for the key; give records "
                          "with --input FILE or --spool DIR") != NULL,
              "%s", log);
    free(log);
    free(log_path);
    free(key);
    free(config);
}

/* Under systemd with no spool, standard output is the journal ($JOURNAL_STREAM names
 * it): records printed there would sit in the system log, so the agent refuses. */
Test(exec, a_subscriber_whose_output_is_the_journal_needs_a_spool)
{
    const char *config = th_agent_config(world, CC, NULL);
    char *out = s_path("journal.out");
    char *err = s_path("journal.err");
    s_publish("hv-journal-1");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        FILE *o = freopen(out, "w", stdout);
        FILE *e = freopen(err, "w", stderr);
        struct stat st;
        if (o == NULL || e == NULL || fstat(STDOUT_FILENO, &st) != 0) {
            _exit(120);
        }
        char stream[64];
        snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino);
        setenv("JOURNAL_STREAM", stream, 1);
        char *exe = acc_xasprintf("%s/accord-agent", world->bin_dir);
        execl(exe, exe, "subscribe", "--config", config, (char *)NULL);
        _exit(121);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status));
    cr_assert_eq(WEXITSTATUS(status), 78);
    char *log = th_slurp(err);
    cr_assert(strstr(log, "would print the records it receives into the journal") != NULL, "%s",
              log);
    char *printed = th_slurp(out);
    cr_assert(strstr(printed, "hv-journal-1") == NULL, "a record reached the journal");
    free(printed);
    free(log);
    free(err);
    free(out);
}
