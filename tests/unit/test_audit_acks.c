/* test_audit_acks.c - verify's acknowledgement check: each share acknowledged at
 * most once, by its recipient, in either form, in bounded memory */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit_acks.h"

#define CC "rmbc-childrens-centres"
#define EH "rmbc-early-help"

static void setup(void)
{
    cr_assert(sodium_init() >= 0);
}

TestSuite(audit_acks, .init = setup);

static acc_logrow_t s_share(int64_t seq, const char *to)
{
    acc_logrow_t row = { 0 };
    row.seq = seq;
    memset(row.share_id, 0, sizeof(row.share_id));
    memcpy(row.share_id + 8, &seq, sizeof(seq)); /* one id per share */
    row.event = "shared";
    row.from_agency = "rft-health-visiting";
    row.to_agency = to;
    return row;
}

static acc_logrow_t s_batch(int64_t seq, const char *to, const int64_t *seqs, size_t n)
{
    acc_logrow_t row = { 0 };
    row.seq = seq;
    acc_uuid_random(row.share_id);
    row.event = "acknowledged";
    row.from_agency = to;
    row.to_agency = to;
    row.acked_seqs = seqs;
    row.acked_count = n;
    return row;
}

/* The form before 0008: a row of its own naming the share's id. */
static acc_logrow_t s_single(int64_t seq, const acc_logrow_t *share)
{
    acc_logrow_t row = *share;
    row.seq = seq;
    row.event = "acknowledged";
    return row;
}

static void s_ok(audit_acks_t *acks, const acc_logrow_t *row)
{
    acc_err_t err;
    cr_assert_eq(audit_acks_check(acks, row, &err), ACC_OK, "seq %lld: %s", (long long)row->seq,
                 err.msg);
}

static void s_refused(audit_acks_t *acks, const acc_logrow_t *row, const char *msg)
{
    acc_err_t err;
    cr_assert_eq(audit_acks_check(acks, row, &err), ACC_ERR_INVALID, "seq %lld passed",
                 (long long)row->seq);
    cr_assert_str_eq(err.msg, msg);
}

/* Seqs 1-4: shares to CC, CC, EH, CC; 5: a per-share acknowledgement of 1. */
static audit_acks_t *s_start(acc_logrow_t shares[4])
{
    audit_acks_t *acks = audit_acks_new(1);
    const char *to[4] = { CC, CC, EH, CC };
    for (int i = 0; i < 4; i++) {
        shares[i] = s_share(i + 1, to[i]);
        s_ok(acks, &shares[i]);
    }
    acc_logrow_t own = s_single(5, &shares[0]);
    s_ok(acks, &own);
    return acks;
}

Test(audit_acks, accepts_each_share_acknowledged_once_in_either_form)
{
    acc_logrow_t shares[4];
    audit_acks_t *acks = s_start(shares);
    const int64_t cc[2] = { 2, 4 };
    acc_logrow_t batch = s_batch(6, CC, cc, 2);
    s_ok(acks, &batch);
    acc_logrow_t eh = s_single(7, &shares[2]);
    s_ok(acks, &eh);
    audit_acks_destroy(&acks);
    audit_acks_destroy(&acks);
}

