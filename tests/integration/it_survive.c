/* it_survive.c - nothing accepted is lost and nothing reaches an agency twice when
 * the broker, a subscriber or a publisher is killed with SIGKILL mid-stream, or
 * a subscriber is away while tens of thousands of records are published */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PER_PUBLISHER 5000 /* two publishers: 10,000 records */

static th_world_t *world;
static th_proc_t *agents[8]; /* killed at teardown if a test failed first */

static const char s_rules_two_by_two[] =
    TH_RULES_HV_TO_PARTNERS "  - id: mw-to-partners\n"
                            "    from: rft-midwifery\n"
                            "    to: [rmbc-childrens-centres, rmbc-early-help]\n"
                            "    record_types: [health-visit]\n"
                            "    fields: [visit_date, visit_type]\n"
                            "    subject: [nhs_number, family_name]\n"
                            "    purpose: Best Start\n"
                            "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                            "    consent: not-required\n";

static const char *const s_subscribers[] = { "rmbc-childrens-centres", "rmbc-early-help" };

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rft-midwifery", "rmbc-childrens-centres",
                               "rmbc-early-help", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, s_rules_two_by_two);
    snprintf(world->broker_extra, sizeof(world->broker_extra),
             "redeliver_after_ms: 3000\npeer_timeout_ms: 3000\n");
    th_broker_start(world);
    /* restarts bind the same port, so running agents find the broker again */
    snprintf(world->listen, sizeof(world->listen), "%s", world->endpoint);
}

static void teardown(void)
{
    for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
        if (agents[i] != NULL) {
            (void)th_proc_stop(&agents[i], SIGKILL, 5000);
        }
    }
    th_world_destroy(&world);
}

TestSuite(survive, .init = setup, .fini = teardown, .timeout = 1200);

/* Writes n health-visit records prefix-00000.. to DIR/name; every bad_every-th
 * (if > 0) has an NHS number that fails its check digit. */
static char *s_write_records(const char *name, const char *prefix, int n, int bad_every)
{
    char *path = acc_xasprintf("%s/%s", world->dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%05d", prefix, i);
        bool bad = bad_every > 0 && i % bad_every == bad_every - 1;
        char *json = th_health_visit_json(id, bad ? "9434765918" : "9434765919");
        fputs(json, f); /* one line, newline included */
        free(json);
    }
    fclose(f);
    return path;
}

static char *s_spool_dir(const char *agency)
{
    char *path = acc_xasprintf("%s/%s.spool", world->dir, agency);
    return path;
}

static th_proc_t *s_start_subscriber(const char *agency)
{
    char *spool = s_spool_dir(agency);
    const char *args[] = { "--spool", spool, NULL };
    th_proc_t *p = th_agent_start_argv(world, "subscribe", agency, args);
    free(spool);
    return p;
}

static long s_count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static long s_incoming(const char *agency)
{
    char *spool = s_spool_dir(agency);
    char path[700];
    snprintf(path, sizeof(path), "%s/incoming", spool);
    free(spool);
    return s_count_files(path);
}

static void s_wait_incoming(const char *agency, long expected, int timeout_ms)
{
    for (int waited = 0; s_incoming(agency) < expected && waited < timeout_ms; waited += 100) {
        th_sleep_ms(100);
    }
    th_sleep_ms(1500); /* long enough for a stray duplicate to land, if there were one */
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file in agency's spool is one delivery: exactly the records expected
 * (prefix-00000.. for each prefix, n each, skipping every bad_every-th), none twice. */
static void s_check_exactly_once(const char *agency, const char *const prefixes[], int n,
                                 int bad_every)
{
    char *spool = s_spool_dir(agency);
    char dir[700];
    snprintf(dir, sizeof(dir), "%s/incoming", spool);
    free(spool);
    size_t cap = 32768;
    size_t count = 0;
    char **ids = calloc(cap, sizeof(char *));
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[1000];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        json_error_t jerr;
        json_t *obj = json_load_file(path, 0, &jerr);
        cr_assert_not_null(obj, "%s: %s", path, jerr.text);
        const char *rid =
            json_string_value(json_object_get(json_object_get(obj, "record"), "record_id"));
        cr_assert_not_null(rid, "%s has no record_id", path);
        cr_assert_lt(count, cap);
        ids[count++] = strdup(rid);
        json_decref(obj);
    }
    closedir(d);
    qsort(ids, count, sizeof(char *), s_cmp_str);
    size_t expected = 0;
    for (size_t p = 0; prefixes[p] != NULL; p++) {
        for (int i = 0; i < n; i++) {
            expected += !(bad_every > 0 && i % bad_every == bad_every - 1);
        }
    }
    for (size_t i = 1; i < count; i++) {
        cr_assert_str_neq(ids[i - 1], ids[i], "%s received %s twice", agency, ids[i]);
    }
    cr_assert_eq(count, expected, "%s received %zu deliveries, expected %zu", agency, count,
                 expected);
    for (size_t i = 0; i < count; i++) {
        free(ids[i]);
    }
    free(ids);
    fprintf(stderr, "survive: %s holds each of %zu records exactly once\n", agency, count);
}

