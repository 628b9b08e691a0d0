/* it_check.c - accordd --check reads and checks everything and writes nothing: no
 * key epoch, no migration, no state file */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/migrate.h"
#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(check, .init = setup, .fini = teardown, .timeout = 90);

/* Runs accordd --check, stderr to a fresh DIR/accordd.log; returns its exit status. */
static int s_check(void)
{
    char log[600];
    snprintf(log, sizeof(log), "%s/accordd.log", world->dir);
    (void)unlink(log);
    return th_broker_run_once(world, "--check");
}

static bool s_logged(const char *needle)
{
    return th_broker_logged(world, needle, 1000);
}

/* Every accord table's row count, and the tables themselves, as one line of text. */
static char *s_census(void)
{
    PGresult *tables = PQexec(world->db, "SELECT tablename FROM pg_tables WHERE schemaname = "
                                         "'public' AND tablename LIKE 'accord%' ORDER BY 1");
    cr_assert_eq(PQresultStatus(tables), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_geq(PQntuples(tables), 6, "the migrated schema has at least six tables");
    size_t cap = 4096;
    char *out = calloc(1, cap);
    for (int i = 0; i < PQntuples(tables); i++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", PQgetvalue(tables, i, 0));
        PGresult *n = PQexec(world->db, sql);
        cr_assert_eq(PQresultStatus(n), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s=%s ", PQgetvalue(tables, i, 0), PQgetvalue(n, 0, 0));
        PQclear(n);
    }
    PQclear(tables);
    return out;
}

Test(check, writes_no_row_in_any_table_of_a_used_log)
{
    th_broker_start(world);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof(id), "hv-%d", i);
        char *json = th_health_visit_json(id, th_nhs((size_t)i));
        cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                     ACCORD__V1__ERROR_CODE__OK);
        free(json);
    }
    th_broker_stop(world);
    char *before = s_census();
    cr_assert(strstr(before, "accord_epoch=1 ") != NULL, "%s", before);
    char state[600];
    snprintf(state, sizeof(state), "%s/state/accordd.state", world->dir);
    char *state_before = th_slurp(state);

    cr_assert_eq(s_check(), 0);
    cr_assert(s_logged("configuration, keys, database and agreement are in order"));
    cr_assert(s_logged("nothing was written"));
    char *after = s_census();
    cr_assert_str_eq(after, before, "--check changed the database");
    char *state_after = th_slurp(state);
    cr_assert_str_eq(state_after, state_before, "--check changed the state file");
    free(state_after);
    free(state_before);
    free(after);
    free(before);
}

Test(check, writes_nothing_to_a_fresh_database_and_no_state_file)
{
    char *before = s_census();
    cr_assert_eq(s_check(), 0);
    char *after = s_census();
    cr_assert_str_eq(after, before, "--check changed the database");
    char state[600];
    snprintf(state, sizeof(state), "%s/state/accordd.state", world->dir);
    struct stat st;
    cr_assert_neq(stat(state, &st), 0, "--check wrote a state file");
    free(after);
    free(before);
}

Test(check, refuses_a_schema_older_than_the_build_and_migrates_nothing)
{
    th_pg_exec(world,
               "DROP INDEX accord_log_rule_ids; DELETE FROM accord_schema WHERE version >= 6");
    char *before = s_census();
    cr_assert_eq(s_check(), 4);
    cr_assert(s_logged("the database is at schema version 5, older than this accordd's version"));
    cr_assert(s_logged("run `accord migrate` as the database owner"));
    char *after = s_census();
    cr_assert_str_eq(after, before, "--check changed the database");
    PGresult *res = PQexec(world->db, "SELECT 1 FROM pg_indexes WHERE indexname = "
                                      "'accord_log_rule_ids'");
    cr_assert_eq(PQntuples(res), 0, "--check applied a migration");
    PQclear(res);
    free(after);
    free(before);
}

/* ---- accord migrate: who may run it, and the SQL it carries ---- */

/* Runs a statement on the shared cluster's postgres database (CREATE/DROP
 * DATABASE cannot run in the test database's transaction). */
static void s_admin(const char *sql)
{
    char conninfo[700];
    snprintf(conninfo, sizeof(conninfo), "%s dbname=postgres", world->conninfo);
    PGconn *db = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *res = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);
}

