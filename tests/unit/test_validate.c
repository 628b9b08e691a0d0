/* test_validate.c - every limit, charset and UTF-8 rule of the validation boundary */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "accord/record.h"
#include "accord/validate.h"

#define RECORD_JSON                                                                           \
    "{\"record_id\":\"hv-1\",\"record_type\":\"health-visit\","                               \
    "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"9434765919\","    \
    "\"local_id\":\"L1\",\"given_name\":\"Amelia\",\"family_name\":\"Smith\","                \
    "\"date_of_birth\":\"2026-05-02\",\"postcode\":\"S60 1AA\"},\"consent\":\"given\","       \
    "\"fields\":{\"visit_date\":\"2026-11-20\",\"visit_type\":\"6-8-week\",\"weight\":4200}," \
    "\"safeguarding\":true,\"safeguarding_justification\":\"risk of harm\"}"

TestSuite(validate);

static Accord__V1__ChildRecord *s_record(void)
{
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, RECORD_JSON, strlen(RECORD_JSON), &err), ACC_OK, "%s",
                 err.msg);
    return rec;
}

static void s_set(char **slot, const char *value)
{
    if (*slot != protobuf_c_empty_string) {
        free(*slot);
    }
    *slot = strdup(value);
}

static char *s_repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- UTF-8 ---- */

Test(validate, accepts_well_formed_utf8)
{
    static const char *const ok[] = { "",
                                      "plain",
                                      "caf\xc3\xa9",
                                      "\xe2\x82\xac",
                                      "\xf0\x9f\x98\x80",
                                      "\xef\xbf\xbf",
                                      "\xf4\x8f\xbf\xbf",
                                      "\xed\x9f\xbf",
                                      "\xee\x80\x80",
                                      "\xc2\x80" };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert(acc_utf8_is_valid(ok[i], strlen(ok[i])), "case %zu", i);
    }
}

Test(validate, refuses_overlongs_surrogates_out_of_range_and_truncation)
{
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong / */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xe0\x9f\xbf",     /* overlong 3-byte, top */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf", /* overlong 4-byte, top */
        "\xed\xa0\x80",     /* surrogate D800 */
        "\xed\xbf\xbf",     /* surrogate DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* lead byte F5 */
        "\xff",             /* never in UTF-8 */
        "\x80",             /* lone continuation */
        "a\xc3",            /* truncated 2-byte */
        "\xe2\x82",         /* truncated 3-byte */
        "\xf0\x9f\x98",     /* truncated 4-byte */
        "\xc3\x28",         /* lead without continuation */
        "\xe2\x28\xa1",     /* bad second byte */
        "\xf0\x9f\x28\x80", /* bad third byte */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_not(acc_utf8_is_valid(bad[i], strlen(bad[i])), "case %zu", i);
    }
    cr_assert_not(acc_utf8_is_valid("a\0b", 3), "an embedded NUL");
}

Test(validate, prefix_never_cuts_a_character)
{
    const char *s = "ab\xe2\x82\xac"
                    "cd"; /* a b EURO c d */
    cr_assert_eq(acc_utf8_prefix_len(s, strlen(s), 100), strlen(s));
    cr_assert_eq(acc_utf8_prefix_len(s, strlen(s), 2), 2);
    cr_assert_eq(acc_utf8_prefix_len(s, strlen(s), 3), 2);
    cr_assert_eq(acc_utf8_prefix_len(s, strlen(s), 4), 2);
    cr_assert_eq(acc_utf8_prefix_len(s, strlen(s), 5), 5);
    const char *emoji = "\xf0\x9f\x98\x80\xf0\x9f\x98\x80";
    for (size_t max = 0; max < 8; max++) {
        size_t n = acc_utf8_prefix_len(emoji, 8, max);
        cr_assert(n == (max / 4) * 4, "max %zu gave %zu", max, n);
        cr_assert(acc_utf8_is_valid(emoji, n));
    }
}

/* ---- records ---- */

Test(validate, accepts_a_good_record)
{
    Accord__V1__ChildRecord *rec = s_record();
    acc_err_t reason;
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__OK, "%s", reason.msg);
    acc_record_free(&rec);
}

typedef struct {
    size_t offset_kind; /* 0 record, 1 subject */
    size_t offset;
    size_t max;
    const char *path;
} s_limit_t;

