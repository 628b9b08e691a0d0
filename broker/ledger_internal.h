/* ledger_internal.h - the log's bounded reads, shared by broker/ledger*.c only */
#ifndef ACCORD_BROKER_LEDGER_INTERNAL_H
#define ACCORD_BROKER_LEDGER_INTERNAL_H

#include <libpq-fe.h>

#include "accord/rc.h"
#include "ledger.h"

/* A row's delivery stream (ledger.h), in SQL */
#define LEDGER_STREAM_SQL "CASE WHEN event = 'shared' THEN record_type ELSE '@' || event END"

/* Runs a read-only query with text parameters on the log's connection
 * (reconnecting first if it was lost), in a read-only transaction cancelled after
 * the query timeout. NULL with err set on failure (a cancelled query says
 * "statement timeout"). Never call it with rows staged mid-commit. */
PGresult *ledger_read(ledger_t *self, const char *sql, int n, const char *const *values,
                      acc_err_t *err);

/* A new connection to the log's database, bounded by limits->connect_timeout_s
 * unless the conninfo names its own; the caller checks PQstatus and finishes it. */
PGconn *ledger_connect(const ledger_limits_t *limits);

/* items as a PostgreSQL text[] literal, however many, each element quoted (a
 * quote or backslash in one escaped): malloc'd, the caller frees it. */
char *ledger_text_array(const char *const *items, size_t count);

#endif
