/* it_upgrade.c - a log written by the previous release is migrated and nothing is
 * lost: the previous release (PREV_RELEASE, before schema 0008) is built from this
 * repository's own history, its broker fills a log with deliveries pending and in
 * flight, and this release's broker, started on the same database and state
 * directory, migrates it; every pending delivery then arrives once and is
 * acknowledged, an earlier record published again gets its first result, new
 * records flow, and the auditor's verify passes across the migration */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/migrate.h"
#include "harness.h"

/* The last commit before schema 0008, and the schema version it leaves. */
#define PREV_RELEASE "41fa853"
#define PREV_SCHEMA  7

#define HV "rft-health-visiting"
#define CC "rmbc-childrens-centres"
#define EH "rmbc-early-help"

#define WAIT_MS 30000

static th_world_t *world;
static char new_bin[512]; /* this build's programs */
static char old_bin[512]; /* the previous release's */

/* ---- the previous release, built once per build directory ---- */

static void s_sh(const char *cmd, const char *log)
{
    int status = system(cmd);
    if (status != 0 && log != NULL) {
        char *tail = acc_xasprintf("tail -n 30 '%s' >&2", log);
        if (system(tail) != 0) {
            fprintf(stderr, "upgrade: could not show the end of %s\n", log);
        }
        free(tail);
    }
    cr_assert_eq(status, 0, "the previous release could not be built: %s", cmd);
}

static bool s_has_programs(const char *bin)
{
    static const char *const programs[] = { "accordd", "accord", "accord-agent", "accord-audit" };
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", bin, programs[i]);
        if (access(path, X_OK) != 0) {
            return false;
        }
    }
    return true;
}

/* BUILD/prev-release-PREV_RELEASE/bin, beside this build's bin: built from `git
 * archive` of the commit on the first run (Release, its four programs only), kept
 * for the next. A failure to build fails the test. */
static void s_build_previous_release(void)
{
    char cache[512];
    snprintf(cache, sizeof(cache), "%.400s/../prev-release-" PREV_RELEASE, new_bin);
    snprintf(old_bin, sizeof(old_bin), "%.480s/bin", cache);
    char stamp[700];
    snprintf(stamp, sizeof(stamp), "%s/built", cache);
    if (access(stamp, F_OK) == 0 && s_has_programs(old_bin)) {
        return;
    }
    char *cmd = acc_xasprintf("rm -rf -- '%s'", cache); /* an unfinished copy of our own */
    s_sh(cmd, NULL);
    free(cmd);
    char part[700];
    snprintf(part, sizeof(part), "%s.part.XXXXXX", cache);
    cr_assert_not_null(mkdtemp(part));
    char log[800];
    snprintf(log, sizeof(log), "%s/build.log", part);
    cmd = acc_xasprintf("mkdir '%s/src' && git -C '%s' archive " PREV_RELEASE " > '%s/src.tar' "
                        "2> '%s' && tar -x -C '%s/src' -f '%s/src.tar'",
                        part, ACCORD_SOURCE_DIR, part, log, part, part);
    s_sh(cmd, log);
    free(cmd);
    fprintf(stderr, "upgrade: building the previous release %s in %s\n", PREV_RELEASE, part);
    cmd = acc_xasprintf("cmake -S '%s/src' -B '%s/build' -DCMAKE_BUILD_TYPE=Release >> '%s' 2>&1 "
                        "&& cmake --build '%s/build' -j2 --target accordd accord accord-agent "
                        "accord-audit >> '%s' 2>&1",
                        part, part, log, part, log);
    s_sh(cmd, log);
    free(cmd);
    cmd = acc_xasprintf("mkdir -p '%s/bin' && cp '%s/build/bin/accordd' '%s/build/bin/accord' "
                        "'%s/build/bin/accord-agent' '%s/build/bin/accord-audit' '%s/bin/' && "
                        "touch '%s' && rm -rf -- '%s'",
                        cache, part, part, part, part, cache, stamp, part);
    s_sh(cmd, NULL);
    free(cmd);
    cr_assert(s_has_programs(old_bin), "the previous release's programs are missing");
}

