/* it_spool.c - a publish spool reads only the agent's own regular files and never
 * writes through a link: symlinks, hard links, FIFOs, oversized files and files of
 * other users in incoming/ are set aside unread, links planted where the agents
 * write are replaced, not followed, and a line that does not parse is recorded by
 * position and hash; a publish agent with nothing to read is a configuration error */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define PUBLISHER  "rft-health-visiting"
#define SUBSCRIBER "rmbc-childrens-centres"
#define RUN_MS     60000

static th_world_t *world;
static th_proc_t *agent;
static char spool[512];
static char incoming[600];

static void setup(void)
{
    const char *agencies[] = { PUBLISHER, SUBSCRIBER, NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    th_broker_start(world);
    snprintf(spool, sizeof(spool), "%s/hv.spool", world->dir);
    snprintf(incoming, sizeof(incoming), "%s/incoming", spool);
    cr_assert_eq(mkdir(spool, 0750), 0);
    cr_assert_eq(mkdir(incoming, 0750), 0);
}

static void teardown(void)
{
    if (agent != NULL) {
        (void)th_proc_stop(&agent, SIGKILL, 5000);
    }
    th_world_destroy(&world);
}

TestSuite(spool, .init = setup, .fini = teardown, .timeout = 180);

static char *s_path(const char *dir, const char *name)
{
    return acc_xasprintf("%s/%s", dir, name);
}

/* Writes text to incoming/NAME the way an agency's system does: a dot name, then rename. */
static void s_put(const char *name, const char *text)
{
    char *tmp = acc_xasprintf("%s/.%s.tmp", incoming, name);
    char *ready = s_path(incoming, name);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, ready), 0);
    free(tmp);
    free(ready);
}

/* n health visits PREFIX-1.. as one NDJSON text (yours). */
static char *s_records(const char *prefix, int n, size_t nhs_from)
{
    char *text = acc_xstrdup("");
    for (int i = 1; i <= n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        char *json = th_health_visit_json(id, th_nhs((nhs_from + (size_t)i) % TH_NHS_POOL));
        char *more = acc_xasprintf("%s%s", text, json);
        free(json);
        free(text);
        text = more;
    }
    return text;
}

static void s_put_records(const char *name, const char *prefix, int n)
{
    char *text = s_records(prefix, n, 0);
    s_put(name, text);
    free(text);
}

/* Runs the publisher over the spool until incoming/ is empty; returns its exit status. */
static int s_publish_once(void)
{
    const char *args[] = { "--spool", spool, "--once", NULL };
    agent = th_agent_start_argv(world, "publish", PUBLISHER, args);
    return th_proc_wait(&agent, RUN_MS);
}

static char *s_publisher_log(void)
{
    char *path = acc_xasprintf("%s/%s.publish.log", world->dir, PUBLISHER);
    char *text = th_slurp(path);
    free(path);
    cr_assert_not_null(text);
    return text;
}

/* The contents of a key file, without its line end: what must never be copied. */
static char *s_key_text(const char *agency)
{
    char *path = acc_xasprintf("%s/%s.curve.secret", world->dir, agency);
    char *text = th_slurp(path);
    free(path);
    cr_assert_not_null(text);
    text[strcspn(text, "\r\n")] = '\0';
    cr_assert_geq(strlen(text), 32, "the key file is not what this test expects");
    return text;
}

/* No regular file under dir (but the file whose inode is keep, itself moved, not
 * copied) contains needle. Links are not followed. */
static void s_assert_nowhere_under(const char *dir, const char *needle, ino_t keep)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "could not read %s", dir);
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char *path = s_path(dir, e->d_name);
        struct stat st;
        cr_assert_eq(lstat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            s_assert_nowhere_under(path, needle, keep);
        } else if (S_ISREG(st.st_mode) && st.st_ino != keep) {
            char *text = th_slurp(path);
            cr_assert_null(strstr(text, needle), "%s holds a copy of the key", path);
            free(text);
        }
        free(path);
    }
    closedir(d);
}

