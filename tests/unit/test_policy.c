/* test_policy.c - the agreement: checks with line and column, decisions, minimisation */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "accord/policy.h"
#include "accord/record.h"

static char s_keys[4][41];
static char s_box[65] = "547eb813dabba1c3b485715bb5af3f8b3b73e535eaab69cca2d50bbb13379616";

static void setup(void)
{
    char secret[41];
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(zmq_curve_keypair(s_keys[i], secret), 0);
    }
}

TestSuite(policy, .init = setup);

/* A small valid agreement; body replaces the rules section. */
static char *s_agreement(const char *header, const char *types, const char *rules)
{
    static char text[16384];
    snprintf(text, sizeof(text),
             "%s"
             "agencies:\n"
             "  - id: hv\n    name: Health visiting\n    key: \"%s\"\n"
             "  - id: cc\n    name: Children's centres\n    key: \"%s\"\n"
             "  - id: eh\n    name: Early help\n    key: \"%s\"\n"
             "auditors:\n"
             "  - id: ig\n    name: IG\n    key: \"%s\"\n    box_key: \"%s\"\n"
             "%s%s",
             header, s_keys[0], s_keys[1], s_keys[2], s_keys[3], s_box, types, rules);
    return text;
}

static const char s_header[] = "agreement:\n  id: test\n  title: Test\n"
                               "  valid_from: 2026-04-01\n  valid_until: 2029-03-31\n";

static const char s_types[] =
    "record_types:\n"
    "  - id: health-visit\n"
    "    fields: {visit_date: date, visit_type: \"enum(new-birth, 1-year)\", concerns: text(10),"
    " weight_grams: integer, breastfeeding: boolean, centile: decimal, seen_at: datetime,"
    " sibling: nhs_number}\n"
    "    required: [visit_date, visit_type]\n";

static const char s_rules[] = "rules:\n"
                              "  - id: hv-to-cc\n"
                              "    from: hv\n"
                              "    to: [cc]\n"
                              "    record_types: [health-visit]\n"
                              "    fields: [visit_date]\n"
                              "    subject: [nhs_number]\n"
                              "    purpose: Best Start\n"
                              "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                              "    consent: required\n"
                              "  - id: hv-type-to-cc\n"
                              "    from: hv\n"
                              "    to: [cc]\n"
                              "    record_types: [health-visit]\n"
                              "    fields: [visit_type]\n"
                              "    subject: [family_name]\n"
                              "    purpose: Groups\n"
                              "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                              "    consent: not-required\n"
                              "  - id: hv-to-eh\n"
                              "    from: hv\n"
                              "    to: [eh]\n"
                              "    record_types: [health-visit]\n"
                              "    fields: [visit_date, concerns]\n"
                              "    subject: [nhs_number, given_name]\n"
                              "    purpose: Early help\n"
                              "    lawful_basis: \"DPA 2018 Sch 1 Pt 2 para 18\"\n"
                              "    consent: unless-safeguarding\n";

static acc_policy_t *s_load(const char *text)
{
    acc_policy_t *p = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    acc_rc_t rc =
        acc_policy_parse(&p, "a.yaml", (const unsigned char *)text, strlen(text), &diag, &err);
    cr_assert_eq(rc, ACC_OK, "%s", err.msg);
    acc_diag_clear(&diag);
    return p;
}

/* Parses text expecting failure; returns the first diagnostic line (static). */
static const char *s_first_error(const char *text, size_t *count)
{
    static char first[512];
    acc_policy_t *p = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    cr_assert_eq(
        acc_policy_parse(&p, "a.yaml", (const unsigned char *)text, strlen(text), &diag, &err),
        ACC_ERR_INVALID, "accepted: %s", text);
    cr_assert_null(p);
    cr_assert_geq(diag.count, 1);
    snprintf(first, sizeof(first), "%s", diag.lines[0]);
    if (count != NULL) {
        *count = diag.count;
    }
    acc_diag_clear(&diag);
    return first;
}

