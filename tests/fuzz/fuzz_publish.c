/* fuzz_publish.c - libFuzzer target: the whole publish path in-process, where the
 * decisions are made: frame walk, envelope and record validation, the agreement's
 * decision (deploy/examples/best-start-agreement.yaml), minimisation, the log
 * rows (hash, associated data, sealing, binary COPY) and the Deliver frames. Its
 * structured mutator decodes an Envelope, changes the record the way a buggy
 * case system or an attacker would (known record types and field names, NHS
 * numbers, UTF-8 edge cases, long strings) and encodes it again. */
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/logrow.h"
#include "accord/policy.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "copybuf.h"

#define FRAME_MAX ((size_t)1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static acc_policy_t *s_policy;
static uint8_t s_key[ACC_LOGROW_KEY_BYTES];

static void s_init(void)
{
    if (s_policy != NULL) {
        return;
    }
    if (sodium_init() < 0) {
        abort();
    }
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    if (acc_policy_load(&s_policy, ACCORD_SOURCE_DIR "/deploy/examples/best-start-agreement.yaml",
                        &diag, &err) != ACC_OK) {
        (void)fprintf(stderr, "agreement: %s\n", err.msg);
        abort();
    }
    acc_diag_clear(&diag);
    randombytes_buf(s_key, sizeof(s_key));
}

static void s_check(bool ok, const char *what)
{
    if (!ok) {
        (void)fprintf(stderr, "fuzz_publish: %s\n", what);
        abort();
    }
}

static bool s_utf8(const char *s)
{
    return s == NULL || acc_utf8_is_valid(s, strlen(s));
}

/* ---- the checks at each step ---- */

/* A log row as the ledger writes it: every text column valid UTF-8 (PostgreSQL
 * refuses any other text, and with it the whole batch), its binary COPY encoded,
 * and its hash, associated data and sealed payload computed without a fault. */
static void s_check_row(const acc_logrow_t *row, const Accord__V1__ChildRecord *payload)
{
    const char *texts[] = { row->event,      row->from_agency, row->to_agency,    row->record_type,
                            row->record_id,  row->purpose,     row->lawful_basis, row->consent,
                            row->error_code, row->reason };
    copybuf_t b = { 0 };
    copybuf_row(&b, 12);
    copybuf_int8(&b, row->seq);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        s_check(s_utf8(texts[i]), "a log row's text column is not valid UTF-8");
        copybuf_text(&b, texts[i]);
    }
    copybuf_text_array(&b, row->rule_ids, row->rule_count);
    copybuf_end(&b);
    copybuf_free(&b);
    uint8_t prev[ACC_LOGROW_HASH_BYTES] = { 0 };
    uint8_t entry[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(entry, prev, row);
    s_check(acc_logrow_ad(NULL, 0, row) <= ACC_LOGROW_AD_MAX, "associated data over its bound");
    size_t len = accord__v1__child_record__get_packed_size(payload);
    uint8_t *plain = malloc(len + 1);
    uint8_t *sealed = malloc(len + ACC_LOGROW_MAC_BYTES);
    (void)accord__v1__child_record__pack(payload, plain);
    acc_logrow_t sealed_row = *row;
    uint8_t nonce[ACC_LOGROW_NONCE_BYTES] = { 1 };
    sealed_row.nonce = nonce;
    acc_logrow_seal(sealed, len + ACC_LOGROW_MAC_BYTES, plain, len, &sealed_row, s_key);
    free(plain);
    free(sealed);
}

static void s_check_record_text(const Accord__V1__ChildRecord *rec)
{
    s_check(s_utf8(rec->record_id) && s_utf8(rec->record_type) && s_utf8(rec->occurred_at) &&
                s_utf8(rec->safeguarding_justification),
            "a delivered record string is not valid UTF-8");
    const Accord__V1__Subject *s = rec->subject;
    s_check(s == NULL ||
                (s_utf8(s->nhs_number) && s_utf8(s->local_id) && s_utf8(s->given_name) &&
                 s_utf8(s->family_name) && s_utf8(s->date_of_birth) && s_utf8(s->postcode)),
            "a delivered subject string is not valid UTF-8");
    for (size_t i = 0; i < rec->n_fields; i++) {
        const Accord__V1__Field *f = rec->fields[i];
        s_check(s_utf8(f->name) &&
                    (f->value_case != ACCORD__V1__FIELD__VALUE_TEXT || s_utf8(f->text)),
                "a delivered field is not valid UTF-8");
    }
}

