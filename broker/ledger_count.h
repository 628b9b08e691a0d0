/* ledger_count.h - the deliveries pending per agency, counted off the loop
 *
 * Counting what waits for an agency reads every pending row of the log: about
 * a second with a million pending. /metrics shows the figure, and the loop must
 * never wait for it, so a thread of its own counts on a connection of its own
 * and hands each complete count to a callback (on that thread). */
#ifndef ACCORD_BROKER_LEDGER_COUNT_H
#define ACCORD_BROKER_LEDGER_COUNT_H

#include <stddef.h>
#include <stdint.h>

#include "accord/rc.h"
#include "ledger.h"

typedef struct ledger_counter_t ledger_counter_t;

/* Every agency that has a cursor, in one count: counts[i] shares, outcomes and
 * notices to agencies[i] not yet acknowledged (valid during the call). */
typedef void ledger_pending_fn(void *ctx, const char *const *agencies, const int64_t *counts,
                               size_t n);

/* Starts counting at once, then every every_ms, or ten times as long as the
 * last count took if that is longer (a slow count costs PostgreSQL at most a
 * tenth of one backend). Each count runs read-only under a timeout of a minute.
 * A count that fails is logged once, and when counting works again. */
ACC_NODISCARD acc_rc_t ledger_counter_start(ledger_counter_t **out, const ledger_limits_t *limits,
                                            int64_t every_ms, ledger_pending_fn *fn, void *ctx,
                                            acc_err_t *err);

/* Cancels a count under way, waits for the thread and closes its connection. */
void ledger_counter_stop(ledger_counter_t **self_p);

#endif