Test(check, migrate_refuses_a_role_that_does_not_own_the_database_and_names_the_one_needed)
{
    char sql[300];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s_fresh", world->dbname);
    s_admin(sql);
    snprintf(sql, sizeof(sql), "CREATE ROLE %s_other LOGIN", world->dbname);
    s_admin(sql);
    char conninfo[900];
    snprintf(conninfo, sizeof(conninfo), "%s dbname=%s_fresh user=%s_other", world->conninfo,
             world->dbname, world->dbname);
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accord", world->bin_dir);
    char migrate[] = "migrate";
    char db[] = "--db";
    char *argv[] = { exe, migrate, db, conninfo, NULL };
    char log[600];
    snprintf(log, sizeof(log), "%s/check.log", world->dir);
    th_proc_t *p = th_proc_start_logged(argv, log);
    int status = th_proc_wait(&p, 30000);
    char *text = th_slurp(log);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s_fresh", world->dbname);
    s_admin(sql);
    snprintf(sql, sizeof(sql), "DROP ROLE %s_other", world->dbname);
    s_admin(sql);
    cr_assert_eq(status, 3, "%s", text);
    char expect[300];
    snprintf(expect, sizeof(expect),
             "the database is at schema version 0 and needs migrations to version %d, which "
             "only the role that owns it may apply: connect as \"postgres\" (or a superuser), "
             "not \"%s_other\"",
             acc_migrate_latest(), world->dbname);
    cr_assert(strstr(text, expect) != NULL, "%s", text);
    free(text);
}

Test(check, migrate_sql_is_the_schema_accord_migrate_applies)
{
    char *sql = NULL;
    cr_assert_eq(th_run(world, &sql, "accord", "migrate", "--sql", (char *)NULL), 0);
    for (int v = 1; v <= acc_migrate_latest(); v++) {
        char insert[80];
        snprintf(insert, sizeof(insert), "INSERT INTO accord_schema (version) VALUES (%d);", v);
        cr_assert(strstr(sql, insert) != NULL, "version %d missing", v);
    }
    cr_assert(strstr(sql, "-- ---- 0001_log.sql ----") != NULL);
    /* run as printed on an empty database, it gives the schema migrate gives */
    char admin[300];
    snprintf(admin, sizeof(admin), "CREATE DATABASE %s_sql", world->dbname);
    s_admin(admin);
    char conninfo[900];
    snprintf(conninfo, sizeof(conninfo), "%s dbname=%s_sql", world->conninfo, world->dbname);
    PGconn *db = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *res = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(res);
    char *error = strdup(PQerrorMessage(db));
    PQclear(res);
    int version = 0;
    acc_err_t err;
    acc_rc_t rc = acc_migrate_current(db, &version, &err);
    PQfinish(db);
    snprintf(admin, sizeof(admin), "DROP DATABASE %s_sql", world->dbname);
    s_admin(admin);
    cr_assert_eq(st, PGRES_COMMAND_OK, "%s", error);
    cr_assert_eq(rc, ACC_OK);
    cr_assert_eq(version, acc_migrate_latest());
    free(error);
    free(sql);
}

/* ---- accord-audit verify --since/--until ---- */

static char s_sign_pub[600];

static void s_period_setup(void)
{
    setup();
    snprintf(world->broker_extra, sizeof(world->broker_extra), "checkpoint_rows: 3\n");
    snprintf(s_sign_pub, sizeof(s_sign_pub), "%s/broker.sign.pub", world->dir);
    th_broker_start(world);
    /* three batches, each its own commit, so each has its own times */
    const char *ids[] = { "hv-a0", "hv-a1", "hv-a2", "hv-b0", "hv-b1",
                          "hv-b2", "hv-c0", "hv-c1", "hv-c2" };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char *json = th_health_visit_json(ids[i], th_nhs(i));
        cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                     ACCORD__V1__ERROR_CODE__OK);
        free(json);
    }
    th_broker_stop(world);
}

TestSuite(verify_period, .init = s_period_setup, .fini = teardown, .timeout = 90);

static char *s_text(const char *sql)
{
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(world->db));
    char *out = strdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

/* The time of record_id's shared row, as ISO 8601 with microseconds. */
static char *s_time_of(const char *record_id)
{
    char sql[300];
    snprintf(sql, sizeof(sql),
             "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM "
             "accord_log WHERE record_id = '%s' AND event = 'shared'",
             record_id);
    return s_text(sql);
}

static long s_seq(const char *sql)
{
    char *text = s_text(sql);
    long n = strtol(text, NULL, 10);
    free(text);
    return n;
}

static int s_verify_period(char **out, const char *since, const char *until)
{
    if (since != NULL && until != NULL) {
        return th_run(world, out, "accord-audit", "verify", "--db", world->conninfo, "--sign-key",
                      s_sign_pub, "--since", since, "--until", until, (char *)NULL);
    }
    return th_run(world, out, "accord-audit", "verify", "--db", world->conninfo, "--sign-key",
                  s_sign_pub, since != NULL ? "--since" : "--until", since != NULL ? since : until,
                  (char *)NULL);
}