Test(audit_acks, names_each_wrong_acknowledgement)
{
    acc_logrow_t shares[4];
    static const struct {
        int64_t seqs[2];
        size_t n;
        const char *to;
        const char *msg;
    } cases[] = {
        { { 1 }, 1, CC, "acknowledges share seq 1 a second time" },
        { { 3 }, 1, CC, "acknowledges share seq 3, a share to " EH ", not to " CC },
        { { 5 }, 1, CC, "acknowledges seq 5, which is not a shared row" },
        { { 6 }, 1, CC, "acknowledges seq 6, which is not before it" },
        { { 4, 2 }, 2, CC, "acked_seqs not in ascending order: seq 2 follows seq 4" },
        { { 2, 2 }, 2, CC, "acked_seqs not in ascending order: seq 2 follows seq 2" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        audit_acks_t *acks = s_start(shares);
        acc_logrow_t batch = s_batch(6, cases[i].to, cases[i].seqs, cases[i].n);
        s_refused(acks, &batch, cases[i].msg);
        audit_acks_destroy(&acks);
    }
    audit_acks_t *acks = s_start(shares);
    acc_logrow_t again = s_single(6, &shares[0]);
    char id[37];
    acc_uuid_format(id, shares[0].share_id);
    char msg[512];
    snprintf(msg, sizeof(msg),
             "acknowledges share id %s, which is not an earlier share to " CC " awaiting "
             "acknowledgement (no shared row to it has that id, or it was acknowledged already)",
             id);
    s_refused(acks, &again, msg);
    audit_acks_destroy(&acks);
    acks = s_start(shares);
    const int64_t one[1] = { 2 };
    acc_logrow_t odd = s_share(6, CC);
    odd.acked_seqs = one;
    odd.acked_count = 1;
    s_refused(acks, &odd, "acked_seqs on a row that is not an acknowledgement");
    audit_acks_destroy(&acks);
}

Test(audit_acks, passes_over_shares_it_cannot_know)
{
    /* a period from seq 10: what seqs 1-9 were is unknown */
    audit_acks_t *acks = audit_acks_new(10);
    acc_logrow_t early = s_share(3, CC);
    acc_logrow_t own = s_single(10, &early);
    s_ok(acks, &own);
    const int64_t before[2] = { 4, 5 };
    acc_logrow_t batch = s_batch(11, CC, before, 2);
    s_ok(acks, &batch);
    /* rows 12-20 lost in a declared restore, the restored row 21 */
    audit_acks_note_lost(acks, 12, 20);
    acc_logrow_t restored = { .seq = 21, .event = "restored", .from_agency = "accordd" };
    s_ok(acks, &restored);
    const int64_t lost[1] = { 15 };
    batch = s_batch(22, CC, lost, 1);
    s_ok(acks, &batch);
    /* but a share it walked is still checked */
    acc_logrow_t share = s_share(23, CC);
    s_ok(acks, &share);
    const int64_t twice[1] = { 23 };
    batch = s_batch(24, CC, twice, 1);
    s_ok(acks, &batch);
    batch = s_batch(25, CC, twice, 1);
    s_refused(acks, &batch, "acknowledges share seq 23 a second time");
    audit_acks_destroy(&acks);
}

/* Ten million rows: in every 10, four shares to each of two agencies and one
 * batched acknowledgement per agency; every 1000th share is never acknowledged.
 * What the check holds is 2 bytes a row plus the shares still awaiting. */
Test(audit_acks, ten_million_rows_in_two_bytes_a_row_and_the_pending_shares, .timeout = 120)
{
    const int64_t rows = 10000000;
    audit_acks_t *acks = audit_acks_new(1);
    const char *to[2] = { CC, EH };
    int64_t acked[2][4];
    size_t n[2] = { 0, 0 };
    int64_t never = 0;
    size_t peak = 0;
    struct timespec t0;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int64_t seq = 1; seq <= rows; seq++) {
        int64_t k = (seq - 1) % 10;
        acc_err_t err;
        acc_logrow_t row;
        if (k < 8) {
            row = s_share(seq, to[k % 2]);
            if (seq % 1000 != 1) {
                acked[k % 2][n[k % 2]++] = seq;
            } else {
                never++;
            }
        } else {
            row = s_batch(seq, to[k - 8], acked[k - 8], n[k - 8]);
            n[k - 8] = 0;
        }
        if (audit_acks_check(acks, &row, &err) != ACC_OK) {
            cr_assert_fail("seq %lld: %s", (long long)seq, err.msg);
        }
        size_t bytes = audit_acks_bytes(acks);
        peak = bytes > peak ? bytes : peak;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr,
            "audit_acks: %lld rows, %lld never acknowledged: peak %zu bytes (%.2f a row), "
            "%.2f s\n",
            (long long)rows, (long long)never, peak, (double)peak / (double)rows, secs);
    /* 2 bytes a row, in pages of 64 Ki seqs, and at most 3 x 2 slots of 24 bytes
     * (rounded up to a power of two) for each share awaiting acknowledgement */
    size_t bound = (size_t)rows * 2 + 65536 * 2 + (size_t)never * 6 * 24 * 2 + 65536;
    cr_assert_leq(peak, bound, "peak %zu bytes, bound %zu", peak, bound);
    audit_acks_destroy(&acks);
}

