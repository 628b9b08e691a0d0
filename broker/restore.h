/* restore.h - notices a database that went back in time (a restore from backup,
 * lost data) by the broker's high-water mark, and records a restore the operator
 * accepted */
#ifndef ACCORD_BROKER_RESTORE_H
#define ACCORD_BROKER_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"
#include "hwm.h"
#include "ledger.h"

/* What restore_check found. */
typedef struct {
    bool behind;          /* the database does not hold the rows the mark says were written */
    bool accepted;        /* ...and the operator accepted it: restore_record writes the cut */
    int64_t epoch_floor;  /* the highest key epoch the mark knows */
    acc_logrow_cut_t cut; /* the rows lost; lost_from is 0 when no cut can be declared */
} restore_plan_t;

/* Compares the ledger's head with the mark in mark (NULL: no state directory yet).
 * With the database behind, fills plan and returns ACC_ERR_INVALID with a message
 * saying what was found and what to do, unless accept is set and the loss can be
 * declared as a cut (then plan->accepted and ACC_OK). */
ACC_NODISCARD acc_rc_t restore_check(ledger_t *ledger, const hwm_t *mark, bool accept,
                                     restore_plan_t *plan, acc_err_t *err);

/* Writes the signed `restored` row of an accepted plan and commits it. */
ACC_NODISCARD acc_rc_t restore_record(ledger_t *ledger, const restore_plan_t *plan,
                                      const uint8_t *agreement_hash, acc_err_t *err);

#endif