/* ---- the world ---- */

static void setup(void)
{
    const char *agencies[] = { HV, CC, EH, NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, TH_RULES_HV_TO_PARTNERS);
    snprintf(new_bin, sizeof(new_bin), "%s", world->bin_dir);
}

static void teardown(void)
{
    snprintf(world->bin_dir, sizeof(world->bin_dir), "%s", new_bin);
    th_world_destroy(&world);
}

TestSuite(upgrade, .init = setup, .fini = teardown, .timeout = 900);

static long s_number(const char *sql)
{
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(world->db));
    long n = PQgetisnull(res, 0, 0) ? -1 : strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

static long s_wait_number(const char *sql, long expected)
{
    long n = s_number(sql);
    for (int waited = 0; n != expected && waited < WAIT_MS; waited += 50) {
        th_sleep_ms(50);
        n = s_number(sql);
    }
    return n;
}

/* The previous release's broker on a database its own `accord migrate` made. */
static void s_start_previous_broker(void)
{
    s_build_previous_release();
    char tool[700];
    snprintf(tool, sizeof(tool), "%s/accord", old_bin);
    th_pg_recreate(world, tool);
    cr_assert_eq(s_number("SELECT max(version) FROM accord_schema"), PREV_SCHEMA);
    snprintf(world->bin_dir, sizeof(world->bin_dir), "%.511s", old_bin);
    th_broker_start(world);
    /* the same port for the next broker, so the agents find it again */
    snprintf(world->listen, sizeof(world->listen), "%s", world->endpoint);
}

/* This release's broker on the previous one's database and state directory,
 * once that is stopped: it migrates the log before it serves. */
static void s_start_new_broker(void)
{
    snprintf(world->bin_dir, sizeof(world->bin_dir), "%s", new_bin);
    th_broker_start(world);
    cr_assert_eq(s_number("SELECT max(version) FROM accord_schema"), acc_migrate_latest());
    cr_assert_gt(acc_migrate_latest(), PREV_SCHEMA);
}

static char *s_write_records(const char *name, const char *prefix, int n)
{
    char *path = acc_xasprintf("%s/%s", world->dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        char *json = th_health_visit_json(id, th_nhs((size_t)i % TH_NHS_POOL));
        fputs(json, f);
        free(json);
    }
    fclose(f);
    return path;
}

/* The publisher agent of the release in world->bin_dir sends n records. */
static void s_publish_file(const char *name, const char *prefix, int n)
{
    char *path = s_write_records(name, prefix, n);
    const char *args[] = { "--input", path, NULL };
    th_proc_t *pub = th_agent_start_argv(world, "publish", HV, args);
    th_proc_wait_lines(pub, (size_t)n, WAIT_MS);
    th_assert_all_accepted(pub, n);
    cr_assert_eq(th_proc_wait(&pub, WAIT_MS), 0, "the publisher failed");
    free(path);
}

static Accord__V1__Envelope *s_publish_kept(const char *record_id)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, HV, &cfg);
    char *json = th_health_visit_json(record_id, th_nhs(3));
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    free(json);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 reply->publish_result->reason);
    return reply;
}

static th_proc_t *s_subscriber(const char *agency)
{
    return th_agent_start(world, "subscribe", agency, NULL);
}

/* Lines of a subscriber agent's log (DIR/AGENCY.subscribe.log) containing needle. */
static long s_log_count(const char *agency, const char *needle)
{
    char *path = acc_xasprintf("%s/%s.subscribe.log", world->dir, agency);
    char *text = th_slurp(path);
    long n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) {
        n++;
    }
    free(text);
    free(path);
    return n;
}

/* From its line from on, the subscriber printed exactly the records ids[0..n) (in
 * any order), each once, each under the share id the log holds for it and this
 * agency; nothing else, even after a while for a stray repeat to arrive. */