/* The Deliver the broker would send r: decodable and within the bound. */
static void s_check_deliver(const Accord__V1__ChildRecord *rec, const acc_recipient_t *r,
                            Accord__V1__ChildRecord *minimised)
{
    char *rule_ids[ACC_POLICY_MAX_RULES_PER_RECIPIENT];
    for (size_t i = 0; i < r->rule_count; i++) {
        rule_ids[i] = acc_pb_str(acc_policy_rule_id(s_policy, r->rules[i]));
    }
    Accord__V1__Deliver deliver;
    accord__v1__deliver__init(&deliver);
    deliver.share_id = acc_pb_str("0b7a8bd4-7d3e-4f5b-9c1e-3a2b1c0d9e8f");
    deliver.from_agency = acc_pb_str("rft-health-visiting");
    deliver.n_rule_ids = r->rule_count;
    deliver.rule_ids = rule_ids;
    deliver.purpose =
        acc_pb_str(r->rule_count > 0 ? acc_policy_rule_purpose(s_policy, r->rules[0]) : "");
    deliver.lawful_basis =
        acc_pb_str(r->rule_count > 0 ? acc_policy_rule_lawful_basis(s_policy, r->rules[0]) : "");
    deliver.agreement_hash = acc_pb_str(acc_policy_hash_hex(s_policy));
    deliver.record = minimised;
    if (r->safeguarding_override) {
        deliver.safeguarding_justification = rec->safeguarding_justification;
    }
    Accord__V1__Envelope env;
    accord__v1__envelope__init(&env);
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER;
    env.deliver = &deliver;
    size_t len = accord__v1__envelope__get_packed_size(&env);
    s_check(len <= ACC_VALIDATE_DELIVER_BYTES_MAX,
            "a Deliver is over ACC_VALIDATE_DELIVER_BYTES_MAX");
    uint8_t *frame = malloc(len);
    (void)accord__v1__envelope__pack(&env, frame);
    Accord__V1__Envelope *back = accord__v1__envelope__unpack(NULL, len, frame);
    s_check(back != NULL, "a Deliver does not decode");
    accord__v1__envelope__free_unpacked(back, NULL);
    free(frame);
    s_check_record_text(minimised);
}

static void s_row_init(acc_logrow_t *row, const Accord__V1__ChildRecord *rec, const char *event)
{
    memset(row, 0, sizeof(*row));
    row->event = event;
    row->from_agency = "rft-health-visiting";
    row->record_type = acc_validate_is_record_type(rec->record_type) ? rec->record_type : NULL;
    row->record_id = acc_validate_is_record_id(rec->record_id) ? rec->record_id : NULL;
    row->consent = acc_pb_consent_name(rec->consent);
    row->agreement_hash = acc_policy_hash(s_policy);
}

static void s_share(const Accord__V1__ChildRecord *rec, const acc_decision_t *d)
{
    for (size_t i = 0; i < d->recipient_count; i++) {
        const acc_recipient_t *r = &d->recipients[i];
        acc_projection_t projection;
        acc_policy_project(s_policy, d, r, rec, &projection);
        acc_logrow_t row;
        s_row_init(&row, rec, r->withheld ? "withheld" : "shared");
        row.to_agency = acc_policy_agency_id(s_policy, r->agency);
        row.reason = r->withheld ? r->withheld_reason : NULL;
        for (size_t k = 0; k < r->rule_count; k++) {
            row.rule_ids[k] = acc_policy_rule_id(s_policy, r->rules[k]);
        }
        row.rule_count = r->rule_count;
        s_check_row(&row, &projection.record);
        if (!r->withheld) {
            s_check_deliver(rec, r, &projection.record);
        }
    }
}

static void s_publish(const Accord__V1__Envelope *env)
{
    const Accord__V1__ChildRecord *rec = env->publish->record;
    acc_err_t reason;
    acc_err_clear(&reason);
    Accord__V1__ErrorCode code = acc_validate_record(rec, &reason);
    acc_decision_t *d = malloc(sizeof(*d));
    if (code == ACCORD__V1__ERROR_CODE__OK) {
        size_t from = (size_t)(env->correlation_id % acc_policy_agency_count(s_policy));
        acc_policy_decide(s_policy, from, "2027-01-01", rec, d);
        code = d->code;
        (void)acc_err_set(&reason, ACC_ERR_INVALID, "%s", d->reason);
    }
    if (code == ACCORD__V1__ERROR_CODE__OK) {
        s_check_record_text(rec); /* validated: nothing invalid may remain */
        s_share(rec, d);
    } else {
        acc_logrow_t row;
        s_row_init(&row, rec, "refused");
        row.error_code = acc_pb_code_name(code);
        row.reason = reason.msg;
        s_check_row(&row, rec);
    }
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_init();
    acc_err_t reason;
    if (acc_validate_frame(data, size, FRAME_MAX, &reason) != ACCORD__V1__ERROR_CODE__OK) {
        s_check(s_utf8(reason.msg), "a frame reason is not valid UTF-8");
        return 0;
    }
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(NULL, size, data);
    if (env == NULL) {
        return 0;
    }
    if (acc_validate_envelope(env, &reason) == ACCORD__V1__ERROR_CODE__OK &&
        env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH && env->publish->record != NULL) {
        s_publish(env);
    }
    accord__v1__envelope__free_unpacked(env, NULL);
    return 0;
}