static char **s_slot(Accord__V1__ChildRecord *rec, const s_limit_t *l)
{
    char *base = l->offset_kind == 0 ? (char *)rec : (char *)rec->subject;
    return (char **)(base + l->offset);
}

static const s_limit_t s_limits[] = {
    { 0, offsetof(Accord__V1__ChildRecord, record_id), ACC_VALIDATE_RECORD_ID_MAX, "record_id" },
    { 0, offsetof(Accord__V1__ChildRecord, record_type), ACC_VALIDATE_RECORD_TYPE_MAX,
      "record_type" },
    { 0, offsetof(Accord__V1__ChildRecord, occurred_at), ACC_VALIDATE_OCCURRED_AT_MAX,
      "occurred_at" },
    { 0, offsetof(Accord__V1__ChildRecord, safeguarding_justification),
      ACC_VALIDATE_JUSTIFICATION_MAX, "safeguarding_justification" },
    { 1, offsetof(Accord__V1__Subject, nhs_number), ACC_VALIDATE_NHS_NUMBER_MAX,
      "subject.nhs_number" },
    { 1, offsetof(Accord__V1__Subject, local_id), ACC_VALIDATE_LOCAL_ID_MAX, "subject.local_id" },
    { 1, offsetof(Accord__V1__Subject, given_name), ACC_VALIDATE_NAME_MAX, "subject.given_name" },
    { 1, offsetof(Accord__V1__Subject, family_name), ACC_VALIDATE_NAME_MAX, "subject.family_name" },
    { 1, offsetof(Accord__V1__Subject, date_of_birth), ACC_VALIDATE_DATE_OF_BIRTH_MAX,
      "subject.date_of_birth" },
    { 1, offsetof(Accord__V1__Subject, postcode), ACC_VALIDATE_POSTCODE_MAX, "subject.postcode" },
};

Test(validate, refuses_every_record_string_one_byte_over_its_limit)
{
    for (size_t i = 0; i < sizeof(s_limits) / sizeof(s_limits[0]); i++) {
        Accord__V1__ChildRecord *rec = s_record();
        char *value = s_repeat('a', s_limits[i].max + 1);
        s_set(s_slot(rec, &s_limits[i]), value);
        acc_err_t reason;
        cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_RECORD,
                     "%s", s_limits[i].path);
        char want[160];
        snprintf(want, sizeof(want), "%s is longer than %zu bytes", s_limits[i].path,
                 s_limits[i].max);
        cr_assert_str_eq(reason.msg, want);
        cr_assert_null(strstr(reason.msg, "aaaa"), "the value is never echoed");
        free(value);
        acc_record_free(&rec);
    }
}

Test(validate, refuses_invalid_utf8_in_every_record_string_naming_it)
{
    for (size_t i = 0; i < sizeof(s_limits) / sizeof(s_limits[0]); i++) {
        Accord__V1__ChildRecord *rec = s_record();
        s_set(s_slot(rec, &s_limits[i]), "\xed\xa0\x80");
        acc_err_t reason;
        cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_RECORD,
                     "%s", s_limits[i].path);
        char want[160];
        snprintf(want, sizeof(want), "%s is not valid UTF-8", s_limits[i].path);
        cr_assert_str_eq(reason.msg, want);
        acc_record_free(&rec);
    }
}

Test(validate, applies_the_charsets_of_record_id_type_and_field_names)
{
    Accord__V1__ChildRecord *rec = s_record();
    acc_err_t reason;
    s_set(&rec->record_id, "hv 1");
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_RECORD);
    cr_assert_str_eq(reason.msg, "record_id may hold only A-Z a-z 0-9 . _ : -");
    s_set(&rec->record_id, "hv:1.a_b-c");
    s_set(&rec->record_type, "health\tvisit");
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_RECORD);
    cr_assert_str_eq(reason.msg, "record_type may hold only A-Z a-z 0-9 . _ : -");
    s_set(&rec->record_type, "health-visit");
    s_set(&rec->fields[1]->name, "visit:type");
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(reason.msg, "fields[1].name may hold only A-Z a-z 0-9 . _ -");
    cr_assert(acc_validate_is_record_id("hv:1.a_b-c"));
    cr_assert_not(acc_validate_is_record_id(""));
    cr_assert_not(acc_validate_is_record_type("caf\xc3\xa9"));
    cr_assert(acc_validate_is_agency_id("rft-health-visiting"));
    cr_assert_not(acc_validate_is_agency_id(""));
    cr_assert_not(acc_validate_is_agency_id("rft\nforged log line"));
    char long_id[ACC_VALIDATE_AGENCY_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    cr_assert_not(acc_validate_is_agency_id(long_id));
    long_id[ACC_VALIDATE_AGENCY_ID_MAX] = '\0';
    cr_assert(acc_validate_is_agency_id(long_id));
    acc_record_free(&rec);
}