/* How many lines of DIR/name contain needle: what the kill made the agents do. */
static long s_log_count(const char *name, const char *needle)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", world->dir, name);
    FILE *f = fopen(path, "r");
    long n = 0;
    char line[4096];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}

/* No record was shared twice with one recipient, in the log itself. */
static void s_check_log_once(long expected_shares)
{
    cr_assert_eq(th_pg_count(world, "event = 'shared'"), expected_shares);
    PGresult *res = PQexec(world->db, "SELECT count(*) FROM (SELECT from_agency, record_id, "
                                      "to_agency FROM accord_log WHERE event = 'shared' "
                                      "GROUP BY 1, 2, 3 HAVING count(*) > 1) AS twice");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "a record was shared twice");
    PQclear(res);
}

/* Each publisher printed exactly one result per line, all accepted. */
static void s_dump_logs(void)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "tail -n 15 '%s'/*.log >&2", world->dir);
    if (system(cmd) != 0) { /* a diagnostic only: say so, the test goes on to fail */
        fprintf(stderr, "(could not show the logs: %s)\n", cmd);
    }
}

static void s_check_results(th_proc_t *pub, int n)
{
    if (th_proc_wait_lines(pub, (size_t)n, 1000) != (size_t)n) {
        s_dump_logs();
    }
    th_assert_all_accepted(pub, n);
}

/* Agents' stdout is read meanwhile: a full pipe would stall them. */
static void s_wait_shared(long at_least)
{
    for (int waited = 0; th_pg_count(world, "event = 'shared'") < at_least && waited < 120000;
         waited += 50) {
        for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
            if (agents[i] != NULL) {
                th_proc_drain(agents[i]);
            }
        }
        th_sleep_ms(50);
    }
}

typedef enum { KILL_BROKER, KILL_SUBSCRIBER } s_victim_t;

/* 10,000 records from two publishers to two subscribers, each subscriber getting
 * every record; the victim is killed with SIGKILL a third of the way in. */