static void s_assert_received_once(th_proc_t *sub, const char *agency, size_t from,
                                   const char *const ids[], size_t n)
{
    cr_assert_eq(th_proc_wait_lines(sub, from + n, WAIT_MS), from + n, "%s received %zu of %zu",
                 agency, sub->lines - from, n);
    th_sleep_ms(1500);
    th_proc_drain(sub);
    cr_assert_eq(sub->lines, from + n, "%s received %zu deliveries, expected %zu", agency,
                 sub->lines - from, n);
    bool *seen = calloc(n, sizeof(*seen));
    for (size_t i = 0; i < n; i++) {
        char *line = th_proc_line(sub, from + i);
        json_t *obj = json_loads(line, 0, NULL);
        cr_assert_not_null(obj, "%s", line);
        const char *got =
            json_string_value(json_object_get(json_object_get(obj, "record"), "record_id"));
        const char *share = json_string_value(json_object_get(obj, "share_id"));
        cr_assert(got != NULL && share != NULL, "%s", line);
        size_t k = 0;
        while (k < n && strcmp(ids[k], got) != 0) {
            k++;
        }
        cr_assert_lt(k, n, "%s received %s, which was not pending for it", agency, got);
        cr_assert(!seen[k], "%s received %s twice", agency, got);
        seen[k] = true;
        char *where = acc_xasprintf("event = 'shared' AND to_agency = '%s' AND record_id = '%s' "
                                    "AND share_id = '%s'",
                                    agency, got, share);
        cr_assert_eq(th_pg_count(world, where), 1, "%s: %s is not the share the log holds", agency,
                     share);
        free(where);
        json_decref(obj);
        free(line);
    }
    free(seen);
}

static int s_verify(char **out)
{
    char sign[600];
    snprintf(sign, sizeof(sign), "%s/broker.sign.pub", world->dir);
    return th_run(world, out, "accord-audit", "--db", world->conninfo, "--sign-key", sign, "verify",
                  (char *)NULL);
}

/* ---- the tests ---- */

