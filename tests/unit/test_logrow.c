/* test_logrow.c - canonical row hashing and payload binding */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "accord/keys.h"
#include "accord/logrow.h"

static const uint8_t s_agreement[32] = { 1, 2, 3 };
static const uint8_t s_nonce[ACC_LOGROW_NONCE_BYTES] = { 9, 9, 9 };

static acc_logrow_t s_row(void)
{
    acc_logrow_t row = { 0 };
    row.seq = 42;
    memset(row.share_id, 0xab, sizeof(row.share_id));
    row.at_us = 1763633700000000;
    row.event = "shared";
    row.from_agency = "rft-health-visiting";
    row.to_agency = "rmbc-childrens-centres";
    row.record_type = "health-visit";
    row.record_id = "hv-1";
    row.rule_count = 1;
    row.rule_ids[0] = "hv-to-cc";
    row.agreement_hash = s_agreement;
    row.key_epoch = 3;
    row.nonce = s_nonce;
    return row;
}

static void setup(void)
{
    cr_assert(sodium_init() >= 0);
}

TestSuite(logrow, .init = setup);

Test(logrow, hash_changes_when_any_column_changes)
{
    uint8_t prev[ACC_LOGROW_HASH_BYTES] = { 0 };
    acc_logrow_t row = s_row();
    uint8_t base[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(base, prev, &row);
    uint8_t h[ACC_LOGROW_HASH_BYTES];
    acc_logrow_t changed[6];
    for (size_t i = 0; i < 6; i++) {
        changed[i] = s_row();
    }
    changed[0].seq = 43;
    changed[1].to_agency = NULL;
    changed[2].record_id = "hv-2";
    changed[3].rule_count = 0;
    changed[4].at_us += 1;
    changed[5].key_epoch = 4;
    for (size_t i = 0; i < 6; i++) {
        acc_logrow_hash(h, prev, &changed[i]);
        cr_assert_neq(memcmp(h, base, sizeof(h)), 0, "change %zu not covered by the hash", i);
    }
    prev[0] = 1;
    acc_logrow_hash(h, prev, &row);
    cr_assert_neq(memcmp(h, base, sizeof(h)), 0, "previous hash not covered");
}

Test(logrow, null_and_empty_strings_hash_differently)
{
    uint8_t prev[ACC_LOGROW_HASH_BYTES] = { 0 };
    acc_logrow_t a = s_row();
    acc_logrow_t b = s_row();
    a.reason = NULL;
    b.reason = "";
    uint8_t ha[ACC_LOGROW_HASH_BYTES];
    uint8_t hb[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(ha, prev, &a);
    acc_logrow_hash(hb, prev, &b);
    cr_assert_neq(memcmp(ha, hb, sizeof(ha)), 0);
}

Test(logrow, payload_decrypts_only_with_its_key_and_in_its_row)
{
    uint8_t key[ACC_LOGROW_KEY_BYTES];
    crypto_aead_xchacha20poly1305_ietf_keygen(key);
    static const uint8_t plain[] = "a minimised child record";
    uint8_t cipher[sizeof(plain) + ACC_LOGROW_MAC_BYTES];
    acc_logrow_t row = s_row();
    acc_logrow_seal(cipher, sizeof(cipher), plain, sizeof(plain), &row, key);
    row.payload = cipher;
    row.payload_len = sizeof(cipher);
    uint8_t out[sizeof(plain)];
    acc_err_t err;
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &row, key, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(memcmp(out, plain, sizeof(plain)), 0);

    acc_logrow_t moved = row;
    moved.seq = 43;
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &moved, key, &err), ACC_ERR_CRYPTO);
    moved = row;
    moved.to_agency = "syp-police";
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &moved, key, &err), ACC_ERR_CRYPTO);
    uint8_t wrong[ACC_LOGROW_KEY_BYTES];
    crypto_aead_xchacha20poly1305_ietf_keygen(wrong);
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &row, wrong, &err), ACC_ERR_CRYPTO);
    cipher[3] ^= 1;
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &row, key, &err), ACC_ERR_CRYPTO);
}

