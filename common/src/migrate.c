/* migrate.c - versioned schema migrations, applied once each, in order */
#include "accord/migrate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Generated at build time from deploy/migrations (cmake/embed_migrations.cmake). */
struct acc_migration {
    int version;
    const char *name;
    const char *sql;
};
extern const struct acc_migration acc_migrations[];
extern const size_t acc_migration_count;

static const char s_schema_table_sql[] = "CREATE TABLE IF NOT EXISTS accord_schema ("
                                         " version integer PRIMARY KEY,"
                                         " applied_at timestamptz NOT NULL DEFAULT now())";

/* An arbitrary constant shared by every accord program: "accord" in ASCII. */
#define MIGRATE_LOCK_KEY "97990099111114100"

static acc_rc_t s_exec(PGconn *conn, const char *sql, const char *what, acc_err_t *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    acc_rc_t rc = ACC_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not %s: %s", what, PQresultErrorMessage(res));
    }
    PQclear(res);
    return rc;
}

int acc_migrate_latest(void)
{
    return acc_migration_count == 0 ? 0 : acc_migrations[acc_migration_count - 1].version;
}

acc_rc_t acc_migrate_current(PGconn *conn, int *version, acc_err_t *err)
{
    PGresult *res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM accord_schema");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* An absent table is version 0; any other failure is an error. */
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool absent = state != NULL && strcmp(state, "42P01") == 0;
        acc_rc_t rc = absent ? ACC_OK
                             : acc_err_set(err, ACC_ERR_DB, "could not read schema version: %s",
                                           PQresultErrorMessage(res));
        *version = 0;
        PQclear(res);
        return rc;
    }
    *version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return ACC_OK;
}

static acc_rc_t s_apply_one(PGconn *conn, const struct acc_migration *m, acc_err_t *err)
{
    acc_rc_t rc = s_exec(conn, "BEGIN", "begin a migration", err);
    if (rc != ACC_OK) {
        return rc;
    }
    rc = s_exec(conn, m->sql, m->name, err);
    if (rc == ACC_OK) {
        char insert[128];
        (void)snprintf(insert, sizeof(insert), "INSERT INTO accord_schema (version) VALUES (%d)",
                       m->version);
        rc = s_exec(conn, insert, "record the schema version", err);
    }
    if (rc == ACC_OK) {
        return s_exec(conn, "COMMIT", "commit a migration", err);
    }
    acc_err_t ignored;
    (void)s_exec(conn, "ROLLBACK", "roll back a migration", &ignored);
    return rc;
}

static acc_rc_t s_apply_locked(PGconn *conn, int *applied, acc_err_t *err)
{
    acc_rc_t rc = s_exec(conn, s_schema_table_sql, "create the schema version table", err);
    int current = 0;
    if (rc == ACC_OK) {
        rc = acc_migrate_current(conn, &current, err);
    }
    for (size_t i = 0; rc == ACC_OK && i < acc_migration_count; i++) {
        if (acc_migrations[i].version > current) {
            rc = s_apply_one(conn, &acc_migrations[i], err);
            *applied += rc == ACC_OK ? 1 : 0;
        }
    }
    return rc;
}

/* Migrations create and alter tables, roles and grants: only the role that owns
 * the schema (the database's owner before there is one) or a superuser may apply
 * them. Said up front, by name, rather than as whichever statement fails first. */
static acc_rc_t s_check_owner(PGconn *conn, int current, acc_err_t *err)
{
    PGresult *res = PQexec(
        conn, "SELECT current_user, coalesce((SELECT tableowner FROM pg_tables WHERE tablename = "
              "'accord_schema' AND schemaname = current_schema()), (SELECT "
              "pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())), "
              "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read who owns the schema: %s",
                                  PQresultErrorMessage(res));
        PQclear(res);
        return rc;
    }
    const char *user = PQgetvalue(res, 0, 0);
    const char *owner = PQgetvalue(res, 0, 1);
    bool superuser = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    acc_rc_t rc = ACC_OK;
    if (!superuser && strcmp(user, owner) != 0) {
        rc = acc_err_set(err, ACC_ERR_PERMISSION,
                         "the database is at schema version %d and needs migrations to version "
                         "%d, which only the role that owns it may apply: connect as \"%s\" "
                         "(or a superuser), not \"%s\" (e.g. sudo -u %s accord migrate --db "
                         "\"dbname=%s\")",
                         current, acc_migrate_latest(), owner, user, owner, PQdb(conn));
    }
    PQclear(res);
    return rc;
}

void acc_migrate_write_sql(FILE *out)
{
    (void)fprintf(out,
                  "-- accord schema migrations 1 to %d, embedded in this build: exactly what "
                  "`accord migrate`\n-- applies to an empty database, each in its own "
                  "transaction, as the role that owns it.\n\n%s;\n",
                  acc_migrate_latest(), s_schema_table_sql);
    for (size_t i = 0; i < acc_migration_count; i++) {
        const struct acc_migration *m = &acc_migrations[i];
        (void)fprintf(out,
                      "\n-- ---- %s ----\nBEGIN;\n%s\nINSERT INTO accord_schema (version) "
                      "VALUES (%d);\nCOMMIT;\n",
                      m->name, m->sql, m->version);
    }
}

acc_rc_t acc_migrate_apply(PGconn *conn, int *applied, acc_err_t *err)
{
    *applied = 0;
    /* A current schema needs nothing, not even the right to create tables: the
     * broker may run as a role that can only insert and read log rows. */
    int current = 0;
    acc_rc_t rc = acc_migrate_current(conn, &current, err);
    if (rc != ACC_OK || current >= acc_migrate_latest()) {
        return rc;
    }
    rc = s_check_owner(conn, current, err);
    if (rc == ACC_OK) {
        rc = s_exec(conn, "SET client_min_messages = warning", "set message level", err);
    }
    if (rc == ACC_OK) {
        rc = s_exec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                    "take the migration lock", err);
    }
    if (rc != ACC_OK) {
        return rc;
    }
    rc = s_apply_locked(conn, applied, err);
    acc_err_t ignored;
    (void)s_exec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")",
                 "release the migration lock", &ignored);
    return rc;
}