Test(upgrade, pending_deliveries_arrive_once_earlier_records_keep_their_result_and_verify_passes)
{
    enum { PENDING = 20, NEW = 10 };
    s_start_previous_broker();
    /* the children's centres read along; early help is offline throughout */
    th_proc_t *cc = s_subscriber(CC);
    cr_assert(th_agent_wait_connected(world, CC, "subscribe"));
    s_publish_file("before.ndjson", "hv-before", PENDING);
    Accord__V1__Envelope *kept = s_publish_kept("hv-kept");
    cr_assert_eq(kept->publish_result->n_recipients, 2);
    /* what the previous release leaves: acknowledged rows of the children's
     * centres, one per share, and early help's deliveries in accord_outbox */
    cr_assert_eq(s_wait_number("SELECT count(*) FROM accord_log WHERE event = 'acknowledged' AND "
                               "to_agency = '" CC "'",
                               PENDING + 1),
                 PENDING + 1);
    cr_assert_eq(s_number("SELECT count(*) FROM accord_outbox WHERE to_agency = '" EH "'"),
                 PENDING + 1);
    cr_assert_eq(s_number("SELECT count(*) FROM accord_outbox"), PENDING + 1);
    cr_assert_eq(th_proc_stop(&cc, SIGTERM, 10000), 0);

    th_broker_stop(world); /* SIGTERM, exit 0 */
    s_start_new_broker();
    /* the log as migrated: the earlier acknowledgements read as before */
    cr_assert_eq(th_pg_acked_count(world, "to_agency = '" CC "'"), PENDING + 1);
    cr_assert_eq(th_pg_pending_count(world, "to_agency = '" CC "'"), 0);
    cr_assert_eq(th_pg_pending_count(world, "to_agency = '" EH "'"), PENDING + 1);

    /* early help connects: every pending delivery, once, and acknowledged */
    th_proc_t *eh = s_subscriber(EH);
    const char *ids[PENDING + 1];
    char names[PENDING][32];
    for (int i = 0; i < PENDING; i++) {
        snprintf(names[i], sizeof(names[i]), "hv-before-%d", i);
        ids[i] = names[i];
    }
    ids[PENDING] = "hv-kept";
    s_assert_received_once(eh, EH, 0, ids, PENDING + 1);
    cr_assert_eq(th_pg_wait_acked_count(world, "to_agency = '" EH "'", PENDING + 1, WAIT_MS),
                 PENDING + 1);
    cr_assert_eq(th_pg_wait_pending_count(world, "true", 0, WAIT_MS), 0);
    cr_assert_eq(s_wait_number("SELECT count(*) FROM accord_outbox", 0), 0);
    cr_assert_eq(s_log_count(EH, "already handed over"), 0, "a share was sent twice");

    /* the record accepted before the upgrade, sent again: its first result */
    Accord__V1__Envelope *again = s_publish_kept("hv-kept");
    cr_assert_eq(again->publish_result->seq, kept->publish_result->seq);
    cr_assert_eq(again->publish_result->n_recipients, kept->publish_result->n_recipients);
    for (size_t i = 0; i < kept->publish_result->n_recipients; i++) {
        cr_assert_str_eq(again->publish_result->recipients[i]->agency_id,
                         kept->publish_result->recipients[i]->agency_id);
        cr_assert_str_eq(again->publish_result->recipients[i]->share_id,
                         kept->publish_result->recipients[i]->share_id, "a second share");
    }
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-kept' AND event <> 'acknowledged'"), 2,
                 "the record was logged again");
    accord__v1__envelope__free_unpacked(again, NULL);
    accord__v1__envelope__free_unpacked(kept, NULL);

    /* new records reach both, once each */
    cc = s_subscriber(CC);
    s_publish_file("after.ndjson", "hv-after", NEW);
    const char *fresh[NEW];
    char fresh_names[NEW][32];
    for (int i = 0; i < NEW; i++) {
        snprintf(fresh_names[i], sizeof(fresh_names[i]), "hv-after-%d", i);
        fresh[i] = fresh_names[i];
    }
    s_assert_received_once(cc, CC, 0, fresh, NEW);
    s_assert_received_once(eh, EH, PENDING + 1, fresh, NEW);
    cr_assert_eq(th_pg_wait_acked_count(world, "record_id LIKE 'hv-after-%'", 2L * NEW, WAIT_MS),
                 2L * NEW);
    cr_assert_eq(th_pg_wait_pending_count(world, "true", 0, WAIT_MS), 0);
    cr_assert_eq(th_proc_stop(&cc, SIGTERM, 10000), 0);
    cr_assert_eq(th_proc_stop(&eh, SIGTERM, 10000), 0);
    cr_assert_eq(s_log_count(EH, "already handed over"), 0, "a share was sent twice");

    /* every share in the log acknowledged once, and the chain verifies across
     * the migration */
    long shares = th_pg_count(world, "event = 'shared'");
    cr_assert_eq(shares, 2L * (PENDING + 1 + NEW));
    cr_assert_eq(th_pg_acked_count(world, "true"), shares);
    th_broker_stop(world);
    char *out = NULL;
    int status = s_verify(&out);
    cr_assert_eq(status, 0, "verify across the migration exited %d: %s", status, out);
    fprintf(stderr, "upgrade: %d deliveries pending at the migration arrived once; verify: %s",
            PENDING + 1, out);
    free(out);
}

/* Early help's connection has taken every delivery and acknowledged two of them,
 * out of order, when the previous release's broker is stopped: the other four are
 * in flight (sent, not acknowledged). After the migration they arrive once each,
 * and the two acknowledged ones not again. */