/* incoming/NAME was moved unread to rejected/NAME.unread (still of the given type),
 * the agent logged why (reason), and good.ndjson was sent beside it. */
static void s_assert_set_aside(const char *name, mode_t type, const char *reason)
{
    char *in = s_path(incoming, name);
    struct stat st;
    cr_assert_neq(lstat(in, &st), 0, "%s is still in incoming/", name);
    char *aside = acc_xasprintf("%s/rejected/%s.unread", spool, name);
    cr_assert_eq(lstat(aside, &st), 0, "%s was not moved to rejected/%s.unread", name, name);
    cr_assert_eq(st.st_mode & S_IFMT, type, "rejected/%s.unread is not what was in incoming/",
                 name);
    char *results = acc_xasprintf("%s/done/%s.results", spool, name);
    cr_assert_neq(access(results, F_OK), 0, "%s has results: it was read", name);
    char *good = acc_xasprintf("%s/done/good.ndjson.results", spool);
    char *text = th_slurp(good);
    cr_assert_not_null(text, "the good file beside %s was not sent", name);
    cr_assert_not_null(strstr(text, "\"result\":\"accepted\""));
    char *log = s_publisher_log();
    char *needle = acc_xasprintf("refused incoming file \"%s\": %s", name, reason);
    cr_assert_not_null(strstr(log, needle), "the log does not say: %s", needle);
    free(needle);
    free(log);
    free(text);
    free(good);
    free(results);
    free(aside);
    free(in);
}

Test(spool, symlink_to_another_agencys_key_is_set_aside_unread)
{
    s_put_records("good.ndjson", "hv", 2);
    char *key_path = acc_xasprintf("%s/%s.curve.secret", world->dir, SUBSCRIBER);
    char *link_path = s_path(incoming, "keys.ndjson");
    cr_assert_eq(symlink(key_path, link_path), 0);
    cr_assert_eq(s_publish_once(), 0);
    s_assert_set_aside("keys.ndjson", S_IFLNK, "it is a symbolic link");
    char *key = s_key_text(SUBSCRIBER);
    s_assert_nowhere_under(spool, key, 0);
    char *log = s_publisher_log();
    cr_assert_null(strstr(log, key), "the agent's log holds the key");
    free(log);
    free(key);
    free(link_path);
    free(key_path);
}

Test(spool, hard_link_to_another_agencys_key_is_set_aside_unread)
{
    s_put_records("good.ndjson", "hv", 2);
    char *key_path = acc_xasprintf("%s/%s.curve.secret", world->dir, SUBSCRIBER);
    char *link_path = s_path(incoming, "keys.ndjson");
    cr_assert_eq(link(key_path, link_path), 0);
    struct stat key_st;
    cr_assert_eq(stat(key_path, &key_st), 0);
    cr_assert_eq(s_publish_once(), 0);
    s_assert_set_aside("keys.ndjson", S_IFREG, "it has 2 hard links");
    char *key = s_key_text(SUBSCRIBER);
    s_assert_nowhere_under(spool, key, key_st.st_ino);
    char *log = s_publisher_log();
    cr_assert_null(strstr(log, key), "the agent's log holds the key");
    free(log);
    free(key);
    free(link_path);
    free(key_path);
}

Test(spool, fifo_is_set_aside_without_blocking)
{
    char *fifo = s_path(incoming, "a-pipe.ndjson");
    cr_assert_eq(mkfifo(fifo, 0640), 0);
    s_put_records("good.ndjson", "hv", 2);
    /* nobody ever opens the FIFO for writing: an agent that opens it blocking hangs here */
    cr_assert_eq(s_publish_once(), 0);
    s_assert_set_aside("a-pipe.ndjson", S_IFIFO, "it is not a regular file but a FIFO");
    free(fifo);
}

