/* it_restore.c - after the database is restored from a backup, the broker refuses
 * to start until the operator accepts the loss; then no seq, epoch or share id is
 * used twice, nothing reaches the subscriber twice under one share id, and the
 * auditor's verify reports the cut */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static th_world_t *world;
static char pgdir[256];
static char pgbin[256];

static void s_read_pg_state(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/pg.state", world->dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[512];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "PGDIR=", 6) == 0) {
            snprintf(pgdir, sizeof(pgdir), "%.255s", line + 6);
        } else if (strncmp(line, "PGBINDIR=", 9) == 0) {
            snprintf(pgbin, sizeof(pgbin), "%.255s", line + 9);
        }
    }
    fclose(f);
    cr_assert(pgdir[0] != '\0' && pgbin[0] != '\0');
}

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    snprintf(world->broker_extra, sizeof(world->broker_extra),
             "checkpoint_rows: 2\nredeliver_after_ms: 1000\n");
    /* a cluster of its own: this test takes it back in time */
    th_pg_private_start(world);
    s_read_pg_state();
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(restore, .init = setup, .fini = teardown, .timeout = 180);

/* One number from the private cluster, on a connection of its own (the cluster
 * is stopped and started under the test). */
static long long s_number(const char *sql)
{
    PGconn *db = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *res = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long long n = PQgetisnull(res, 0, 0) ? -1 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(db);
    return n;
}

static long long s_wait_number(const char *sql, long long expected)
{
    long long n = s_number(sql);
    for (int waited = 0; n != expected && waited < 20000; waited += 100) {
        th_sleep_ms(100);
        n = s_number(sql);
    }
    return n;
}

/* Deliveries pending (shares no acknowledgement covers) in the private cluster,
 * waited for until there are none; the harness asserts no share acknowledged twice. */
static long s_wait_none_pending(void)
{
    PGconn *db = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    long n = th_pg_pending_count_on(db, "true");
    for (int waited = 0; n != 0 && waited < 20000; waited += 100) {
        th_sleep_ms(100);
        n = th_pg_pending_count_on(db, "true");
    }
    (void)th_pg_acked_count_on(db, "true");
    PQfinish(db);
    return n;
}

static void s_publish(const char *record_id, size_t nhs)
{
    char *json = th_health_visit_json(record_id, th_nhs(nhs));
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK, "%s", record_id);
    free(json);
}

static char *s_spool(void)
{
    return acc_xasprintf("%s/cc.spool", world->dir);
}

static th_proc_t *s_start_subscriber(void)
{
    char *spool = s_spool();
    const char *args[] = { "--spool", spool, NULL };
    th_proc_t *p = th_agent_start_argv(world, "subscribe", "rmbc-childrens-centres", args);
    free(spool);
    return p;
}

/* Files in the subscriber's incoming/ whose content names record_id (NULL: all). */
static long s_spooled(const char *record_id)
{
    char *spool = s_spool();
    char dir[700];
    snprintf(dir, sizeof(dir), "%s/incoming", spool);
    free(spool);
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    char needle[128];
    snprintf(needle, sizeof(needle), "\"record_id\":\"%s\"", record_id != NULL ? record_id : "");
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[1000];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *text = th_slurp(path);
        n += record_id == NULL || strstr(text, needle) != NULL;
        free(text);
    }
    closedir(d);
    return n;
}

static void s_wait_spooled(long expected)
{
    for (int waited = 0; s_spooled(NULL) < expected && waited < 20000; waited += 100) {
        th_sleep_ms(100);
    }
    cr_assert_eq(s_spooled(NULL), expected);
}

/* Runs a shell command as the cluster's owner when root (postgres), else as is. */
static void s_sh(const char *cmd)
{
    char full[2300];
    snprintf(full, sizeof(full),
             "as=; [ \"$(id -u)\" -eq 0 ] && as='runuser -u postgres --'; $as sh -c '%s'", cmd);
    cr_assert_eq(system(full), 0, "failed: %s", cmd);
}

/* A live base backup, as an operator takes it (pg_basebackup, WAL streamed). */
static void s_backup(void)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s/pg_basebackup -h %s -U postgres -D %s/backup -X stream -c fast",
             pgbin, pgdir, pgdir);
    s_sh(cmd);
}