Test(upgrade, deliveries_in_flight_at_the_stop_arrive_once_after_the_migration)
{
    enum { RECORDS = 6 };
    static const int acked_before[] = { 0, 2 };
    static const char *const in_flight[] = { "hv-flight-1", "hv-flight-3", "hv-flight-4",
                                             "hv-flight-5" };
    s_start_previous_broker();
    acc_agent_config_t cfg;
    th_agent_config_load(world, EH, &cfg);
    client_t *raw = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&raw, &cfg, true, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(raw, 10000, &err), ACC_OK, "%s", err.msg);
    th_proc_t *cc = s_subscriber(CC);
    cr_assert(th_agent_wait_connected(world, CC, "subscribe"));
    s_publish_file("flight.ndjson", "hv-flight", RECORDS);
    char shares[RECORDS][64];
    for (int received = 0; received < RECORDS;) {
        Accord__V1__Envelope *env = NULL;
        cr_assert_eq(client_recv(raw, &env, 10000, &err), ACC_OK, "after %d: %s", received,
                     err.msg);
        if (env->body_case == ACCORD__V1__ENVELOPE__BODY_DELIVER) {
            char id[32];
            snprintf(id, sizeof(id), "hv-flight-%d", received);
            cr_assert_str_eq(env->deliver->record->record_id, id, "out of log order");
            snprintf(shares[received], sizeof(shares[received]), "%s", env->deliver->share_id);
            received++;
        }
        accord__v1__envelope__free_unpacked(env, NULL);
    }
    for (size_t i = 0; i < sizeof(acked_before) / sizeof(acked_before[0]); i++) {
        Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
        ack.share_id = shares[acked_before[i]];
        Accord__V1__Envelope reply = ACCORD__V1__ENVELOPE__INIT;
        reply.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
        reply.deliver_ack = &ack;
        cr_assert_eq(client_send(raw, &reply, &err), ACC_OK, "%s", err.msg);
    }
    /* the previous release's form: a row per acknowledged share, the rest in the outbox */
    cr_assert_eq(s_wait_number("SELECT count(*) FROM accord_log WHERE event = 'acknowledged' AND "
                               "to_agency = '" EH "'",
                               2),
                 2);
    cr_assert_eq(s_number("SELECT count(*) FROM accord_outbox WHERE to_agency = '" EH "'"),
                 RECORDS - 2);
    cr_assert_eq(s_wait_number("SELECT count(*) FROM accord_log WHERE event = 'acknowledged' AND "
                               "to_agency = '" CC "'",
                               RECORDS),
                 RECORDS);
    cr_assert_eq(th_proc_stop(&cc, SIGTERM, 10000), 0);
    th_broker_stop(world); /* SIGTERM with four deliveries in flight; exit 0 */
    client_destroy(&raw);
    acc_agent_config_clear(&cfg);

    s_start_new_broker();
    cr_assert_eq(th_pg_acked_count(world, "to_agency = '" EH "'"), 2);
    cr_assert_eq(th_pg_acked_count(world, "to_agency = '" EH "' AND record_id IN ('hv-flight-0', "
                                          "'hv-flight-2')"),
                 2);
    cr_assert_eq(th_pg_pending_count(world, "to_agency = '" EH "'"), RECORDS - 2);
    cr_assert_eq(th_pg_pending_count(world, "to_agency <> '" EH "'"), 0);
    th_proc_t *eh = s_subscriber(EH);
    s_assert_received_once(eh, EH, 0, in_flight, RECORDS - 2);
    cr_assert_eq(th_pg_wait_acked_count(world, "to_agency = '" EH "'", RECORDS, WAIT_MS), RECORDS);
    cr_assert_eq(th_pg_wait_pending_count(world, "true", 0, WAIT_MS), 0);
    cr_assert_eq(s_wait_number("SELECT count(*) FROM accord_outbox", 0), 0);
    /* and the log goes on: one more record reaches early help */
    s_publish_file("flight-after.ndjson", "hv-flight-after", 1);
    const char *after[] = { "hv-flight-after-0" };
    s_assert_received_once(eh, EH, RECORDS - 2, after, 1);
    cr_assert_eq(th_pg_wait_pending_count(world, "to_agency = '" EH "'", 0, WAIT_MS), 0);
    cr_assert_eq(th_proc_stop(&eh, SIGTERM, 10000), 0);
    cr_assert_eq(s_log_count(EH, "already handed over"), 0, "a share was sent twice");
    th_broker_stop(world);
    char *out = NULL;
    int status = s_verify(&out);
    cr_assert_eq(status, 0, "verify across the migration exited %d: %s", status, out);
    free(out);
}