static void s_stream_through_a_kill(s_victim_t victim)
{
    th_proc_t **subs = &agents[0];
    th_proc_t **pubs = &agents[2];
    for (int i = 0; i < 2; i++) {
        subs[i] = s_start_subscriber(s_subscribers[i]);
        cr_assert(th_agent_wait_connected(world, s_subscribers[i], "subscribe"));
    }
    char *hv = s_write_records("hv.ndjson", "hv", PER_PUBLISHER, 0);
    char *mw = s_write_records("mw.ndjson", "mw", PER_PUBLISHER, 0);
    const char *hv_args[] = { "--input", hv, NULL };
    const char *mw_args[] = { "--input", mw, NULL };
    pubs[0] = th_agent_start_argv(world, "publish", "rft-health-visiting", hv_args);
    pubs[1] = th_agent_start_argv(world, "publish", "rft-midwifery", mw_args);
    free(hv);
    free(mw);

    s_wait_shared(2L * 2 * PER_PUBLISHER / 3);
    if (victim == KILL_BROKER) {
        cr_assert_eq(th_proc_stop(&world->broker, SIGKILL, 5000), 128 + SIGKILL);
        th_sleep_ms(300);
        th_broker_start(world);
    } else {
        cr_assert_eq(th_proc_stop(&subs[0], SIGKILL, 5000), 128 + SIGKILL);
        th_sleep_ms(300);
        subs[0] = s_start_subscriber(s_subscribers[0]);
    }

    for (int i = 0; i < 2; i++) {
        th_proc_wait_lines(pubs[i], PER_PUBLISHER, 600000);
        s_check_results(pubs[i], PER_PUBLISHER);
        cr_assert_eq(th_proc_wait(&pubs[i], 30000), 0, "publisher did not finish cleanly");
    }
    const char *const prefixes[] = { "hv", "mw", NULL };
    for (int i = 0; i < 2; i++) {
        s_wait_incoming(s_subscribers[i], 2L * PER_PUBLISHER, 300000);
        s_check_exactly_once(s_subscribers[i], prefixes, PER_PUBLISHER, 0);
    }
    s_check_log_once(2L * 2 * PER_PUBLISHER);
    /* each share acknowledged once (th_pg_wait_acked_count asserts none twice) */
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 2L * 2 * PER_PUBLISHER, 60000),
                 2L * 2 * PER_PUBLISHER, "every delivery acknowledged once");
    cr_assert_eq(th_pg_pending_count(world, "true"), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(th_proc_stop(&subs[i], SIGTERM, 10000), 0);
        char log[200];
        snprintf(log, sizeof(log), "%s.subscribe.log", s_subscribers[i]);
        fprintf(stderr, "survive: %s: %ld redelivered share(s) recognised and not handed over\n",
                s_subscribers[i], s_log_count(log, "already handed over"));
    }
    fprintf(stderr, "survive: publishers retried %ld time(s) after the kill\n",
            s_log_count("rft-health-visiting.publish.log", "not accepted yet") +
                s_log_count("rft-midwifery.publish.log", "not accepted yet") +
                s_log_count("rft-health-visiting.publish.log", "sending it again") +
                s_log_count("rft-midwifery.publish.log", "sending it again"));
}

Test(survive, kill_9_of_the_broker_mid_stream_loses_nothing_and_repeats_nothing)
{
    s_stream_through_a_kill(KILL_BROKER);
}

Test(survive, kill_9_of_a_subscriber_mid_stream_loses_nothing_and_repeats_nothing)
{
    s_stream_through_a_kill(KILL_SUBSCRIBER);
}

static json_t *s_load_lines(const char *path, size_t *count)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s is missing", path);
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *obj = json_loads(line, 0, NULL);
        cr_assert_not_null(obj, "%s: %s", path, line);
        json_array_append_new(all, obj);
    }
    free(line);
    fclose(f);
    *count = json_array_size(all);
    return all;
}