Test(audit_acks, refuses_a_seq_that_no_row_can_have)
{
    acc_logrow_t shares[4];
    audit_acks_t *acks = s_start(shares);
    const int64_t zero[2] = { 0, 2 };
    acc_logrow_t batch = s_batch(6, CC, zero, 2);
    s_refused(acks, &batch, "acknowledges seq 0, which is not a shared row");
    audit_acks_destroy(&acks);
    acks = s_start(shares);
    const int64_t negative[1] = { INT64_MIN };
    batch = s_batch(6, CC, negative, 1);
    s_refused(acks, &batch, "acknowledges seq -9223372036854775808, which is not a shared row");
    audit_acks_destroy(&acks);
}

Test(audit_acks, writes_seqs_as_runs)
{
    const int64_t seqs[] = { 3, 4, 5, 9, 11, 12, INT64_MAX - 1, INT64_MAX };
    char *text = audit_acks_ranges(seqs, 8, 0);
    cr_assert_str_eq(text, "3-5,9,11-12,9223372036854775806-9223372036854775807");
    free(text);
    text = audit_acks_ranges(seqs, 8, 2);
    cr_assert_str_eq(text, "3-5,9,... (8 in all)");
    free(text);
    text = audit_acks_ranges(seqs, 0, 0);
    cr_assert_str_eq(text, "");
    free(text);
    const int64_t edge[] = { INT64_MAX, INT64_MIN };
    text = audit_acks_ranges(edge, 2, 0);
    cr_assert_str_eq(text, "9223372036854775807,-9223372036854775808");
    free(text);
}

/* Schema 0009: outcomes back to a publisher and lookups' notifications are
 * delivered and acknowledged like shares, by their recipient, once; a lookup
 * itself (looked-up) is delivered to nobody. */
Test(audit_acks, outcomes_and_notifications_are_acknowledged_like_shares)
{
    audit_acks_t *acks = audit_acks_new(1);
    acc_logrow_t outcome = s_share(1, "rft-health-visiting");
    outcome.event = "outcome";
    outcome.from_agency = CC;
    acc_logrow_t notified = s_share(2, EH);
    notified.event = "notified";
    acc_logrow_t looked = s_share(3, NULL);
    looked.event = "looked-up";
    looked.to_agency = NULL;
    s_ok(acks, &outcome);
    s_ok(acks, &notified);
    s_ok(acks, &looked);
    const int64_t by_hv[] = { 1 };
    const int64_t by_eh[] = { 2 };
    const int64_t lookup[] = { 3 };
    acc_logrow_t wrong = s_batch(4, EH, by_hv, 1);
    s_refused(acks, &wrong, "acknowledges share seq 1, a share to rft-health-visiting, not to " EH);
    acc_logrow_t not_delivered = s_batch(5, EH, lookup, 1);
    s_refused(acks, &not_delivered, "acknowledges seq 3, which is not a shared row");
    acc_logrow_t hv = s_batch(6, "rft-health-visiting", by_hv, 1);
    s_ok(acks, &hv);
    acc_logrow_t eh = s_batch(7, EH, by_eh, 1);
    s_ok(acks, &eh);
    acc_logrow_t again = s_batch(8, EH, by_eh, 1);
    s_refused(acks, &again, "acknowledges share seq 2 a second time");
    audit_acks_destroy(&acks);
}