/* Puts the backup in place of the cluster's data, as the restore procedure does. */
static void s_restore(void)
{
    th_pg_private_ctl(world, "stop");
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "mv %s/data %s/data.lost && cp -a %s/backup %s/data", pgdir, pgdir,
             pgdir, pgdir);
    s_sh(cmd);
    th_pg_private_ctl(world, "start");
}

static int s_verify(char **out, const char *witness)
{
    char sign_pub[600];
    snprintf(sign_pub, sizeof(sign_pub), "%s/broker.sign.pub", world->dir);
    return witness != NULL ? th_run(world, out, "accord-audit", "verify", "--db", world->conninfo,
                                    "--sign-key", sign_pub, "--witness", witness, (char *)NULL)
                           : th_run(world, out, "accord-audit", "verify", "--db", world->conninfo,
                                    "--sign-key", sign_pub, (char *)NULL);
}

/* The share ids a query returns, as one comma-separated text. */
static char *s_texts(const char *sql)
{
    PGconn *db = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *res = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    char *out = acc_xstrdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(db);
    return out;
}

Test(restore, refuses_then_accepts_and_hands_out_no_seq_or_share_twice_and_verify_reports_the_cut)
{
    th_broker_start(world);
    /* the same port on every start, so the subscriber finds the broker again */
    snprintf(world->listen, sizeof(world->listen), "%s", world->endpoint);
    th_proc_t *sub = s_start_subscriber();
    s_publish("hv-a0", 0);
    s_publish("hv-a1", 1);
    s_publish("hv-a2", 2);
    s_wait_spooled(3);
    cr_assert_eq(s_wait_none_pending(), 0);
    /* one delivery still waiting for its recipient when the backup is taken */
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);
    s_publish("hv-a3", 3);
    th_broker_stop(world);
    s_backup();
    long long backup_head = s_number("SELECT max(seq) FROM accord_log");

    /* after the backup: the waiting one is delivered, and three more */
    th_broker_start(world);
    sub = s_start_subscriber();
    s_wait_spooled(4);
    s_publish("hv-b0", 4);
    s_publish("hv-b1", 5);
    s_publish("hv-b2", 6);
    s_wait_spooled(7);
    cr_assert_eq(s_wait_none_pending(), 0);
    th_broker_stop(world);
    long long mark = s_number("SELECT max(seq) FROM accord_log");
    long long old_epoch = s_number("SELECT max(epoch) FROM accord_epoch");
    char *old_shares = s_texts("SELECT string_agg(share_id::text, ',') FROM accord_log WHERE "
                               "event = 'shared'");
    char witness[600];
    snprintf(witness, sizeof(witness), "%s/auditor.witness", world->dir);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, witness), 0, "%s", out);
    free(out);
    char *w = th_slurp(witness);
    cr_assert_eq(strtoll(w, NULL, 10), mark, "the witness is the final checkpoint: %s", w);
    free(w);

    s_restore();
    cr_assert_eq(s_number("SELECT max(seq) FROM accord_log"), backup_head);

    /* refused, and said why and what to do */
    cr_assert_eq(th_broker_run_once(world, NULL), 6);
    char expect[300];
    snprintf(expect, sizeof(expect),
             "its log ends at seq %lld, but this broker committed rows up "
             "to seq %lld",
             backup_head, mark);
    cr_assert(th_broker_logged(world, expect, 1000), "%s", expect);
    snprintf(expect, sizeof(expect), "rows %lld-%lld are gone", backup_head + 1, mark);
    cr_assert(th_broker_logged(world, expect, 1000), "%s", expect);
    cr_assert(th_broker_logged(world, "run accordd --accept-restore once", 1000));
    cr_assert_eq(th_broker_run_once(world, "--check"), 6, "--check sees it too");
    cr_assert_eq(s_number("SELECT max(seq) FROM accord_log"), backup_head, "nothing written");
    cr_assert_eq(s_number("SELECT max(epoch) FROM accord_epoch") < old_epoch, 1);

    /* the operator's choice records the cut and exits; the broker then starts as usual */
    cr_assert_eq(th_broker_run_once(world, "--accept-restore"), 0);
    cr_assert(th_broker_logged(world, "restored row committed", 5000));
    th_broker_start(world);
    snprintf(expect, sizeof(expect),
             "SELECT count(*) FROM accord_log WHERE event = 'restored' AND seq = %lld AND "
             "reason LIKE 'lost seq %lld-%lld (head hash %%'",
             mark + 1, backup_head + 1, mark);
    cr_assert_eq(s_number(expect), 1, "one restored row, right after the old high-water mark");

    /* the delivery that was waiting at the backup comes again under its share id,
     * and the subscriber recognises it; the three later records are published again */
    cr_assert_eq(s_wait_none_pending(), 0);
    s_publish("hv-b0", 4);
    s_publish("hv-b1", 5);
    s_publish("hv-b2", 6);
    /* every new share acknowledged: the subscriber has seen each one */
    cr_assert_eq(s_wait_number("SELECT count(*) FROM accord_log_acks WHERE record_id LIKE 'hv-b%' "
                               "AND share_seq > (SELECT seq FROM accord_log WHERE event = "
                               "'restored')",
                               3),
                 3);
    cr_assert_eq(s_wait_none_pending(), 0);
    th_sleep_ms(1500); /* long enough for a stray duplicate to land, if there were one */
    /* each record reached the agency's system once: a3 again under its share id,
     * the hv-b records again under new share ids, both recognised */
    cr_assert_eq(s_spooled(NULL), 7);
    const char *records[] = { "hv-a0", "hv-a1", "hv-a2", "hv-a3", "hv-b0", "hv-b1", "hv-b2" };
    for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++) {
        cr_assert_eq(s_spooled(records[i]), 1, "%s handed over %ld times", records[i],
                     s_spooled(records[i]));
    }
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);
    th_broker_stop(world);

    /* no seq, epoch or share id used twice */
    snprintf(expect, sizeof(expect),
             "SELECT count(*) FROM accord_log WHERE seq > %lld AND seq <= %lld", backup_head, mark);
    cr_assert_eq(s_number(expect), 0, "a seq of the lost rows was handed out again");
    snprintf(expect, sizeof(expect),
             "SELECT min(key_epoch) FROM accord_log WHERE seq > %lld AND key_epoch IS NOT NULL",
             mark);
    cr_assert_gt(s_number(expect), old_epoch, "a key epoch number was used twice");
    char *sql = acc_xasprintf("SELECT count(*) FROM accord_log WHERE seq > %lld AND event = "
                              "'shared' AND share_id::text = "
                              "ANY(string_to_array('%s', ','))",
                              mark, old_shares);
    cr_assert_eq(s_number(sql), 0, "a share id was used twice");
    free(sql);
    free(old_shares);

    /* the auditor: the cut through the checkpoint it verified, then, with the
     * witness moved past it, the restore reported and the log verified */
    cr_assert_eq(s_verify(&out, witness), 5, "%s", out);
    snprintf(expect, sizeof(expect),
             "CUT seq %lld-%lld: %lld row(s) lost when the database was "
             "restored",
             backup_head + 1, mark, mark - backup_head);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    cr_assert(strstr(out, "the checkpoint this auditor verified before (its witness) was among "
                          "them") != NULL,
              "%s", out);
    free(out);
    cr_assert_eq(s_verify(&out, witness), 0, "%s", out);
    snprintf(expect, sizeof(expect), "RESTORED seq %lld-%lld", backup_head + 1, mark);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    cr_assert(strstr(out, "OK ") != NULL, "%s", out);
    free(out);

    /* a child's subject-access report says that rows may be missing, and why */
    th_broker_start(world);
    const char *auditor = th_agent_config(world, "ig-officer", NULL);
    char *key = acc_xasprintf("%s/ig-officer.box.secret", world->dir);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "--key", key,
                        "subject-access", th_nhs(0), (char *)NULL),
                 0, "%s", out);
    snprintf(expect, sizeof(expect), "restored: lost seq %lld-%lld (head hash ", backup_head + 1,
             mark);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    cr_assert(strstr(out, "anything about this child in the lost rows is not in this report") !=
                  NULL,
              "%s", out);
    cr_assert(strstr(out, "hv-a0") != NULL, "%s", out);
    free(out);
    free(key);
}