Test(survive, kill_9_of_a_spool_publisher_mid_file_gives_each_record_one_result)
{
    enum { RECORDS = 10000, BAD_EVERY = 1000 };
    char *spool = acc_xasprintf("%s/hv.spool", world->dir);
    char *incoming = acc_xasprintf("%s/incoming", spool);
    cr_assert_eq(mkdir(spool, 0750), 0);
    cr_assert_eq(mkdir(incoming, 0750), 0);
    /* as an agency's system would: written under a dot name, renamed when complete */
    char *written =
        s_write_records("hv.spool/incoming/.batch-001.ndjson", "hv", RECORDS, BAD_EVERY);
    char *ready = acc_xasprintf("%s/batch-001.ndjson", incoming);
    cr_assert_eq(rename(written, ready), 0);
    const char *args[] = { "--spool", spool, NULL };
    agents[0] = th_agent_start_argv(world, "publish", "rft-health-visiting", args);
    s_wait_shared(2L * RECORDS / 3);
    cr_assert_eq(th_proc_stop(&agents[0], SIGKILL, 5000), 128 + SIGKILL);
    long before = th_pg_count(world, "event = 'shared'");
    cr_assert_lt(before, 2L * (RECORDS - RECORDS / BAD_EVERY), "killed too late to mean anything");

    const char *again[] = { "--spool", spool, "--once", NULL };
    agents[0] = th_agent_start_argv(world, "publish", "rft-health-visiting", again);
    cr_assert_eq(th_proc_wait(&agents[0], 600000), 0, "the restarted publisher failed");

    cr_assert_eq(s_count_files(incoming), 0, "the file is still in incoming/");
    char *results_path = acc_xasprintf("%s/done/batch-001.ndjson.results", spool);
    char *rejected_path = acc_xasprintf("%s/rejected/batch-001.ndjson", spool);
    char *done_path = acc_xasprintf("%s/done/batch-001.ndjson", spool);
    cr_assert_eq(access(done_path, R_OK), 0, "the file was not moved to done/");
    size_t n = 0;
    json_t *results = s_load_lines(results_path, &n);
    cr_assert_eq(n, RECORDS, "%zu results for %d records", n, RECORDS);
    char *answered = calloc(RECORDS + 1, 1);
    size_t accepted = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(results, i);
        json_int_t line = json_integer_value(json_object_get(r, "line"));
        cr_assert(line >= 1 && line <= RECORDS && !answered[line], "line %lld answered twice",
                  (long long)line);
        answered[line] = 1;
        const char *result = json_string_value(json_object_get(r, "result"));
        if (line % BAD_EVERY == 0) {
            cr_assert_str_eq(result, "refused");
            cr_assert_str_eq(json_string_value(json_object_get(r, "code")), "INVALID_NHS_NUMBER");
        } else {
            cr_assert_str_eq(result, "accepted", "line %lld", (long long)line);
            accepted++;
        }
    }
    json_decref(results);
    free(answered);
    json_t *rejected = s_load_lines(rejected_path, &n);
    cr_assert_eq(n, RECORDS / BAD_EVERY, "%zu rejected records", n);
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rejected, i);
        cr_assert_eq(json_integer_value(json_object_get(r, "line")) % BAD_EVERY, 0);
        cr_assert_str_eq(json_string_value(json_object_get(r, "code")), "INVALID_NHS_NUMBER");
        cr_assert_not_null(json_object_get(json_object_get(r, "record"), "subject"),
                           "the rejected record is kept as it was read");
    }
    json_decref(rejected);
    s_check_log_once(2L * (long)accepted);
    fprintf(stderr,
            "survive: spool publisher killed at %ld shares; after restart %d results, "
            "%zu accepted (each shared once with 2 recipients), %d rejected\n",
            before, RECORDS, accepted, RECORDS / BAD_EVERY);
    free(results_path);
    free(rejected_path);
    free(done_path);
    free(written);
    free(ready);
    free(incoming);
    free(spool);
}

Test(survive, a_subscriber_away_for_50000_records_costs_the_broker_no_memory)
{
    enum { RECORDS = 50000 };
    /* One recipient; and under AddressSanitizer freed memory is held in a
     * quarantine that would look like growth, so it is kept small here. */
    th_broker_stop(world);
    th_world_agreement(world, th_rules_hv_to_cc);
    const char *asan = getenv("ASAN_OPTIONS");
    char *options = acc_xasprintf("%s:quarantine_size_mb=4", asan != NULL ? asan : "");
    setenv("ASAN_OPTIONS", options, 1);
    free(options);
    th_broker_start(world);
    char *path = s_write_records("many.ndjson", "hv", RECORDS, 0);
    const char *args[] = { "--input", path, NULL };
    agents[0] = th_agent_start_argv(world, "publish", "rft-health-visiting", args);
    s_wait_shared(RECORDS / 10);
    long rss_early = th_proc_rss_kib(world->broker->pid);
    th_proc_wait_lines(agents[0], RECORDS, 900000);
    cr_assert_eq(th_proc_wait(&agents[0], 60000), 0, "publisher failed");
    cr_assert_eq(th_pg_count(world, "event = 'shared'"), RECORDS);
    cr_assert_eq(th_pg_pending_count(world, "true"), RECORDS, "all pending for the offline agency");
    long rss_late = th_proc_rss_kib(world->broker->pid);
    fprintf(stderr,
            "survive: broker RSS %ld KiB after %d records, %ld KiB with %d deliveries pending "
            "for an offline agency\n",
            rss_early, RECORDS / 10, rss_late, RECORDS);
    /* Pending deliveries are in PostgreSQL: 45,000 more must not show up
     * in the broker's memory (kept in memory they would be tens of MiB). */
    cr_assert_lt(rss_late - rss_early, 16 * 1024, "broker RSS grew by %ld KiB",
                 rss_late - rss_early);

    char count[32];
    snprintf(count, sizeof(count), "--count=%d", RECORDS);
    agents[1] = th_agent_start(world, "subscribe", "rmbc-childrens-centres", count);
    cr_assert_eq(th_proc_wait_lines(agents[1], RECORDS, 900000), (size_t)RECORDS);
    /* in log order: the order the broker accepted them, which retries may make
     * differ from the order of the input file */
    PGresult *res = PQexec(world->db, "SELECT share_id FROM accord_log WHERE event = 'shared' "
                                      "ORDER BY seq");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    cr_assert_eq(PQntuples(res), RECORDS);
    for (int i = 0; i < RECORDS; i++) {
        char *line = th_proc_line(agents[1], (size_t)i);
        json_t *obj = json_loads(line, 0, NULL);
        const char *got = json_string_value(json_object_get(obj, "share_id"));
        const char *expect = PQgetvalue(res, i, 0);
        cr_assert(got != NULL && strcmp(got, expect) == 0, "delivery %d is share %s, expected %s",
                  i, got, expect);
        json_decref(obj);
        free(line);
    }
    PQclear(res);
    cr_assert_eq(th_proc_wait(&agents[1], 60000), 0);
    long rss_after = th_proc_rss_kib(world->broker->pid);
    fprintf(stderr, "survive: all %d arrived in order; broker RSS then %ld KiB\n", RECORDS,
            rss_after);
    free(path);
}