/* ---- the structured mutator ---- */

static const char *const s_types[] = {
    "maternity-booking",      "birth-notification",    "health-visit", "two-year-review",
    "ed-attendance",          "early-help-assessment", "referral",     "cp-plan-status",
    "police-da-notification", "no-such-type"
};
static const char *const s_names[] = { "booking_date",
                                       "estimated_delivery_date",
                                       "gestation_weeks",
                                       "first_pregnancy",
                                       "vulnerability_factors",
                                       "birth_weight_grams",
                                       "place_of_birth",
                                       "feeding",
                                       "visit_date",
                                       "visit_type",
                                       "weight_grams",
                                       "breastfeeding",
                                       "concerns",
                                       "review_date",
                                       "outcome",
                                       "attended_at",
                                       "injury_type",
                                       "discharge_outcome",
                                       "concern_raised",
                                       "referral_date",
                                       "referral_reason",
                                       "urgency",
                                       "status",
                                       "start_date",
                                       "incident_date",
                                       "incident_reference",
                                       "risk_level",
                                       "plan_agreed",
                                       "assessment_date",
                                       "unknown_field" };
static const char *const s_texts[] = { "2026-11-20",
                                       "2026-02-30",
                                       "2026-11-20T10:15:00Z",
                                       "6-8-week",
                                       "hospital",
                                       "breast",
                                       "refer",
                                       "high",
                                       "urgent",
                                       "",
                                       "caf\xc3\xa9",
                                       "\xf0\x9f\x98\x80",
                                       "\xef\xbb\xbf-bom",
                                       "\xc3\x28",
                                       "\xed\xa0\x80",
                                       "\xc0\xaf",
                                       "\xf4\x90\x80\x80",
                                       "a\xc3",
                                       "\xe2\x82",
                                       "\xff",
                                       "tab\there",
                                       "line\nbreak",
                                       "back\\slash",
                                       "9434765919",
                                       "9434765918",
                                       "943 476 5919",
                                       "943-476-5919",
                                       "94347659190",
                                       "S60 1AA",
                                       "2026-05-02",
                                       "hv-1",
                                       "hv:1.a_b-c",
                                       "hv 1" };
static const char *const s_nhs[] = { "9434765919", "9434765918", "943 476 5919", "4010232137",
                                     "0000000000", "94347659",   "943476591a",   "" };

static unsigned s_rand(unsigned *state)
{
    *state = *state * 1103515245U + 12345U;
    return (*state >> 16) & 0x7fff;
}

#define PICK(array, state) ((array)[s_rand(state) % (sizeof(array) / sizeof((array)[0]))])

static void s_replace(char **slot, char *value)
{
    if (*slot != NULL && *slot != protobuf_c_empty_string) {
        free(*slot);
    }
    *slot = value;
}

/* A string: a known value, a UTF-8 edge case, or something long. */
static char *s_value(unsigned *state)
{
    unsigned kind = s_rand(state) % 8;
    if (kind < 6) {
        return strdup(PICK(s_texts, state));
    }
    static const size_t lengths[] = { 16, 17, 64, 65, 128, 129, 256, 257, 2001, 65537 };
    size_t n = PICK(lengths, state);
    char *s = malloc(n + 1);
    memset(s, kind == 6 ? 'a' : 0xc3, n);
    if (kind == 7) {
        for (size_t i = 1; i < n; i += 2) {
            s[i] = (char)0xa9; /* "é" repeated, perhaps cut in half at the end */
        }
    }
    s[n] = '\0';
    return s;
}