Test(restore, verify_refuses_a_gap_that_no_signed_restored_row_declares)
{
    th_broker_start(world);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof(id), "hv-%d", i);
        s_publish(id, (size_t)i);
    }
    th_broker_stop(world);
    long long head = s_number("SELECT max(seq) FROM accord_log");
    /* a forged restored row: the right form, chained, but signed by nobody */
    PGconn *db = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(db), CONNECTION_OK);
    char sql[2048];
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO accord_log (seq, share_id, at, event, from_agency, reason, "
        "agreement_hash, signature, prev_hash, entry_hash) SELECT %lld, gen_random_uuid(), "
        "now(), 'restored', 'accordd', 'lost seq %lld-%lld (head hash ' || repeat('00', 32) || "
        "'): the database was behind the broker''s high-water mark (restored from a backup, "
        "or lost data) and the operator accepted it with accordd --accept-restore', "
        "agreement_hash, decode(repeat('00', 64), 'hex'), entry_hash, entry_hash FROM "
        "accord_log WHERE seq = %lld",
        head + 6, head + 1, head + 5, head);
    PGresult *res = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, NULL), 1, "%s", out);
    char expect[200];
    snprintf(expect, sizeof(expect), "FAIL seq %lld: the restored row's signature does not verify",
             head + 6);
    cr_assert(strstr(out, expect) != NULL, "%s", out);
    free(out);
}

