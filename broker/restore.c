/* restore.c - the high-water mark against the database at start, and the
 * `restored` row that records a cut the operator accepted */
#include "restore.h"

#include <stdio.h>
#include <string.h>

#include "accord/log.h"

/* The database holds at least the mark's seq: it is the same log only if the row
 * there is the one this broker wrote. */
static acc_rc_t s_check_same_row(ledger_t *ledger, const hwm_t *mark, const hwm_mark_t *m,
                                 restore_plan_t *plan, acc_err_t *err)
{
    bool holds = false;
    acc_rc_t rc = ledger_holds_row(ledger, m->seq, m->hash, &holds, err);
    if (rc != ACC_OK || holds) {
        return rc;
    }
    plan->behind = true;
    return acc_err_set(err, ACC_ERR_INVALID,
                       "the database's log row at seq %lld is not the one this broker "
                       "committed (high-water mark in \"%s\"): the database was replaced or "
                       "rewritten and other rows now stand where this broker's were. "
                       "--accept-restore cannot declare that; find out what happened to the "
                       "database, and only if it is the one to keep, move \"%s\" aside and "
                       "start again",
                       (long long)m->seq, hwm_path(mark), hwm_path(mark));
}

static acc_rc_t s_refuse_behind(const hwm_t *mark, const restore_plan_t *plan, acc_err_t *err)
{
    const acc_logrow_cut_t *cut = &plan->cut;
    return acc_err_set(err, ACC_ERR_INVALID,
                       "the database is behind this broker's high-water mark: its log ends at "
                       "seq %lld, but this broker committed rows up to seq %lld (\"%s\"), so "
                       "the database was restored from a backup or lost data, and rows "
                       "%lld-%lld are gone. Starting would hand out those sequence numbers "
                       "again. If the restore is intended, run accordd --accept-restore once: it "
                       "records the cut in a signed `restored` row and continues after seq %lld "
                       "(README, \"Backup and restore\")",
                       (long long)(cut->lost_from - 1), (long long)cut->lost_to, hwm_path(mark),
                       (long long)cut->lost_from, (long long)cut->lost_to, (long long)cut->lost_to);
}

/* A new machine, or a lost state directory: nothing to compare with. */
static void s_warn_no_mark(const hwm_t *mark, int64_t head)
{
    if (head == 0) {
        return;
    }
    acc_log_warn("broker",
                 "no high-water mark %s%s while the log holds rows up to seq %lld: a new "
                 "machine, or the state directory was lost; it is written now, and a restore of "
                 "the database to a point before now cannot be noticed",
                 mark != NULL ? "in " : "yet", mark != NULL ? hwm_path(mark) : "", (long long)head);
}

acc_rc_t restore_check(ledger_t *ledger, const hwm_t *mark, bool accept, restore_plan_t *plan,
                       acc_err_t *err)
{
    memset(plan, 0, sizeof(*plan));
    uint8_t head_hash[ACC_LOGROW_HASH_BYTES];
    int64_t head = ledger_head(ledger, head_hash);
    hwm_mark_t m = { 0 };
    bool found = false;
    acc_rc_t rc = mark != NULL ? hwm_read(mark, &m, &found, err) : ACC_OK;
    if (rc != ACC_OK) {
        return rc;
    }
    if (!found) {
        s_warn_no_mark(mark, head);
        return ACC_OK;
    }
    plan->epoch_floor = m.epoch;
    if (head >= m.seq) {
        rc = m.seq == 0 ? ACC_OK : s_check_same_row(ledger, mark, &m, plan, err);
        if (rc == ACC_OK && accept) {
            acc_log_notice("broker", "--accept-restore: nothing to accept, the database holds "
                                     "every row this broker committed");
        }
        return rc;
    }
    plan->behind = true;
    plan->cut.lost_from = head + 1;
    plan->cut.lost_to = m.seq;
    memcpy(plan->cut.lost_hash, m.hash, sizeof(m.hash));
    if (!accept) {
        return s_refuse_behind(mark, plan, err);
    }
    plan->accepted = true;
    acc_log_warn("broker",
                 "--accept-restore: the database's log ends at seq %lld, this broker had "
                 "committed up to seq %lld; rows %lld-%lld are recorded as lost and no seq "
                 "up to %lld is used again",
                 (long long)head, (long long)m.seq, (long long)plan->cut.lost_from,
                 (long long)plan->cut.lost_to, (long long)plan->cut.lost_to);
    return ACC_OK;
}

acc_rc_t restore_record(ledger_t *ledger, const restore_plan_t *plan, const uint8_t *agreement_hash,
                        acc_err_t *err)
{
    int64_t seq = ledger_stage_restored(ledger, &plan->cut, agreement_hash);
    acc_rc_t rc = ledger_commit(ledger, err);
    if (rc == ACC_OK) {
        acc_log_notice("broker",
                       "restored row committed seq=%lld: rows %lld-%lld lost in a restore, "
                       "declared and signed",
                       (long long)seq, (long long)plan->cut.lost_from,
                       (long long)plan->cut.lost_to);
    }
    return rc;
}