Test(validate, bounds_field_names_values_and_counts)
{
    Accord__V1__ChildRecord *rec = s_record();
    acc_err_t reason;
    char *name = s_repeat('n', ACC_VALIDATE_FIELD_NAME_MAX + 1);
    s_set(&rec->fields[0]->name, name);
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(reason.msg, "fields[0].name is longer than 64 bytes");
    name[ACC_VALIDATE_FIELD_NAME_MAX] = '\0';
    s_set(&rec->fields[0]->name, name);
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__OK, "%s", reason.msg);
    free(name);
    char *text = s_repeat('t', ACC_VALIDATE_TEXT_MAX + 1);
    s_set(&rec->fields[1]->text, text);
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(reason.msg, "fields[1].text is longer than 65536 bytes");
    text[ACC_VALIDATE_TEXT_MAX] = '\0';
    s_set(&rec->fields[1]->text, text);
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__OK, "%s", reason.msg);
    free(text);
    s_set(&rec->fields[1]->text, "\xc3\x28");
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(reason.msg, "fields[1].text is not valid UTF-8");
    acc_record_free(&rec);
}

Test(validate, refuses_more_than_128_fields)
{
    Accord__V1__ChildRecord *rec = s_record();
    size_t n = ACC_VALIDATE_FIELDS_MAX + 1;
    rec->fields = realloc(rec->fields, n * sizeof(*rec->fields));
    for (size_t i = rec->n_fields; i < n; i++) {
        rec->fields[i] = malloc(sizeof(Accord__V1__Field));
        accord__v1__field__init(rec->fields[i]);
        rec->fields[i]->name = strdup("f");
        rec->fields[i]->value_case = ACCORD__V1__FIELD__VALUE_BOOLEAN;
    }
    rec->n_fields = n;
    acc_err_t reason;
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(reason.msg, "fields: more than 128 fields");
    acc_record_free(&rec);
}

Test(validate, refuses_a_record_over_its_packed_size)
{
    Accord__V1__ChildRecord *rec = s_record();
    size_t n = 14; /* 14 texts of 64 KiB: over 768 KiB, each within its limit */
    rec->fields = realloc(rec->fields, (rec->n_fields + n) * sizeof(*rec->fields));
    for (size_t i = 0; i < n; i++) {
        Accord__V1__Field *f = malloc(sizeof(*f));
        accord__v1__field__init(f);
        char name[16];
        snprintf(name, sizeof(name), "t%zu", i);
        f->name = strdup(name);
        f->value_case = ACCORD__V1__FIELD__VALUE_TEXT;
        f->text = s_repeat('x', ACC_VALIDATE_TEXT_MAX);
        rec->fields[rec->n_fields++] = f;
    }
    acc_err_t reason;
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__TOO_LARGE);
    cr_assert(strstr(reason.msg, "over the limit of 786432") != NULL, "%s", reason.msg);
    acc_record_free(&rec);
}

Test(validate, still_applies_the_record_rules)
{
    Accord__V1__ChildRecord *rec = s_record();
    acc_err_t reason;
    s_set(&rec->subject->nhs_number, "9434765918");
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER);
    s_set(&rec->subject->nhs_number, "943 476 5919");
    s_set(&rec->occurred_at, "yesterday");
    cr_assert_eq(acc_validate_record(rec, &reason), ACCORD__V1__ERROR_CODE__INVALID_RECORD);
    cr_assert_str_eq(reason.msg, "occurred_at is not an RFC 3339 date-time");
    acc_record_free(&rec);
}

/* ---- envelopes ---- */