Test(restore, a_database_restored_under_a_running_broker_stops_it_before_any_seq_is_reused)
{
    /* with /metrics on, an idle broker looks at the database every second */
    snprintf(world->broker_extra, sizeof(world->broker_extra),
             "checkpoint_rows: 2\nmetrics: 127.0.0.1:0\n");
    th_broker_start(world);
    s_publish("hv-a0", 0);
    s_backup();
    long long backup_head = s_number("SELECT max(seq) FROM accord_log");
    s_publish("hv-b0", 1);
    s_publish("hv-b1", 2);
    long long head = s_number("SELECT max(seq) FROM accord_log");
    cr_assert_gt(head, backup_head);

    s_restore();
    /* it notices on reconnecting, at its next look at the database */
    int status = th_proc_wait(&world->broker, 30000);
    cr_assert_eq(status, 6, "accordd exited %d", status);
    cr_assert(th_broker_logged(world, "the database went back in time while the broker ran", 1000));
    cr_assert_eq(s_number("SELECT max(seq) FROM accord_log"), backup_head, "nothing written");
    cr_assert_eq(th_broker_run_once(world, NULL), 6, "and it will not start until told");
}

/* Flips one byte of the state file at offset. */
static void s_damage_state(long offset)
{
    char *path = acc_xasprintf("%s/state-private/accordd.state", world->dir);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, offset, SEEK_SET), 0);
    int c = fgetc(f);
    cr_assert_eq(fseek(f, offset, SEEK_SET), 0);
    fputc(c ^ 0x01, f);
    fclose(f);
    free(path);
}

Test(restore, a_torn_state_slot_falls_back_to_the_other_a_lost_file_is_written_again)
{
    th_broker_start(world);
    s_publish("hv-a0", 0);
    th_broker_stop(world);
    char *path = acc_xasprintf("%s/state-private/accordd.state", world->dir);
    char *text = th_slurp(path);
    cr_assert_eq(strlen(text), 384, "two slots of 192 bytes: %s", text);
    long long seq0 = strtoll(strstr(text, "seq=") + 4, NULL, 10);
    long long seq1 = strtoll(strstr(text + 192, "seq=") + 4, NULL, 10);
    long long head = s_number("SELECT max(seq) FROM accord_log");
    cr_assert_eq(seq0 > seq1 ? seq0 : seq1, head, "%s", text);
    free(text);

    /* the newer slot torn, as a crash mid-write leaves it: the older one serves */
    s_damage_state(seq0 > seq1 ? 40 : 192 + 40);
    th_broker_start(world);
    s_publish("hv-a1", 1);
    th_broker_stop(world);

    /* both slots damaged: refused, naming the file */
    s_damage_state(40);
    s_damage_state(192 + 40);
    cr_assert_eq(th_broker_run_once(world, NULL), 4);
    cr_assert(th_broker_logged(world, "holds no intact high-water mark", 1000));

    /* no file at all with a log that has rows: a new machine; warned, written, run */
    cr_assert_eq(unlink(path), 0);
    th_broker_start(world);
    cr_assert(th_broker_logged(world, "no high-water mark in ", 5000));
    th_broker_stop(world);
    text = th_slurp(path);
    cr_assert(strstr(text, "accordd-hwm v1 seq=") != NULL, "%s", text);
    free(text);
    free(path);
}