Test(logrow, seals_and_opens_a_row_whose_strings_outgrow_the_ad_buffer)
{
    uint8_t key[ACC_LOGROW_KEY_BYTES];
    crypto_aead_xchacha20poly1305_ietf_keygen(key);
    static const uint8_t plain[] = "a refused record";
    uint8_t cipher[sizeof(plain) + ACC_LOGROW_MAC_BYTES];
    char *type = malloc(5001);
    memset(type, 't', 5000);
    type[5000] = '\0';
    acc_logrow_t row = s_row();
    row.record_type = type;
    cr_assert_gt(acc_logrow_ad(NULL, 0, &row), ACC_LOGROW_AD_MAX);
    uint8_t small[16];
    cr_assert_gt(acc_logrow_ad(small, sizeof(small), &row), sizeof(small));
    acc_logrow_seal(cipher, sizeof(cipher), plain, sizeof(plain), &row, key);
    row.payload = cipher;
    row.payload_len = sizeof(cipher);
    uint8_t out[sizeof(plain)];
    acc_err_t err;
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &row, key, &err), ACC_OK, "%s", err.msg);
    type[0] = 'u';
    cr_assert_eq(acc_logrow_open(out, sizeof(out), &row, key, &err), ACC_ERR_CRYPTO);
    free(type);
}

Test(logrow, uuid_v7_carries_its_millisecond_and_sorts_by_it)
{
    const uint64_t ms = 1764633600123ULL; /* 2025-12-02T00:00:00.123Z */
    uint8_t a[ACC_LOGROW_SHARE_BYTES];
    uint8_t b[ACC_LOGROW_SHARE_BYTES];
    uint8_t c[ACC_LOGROW_SHARE_BYTES];
    acc_uuid_v7(a, ms);
    acc_uuid_v7(b, ms);
    acc_uuid_v7(c, ms + 1);
    uint64_t back = 0;
    for (int i = 0; i < 6; i++) {
        back = back << 8 | a[i];
    }
    cr_assert_eq(back, ms);
    char text[37];
    acc_uuid_format(text, a);
    cr_assert_eq(text[14], '7', "version 7: %s", text);
    cr_assert(strchr("89ab", text[19]) != NULL, "RFC 9562 variant: %s", text);
    cr_assert_neq(memcmp(a, b, sizeof(a)), 0, "74 random bits tell ids of one ms apart");
    cr_assert_lt(memcmp(a, c, sizeof(a)), 0, "a later millisecond sorts after");
    cr_assert_lt(memcmp(b, c, sizeof(b)), 0, "a later millisecond sorts after");
    uint8_t now[ACC_LOGROW_SHARE_BYTES];
    acc_uuid_time_ordered(now);
    cr_assert_lt(memcmp(c, now, sizeof(c)), 0, "now is after the test's fixed time");
}

static int s_cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ACC_LOGROW_SHARE_BYTES);
}

/* The random bits come from a pool refilled 4 KiB at a time: ids stay distinct
 * across refills, and a forked child draws its own bits, not its parent's. */