static Accord__V1__Envelope *s_fresh(void)
{
    static const char json[] =
        "{\"record_id\":\"hv-1\",\"record_type\":\"health-visit\","
        "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"9434765919\","
        "\"family_name\":\"Smith\"},\"consent\":\"given\","
        "\"fields\":{\"visit_date\":\"2026-11-20\",\"visit_type\":\"6-8-week\"}}";
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    if (acc_record_from_json(&rec, json, strlen(json), &err) != ACC_OK) {
        abort();
    }
    Accord__V1__Envelope *env = malloc(sizeof(*env));
    accord__v1__envelope__init(env);
    env->correlation_id = 1; /* rft-health-visiting */
    env->body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env->publish = malloc(sizeof(*env->publish));
    accord__v1__publish__init(env->publish);
    env->publish->record = rec;
    return env;
}

static void s_mutate_field(Accord__V1__ChildRecord *rec, unsigned *state)
{
    unsigned op = s_rand(state) % 3;
    if (op == 0 || rec->n_fields == 0) {
        if (rec->n_fields >= 200) {
            return;
        }
        rec->fields = realloc(rec->fields, (rec->n_fields + 1) * sizeof(*rec->fields));
        Accord__V1__Field *f = malloc(sizeof(*f));
        accord__v1__field__init(f);
        f->name = strdup(PICK(s_names, state));
        rec->fields[rec->n_fields++] = f;
    }
    Accord__V1__Field *f = rec->fields[s_rand(state) % rec->n_fields];
    if (op == 2) {
        s_replace(&f->name, s_rand(state) % 2 == 0 ? strdup(PICK(s_names, state)) : s_value(state));
        return;
    }
    if (f->value_case == ACCORD__V1__FIELD__VALUE_TEXT) {
        s_replace(&f->text, NULL);
    }
    switch (s_rand(state) % 4) {
    case 0:
        f->value_case = ACCORD__V1__FIELD__VALUE_TEXT;
        f->text = s_value(state);
        break;
    case 1:
        f->value_case = ACCORD__V1__FIELD__VALUE_INTEGER;
        f->integer = (int64_t)s_rand(state) - 1000;
        break;
    case 2:
        f->value_case = ACCORD__V1__FIELD__VALUE_DECIMAL;
        f->decimal = (double)s_rand(state) / 7.0;
        break;
    default:
        f->value_case = ACCORD__V1__FIELD__VALUE_BOOLEAN;
        f->boolean = s_rand(state) % 2 == 0;
        break;
    }
}

static void s_mutate_subject(Accord__V1__Subject *s, unsigned *state)
{
    char **slots[] = { &s->nhs_number,  &s->local_id,      &s->given_name,
                       &s->family_name, &s->date_of_birth, &s->postcode };
    size_t i = s_rand(state) % (sizeof(slots) / sizeof(slots[0]));
    s_replace(slots[i],
              i == 0 && s_rand(state) % 2 == 0 ? strdup(PICK(s_nhs, state)) : s_value(state));
}

static void s_mutate_record(Accord__V1__Envelope *env, Accord__V1__ChildRecord *rec,
                            unsigned *state)
{
    switch (s_rand(state) % 9) {
    case 0:
        s_replace(&rec->record_type,
                  s_rand(state) % 3 != 0 ? strdup(PICK(s_types, state)) : s_value(state));
        break;
    case 1:
        s_replace(&rec->record_id, s_value(state));
        break;
    case 2:
        s_replace(&rec->occurred_at, s_value(state));
        break;
    case 3:
        rec->safeguarding = !rec->safeguarding;
        s_replace(&rec->safeguarding_justification, s_value(state));
        break;
    case 4:
        rec->consent = (Accord__V1__Consent)(s_rand(state) % 5);
        break;
    case 5:
        env->correlation_id = s_rand(state);
        break;
    case 6:
        if (rec->subject == NULL) {
            rec->subject = malloc(sizeof(*rec->subject));
            accord__v1__subject__init(rec->subject);
        }
        s_mutate_subject(rec->subject, state);
        break;
    default:
        s_mutate_field(rec, state);
        break;
    }
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    unsigned state = seed;
    if (s_rand(&state) % 5 == 0) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(NULL, size, data);
    if (env == NULL || env->body_case != ACCORD__V1__ENVELOPE__BODY_PUBLISH ||
        env->publish->record == NULL) {
        if (env != NULL) {
            accord__v1__envelope__free_unpacked(env, NULL);
        }
        env = s_fresh();
    }
    for (unsigned n = 1 + s_rand(&state) % 3; n > 0; n--) {
        s_mutate_record(env, env->publish->record, &state);
    }
    size_t len = accord__v1__envelope__get_packed_size(env);
    if (len <= max_size) {
        (void)accord__v1__envelope__pack(env, data);
    } else {
        len = LLVMFuzzerMutate(data, size, max_size);
    }
    accord__v1__envelope__free_unpacked(env, NULL);
    return len;
}