Test(policy, loads_a_valid_agreement)
{
    acc_policy_t *p = s_load(s_agreement(s_header, s_types, s_rules));
    cr_assert_str_eq(acc_policy_id(p), "test");
    cr_assert_eq(acc_policy_agency_count(p), 3);
    cr_assert_eq(acc_policy_rule_count(p), 3);
    cr_assert_eq(strlen(acc_policy_hash_hex(p)), 64);
    cr_assert(acc_policy_is_in_force(p, "2026-04-01"));
    cr_assert(!acc_policy_is_in_force(p, "2029-04-01"));
    acc_policy_destroy(&p);
    cr_assert_null(p);
}

typedef struct {
    const char *what;
    const char *header;
    const char *types;
    const char *rules;
    const char *expect; /* "LINE:COL: text" */
} check_case_t;

Test(policy, check_names_line_and_column_of_each_error_class)
{
    static const char rule_head[] = "rules:\n  - id: r1\n    from: hv\n";
    static const char rule_tail[] = "    purpose: p\n    lawful_basis: b\n    consent: required\n";
    char unknown_agency[512];
    snprintf(unknown_agency, sizeof(unknown_agency),
             "%s    to: [police]\n    record_types: [health-visit]\n    fields: [visit_date]\n"
             "    subject: [nhs_number]\n%s",
             rule_head, rule_tail);
    char unknown_type[512];
    snprintf(unknown_type, sizeof(unknown_type),
             "%s    to: [cc]\n    record_types: [ed-visit]\n    fields: [visit_date]\n"
             "    subject: [nhs_number]\n%s",
             rule_head, rule_tail);
    char unknown_field[512];
    snprintf(unknown_field, sizeof(unknown_field),
             "%s    to: [cc]\n    record_types: [health-visit]\n    fields: [shoe_size]\n"
             "    subject: [nhs_number]\n%s",
             rule_head, rule_tail);
    char self_rule[512];
    snprintf(self_rule, sizeof(self_rule),
             "%s    to: [hv]\n    record_types: [health-visit]\n    fields: [visit_date]\n"
             "    subject: [nhs_number]\n%s",
             rule_head, rule_tail);
    char bad_subject[512];
    snprintf(bad_subject, sizeof(bad_subject),
             "%s    to: [cc]\n    record_types: [health-visit]\n    fields: [visit_date]\n"
             "    subject: [shoe_size]\n%s",
             rule_head, rule_tail);
    char never[512];
    snprintf(never, sizeof(never),
             "%s    to: []\n    record_types: [health-visit]\n    fields: [visit_date]\n"
             "    subject: [nhs_number]\n%s",
             rule_head, rule_tail);
    const check_case_t cases[] = {
        { "unknown agency in a rule", s_header, s_types, unknown_agency,
          "a.yaml:28:10: rule \"r1\" sends to unknown agency \"police\"" },
        { "unknown record type in a rule", s_header, s_types, unknown_type,
          "a.yaml:29:20: rule \"r1\" names unknown record type \"ed-visit\"" },
        { "unknown field in a rule", s_header, s_types, unknown_field,
          "a.yaml:30:14: rule \"r1\" shares field \"shoe_size\"" },
        { "rule to its own publisher", s_header, s_types, self_rule,
          "a.yaml:28:10: rule \"r1\" sends to its own publisher" },
        { "unknown subject identifier", s_header, s_types, bad_subject,
          "a.yaml:31:15: rule \"r1\" names unknown subject identifier \"shoe_size\"" },
        { "rule that can never fire", s_header, s_types, never,
          "a.yaml:26:5: rule \"r1\" can never fire: it names no recipient" },
        { "reversed dates",
          "agreement:\n  id: t\n  title: T\n  valid_from: 2029-01-01\n  valid_until: 2026-01-01\n",
          s_types, s_rules, "a.yaml:5:16: valid_until 2026-01-01 is before valid_from 2029-01-01" },
        { "unknown field type", s_header, "record_types:\n  - id: t\n    fields: {a: colour}\n",
          "rules: []\n", "a.yaml:23:17: field \"a\" has an unknown type \"colour\"" },
        { "unknown key", "agreement:\n  id: t\n  tittle: T\n", "", "",
          "a.yaml:3:3: unknown key \"tittle\"" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got =
            s_first_error(s_agreement(cases[i].header, cases[i].types, cases[i].rules), NULL);
        cr_assert(strncmp(got, cases[i].expect, strlen(cases[i].expect)) == 0,
                  "%s:\n  expected %s\n  got      %s", cases[i].what, cases[i].expect, got);
    }
}

Test(policy, check_reports_duplicates_bad_keys_and_a_missing_box_key)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "%sagencies:\n"
             "  - id: hv\n    name: A\n    key: \"%s\"\n"
             "  - id: hv\n    name: B\n    key: \"%s\"\n"
             "  - id: cc\n    name: C\n    key: \"not-a-key\"\n"
             "  - id: eh\n    name: D\n    key: \"%s\"\n"
             "auditors:\n  - id: ig\n    key: \"%s\"\n"
             "%srules: []\n",
             s_header, s_keys[0], s_keys[1], s_keys[0], s_keys[3], s_types);
    acc_policy_t *p = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    cr_assert_eq(
        acc_policy_parse(&p, "a.yaml", (const unsigned char *)text, strlen(text), &diag, &err),
        ACC_ERR_INVALID);
    const char *expect[] = {
        "a.yaml:10:9: duplicate id \"hv\"",
        "a.yaml:15:10: key of agency \"cc\": expected a 40-character Z85 CURVE key",
        "a.yaml:18:10: key of agency \"eh\" is already used",
        "a.yaml:20:5: missing required key \"box_key\"",
    };
    cr_assert_eq(diag.count, 4, "got %zu: %s", diag.count, diag.count > 0 ? diag.lines[0] : "");
    for (size_t i = 0; i < 4; i++) {
        cr_assert(strncmp(diag.lines[i], expect[i], strlen(expect[i])) == 0, "%s", diag.lines[i]);
    }
    cr_assert(strstr(err.msg, "(and 3 more)") != NULL, "%s", err.msg);
    acc_diag_clear(&diag);
}