/* How many times needle occurs in text. */
static size_t s_occurrences(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *at = strstr(text, needle); at != NULL; at = strstr(at + 1, needle)) {
        n++;
    }
    return n;
}

Test(spool, refused_file_that_cannot_be_moved_stays_and_is_logged_once)
{
    /* NAME.unread would be longer than a file name may be, so the rename fails */
    char name[256];
    memset(name, 'k', 250);
    strcpy(name + 250, ".nd");
    char *key_path = acc_xasprintf("%s/%s.curve.secret", world->dir, SUBSCRIBER);
    char *link_path = s_path(incoming, name);
    cr_assert_eq(symlink(key_path, link_path), 0);
    s_put_records("good.ndjson", "hv", 2);
    /* --once ends only when nothing in incoming/ is left to try */
    cr_assert_eq(s_publish_once(), 0);
    struct stat st;
    cr_assert_eq(lstat(link_path, &st), 0, "the link is no longer in incoming/");
    cr_assert(S_ISLNK(st.st_mode));
    char *log = s_publisher_log();
    cr_assert_eq(s_occurrences(log, "refused incoming file"), 1, "%s", log);
    cr_assert_not_null(strstr(log, "it is a symbolic link; it could not be moved to rejected/"));
    char *key = s_key_text(SUBSCRIBER);
    s_assert_nowhere_under(spool, key, 0);
    cr_assert_null(strstr(log, key), "the agent's log holds the key");
    char *good = acc_xasprintf("%s/done/good.ndjson.results", spool);
    cr_assert_eq(access(good, F_OK), 0, "the good file beside it was not sent");
    free(good);
    free(key);
    free(log);
    free(link_path);
    free(key_path);
}

Test(spool, file_whose_name_leaves_no_room_for_its_results_is_set_aside_unread)
{
    /* done/.NAME.results.tmp would be longer than a file name may be */
    char name[256];
    memset(name, 'n', 238);
    strcpy(name + 238, ".ndjson"); /* 245 bytes: NAME.unread still fits */
    s_put_records(name, "long", 2);
    s_put_records("good.ndjson", "hv", 2);
    cr_assert_eq(s_publish_once(), 0);
    s_assert_set_aside(name, S_IFREG, "its name is longer than 200 bytes");
    cr_assert_eq(th_pg_count(world, "record_id LIKE 'long-%'"), 0, "its records were sent");
}

Test(spool, file_over_max_spool_file_bytes_is_set_aside_unread)
{
    const char *config = th_agent_config(world, PUBLISHER, NULL);
    FILE *f = fopen(config, "a");
    cr_assert_not_null(f);
    fprintf(f, "max_spool_file_bytes: 4096\n");
    cr_assert_eq(fclose(f), 0);
    char *big = s_records("big", 20, 0); /* about 7 KiB */
    cr_assert_gt(strlen(big), 4096);
    s_put("big.ndjson", big);
    s_put_records("good.ndjson", "hv", 2);
    cr_assert_eq(s_publish_once(), 0);
    char *reason =
        acc_xasprintf("it is %zu bytes, more than max_spool_file_bytes (4096)", strlen(big));
    s_assert_set_aside("big.ndjson", S_IFREG, reason);
    cr_assert_eq(th_pg_count(world, "record_id LIKE 'big-%'"), 0, "a big record was sent");
    free(reason);
    free(big);
}

/* User nobody, to own a file the test makes; NULL (and says why) when not root,
 * which cannot give a file to another user: CI runs as root. */
static const struct passwd *s_nobody_if_root(const char *what)
{
    if (geteuid() != 0) {
        fprintf(stderr,
                "spool: the %s case needs root to create a file owned by another user "
                "(CI runs as root); not exercised as uid %u\n",
                what, (unsigned)geteuid());
        return NULL;
    }
    const struct passwd *nobody = getpwnam("nobody");
    cr_assert_not_null(nobody, "no user nobody to own the file");
    return nobody;
}