Test(logrow, uuid_v7_ids_stay_distinct_across_pool_refills_and_forks)
{
    const uint64_t ms = 1764633600123ULL;
    enum { MANY = 2000, FORKED = 64 };
    uint8_t(*ids)[ACC_LOGROW_SHARE_BYTES] = calloc(MANY, ACC_LOGROW_SHARE_BYTES);
    cr_assert_not_null(ids);
    for (int i = 0; i < MANY; i++) {
        acc_uuid_v7(ids[i], ms);
    }
    qsort(ids, MANY, ACC_LOGROW_SHARE_BYTES, s_cmp_id);
    for (int i = 1; i < MANY; i++) {
        cr_assert_neq(memcmp(ids[i - 1], ids[i], ACC_LOGROW_SHARE_BYTES), 0, "id %d repeated", i);
    }
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        uint8_t mine[FORKED][ACC_LOGROW_SHARE_BYTES];
        for (int i = 0; i < FORKED; i++) {
            acc_uuid_v7(mine[i], ms);
        }
        _exit(write(fds[1], mine, sizeof(mine)) == (ssize_t)sizeof(mine) ? 0 : 1);
    }
    uint8_t theirs[FORKED][ACC_LOGROW_SHARE_BYTES];
    uint8_t ours[FORKED][ACC_LOGROW_SHARE_BYTES];
    for (int i = 0; i < FORKED; i++) {
        acc_uuid_v7(ours[i], ms);
    }
    size_t got = 0;
    while (got < sizeof(theirs)) {
        ssize_t n = read(fds[0], (uint8_t *)theirs + got, sizeof(theirs) - got);
        cr_assert_gt(n, 0, "the child's ids");
        got += (size_t)n;
    }
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < FORKED; i++) {
        for (int j = 0; j < FORKED; j++) {
            cr_assert_neq(memcmp(ours[i], theirs[j], ACC_LOGROW_SHARE_BYTES), 0,
                          "parent's id %d is the child's %d", i, j);
        }
    }
    close(fds[0]);
    close(fds[1]);
    free(ids);
}

Test(logrow, uuid_round_trips_and_rejects_malformed_text)
{
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    acc_uuid_random(id);
    char text[37];
    acc_uuid_format(text, id);
    cr_assert_eq(strlen(text), 36);
    cr_assert_eq(text[14], '4', "version 4: %s", text);
    uint8_t back[ACC_LOGROW_SHARE_BYTES];
    acc_err_t err;
    cr_assert_eq(acc_uuid_parse(back, text, &err), ACC_OK);
    cr_assert_eq(memcmp(back, id, sizeof(id)), 0);
    cr_assert_eq(acc_uuid_parse(back, "not-a-uuid", &err), ACC_ERR_INVALID);
    cr_assert_eq(acc_uuid_parse(back, "0123456789abcdef0123456789abcdef0123", &err),
                 ACC_ERR_INVALID);
    cr_assert_eq(acc_uuid_parse(back, "01234567-89ab-cdef-0123-456789abcdeg", &err),
                 ACC_ERR_INVALID);
}

/* Hashes computed by the code at 41fa853, before schema 0008 added content_hash
 * and acked_seqs: a row that has neither must still hash exactly so, or every
 * log written before the migration would stop verifying. */
#define PIN_SHARED "762a38ed960493e8c8b9adc7a92e1c108f997b44e4565ff49e93108b59a10207"
#define PIN_FULL   "976c7ecda57cb3b78187938d3fb3a14075cfb2747ae2fef741d7263e58c7ed0f"
#define PIN_ACK    "5d81592c04a048c5cde1b474bba4ce530923dd3e9dfe616b462defe54eb4cfb6"

static const uint8_t s_tag[ACC_LOGROW_TAG_BYTES] = { 7, 7, 7 };
static const uint8_t s_payload[] = { 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9,
                                     0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1 };

/* A per-share acknowledgement as the broker wrote them before 0008. */
static acc_logrow_t s_ack_row(void)
{
    acc_logrow_t ack = { 0 };
    ack.seq = 43;
    memset(ack.share_id, 0xab, sizeof(ack.share_id));
    ack.at_us = 1763633700500000;
    ack.event = "acknowledged";
    ack.from_agency = "rft-health-visiting";
    ack.to_agency = "rmbc-childrens-centres";
    ack.record_type = "health-visit";
    ack.record_id = "hv-1";
    ack.agreement_hash = s_agreement;
    return ack;
}