Test(validate, bounds_hello_ack_and_audit_query_strings_and_counts)
{
    acc_err_t reason;
    Accord__V1__Hello hello = ACCORD__V1__HELLO__INIT;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    char *subs[ACC_VALIDATE_SUBSCRIPTIONS_MAX + 1];
    for (size_t i = 0; i <= ACC_VALIDATE_SUBSCRIPTIONS_MAX; i++) {
        subs[i] = acc_pb_str("health-visit");
    }
    hello.subscriptions = subs;
    hello.n_subscriptions = ACC_VALIDATE_SUBSCRIPTIONS_MAX;
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__OK, "%s",
                 reason.msg);
    hello.n_subscriptions++;
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "hello.subscriptions: more than 64");
    hello.n_subscriptions = 1;
    subs[0] = acc_pb_str("bad\xff");
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "hello.subscriptions[0] is not valid UTF-8");
    hello.n_subscriptions = 0;
    char *long_id = s_repeat('a', ACC_VALIDATE_AGENCY_ID_MAX + 1);
    hello.agency_id = long_id;
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "hello.agency_id is longer than 128 bytes");

    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    env.deliver_ack = &ack;
    ack.share_id = long_id;
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "deliver_ack.share_id is longer than 36 bytes");

    Accord__V1__AuditQuery q = ACCORD__V1__AUDIT_QUERY__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    env.audit_query = &q;
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__OK);
    q.rule = acc_pb_str("r\xc0\x80");
    cr_assert_eq(acc_validate_envelope(&env, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "audit_query.rule is not valid UTF-8");
    free(long_id);
}