Test(spool, file_owned_by_another_user_is_set_aside_unread)
{
    const struct passwd *nobody = s_nobody_if_root("file-owned-by-another-user");
    if (nobody == NULL) {
        return;
    }
    s_put_records("theirs.ndjson", "theirs", 2);
    char *theirs = s_path(incoming, "theirs.ndjson");
    /* nobody's group is not the agent's, so the group rule does not admit it either */
    cr_assert_neq(nobody->pw_gid, getegid());
    cr_assert_eq(chown(theirs, nobody->pw_uid, nobody->pw_gid), 0);
    s_put_records("good.ndjson", "hv", 2);
    cr_assert_eq(s_publish_once(), 0);
    char *reason =
        acc_xasprintf("it is owned by uid %u and gid %u, neither the agent's user "
                      "(uid 0) nor its group (gid %u",
                      (unsigned)nobody->pw_uid, (unsigned)nobody->pw_gid, (unsigned)getegid());
    s_assert_set_aside("theirs.ndjson", S_IFREG, reason);
    cr_assert_eq(th_pg_count(world, "record_id LIKE 'theirs-%'"), 0, "their records were sent");
    free(reason);
    free(theirs);
}

Test(spool, file_of_the_agents_group_from_a_case_system_user_is_read)
{
    const struct passwd *nobody = s_nobody_if_root("case-system-user");
    if (nobody == NULL) {
        return;
    }
    /* the case system's user writes into the agency's setgid spool: its file is
     * owned by that user and by the agent's group */
    s_put_records("casesys.ndjson", "casesys", 2);
    char *path = s_path(incoming, "casesys.ndjson");
    cr_assert_eq(chown(path, nobody->pw_uid, getegid()), 0);
    cr_assert_eq(chmod(path, 0660), 0);
    /* ... but one writable by everyone is not the group's alone */
    s_put_records("open.ndjson", "open", 1);
    char *open_path = s_path(incoming, "open.ndjson");
    cr_assert_eq(chown(open_path, nobody->pw_uid, getegid()), 0);
    cr_assert_eq(chmod(open_path, 0666), 0);
    cr_assert_eq(s_publish_once(), 0);
    cr_assert_eq(
        th_pg_wait_count(world, "event = 'shared' AND record_id LIKE 'casesys-%'", 2, 10000), 2,
        "the case system's records were not sent");
    cr_assert_eq(th_pg_count(world, "record_id LIKE 'open-%'"), 0,
                 "a world-writable file was read");
    free(open_path);
    free(path);
}

Test(spool, line_that_does_not_parse_is_recorded_by_position_and_hash)
{
    static const char junk[] = "not a record: \"9434765919\" Amelia Smith";
    char *good = s_records("hv", 1, 0);
    char *bad_nhs = th_health_visit_json("hv-bad", "9434765918"); /* check digit wrong */
    char *text = acc_xasprintf("%s%s\n%s", good, junk, bad_nhs);
    s_put("mixed.ndjson", text);
    cr_assert_eq(s_publish_once(), 0);
    char *path = acc_xasprintf("%s/rejected/mixed.ndjson", spool);
    char *rejected = th_slurp(path);
    cr_assert_not_null(rejected, "no rejected/mixed.ndjson");
    cr_assert_null(strstr(rejected, "not a record"), "the line was copied into rejected/");
    char *first = strtok(rejected, "\n");
    char *second = strtok(NULL, "\n");
    cr_assert_not_null(second, "two refused lines expected");
    cr_assert_null(strtok(NULL, "\n"));
    json_t *r = json_loads(first, 0, NULL);
    cr_assert_not_null(r);
    cr_assert_eq(json_integer_value(json_object_get(r, "line")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r, "bytes")), (json_int_t)strlen(junk));
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const uint8_t *)junk, strlen(junk));
    char hex[2 * sizeof(digest) + 1];
    sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
    cr_assert_str_eq(json_string_value(json_object_get(r, "sha256")), hex);
    cr_assert_str_eq(json_string_value(json_object_get(r, "code")), "INVALID_INPUT");
    cr_assert_null(json_object_get(r, "text"));
    cr_assert_null(json_object_get(r, "record"));
    json_decref(r);
    /* a record that parsed is kept as the agent wrote it from the parsed fields */
    r = json_loads(second, 0, NULL);
    cr_assert_not_null(r);
    cr_assert_eq(json_integer_value(json_object_get(r, "line")), 3);
    cr_assert_str_eq(json_string_value(json_object_get(r, "code")), "INVALID_NHS_NUMBER");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r, "record"), "record_id")),
                     "hv-bad");
    json_decref(r);
    free(rejected);
    free(path);
    free(text);
    free(bad_nhs);
    free(good);
}