static void s_assert_hash(const acc_logrow_t *row, uint8_t prev_byte, const char *want)
{
    uint8_t prev[ACC_LOGROW_HASH_BYTES];
    memset(prev, prev_byte, sizeof(prev));
    uint8_t h[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(h, prev, row);
    char hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    acc_hex_encode(hex, sizeof(hex), h, sizeof(h));
    cr_assert_str_eq(hex, want, "row seq %lld (%s) no longer hashes as it did before 0008",
                     (long long)row->seq, row->event);
}

Test(logrow, a_row_without_the_0008_columns_hashes_exactly_as_before_0008)
{
    acc_logrow_t row = s_row();
    s_assert_hash(&row, 0x00, PIN_SHARED);
    row.subject_tag = s_tag;
    row.payload = s_payload;
    row.payload_len = sizeof(s_payload);
    row.purpose = "Best Start";
    row.lawful_basis = "public task";
    row.consent = "not required";
    s_assert_hash(&row, 0x11, PIN_FULL);
    acc_logrow_t ack = s_ack_row();
    s_assert_hash(&ack, 0x11, PIN_ACK);
    /* an empty acked list is not "has acked_seqs": the row still hashes as before */
    static const int64_t none[1] = { 0 };
    ack.acked_seqs = none;
    ack.acked_count = 0;
    s_assert_hash(&ack, 0x11, PIN_ACK);
}

static void s_hash(uint8_t out[ACC_LOGROW_HASH_BYTES], const acc_logrow_t *row)
{
    uint8_t prev[ACC_LOGROW_HASH_BYTES] = { 0 };
    acc_logrow_hash(out, prev, row);
}

Test(logrow, content_hash_is_covered_by_the_hash)
{
    acc_logrow_t row = s_row();
    uint8_t base[ACC_LOGROW_HASH_BYTES];
    s_hash(base, &row);
    uint8_t content[ACC_LOGROW_HASH_BYTES] = { 0x42 };
    row.content_hash = content;
    uint8_t with[ACC_LOGROW_HASH_BYTES];
    s_hash(with, &row);
    cr_assert_neq(memcmp(with, base, sizeof(base)), 0, "adding a content hash is not covered");
    content[31] ^= 1;
    uint8_t changed[ACC_LOGROW_HASH_BYTES];
    s_hash(changed, &row);
    cr_assert_neq(memcmp(changed, with, sizeof(with)), 0, "changing a content hash is not covered");
}

Test(logrow, acked_seqs_are_covered_by_the_hash_in_order_and_count)
{
    acc_logrow_t row = s_ack_row();
    row.record_type = NULL;
    row.record_id = NULL;
    uint8_t base[ACC_LOGROW_HASH_BYTES];
    s_hash(base, &row);
    static const int64_t lists[][3] = {
        { 5, 0, 0 }, { 6, 0, 0 }, { 5, 6, 0 }, { 6, 5, 0 }, { 5, 6, 7 }
    };
    static const size_t counts[] = { 1, 1, 2, 2, 3 };
    uint8_t h[5][ACC_LOGROW_HASH_BYTES];
    for (size_t i = 0; i < 5; i++) {
        row.acked_seqs = lists[i];
        row.acked_count = counts[i];
        s_hash(h[i], &row);
        cr_assert_neq(memcmp(h[i], base, sizeof(base)), 0, "list %zu hashes as no list", i);
        for (size_t j = 0; j < i; j++) {
            cr_assert_neq(memcmp(h[i], h[j], sizeof(base)), 0, "lists %zu and %zu hash alike", i,
                          j);
        }
    }
    /* the two new columns are told apart: a content hash is not an acked list */
    acc_logrow_t both = row;
    uint8_t content[ACC_LOGROW_HASH_BYTES] = { 5 };
    both.content_hash = content;
    uint8_t hb[ACC_LOGROW_HASH_BYTES];
    s_hash(hb, &both);
    cr_assert_neq(memcmp(hb, h[4], sizeof(hb)), 0);
}