Test(validate, publish_check_adds_the_message_size)
{
    Accord__V1__ChildRecord *rec = s_record();
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = rec;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    acc_err_t reason;
    cr_assert_eq(acc_validate_publish(&env, 1 << 20, &reason), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(acc_validate_publish(&env, 64, &reason), ACCORD__V1__ERROR_CODE__TOO_LARGE);
    s_set(&rec->subject->postcode, "S60 1AA S60 1AA S60 1AA");
    cr_assert_eq(acc_validate_publish(&env, 1 << 20, &reason),
                 ACCORD__V1__ERROR_CODE__INVALID_RECORD);
    cr_assert_str_eq(reason.msg, "subject.postcode is longer than 16 bytes");
    acc_record_free(&rec);
}

/* ---- the frame walk ---- */

static size_t s_pack_publish(uint8_t **out)
{
    Accord__V1__ChildRecord *rec = s_record();
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = rec;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 300;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    size_t len = accord__v1__envelope__get_packed_size(&env);
    *out = malloc(len + 64);
    accord__v1__envelope__pack(&env, *out);
    acc_record_free(&rec);
    return len;
}

Test(validate, frame_walk_accepts_what_the_agent_packs)
{
    uint8_t *frame = NULL;
    size_t len = s_pack_publish(&frame);
    acc_err_t reason;
    cr_assert_eq(acc_validate_frame(frame, len, 1 << 20, &reason), ACCORD__V1__ERROR_CODE__OK, "%s",
                 reason.msg);
    cr_assert_eq(acc_validate_frame(frame, 0, 1 << 20, &reason), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(acc_validate_frame(NULL, 0, 1 << 20, &reason), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(acc_validate_frame(frame, len, len - 1, &reason),
                 ACCORD__V1__ERROR_CODE__TOO_LARGE);
    for (size_t cut = 1; cut < len; cut++) {
        /* every truncation is refused, or is a shorter valid frame: never read past */
        (void)acc_validate_frame(frame, cut, 1 << 20, &reason);
    }
    free(frame);
}

Test(validate, frame_walk_refuses_a_repeated_singular_message)
{
    static const uint8_t twice[] = { 0x62, 0x04, 0x12, 0x00, 0x12, 0x00 };
    acc_err_t reason;
    cr_assert_eq(acc_validate_frame(twice, sizeof(twice), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Publish.record appears more than once");
    static const uint8_t publish_twice[] = { 0x62, 0x00, 0x62, 0x00 };
    cr_assert_eq(acc_validate_frame(publish_twice, sizeof(publish_twice), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Envelope.publish appears more than once");
}

Test(validate, frame_walk_refuses_two_members_of_a_oneof)
{
    static const uint8_t both[] = { 0x62, 0x00, 0x52, 0x00 }; /* publish, then hello */
    acc_err_t reason;
    cr_assert_eq(acc_validate_frame(both, sizeof(both), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Envelope.hello is a second member of its oneof");
}

Test(validate, frame_walk_refuses_bad_wire_types_truncation_groups_and_nul)
{
    acc_err_t reason;
    static const uint8_t wrong_type[] = { 0x60, 0x01 }; /* publish as a varint */
    cr_assert_eq(acc_validate_frame(wrong_type, sizeof(wrong_type), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Envelope.publish has the wrong wire type");
    static const uint8_t truncated[] = { 0x62, 0x05, 0x12 };
    cr_assert_eq(acc_validate_frame(truncated, sizeof(truncated), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Envelope.publish is truncated");
    static const uint8_t group[] = { 0xfb, 0x01 }; /* unknown field 31, a group */
    cr_assert_eq(acc_validate_frame(group, sizeof(group), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    static const uint8_t nul[] = { 0x62, 0x03, 0x0a, 0x01, 0x00 }; /* from_agency "\0" */
    cr_assert_eq(acc_validate_frame(nul, sizeof(nul), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Publish.from_agency holds a NUL byte");
    static const uint8_t zero_tag[] = { 0x00, 0x00 };
    cr_assert_eq(acc_validate_frame(zero_tag, sizeof(zero_tag), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    /* a tag of 6 bytes (protobuf-c reads at most 5) and a field number over 2^29 - 1 */
    static const uint8_t long_tag[] = { 0xc1, 0xc1, 0xc1, 0xc1, 0x94, 0x00 };
    cr_assert_eq(acc_validate_frame(long_tag, sizeof(long_tag), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    static const uint8_t big_field[] = { 0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00 };
    cr_assert_eq(acc_validate_frame(big_field, sizeof(big_field), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    static const uint8_t long_varint[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    cr_assert_eq(acc_validate_frame(long_varint, sizeof(long_varint), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    /* found by fuzz_envelope: an unknown length-delimited field whose length is an
     * overlong 0 in 10 bytes; protobuf-c reads a length in at most 5 */
    static const uint8_t long_length[] = { 0x62, 0x05, 0x12, 0x03, 0x0a, 0x01, 0xf0, 0x82, 0x0d,
                                           0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    cr_assert_null(accord__v1__envelope__unpack(NULL, sizeof(long_length), long_length));
    cr_assert_eq(acc_validate_frame(long_length, sizeof(long_length), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    static const uint8_t five_byte_length[] = { 0x82, 0x0d, 0x80, 0x80, 0x80, 0x80, 0x00 };
    cr_assert_eq(acc_validate_frame(five_byte_length, sizeof(five_byte_length), 1024, &reason),
                 ACCORD__V1__ERROR_CODE__OK, "%s", reason.msg);
}

Test(validate, frame_walk_bounds_repeated_fields_and_unknown_fields)
{
    /* a Hello with 1025 empty subscriptions */
    size_t n = ACC_VALIDATE_REPEATED_MAX + 1;
    uint8_t *frame = malloc(2 * n + 8);
    size_t len = 0;
    frame[len++] = 0x52;
    size_t body = 2 * n;
    frame[len++] = (uint8_t)(body | 0x80);
    frame[len++] = (uint8_t)(body >> 7);
    for (size_t i = 0; i < n; i++) {
        frame[len++] = 0x1a;
        frame[len++] = 0x00;
    }
    acc_err_t reason;
    cr_assert_eq(acc_validate_frame(frame, len, 1 << 20, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Hello.subscriptions is repeated more than 1024 times");
    len = 0;
    for (size_t i = 0; i <= ACC_VALIDATE_UNKNOWN_MAX; i++) {
        frame[len++] = 0xf8; /* field 31, varint */
        frame[len++] = 0x01;
        frame[len++] = 0x00;
    }
    cr_assert_eq(acc_validate_frame(frame, len, 1 << 20, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "Envelope has too many or invalid unknown fields");
    free(frame);
}

/* An AuditResult (Envelope field 19) holding one AuditRow whose packed
 * acked_seqs (field 26) body is given. */
static size_t s_packed_seqs(uint8_t *frame, const uint8_t *body, size_t body_len)
{
    size_t row = 3 + body_len; /* d2 01 len body */
    size_t result = 2 + row;   /* 0a len row */
    cr_assert_lt(result, 128);
    size_t len = 0;
    frame[len++] = 0x9a;
    frame[len++] = 0x01;
    frame[len++] = (uint8_t)result;
    frame[len++] = 0x0a;
    frame[len++] = (uint8_t)row;
    frame[len++] = 0xd2;
    frame[len++] = 0x01;
    frame[len++] = (uint8_t)body_len;
    if (body_len > 0) {
        memcpy(frame + len, body, body_len);
    }
    return len + body_len;
}

Test(validate, frame_walk_reads_every_element_of_a_packed_field)
{
    uint8_t frame[128];
    acc_err_t reason;
    /* found by fuzz_envelope in CI: the last varint of a packed acked_seqs runs
     * off the end of its field; protobuf-c refuses the frame, the walk passed it */
    static const uint8_t unterminated[] = { 0x1f, 0xff, 0xff, 0xff, 0x0a, 0x0b, 0x08, 0xff };
    size_t len = s_packed_seqs(frame, unterminated, sizeof(unterminated));
    cr_assert_null(accord__v1__envelope__unpack(NULL, len, frame));
    cr_assert_eq(acc_validate_frame(frame, len, 1024, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "AuditRow.acked_seqs has a packed element cut short");
    /* an element of 11 bytes is no varint */
    static const uint8_t eleven[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0x01 };
    len = s_packed_seqs(frame, eleven, sizeof(eleven));
    cr_assert_null(accord__v1__envelope__unpack(NULL, len, frame));
    cr_assert_eq(acc_validate_frame(frame, len, 1024, &reason), ACCORD__V1__ERROR_CODE__MALFORMED);
    /* whole elements, and an empty packed body, pass both */
    static const uint8_t whole[] = { 0x01, 0xff, 0xff, 0xff, 0x0a, 0x00, 0x96, 0x01 };
    len = s_packed_seqs(frame, whole, sizeof(whole));
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(NULL, len, frame);
    cr_assert_not_null(env);
    cr_assert_eq(env->audit_result->rows[0]->n_acked_seqs, 4);
    accord__v1__envelope__free_unpacked(env, NULL);
    cr_assert_eq(acc_validate_frame(frame, len, 1024, &reason), ACCORD__V1__ERROR_CODE__OK, "%s",
                 reason.msg);
    len = s_packed_seqs(frame, NULL, 0);
    cr_assert_eq(acc_validate_frame(frame, len, 1024, &reason), ACCORD__V1__ERROR_CODE__OK, "%s",
                 reason.msg);
}

Test(validate, frame_walk_counts_packed_elements_towards_the_repeated_bound)
{
    /* one packed acked_seqs of 1025 one-byte elements: one occurrence on the wire */
    size_t n = ACC_VALIDATE_REPEATED_MAX + 1;
    uint8_t *frame = malloc(n + 16);
    size_t row = 4 + n, result = 3 + row, len = 0;
    frame[len++] = 0x9a;
    frame[len++] = 0x01;
    frame[len++] = (uint8_t)(result | 0x80);
    frame[len++] = (uint8_t)(result >> 7);
    frame[len++] = 0x0a;
    frame[len++] = (uint8_t)(row | 0x80);
    frame[len++] = (uint8_t)(row >> 7);
    frame[len++] = 0xd2;
    frame[len++] = 0x01;
    frame[len++] = (uint8_t)(n | 0x80);
    frame[len++] = (uint8_t)(n >> 7);
    memset(frame + len, 0x01, n);
    len += n;
    acc_err_t reason;
    cr_assert_eq(acc_validate_frame(frame, len, 1 << 20, &reason),
                 ACCORD__V1__ERROR_CODE__MALFORMED);
    cr_assert_str_eq(reason.msg, "AuditRow.acked_seqs is repeated more than 1024 times");
    /* 1024 of them pass */
    frame[2] = (uint8_t)((result - 1) | 0x80);
    frame[5] = (uint8_t)((row - 1) | 0x80);
    frame[9] = (uint8_t)((n - 1) | 0x80);
    cr_assert_eq(acc_validate_frame(frame, len - 1, 1 << 20, &reason), ACCORD__V1__ERROR_CODE__OK,
                 "%s", reason.msg);
    free(frame);
}

Test(validate, frame_walk_accepts_the_deepest_nesting_of_the_schema)
{
    /* Envelope > Publish > ChildRecord > Subject is 4 deep; deeper needs unknown
     * nesting, which the walk skips unread, so depth is bounded by the schema.
     * The limit is still enforced on the stack itself: a Publish of records is fine. */
    static const uint8_t deep[] = { 0x62, 0x04, 0x12, 0x02, 0x22, 0x00 };
    acc_err_t reason;
    cr_assert_eq(acc_validate_frame(deep, sizeof(deep), 1024, &reason), ACCORD__V1__ERROR_CODE__OK,
                 "%s", reason.msg);
}