Test(spool, incoming_that_is_a_link_to_another_directory_is_refused)
{
    static const char secret[] = "not-a-record-but-a-secret-0123456789";
    char *elsewhere = s_path(world->dir, "elsewhere");
    cr_assert_eq(mkdir(elsewhere, 0700), 0);
    char *file = s_path(elsewhere, "secret");
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s\n", secret);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rmdir(incoming), 0);
    cr_assert_eq(symlink(elsewhere, incoming), 0);
    cr_assert_neq(s_publish_once(), 0, "the publisher worked through a linked incoming/");
    char *log = s_publisher_log();
    char *needle = acc_xasprintf("\"%s\" is a symbolic link, not a directory", incoming);
    cr_assert_not_null(strstr(log, needle), "%s", log);
    cr_assert_null(strstr(log, secret));
    cr_assert_eq(access(file, F_OK), 0, "the file was moved out of the linked directory");
    cr_assert_eq(unlink(incoming), 0);
    s_assert_nowhere_under(spool, secret, 0);
    free(needle);
    free(log);
    free(file);
    free(elsewhere);
}

/* A file whose contents say whether anything wrote through a link to it. */
static char *s_victim(const char *name)
{
    char *path = s_path(world->dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("victim: untouched\n", f);
    cr_assert_eq(fclose(f), 0);
    return path;
}

static void s_assert_untouched(const char *victim)
{
    char *text = th_slurp(victim);
    cr_assert_str_eq(text, "victim: untouched\n", "%s was written through a link", victim);
    free(text);
}

Test(spool, links_planted_at_the_publishers_temporaries_are_not_written_through)
{
    char *good = s_records("hv", 1, 0);
    char *bad_nhs = th_health_visit_json("hv-bad", "9434765918");
    char *text = acc_xasprintf("%s%s", good, bad_nhs);
    s_put("batch.ndjson", text);
    char *done = s_path(spool, "done");
    char *rejected = s_path(spool, "rejected");
    cr_assert_eq(mkdir(done, 0750), 0);
    cr_assert_eq(mkdir(rejected, 0750), 0);
    char *victim_results = s_victim("victim-results");
    char *victim_rejected = s_victim("victim-rejected");
    char *tmp_results = s_path(done, ".batch.ndjson.results.tmp");
    char *tmp_rejected = s_path(rejected, ".batch.ndjson.tmp");
    cr_assert_eq(symlink(victim_results, tmp_results), 0);
    cr_assert_eq(symlink(victim_rejected, tmp_rejected), 0);
    cr_assert_eq(s_publish_once(), 0);
    s_assert_untouched(victim_results);
    s_assert_untouched(victim_rejected);
    char *results = s_path(done, "batch.ndjson.results");
    struct stat st;
    cr_assert_eq(lstat(results, &st), 0);
    cr_assert(S_ISREG(st.st_mode), "done/batch.ndjson.results is not a regular file");
    char *results_text = th_slurp(results);
    cr_assert_not_null(strstr(results_text, "\"record_id\":\"hv-1\""));
    cr_assert_not_null(strstr(results_text, "\"record_id\":\"hv-bad\""));
    free(results_text);
    free(results);
    free(tmp_rejected);
    free(tmp_results);
    free(victim_rejected);
    free(victim_results);
    free(rejected);
    free(done);
    free(text);
    free(bad_nhs);
    free(good);
}

Test(spool, link_planted_where_a_delivery_is_written_is_not_written_through)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, PUBLISHER, &cfg);
    char *json = th_health_visit_json("hv-1", th_nhs(0));
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    cr_assert_eq(reply->publish_result->n_recipients, 1);
    char share_id[128];
    snprintf(share_id, sizeof(share_id), "%s", reply->publish_result->recipients[0]->share_id);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    free(json);

    char *sub = s_path(world->dir, "cc.spool");
    char *tmp = s_path(sub, ".tmp");
    cr_assert_eq(mkdir(sub, 0750), 0);
    cr_assert_eq(mkdir(tmp, 0750), 0);
    char *victim = s_victim("victim-delivery");
    char *planted = acc_xasprintf("%s/%s.json", tmp, share_id);
    cr_assert_eq(symlink(victim, planted), 0);
    const char *args[] = { "--spool", sub, "--count", "1", NULL };
    agent = th_agent_start_argv(world, "subscribe", SUBSCRIBER, args);
    cr_assert_eq(th_proc_wait(&agent, RUN_MS), 0);
    s_assert_untouched(victim);
    char *delivered = acc_xasprintf("%s/incoming/%s.json", sub, share_id);
    struct stat st;
    cr_assert_eq(lstat(delivered, &st), 0, "the delivery is not in incoming/");
    cr_assert(S_ISREG(st.st_mode), "the delivery is not a regular file");
    char *text = th_slurp(delivered);
    cr_assert_not_null(strstr(text, share_id));
    free(text);
    free(delivered);
    free(planted);
    free(victim);
    free(tmp);
    free(sub);
}

