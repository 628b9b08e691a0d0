/* migrate.h - versioned schema migrations, compiled into every program */
#ifndef ACCORD_MIGRATE_H
#define ACCORD_MIGRATE_H

#include <libpq-fe.h>
#include <stdio.h>

#include "accord/rc.h"

/* The schema version this build expects. */
int acc_migrate_latest(void);

/* Applies every migration newer than the database's version, each in its own
 * transaction, under an advisory lock so two brokers starting together do not
 * race. Sets *applied to how many ran. Idempotent. With migrations pending, a
 * role that neither owns the schema (the database, before there is one) nor is a
 * superuser gets ACC_ERR_PERMISSION naming the role that may apply them. */
ACC_NODISCARD acc_rc_t acc_migrate_apply(PGconn *conn, int *applied, acc_err_t *err);

/* Writes every embedded migration to out as one SQL script: what acc_migrate_apply
 * runs against an empty database. */
void acc_migrate_write_sql(FILE *out);

/* The version the database is at (0 when the schema is absent). */
ACC_NODISCARD acc_rc_t acc_migrate_current(PGconn *conn, int *version, acc_err_t *err);

#endif
