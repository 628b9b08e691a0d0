/* migrate.h - versioned schema migrations, compiled into every program */
#ifndef ACCORD_MIGRATE_H
#define ACCORD_MIGRATE_H

#include <libpq-fe.h>

#include "accord/rc.h"

/* The schema version this build expects. */
int acc_migrate_latest(void);

/* Applies every migration newer than the database's version, each in its own
 * transaction, under an advisory lock so two brokers starting together do not
 * race. Sets *applied to how many ran. Idempotent. */
ACC_NODISCARD acc_rc_t acc_migrate_apply(PGconn *conn, int *applied, acc_err_t *err);

/* The version the database is at (0 when the schema is absent). */
ACC_NODISCARD acc_rc_t acc_migrate_current(PGconn *conn, int *version, acc_err_t *err);

#endif