static Accord__V1__ChildRecord *s_record(const char *extra_fields, const char *tail)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"record_id\":\"hv-1\",\"record_type\":\"health-visit\",\"occurred_at\":"
             "\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"9434765919\","
             "\"given_name\":\"Amelia\",\"family_name\":\"Smith\",\"postcode\":\"S60 1AA\"},"
             "\"fields\":{\"visit_date\":\"2026-11-20\",\"visit_type\":\"new-birth\"%s}%s}",
             extra_fields, tail);
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, json, strlen(json), &err), ACC_OK, "%s", err.msg);
    return rec;
}

static Accord__V1__ErrorCode s_decide(const acc_policy_t *p, const char *day,
                                      const Accord__V1__ChildRecord *rec, acc_decision_t *d)
{
    size_t hv = 0;
    cr_assert(acc_policy_find_agency(p, "hv", &hv));
    acc_policy_decide(p, hv, day, rec, d);
    return d->code;
}

typedef struct {
    const char *fields;
    const char *tail;
    Accord__V1__ErrorCode code;
    const char *reason;
} decide_case_t;

Test(policy, decide_refuses_with_the_specific_code_and_field)
{
    acc_policy_t *p = s_load(s_agreement(s_header, s_types, s_rules));
    static const decide_case_t cases[] = {
        { "", "", ACCORD__V1__ERROR_CODE__OK, "" },
        { ",\"shoe_size\":\"4\"", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD,
          "field \"shoe_size\"" },
        { ",\"weight_grams\":\"heavy\"", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD,
          "field \"weight_grams\": expected an integer" },
        { ",\"centile\":true", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD, "expected a number" },
        { ",\"centile\":50", "", ACCORD__V1__ERROR_CODE__OK, "" },
        { ",\"breastfeeding\":1", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD, "true or false" },
        { ",\"concerns\":\"far more than ten bytes\"", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD,
          "field \"concerns\": text is too long" },
        { ",\"seen_at\":\"yesterday\"", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD, "RFC 3339" },
        { ",\"sibling\":\"9434765918\"", "", ACCORD__V1__ERROR_CODE__INVALID_FIELD,
          "valid NHS number" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Accord__V1__ChildRecord *rec = s_record(cases[i].fields, cases[i].tail);
        acc_decision_t d;
        cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), cases[i].code, "case %zu: %s", i,
                     d.reason);
        cr_assert(strstr(d.reason, cases[i].reason) != NULL, "case %zu: %s", i, d.reason);
        acc_record_free(&rec);
    }
    acc_policy_destroy(&p);
}