Test(verify_period, verifies_the_rows_of_the_period_from_the_checkpoints_around_it)
{
    char *since = s_time_of("hv-b0");
    char *until = s_time_of("hv-c0");
    char sql[400];
    snprintf(sql, sizeof(sql), "SELECT min(seq) FROM accord_log WHERE at >= '%s'", since);
    long first = s_seq(sql);
    snprintf(sql, sizeof(sql), "SELECT max(seq) FROM accord_log WHERE at < '%s'", until);
    long last = s_seq(sql);
    snprintf(sql, sizeof(sql),
             "SELECT max(seq) FROM accord_log WHERE event = 'checkpoint' AND seq <= %ld", first);
    long anchor = s_seq(sql);
    snprintf(sql, sizeof(sql),
             "SELECT min(seq) FROM accord_log WHERE event = 'checkpoint' AND seq >= %ld", last);
    long closing = s_seq(sql);
    cr_assert(anchor > 1 && first > anchor && last > first && closing >= last, "%ld %ld %ld %ld",
              anchor, first, last, closing);

    char *out = NULL;
    cr_assert_eq(s_verify_period(&out, since, until), 0, "%s", out);
    char expect[400];
    snprintf(expect, sizeof(expect),
             "OK period [%s, %s): rows seq %ld-%ld verified; the chain was checked from the "
             "signed checkpoint seq %ld to the signed checkpoint seq %ld: %ld rows",
             since, until, first, last, anchor, closing, closing - anchor + 1);
    cr_assert(strstr(out, expect) != NULL, "%s\nexpected: %s", out, expect);
    free(out);

    /* a row before the anchor is not the period's business; one inside it is */
    snprintf(sql, sizeof(sql),
             "ALTER TABLE accord_log DISABLE TRIGGER USER; UPDATE accord_log SET reason = 'x' "
             "WHERE seq = %ld; ALTER TABLE accord_log ENABLE TRIGGER USER",
             anchor - 1);
    th_pg_exec(world, sql);
    cr_assert_eq(s_verify_period(&out, since, until), 0, "%s", out);
    free(out);
    cr_assert_eq(s_verify_period(&out, NULL, until), 1, "from the start it fails: %s", out);
    free(out);
    snprintf(sql, sizeof(sql),
             "ALTER TABLE accord_log DISABLE TRIGGER USER; UPDATE accord_log SET reason = 'x' "
             "WHERE seq = %ld; ALTER TABLE accord_log ENABLE TRIGGER USER",
             last);
    th_pg_exec(world, sql);
    cr_assert_eq(s_verify_period(&out, since, until), 1, "%s", out);
    snprintf(expect, sizeof(expect), "FAIL seq %ld: hash mismatch", last);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    free(out);
    free(until);
    free(since);
}

Test(verify_period, each_bound_alone_reaches_the_end_of_the_log)
{
    char *since = s_time_of("hv-c0");
    char *out = NULL;
    cr_assert_eq(s_verify_period(&out, since, NULL), 0, "%s", out);
    long head = s_seq("SELECT max(seq) FROM accord_log");
    char expect[300];
    snprintf(expect, sizeof(expect), "OK period [%s, end): rows seq ", since);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    snprintf(expect, sizeof(expect), "-%ld verified", head);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    free(out);

    char *until = s_time_of("hv-a1");
    cr_assert_eq(s_verify_period(&out, NULL, until), 0, "%s", out);
    snprintf(expect, sizeof(expect),
             "OK period [start, %s): rows seq 1-%ld verified; the chain was checked from the "
             "start of the log, seq 1 to the signed checkpoint seq ",
             until,
             s_seq("SELECT max(seq) FROM accord_log WHERE at < (SELECT at FROM accord_log "
                   "WHERE record_id = 'hv-a1' AND event = 'shared')"));
    cr_assert(strstr(out, expect) != NULL, "%s\nexpected: %s", out, expect);
    free(out);
    free(until);
    free(since);
}

Test(verify_period, refuses_a_bound_that_is_not_a_time_and_the_broker_route)
{
    char *out = NULL;
    cr_assert_eq(s_verify_period(&out, "yesterday-ish", NULL), 2, "%s", out);
    free(out);
    const char *config = th_agent_config(world, "ig-officer", NULL);
    cr_assert_eq(th_run(world, &out, "accord-audit", "verify", "--config", config, "--sign-key",
                        s_sign_pub, "--since", "2026-01-01", (char *)NULL),
                 2, "%s", out);
    free(out);
}
