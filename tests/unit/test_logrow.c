/* test_logrow.c - canonical row hashing and payload binding */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

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