Test(survive, postgresql_stopped_mid_stream_means_unavailable_then_everything_flows)
{
    enum { RECORDS = 6000 };
    /* A private cluster: stopping the shared one would disturb other tests. */
    th_broker_stop(world);
    th_pg_private_start(world);
    th_broker_start(world);
    PGconn *db = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK);

    agents[0] = s_start_subscriber(s_subscribers[0]);
    char *path = s_write_records("pgdown.ndjson", "hv", RECORDS, 0);
    const char *args[] = { "--input", path, NULL };
    agents[1] = th_agent_start_argv(world, "publish", "rft-health-visiting", args);
    long shared = 0;
    /* stopped early, so the publisher is surely still sending */
    for (int waited = 0; shared < RECORDS / 10 && waited < 120000; waited += 50) {
        th_proc_drain(agents[1]);
        PGresult *res = PQexec(db, "SELECT count(*) FROM accord_log WHERE event = 'shared'");
        shared = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        th_sleep_ms(50);
    }
    PQfinish(db);
    th_pg_private_ctl(world, "stop");
    char log[700];
    snprintf(log, sizeof(log), "%s/rft-health-visiting.publish.log", world->dir);
    bool told = false;
    for (int waited = 0; !told && waited < 30000; waited += 100) {
        th_proc_drain(agents[1]); /* a full stdout pipe would stall the publisher */
        told = th_file_wait(log, "cannot be written just now", 50) ||
               th_file_wait(log, "cannot be read just now", 50);
    }
    cr_assert(told, "the publisher was not told UNAVAILABLE while PostgreSQL was down");
    th_sleep_ms(2000);
    th_pg_private_ctl(world, "start");

    cr_assert_eq(th_proc_wait_lines(agents[1], RECORDS, 300000), (size_t)RECORDS);
    s_check_results(agents[1], RECORDS);
    cr_assert_eq(th_proc_wait(&agents[1], 30000), 0);
    s_wait_incoming(s_subscribers[0], RECORDS, 120000);
    const char *const prefixes[] = { "hv", NULL };
    s_check_exactly_once(s_subscribers[0], prefixes, RECORDS, 0);
    cr_assert_eq(th_proc_stop(&agents[0], SIGTERM, 10000), 0);
    th_broker_stop(world);
    char *out = NULL;
    char sign[600];
    snprintf(sign, sizeof(sign), "%s/broker.sign.pub", world->dir);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--db", world->conninfo, "--sign-key", sign,
                        "verify", (char *)NULL),
                 0, "the chain is continuous across the outage: %s", out);
    free(out);
    fprintf(stderr,
            "survive: PostgreSQL stopped at %ld of %d records for 2 s; all %d accepted once, "
            "delivered once, chain verified\n",
            shared, RECORDS, RECORDS);
    th_pg_private_remove(world);
    free(path);
}