/* Runs accord-agent with stdin from /dev/null, as systemd starts a unit, and
 * stderr to log; returns its exit status. */
static int s_run_from_devnull(const char *const argv[], const char *log)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int err = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || err < 0 || dup2(in, 0) < 0 || dup2(err, 2) < 0) {
            _exit(127);
        }
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

Test(spool, publish_with_no_spool_and_no_input_is_a_configuration_error)
{
    const char *config = th_agent_config(world, PUBLISHER, NULL);
    char *exe = acc_xasprintf("%s/accord-agent", world->bin_dir);
    char *log = s_path(world->dir, "nothing.log");
    const char *argv[] = { exe, "publish", "--config", config, NULL };
    cr_assert_eq(s_run_from_devnull(argv, log), 78, "exit status 78 (EX_CONFIG) expected");
    char *text = th_slurp(log);
    cr_assert_not_null(strstr(text, "publish has nothing to read"), "%s", text);
    free(text);

    /* publish FILE and records on stdin still work */
    char *records = s_records("hv", 1, 0);
    char *input = s_path(world->dir, "one.ndjson");
    FILE *f = fopen(input, "w");
    cr_assert_not_null(f);
    fputs(records, f);
    cr_assert_eq(fclose(f), 0);
    char *out = NULL;
    cr_assert_eq(
        th_run(world, &out, "accord-agent", "publish", "--config", config, "--input", input, NULL),
        0);
    cr_assert_not_null(strstr(out, "\"result\":\"accepted\""), "%s", out);
    free(out);
    const char *args[] = { NULL };
    agent = th_agent_start_argv(world, "publish", PUBLISHER, args);
    th_proc_write(agent, records);
    th_proc_close_stdin(agent);
    cr_assert_eq(th_proc_wait_lines(agent, 1, RUN_MS), 1);
    char *line = th_proc_line(agent, 0);
    cr_assert_not_null(strstr(line, "\"result\":\"accepted\""), "%s", line);
    cr_assert_eq(th_proc_wait(&agent, RUN_MS), 0);
    free(line);
    free(input);
    free(records);
    free(log);
    free(exe);
}