Test(policy, decide_checks_dates_types_required_fields_and_rules)
{
    acc_policy_t *p = s_load(s_agreement(s_header, s_types, s_rules));
    Accord__V1__ChildRecord *rec = s_record("", "");
    acc_decision_t d;
    cr_assert_eq(s_decide(p, "2030-01-01", rec, &d),
                 ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE);
    free(rec->record_type);
    rec->record_type = strdup("ed-visit");
    cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), ACCORD__V1__ERROR_CODE__UNKNOWN_RECORD_TYPE);
    acc_record_free(&rec);
    const char *json = "{\"record_id\":\"x\",\"record_type\":\"health-visit\",\"occurred_at\":"
                       "\"2026-11-20T10:15:00Z\",\"subject\":{\"local_id\":\"l\"},"
                       "\"fields\":{\"visit_date\":\"2026-11-20\"}}";
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, json, strlen(json), &err), ACC_OK);
    cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), ACCORD__V1__ERROR_CODE__MISSING_FIELD);
    cr_assert_str_eq(d.reason, "required field \"visit_type\" is missing");
    size_t cc = 0;
    cr_assert(acc_policy_find_agency(p, "cc", &cc));
    acc_policy_decide(p, cc, "2026-11-20", rec, &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__NO_AGREEMENT, "%s", d.reason);
    acc_record_free(&rec);
    acc_policy_destroy(&p);
}

static const acc_recipient_t *s_recipient(const acc_policy_t *p, const acc_decision_t *d,
                                          const char *agency)
{
    const acc_recipient_t *found = NULL;
    for (size_t i = 0; i < d->recipient_count && found == NULL; i++) {
        if (strcmp(acc_policy_agency_id(p, d->recipients[i].agency), agency) == 0) {
            found = &d->recipients[i];
        }
    }
    /* never NULL: a missing recipient fails the test here, not as a crash in the caller */
    cr_assert(found != NULL, "no recipient %s in the decision", agency);
    return found;
}

Test(policy, rules_to_one_recipient_unite_and_consent_decides)
{
    acc_policy_t *p = s_load(s_agreement(s_header, s_types, s_rules));
    /* consent given: cc gets both rules' fields and identifiers; eh shares too */
    Accord__V1__ChildRecord *rec = s_record(",\"concerns\":\"none\"", ",\"consent\":\"given\"");
    acc_decision_t d;
    cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(d.recipient_count, 2);
    const acc_recipient_t *cc = s_recipient(p, &d, "cc");
    cr_assert(!cc->withheld);
    cr_assert_eq(cc->rule_count, 2);
    cr_assert_str_eq(acc_policy_rule_id(p, cc->rules[0]), "hv-to-cc");
    cr_assert_str_eq(acc_policy_rule_id(p, cc->rules[1]), "hv-type-to-cc");
    cr_assert_eq(cc->subject_mask, ACC_SUBJECT_NHS_NUMBER | ACC_SUBJECT_FAMILY_NAME);
    acc_projection_t proj;
    acc_policy_project(p, &d, cc, rec, &proj);
    cr_assert_eq(proj.record.n_fields, 2);
    cr_assert_str_eq(proj.subject.nhs_number, "9434765919");
    cr_assert_str_eq(proj.subject.family_name, "Smith");
    cr_assert_str_eq(proj.subject.given_name, "");
    cr_assert_str_eq(proj.subject.postcode, "");
    acc_record_free(&rec);

    /* consent refused: only the not-required rule reaches cc; eh is withheld */
    rec = s_record(",\"concerns\":\"none\"", ",\"consent\":\"refused\"");
    cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), ACCORD__V1__ERROR_CODE__OK);
    cc = s_recipient(p, &d, "cc");
    cr_assert_eq(cc->rule_count, 1);
    cr_assert_str_eq(acc_policy_rule_id(p, cc->rules[0]), "hv-type-to-cc");
    acc_policy_project(p, &d, cc, rec, &proj);
    cr_assert_eq(proj.record.n_fields, 1);
    cr_assert_str_eq(proj.record.fields[0]->name, "visit_type");
    cr_assert_str_eq(proj.subject.nhs_number, "");
    const acc_recipient_t *eh = s_recipient(p, &d, "eh");
    cr_assert(eh->withheld);
    cr_assert(strstr(eh->withheld_reason, "hv-to-eh") != NULL, "%s", eh->withheld_reason);
    acc_record_free(&rec);

    /* safeguarding with a justification overrides the refusal for unless-safeguarding */
    rec = s_record(",\"concerns\":\"bruise\"", ",\"consent\":\"refused\",\"safeguarding\":true,"
                                               "\"safeguarding_justification\":\"risk of harm\"");
    cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), ACCORD__V1__ERROR_CODE__OK);
    eh = s_recipient(p, &d, "eh");
    cr_assert(!eh->withheld);
    cr_assert(eh->safeguarding_override);
    acc_policy_project(p, &d, eh, rec, &proj);
    cr_assert_str_eq(proj.record.safeguarding_justification, "risk of harm");
    cr_assert_eq(proj.record.n_fields, 2);
    acc_record_free(&rec);

    /* a safeguarding flag without a justification does not override */
    rec = s_record("", ",\"consent\":\"refused\",\"safeguarding\":true");
    cr_assert_eq(s_decide(p, "2026-11-20", rec, &d), ACCORD__V1__ERROR_CODE__OK);
    cr_assert(s_recipient(p, &d, "eh")->withheld);
    acc_record_free(&rec);
    acc_policy_destroy(&p);
}