/* A subscriber whose process hangs (here: a connection that stops talking) is
 * forgotten after peer_timeout_ms, and what it had in flight reaches the next. */
Test(survive, a_silent_subscriber_is_declared_dead_and_its_deliveries_go_to_the_next)
{
    acc_agent_config_t cfg;
    client_t *hung = NULL;
    th_agent_config_load(world, s_subscribers[0], &cfg);
    acc_err_t err;
    cr_assert_eq(client_open(&hung, &cfg, true, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(hung, 5000, &err), ACC_OK, "%s", err.msg);
    char *path = s_write_records("few.ndjson", "hv", 5, 0);
    const char *args[] = { "--input", path, NULL };
    agents[0] = th_agent_start_argv(world, "publish", "rft-health-visiting", args);
    cr_assert_eq(th_proc_wait(&agents[0], 60000), 0);
    /* it receives the five and then never answers again */
    for (int i = 0; i < 5; i++) {
        Accord__V1__Envelope *env = NULL;
        cr_assert_eq(client_recv(hung, &env, 10000, &err), ACC_OK, "%s", err.msg);
        cr_assert_eq(env->body_case, ACCORD__V1__ENVELOPE__BODY_DELIVER);
        accord__v1__envelope__free_unpacked(env, NULL);
    }
    cr_assert(th_broker_logged(world, "forgotten (silent for longer than peer_timeout_ms)", 10000),
              "the broker did not notice the subscriber had gone silent");
    agents[1] = s_start_subscriber(s_subscribers[0]);
    s_wait_incoming(s_subscribers[0], 5, 30000);
    const char *const prefixes[] = { "hv", NULL };
    s_check_exactly_once(s_subscribers[0], prefixes, 5, 0);
    cr_assert_eq(th_proc_stop(&agents[1], SIGTERM, 10000), 0);
    client_destroy(&hung);
    acc_agent_config_clear(&cfg);
    free(path);
}

/* --exec: a delivery is acknowledged only when the command exits 0; until then
 * the broker keeps it and delivers it again. */
Test(survive, exec_failures_keep_the_delivery_until_the_command_succeeds)
{
    char *spool = s_spool_dir(s_subscribers[0]);
    char *flag = acc_xasprintf("%s/system-up", world->dir);
    char *received = acc_xasprintf("%s/received", world->dir);
    /* the agency's system: down until the flag file exists, then it files the record */
    char *cmd = acc_xasprintf("test -e '%s' && mv \"$1\" '%s'/", flag, received);
    cr_assert_eq(mkdir(received, 0750), 0);
    const char *args[] = { "--spool", spool, "--exec", cmd, NULL };
    agents[1] = th_agent_start_argv(world, "subscribe", s_subscribers[0], args);
    cr_assert(th_agent_wait_connected(world, s_subscribers[0], "subscribe"));
    char *path = s_write_records("exec.ndjson", "hv", 3, 0);
    const char *pargs[] = { "--input", path, NULL };
    agents[0] = th_agent_start_argv(world, "publish", "rft-health-visiting", pargs);
    cr_assert_eq(th_proc_wait(&agents[0], 60000), 0);
    char log[700];
    snprintf(log, sizeof(log), "%s/%s.subscribe.log", world->dir, s_subscribers[0]);
    cr_assert(th_file_wait(log, "--exec exited 1", 20000));
    cr_assert_eq(th_pg_acked_count(world, "true"), 0,
                 "nothing is acknowledged while the command fails");
    FILE *f = fopen(flag, "w");
    fclose(f);
    cr_assert_eq(th_pg_wait_acked_count(world, "true", 3, 60000), 3,
                 "redelivered and acknowledged once the command succeeds");
    /* the other recipient runs no subscriber here: its three stay pending */
    char *mine = acc_xasprintf("to_agency = '%s'", s_subscribers[0]);
    cr_assert_eq(th_pg_acked_count(world, mine), 3);
    cr_assert_eq(th_pg_pending_count(world, mine), 0);
    cr_assert_eq(th_pg_pending_count(world, "true"), 3);
    free(mine);
    cr_assert_eq(s_count_files(received), 3);
    cr_assert_eq(th_proc_stop(&agents[1], SIGTERM, 10000), 0);
    free(spool);
    free(flag);
    free(received);
    free(cmd);
    free(path);
}