Test(policy, loads_the_example_best_start_agreement)
{
    acc_policy_t *p = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    cr_assert_eq(acc_policy_load(&p, ACCORD_SOURCE_DIR "/deploy/examples/best-start-agreement.yaml",
                                 &diag, &err),
                 ACC_OK, "%s", err.msg);
    cr_assert_geq(acc_policy_agency_count(p), 7);
    cr_assert_geq(acc_policy_rule_count(p), 10);
    cr_assert_eq(acc_policy_auditor_count(p), 1);
    acc_policy_destroy(&p);
    acc_diag_clear(&diag);
}

Test(policy, refuses_yaml_that_does_not_parse_with_its_position)
{
    size_t count = 0;
    const char *first = s_first_error("agreement: [unclosed\n", &count);
    cr_assert(strncmp(first, "a.yaml:2:1: ", 12) == 0, "%s", first);
    cr_assert_eq(count, 1);
}

Test(policy, a_rule_naming_types_when_none_are_defined_is_an_error_not_a_crash)
{
    /* found by fuzz_policy: lookups in an empty table of types */
    const char *text = "agreement: {id: a, title: A, valid_from: 2026-01-01, valid_until: "
                       "2027-01-01}\nagencies: []\nrules:\n  - {id: r, from: a, to: [b], "
                       "record_types: [t], fields: [f], subject: [], purpose: p, lawful_basis: b, "
                       "consent: required}\n";
    size_t count = 0;
    const char *first = s_first_error(text, &count);
    cr_assert(strstr(first, "missing required key \"record_types\"") != NULL, "%s", first);
    cr_assert_geq(count, 3);
}

Test(policy, a_duplicate_rule_id_is_reported_even_when_the_first_rule_is_wrong)
{
    char rules[2048];
    snprintf(rules, sizeof(rules),
             "rules:\n"
             "  - {id: r1, from: hv, to: [police], record_types: [health-visit], fields: [],"
             " subject: [], purpose: p, lawful_basis: b, consent: required}\n"
             "  - {id: r1, from: hv, to: [cc], record_types: [health-visit], fields: [],"
             " subject: [], purpose: p, lawful_basis: b, consent: required}\n");
    acc_policy_t *p = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    const char *text = s_agreement(s_header, s_types, rules);
    cr_assert_eq(
        acc_policy_parse(&p, "a.yaml", (const unsigned char *)text, strlen(text), &diag, &err),
        ACC_ERR_INVALID);
    cr_assert_eq(diag.count, 2);
    cr_assert(strstr(diag.lines[0], "unknown agency \"police\"") != NULL, "%s", diag.lines[0]);
    cr_assert(strstr(diag.lines[1], "a.yaml:27:10: duplicate rule id \"r1\"") != NULL, "%s",
              diag.lines[1]);
    acc_diag_clear(&diag);
}
