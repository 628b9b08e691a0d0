/* test_policy_outcome.c - the agreement's `outcomes:` and `lookups:`: loaded, checked with
 * line and column, and decided */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "accord/policy.h"

static char s_keys[4][41];
static const char s_box[] = "547eb813dabba1c3b485715bb5af3f8b3b73e535eaab69cca2d50bbb13379616";

static void setup(void)
{
    char secret[41];
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(zmq_curve_keypair(s_keys[i], secret), 0);
    }
}

TestSuite(policy_outcome, .init = setup);

/* Agencies hv, cc, eh and auditor ig, then one record type, then rules and lookups. */
static char *s_agreement(const char *rules, const char *lookups)
{
    static char text[32768];
    snprintf(text, sizeof(text),
             "agreement:\n  id: test\n  title: Test\n"
             "  valid_from: 2026-04-01\n  valid_until: 2029-03-31\n"
             "agencies:\n"
             "  - id: hv\n    name: Health visiting\n    key: \"%s\"\n"
             "  - id: cc\n    name: Children's centres\n    key: \"%s\"\n"
             "  - id: eh\n    name: Early help\n    key: \"%s\"\n"
             "auditors:\n"
             "  - id: ig\n    name: IG\n    key: \"%s\"\n    box_key: \"%s\"\n"
             "record_types:\n"
             "  - id: health-visit\n"
             "    fields: {visit_date: date, concerns: text}\n"
             "%s%s",
             s_keys[0], s_keys[1], s_keys[2], s_keys[3], s_box, rules, lookups);
    return text;
}

/* Line 24 onwards: three rules, the first two with outcomes. */
static const char s_rules[] =
    "rules:\n"
    "  - id: hv-to-cc\n"
    "    from: hv\n"
    "    to: [cc]\n"
    "    record_types: [health-visit]\n"
    "    fields: [visit_date]\n"
    "    subject: [nhs_number]\n"
    "    purpose: Best Start\n"
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
    "    consent: required\n"
    "    outcomes:\n"
    "      statuses: [received, accepted, declined, closed]\n"
    "      fields: {decision_date: date, reason: \"enum(no-further-action,early-help)\"}\n"
    "      to_sender: true\n"
    "  - id: hv-type-to-cc\n"
    "    from: hv\n"
    "    to: [cc]\n"
    "    record_types: [health-visit]\n"
    "    fields: [concerns]\n"
    "    subject: [family_name]\n"
    "    purpose: Groups\n"
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
    "    consent: not-required\n"
    "    outcomes: {statuses: [closed, received], fields: {reason: \"enum(groups)\", "
    "note: text(10)}}\n"
    "  - id: hv-to-eh\n"
    "    from: hv\n"
    "    to: [eh]\n"
    "    record_types: [health-visit]\n"
    "    fields: [visit_date, concerns]\n"
    "    subject: [nhs_number]\n"
    "    purpose: Early help\n"
    "    lawful_basis: \"DPA 2018 Sch 1 Pt 2 para 18\"\n"
    "    consent: unless-safeguarding\n";

static const char s_lookups[] = "lookups:\n"
                                "  - id: eh-involvement\n"
                                "    by: [eh]\n"
                                "    purposes: [\"Early help triage\", Other]\n"
                                "    window: 24 months\n"
                                "    notify: true\n"
                                "    description: Who already works with the family\n"
                                "  - id: cc-involvement\n"
                                "    by: [cc, eh]\n"
                                "    purposes: [Other]\n"
                                "    window: 1 year\n";

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

/* "a.yaml:LINE:COL" of the first occurrence of needle in text after the keys
 * (static): a random Z85 key may hold "[]" or "cc," by chance. */
static const char *s_at(const char *text, const char *needle)
{
    static char where[64];
    const char *body = strstr(text, "\nrecord_types:");
    const char *hit = strstr(body != NULL ? body : text, needle);
    cr_assert(hit != NULL, "no %s in the text", needle);
    size_t line = 1;
    const char *line_start = text;
    for (const char *q = text; q < hit; q++) {
        if (*q == '\n') {
            line++;
            line_start = q + 1;
        }
    }
    snprintf(where, sizeof(where), "a.yaml:%zu:%zu", line, (size_t)(hit - line_start) + 1);
    return where;
}

static size_t s_rule(const acc_policy_t *p, const char *id)
{
    for (size_t i = 0; i < acc_policy_rule_count(p); i++) {
        if (strcmp(acc_policy_rule_id(p, i), id) == 0) {
            return i;
        }
    }
    cr_assert_fail("no rule %s", id);
    return 0;
}

static size_t s_agency(const acc_policy_t *p, const char *id)
{
    size_t index = 0;
    cr_assert(acc_policy_find_agency(p, id, &index), "no agency %s", id);
    return index;
}

Test(policy_outcome, loads_outcomes_and_lookups_with_their_accessors)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    unsigned statuses = 0;
    bool to_sender = false;
    size_t r = s_rule(p, "hv-to-cc");
    cr_assert(acc_policy_rule_outcomes(p, r, &statuses, &to_sender));
    cr_assert_eq(statuses, ACC_OUTCOME_RECEIVED | ACC_OUTCOME_ACCEPTED | ACC_OUTCOME_DECLINED |
                               ACC_OUTCOME_CLOSED);
    cr_assert(to_sender);
    cr_assert_eq(acc_policy_rule_outcome_field_count(p, r), 2);
    cr_assert_str_eq(acc_policy_rule_outcome_field_name(p, r, 0), "decision_date");
    cr_assert_str_eq(acc_policy_rule_outcome_field_spec(p, r, 0), "date");
    cr_assert_str_eq(acc_policy_rule_outcome_field_name(p, r, 1), "reason");
    cr_assert_str_eq(acc_policy_rule_outcome_field_spec(p, r, 1),
                     "enum(no-further-action,early-help)");

    r = s_rule(p, "hv-type-to-cc");
    cr_assert(acc_policy_rule_outcomes(p, r, &statuses, &to_sender));
    cr_assert_eq(statuses, ACC_OUTCOME_RECEIVED | ACC_OUTCOME_CLOSED);
    cr_assert(!to_sender, "to_sender defaults to false");
    cr_assert_str_eq(acc_policy_rule_outcome_field_spec(p, r, 0), "text(10)");

    r = s_rule(p, "hv-to-eh");
    cr_assert(!acc_policy_rule_outcomes(p, r, &statuses, &to_sender));
    cr_assert_eq(statuses, 0);
    cr_assert_eq(acc_policy_rule_outcome_field_count(p, r), 0);
    cr_assert(!acc_policy_rule_outcomes(p, r, NULL, NULL));

    cr_assert_eq(acc_policy_lookup_count(p), 2);
    cr_assert_str_eq(acc_policy_lookup_id(p, 0), "eh-involvement");
    cr_assert(acc_policy_lookup_notifies(p, 0));
    cr_assert(!acc_policy_lookup_notifies(p, 1), "notify defaults to false");
    cr_assert_str_eq(acc_policy_lookup_window(p, 0), "24 months");
    cr_assert_eq(acc_policy_lookup_window_days_max(p, 0), 24 * 31);
    cr_assert_str_eq(acc_policy_lookup_window(p, 1), "1 years");
    cr_assert_eq(acc_policy_lookup_window_days_max(p, 1), 366);
    cr_assert_eq(acc_policy_lookup_purpose_count(p, 0), 2);
    cr_assert_str_eq(acc_policy_lookup_purpose(p, 0, 0), "Early help triage");
    cr_assert_str_eq(acc_policy_lookup_purpose(p, 0, 1), "Other");
    cr_assert(acc_policy_lookup_allows(p, 0, s_agency(p, "eh")));
    cr_assert(!acc_policy_lookup_allows(p, 0, s_agency(p, "cc")));
    cr_assert(acc_policy_lookup_allows(p, 1, s_agency(p, "cc")));
    cr_assert(!acc_policy_lookup_allows(p, 1, 99), "an index past the agencies is not in by");
    acc_policy_destroy(&p);
}

Test(policy_outcome, an_agreement_without_outcomes_or_lookups_still_loads)
{
    static const char rules[] = "rules:\n"
                                "  - {id: r, from: hv, to: [cc], record_types: [health-visit],"
                                " fields: [], subject: [], purpose: p, lawful_basis: b,"
                                " consent: required}\n";
    acc_policy_t *p = s_load(s_agreement(rules, ""));
    cr_assert_eq(acc_policy_lookup_count(p), 0);
    cr_assert(!acc_policy_rule_outcomes(p, 0, NULL, NULL));
    acc_policy_destroy(&p);
}

Test(policy_outcome, windows_are_canonical_plural_intervals)
{
    static const struct {
        const char *written;
        const char *canonical;
        int64_t days_max;
    } cases[] = {
        { "24 months", "24 months", 744 },  { "1 year", "1 years", 366 },
        { "1 month", "1 months", 31 },      { "30 days", "30 days", 30 },
        { "1 day", "1 days", 1 },           { "2 years", "2 years", 732 },
        { "1200 days", "1200 days", 1200 }, { "6  month", "6 months", 186 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char lookups[256];
        snprintf(lookups, sizeof(lookups),
                 "lookups:\n  - {id: l, by: [cc], purposes: [p], window: \"%s\"}\n",
                 cases[i].written);
        acc_policy_t *p = s_load(s_agreement(s_rules, lookups));
        cr_assert_str_eq(acc_policy_lookup_window(p, 0), cases[i].canonical, "%s",
                         cases[i].written);
        cr_assert_eq(acc_policy_lookup_window_days_max(p, 0), cases[i].days_max, "%s",
                     cases[i].written);
        acc_policy_destroy(&p);
    }
}

typedef struct {
    const char *what;
    const char *rules;   /* NULL: s_rules */
    const char *lookups; /* "" for none */
    const char *at;      /* where the error is: the first occurrence of this text */
    const char *expect;  /* the message after "a.yaml:LINE:COL: " */
} load_case_t;

/* One rule (line 24) from hv to cc; its outcomes (from line 34) are given by each case. */
static char *s_rule_with(char *buf, size_t size, const char *outcomes)
{
    snprintf(buf, size,
             "rules:\n  - id: r1\n    from: hv\n    to: [cc]\n    record_types: [health-visit]\n"
             "    fields: [visit_date]\n    subject: [nhs_number]\n    purpose: p\n"
             "    lawful_basis: b\n    consent: required\n%s",
             outcomes);
    return buf;
}

static void s_check_cases(const load_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *text =
            s_agreement(cases[i].rules != NULL ? cases[i].rules : s_rules, cases[i].lookups);
        char expect[512];
        snprintf(expect, sizeof(expect), "%s: %s", s_at(text, cases[i].at), cases[i].expect);
        size_t count = 0;
        const char *got = s_first_error(text, &count);
        cr_assert(strncmp(got, expect, strlen(expect)) == 0, "%s:\n  expected %s\n  got      %s",
                  cases[i].what, expect, got);
    }
}

Test(policy_outcome, each_outcomes_error_names_its_line_and_column)
{
    char unknown_status[1024];
    char duplicate_status[1024];
    char empty_statuses[1024];
    char no_statuses[1024];
    char bad_type[1024];
    char unknown_key[1024];
    char not_a_map[1024];
    char not_bool[1024];
    char fields_not_map[1024];
    char bad_field_name[1024];
    const load_case_t cases[] = {
        { "unknown status",
          s_rule_with(unknown_status, sizeof(unknown_status),
                      "    outcomes:\n      statuses: [received, opened]\n"),
          "", "opened", "rule \"r1\": unknown outcome status \"opened\"" },
        { "duplicate status",
          s_rule_with(duplicate_status, sizeof(duplicate_status),
                      "    outcomes:\n      statuses: [received, closed, received]\n"),
          "", "received]", "rule \"r1\": outcome status \"received\" is listed twice" },
        { "empty statuses",
          s_rule_with(empty_statuses, sizeof(empty_statuses),
                      "    outcomes:\n      statuses: []\n"),
          "", "[]", "rule \"r1\": outcomes need at least one status" },
        { "no statuses",
          s_rule_with(no_statuses, sizeof(no_statuses), "    outcomes:\n      to_sender: true\n"),
          "", "to_sender", "missing required key \"statuses\"" },
        { "bad field type",
          s_rule_with(bad_type, sizeof(bad_type),
                      "    outcomes:\n      statuses: [received]\n"
                      "      fields: {decision_date: date, reason: colour}\n"),
          "", "colour", "field \"reason\" has an unknown type \"colour\"" },
        { "bad field name",
          s_rule_with(bad_field_name, sizeof(bad_field_name),
                      "    outcomes:\n      statuses: [received]\n"
                      "      fields: {Reason: text}\n"),
          "", "Reason", "field name must be 1-64 of a-z" },
        { "unknown key inside outcomes",
          s_rule_with(unknown_key, sizeof(unknown_key),
                      "    outcomes:\n      statuses: [received]\n      to_publisher: true\n"),
          "", "to_publisher", "unknown key \"to_publisher\"" },
        { "outcomes not a mapping",
          s_rule_with(not_a_map, sizeof(not_a_map), "    outcomes: [received, closed]\n"), "",
          "[received", "rule \"r1\": \"outcomes\" must be a mapping" },
        { "to_sender not a boolean",
          s_rule_with(not_bool, sizeof(not_bool),
                      "    outcomes:\n      statuses: [received]\n      to_sender: sometimes\n"),
          "", "sometimes", "\"to_sender\" must be true or false" },
        { "fields not a mapping",
          s_rule_with(fields_not_map, sizeof(fields_not_map),
                      "    outcomes:\n      statuses: [received]\n      fields: [reason]\n"),
          "", "[reason]", "rule \"r1\": outcome \"fields\" must be a mapping" },
    };
    s_check_cases(cases, sizeof(cases) / sizeof(cases[0]));
    /* one position written out by hand, so the helper cannot hide an off-by-one */
    cr_assert_str_eq(s_at(unknown_status, "opened"), "a.yaml:12:28");
    size_t count = 0;
    const char *got = s_first_error(s_agreement(unknown_status, ""), &count);
    cr_assert(strncmp(got, "a.yaml:35:28: ", 14) == 0, "%s", got);
    cr_assert_eq(count, 1);
}

Test(policy_outcome, an_outcome_takes_at_most_32_fields)
{
    char outcomes[2048] = "    outcomes:\n      statuses: [received]\n      fields: {f0: text";
    for (int i = 1; i <= 32; i++) {
        char more[16];
        snprintf(more, sizeof(more), ", f%d: text", i);
        strcat(outcomes, more);
    }
    strcat(outcomes, "}\n");
    char rules[4096];
    const char *text = s_agreement(s_rule_with(rules, sizeof(rules), outcomes), "");
    const char *got = s_first_error(text, NULL);
    char expect[256];
    snprintf(expect, sizeof(expect), "%s: the outcomes of rule \"r1\" has more than 32 fields",
             s_at(text, "{f0"));
    cr_assert_str_eq(got, expect);
}

Test(policy_outcome, each_lookups_error_names_its_line_and_column)
{
    char long_purpose[1200];
    memset(long_purpose, 'x', 1025);
    long_purpose[1025] = '\0';
    char too_long[1400];
    snprintf(too_long, sizeof(too_long),
             "lookups:\n  - {id: l, by: [cc], purposes: [%s], window: 1 year}\n", long_purpose);
    const load_case_t cases[] = {
        { "bad lookup id", NULL,
          "lookups:\n  - {id: Bad!, by: [cc], purposes: [p], window: 1 day}\n", "{id",
          "lookup id \"Bad!\" must be 1-64 of a-z" },
        { "duplicate lookup id", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 1 day}\n"
          "  - {id: l, by: [eh], purposes: [p], window: 1 day}\n",
          "l, by: [eh]", "duplicate lookup id \"l\"" },
        { "unknown agency", NULL,
          "lookups:\n  - {id: l, by: [police], purposes: [p], window: 1 day}\n", "police",
          "lookup \"l\" is made by unknown agency \"police\"" },
        { "auditor in by", NULL,
          "lookups:\n  - {id: l, by: [cc, ig], purposes: [p], window: 1 day}\n", "ig]",
          "lookup \"l\": \"ig\" is an auditor; only agencies look up" },
        { "empty by", NULL, "lookups:\n  - {id: l, by: [], purposes: [p], window: 1 day}\n", "[]",
          "lookup \"l\": \"by\" names no agency" },
        { "by not a list", NULL, "lookups:\n  - {id: l, by: cc, purposes: [p], window: 1 day}\n",
          "cc,", "\"by\" must be a list" },
        { "no purposes", NULL, "lookups:\n  - {id: l, by: [cc], purposes: [], window: 1 day}\n",
          "[]", "lookup \"l\" needs 1 to 64 purposes, not 0" },
        { "empty purpose", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p, \"\"], window: 1 day}\n", "\"\"",
          "lookup \"l\": each purpose must be text of 1 to 1024 bytes" },
        { "purpose too long", NULL, too_long, "xxx",
          "lookup \"l\": each purpose must be text of 1 to 1024 bytes" },
        { "missing window", NULL, "lookups:\n  - {id: l, by: [cc], purposes: [p]}\n", "{id",
          "missing required key \"window\"" },
        { "window of weeks", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 2 weeks}\n", "2 weeks",
          "lookup \"l\": window \"2 weeks\" must be N days, N months or N years, N from 1 to "
          "1200" },
        { "window of 0", NULL, "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 0 days}\n",
          "0 days", "lookup \"l\": window \"0 days\" must be" },
        { "window too long", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 1201 months}\n", "1201",
          "lookup \"l\": window \"1201 months\" must be" },
        { "window without a space", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 24months}\n", "24months",
          "lookup \"l\": window \"24months\" must be" },
        { "notify not a boolean", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 1 day, notify: often}\n", "often",
          "\"notify\" must be true or false" },
        { "unknown key", NULL,
          "lookups:\n  - {id: l, by: [cc], purposes: [p], window: 1 day, who: [cc]}\n", "who",
          "unknown key \"who\"" },
        { "lookups not a list", NULL, "lookups: {id: l}\n", "{id: l}",
          "\"lookups\" must be a list" },
    };
    s_check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

Test(policy_outcome, every_problem_of_a_lookup_is_reported_at_once)
{
    size_t count = 0;
    (void)s_first_error(
        s_agreement(s_rules, "lookups:\n  - {id: l, by: [police], purposes: [], window: soon}\n"),
        &count);
    cr_assert_eq(count, 3);
}

Test(policy_outcome, more_than_256_lookups_is_an_error)
{
    static char lookups[300 * 64];
    strcpy(lookups, "lookups:\n");
    for (int i = 0; i <= 256; i++) {
        char one[64];
        snprintf(one, sizeof(one), "  - {id: l%d, by: [cc], purposes: [p], window: 1 day}\n", i);
        strcat(lookups, one);
    }
    const char *text = s_agreement(s_rules, lookups);
    const char *got = s_first_error(text, NULL);
    char expect[128];
    snprintf(expect, sizeof(expect), "%s: more than 256 lookups", s_at(text, "- {id: l0,"));
    cr_assert_str_eq(got, expect);
}

Test(policy_outcome, statuses_parse_name_and_rank)
{
    cr_assert_eq(acc_outcome_status_parse("received"), ACC_OUTCOME_RECEIVED);
    cr_assert_eq(acc_outcome_status_parse("accepted"), ACC_OUTCOME_ACCEPTED);
    cr_assert_eq(acc_outcome_status_parse("declined"), ACC_OUTCOME_DECLINED);
    cr_assert_eq(acc_outcome_status_parse("closed"), ACC_OUTCOME_CLOSED);
    cr_assert_eq(acc_outcome_status_parse("Closed"), 0);
    cr_assert_eq(acc_outcome_status_parse(""), 0);
    cr_assert_eq(acc_outcome_status_parse(NULL), 0);
    cr_assert_str_eq(acc_outcome_status_name(ACC_OUTCOME_RECEIVED), "received");
    cr_assert_str_eq(acc_outcome_status_name(ACC_OUTCOME_DECLINED), "declined");
    cr_assert_null(acc_outcome_status_name(0));
    cr_assert_null(acc_outcome_status_name(ACC_OUTCOME_RECEIVED | ACC_OUTCOME_CLOSED));
    cr_assert_null(acc_outcome_status_name(1U << 4));
    cr_assert_eq(acc_outcome_status_rank(0), 0);
    cr_assert_eq(acc_outcome_status_rank(ACC_OUTCOME_RECEIVED), 1);
    cr_assert_eq(acc_outcome_status_rank(ACC_OUTCOME_ACCEPTED), 2);
    cr_assert_eq(acc_outcome_status_rank(ACC_OUTCOME_DECLINED), 2);
    cr_assert_eq(acc_outcome_status_rank(ACC_OUTCOME_CLOSED), 3);
    cr_assert_eq(acc_outcome_status_rank(ACC_OUTCOME_RECEIVED | ACC_OUTCOME_ACCEPTED), 2);
    cr_assert_eq(acc_outcome_status_rank(1U << 4), 0);
}

/* ---- deciding outcomes ---- */

typedef struct {
    Accord__V1__Field fields[40];
    Accord__V1__Field *ptrs[40];
    size_t count;
} fields_t;

static void s_text(fields_t *f, const char *name, const char *value)
{
    Accord__V1__Field *x = &f->fields[f->count];
    accord__v1__field__init(x);
    x->name = acc_pb_str(name);
    x->value_case = ACCORD__V1__FIELD__VALUE_TEXT;
    x->text = acc_pb_str(value);
    f->ptrs[f->count++] = x;
}

static void s_integer(fields_t *f, const char *name, int64_t value)
{
    Accord__V1__Field *x = &f->fields[f->count];
    accord__v1__field__init(x);
    x->name = acc_pb_str(name);
    x->value_case = ACCORD__V1__FIELD__VALUE_INTEGER;
    x->integer = value;
    f->ptrs[f->count++] = x;
}

static Accord__V1__ErrorCode s_outcome(const acc_policy_t *p, const char *rules, const char *status,
                                       unsigned prev, const fields_t *f,
                                       acc_outcome_decision_t *out)
{
    /* rules: ids separated by spaces */
    static char copy[256];
    const char *ids[8];
    size_t n = 0;
    snprintf(copy, sizeof(copy), "%s", rules);
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok != NULL && n < 8;
         tok = strtok_r(NULL, " ", &save)) {
        ids[n++] = tok;
    }
    acc_policy_decide_outcome(p, ids, n, status, prev, f != NULL ? f->ptrs : NULL,
                              f != NULL ? f->count : 0, out);
    return out->code;
}

Test(policy_outcome, an_allowed_outcome_is_ok_with_its_status_and_to_sender)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_outcome_decision_t d;
    fields_t f = { .count = 0 };
    s_text(&f, "decision_date", "2026-11-21");
    s_text(&f, "reason", "early-help");
    cr_assert_eq(s_outcome(p, "hv-to-cc", "received", 0, &f, &d), ACCORD__V1__ERROR_CODE__OK, "%s",
                 d.reason);
    cr_assert_eq(d.status, ACC_OUTCOME_RECEIVED);
    cr_assert(d.to_sender);
    cr_assert_str_eq(d.reason, "");

    cr_assert_eq(s_outcome(p, "hv-type-to-cc", "received", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__OK);
    cr_assert(!d.to_sender);
    /* a status may skip ahead: closed straight after nothing, or after declined */
    cr_assert_eq(s_outcome(p, "hv-to-cc", "closed", 0, NULL, &d), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(d.status, ACC_OUTCOME_CLOSED);
    cr_assert_eq(s_outcome(p, "hv-to-cc", "closed", ACC_OUTCOME_DECLINED, NULL, &d),
                 ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(s_outcome(p, "hv-to-cc", "accepted", ACC_OUTCOME_RECEIVED, NULL, &d),
                 ACCORD__V1__ERROR_CODE__OK);
    acc_policy_destroy(&p);
}

Test(policy_outcome, statuses_not_allowed_or_unknown_are_refused)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_outcome_decision_t d;
    cr_assert_eq(s_outcome(p, "hv-type-to-cc", "accepted", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_str_eq(d.reason, "status \"accepted\" is not one the share's rules take");
    cr_assert_eq(d.status, 0);
    cr_assert_eq(s_outcome(p, "hv-to-cc", "opened", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_str_eq(d.reason, "unknown status \"opened\" (received, accepted, declined, closed)");
    cr_assert_eq(s_outcome(p, "hv-to-cc", "", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    acc_policy_destroy(&p);
}

Test(policy_outcome, a_share_whose_rules_take_no_outcomes_is_refused)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_outcome_decision_t d;
    cr_assert_eq(s_outcome(p, "hv-to-eh", "received", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_str_eq(d.reason, "rule \"hv-to-eh\" takes no outcomes");
    /* ids no longer in the agreement are skipped */
    cr_assert_eq(s_outcome(p, "gone-rule", "received", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_str_eq(d.reason, "rule \"gone-rule\" takes no outcomes");
    cr_assert_eq(s_outcome(p, "hv-to-eh gone-rule", "received", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_str_eq(d.reason, "rules \"hv-to-eh\" and 1 more take no outcomes");
    cr_assert_eq(s_outcome(p, "", "received", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_eq(s_outcome(p, "gone-rule hv-to-cc", "received", 0, NULL, &d),
                 ACCORD__V1__ERROR_CODE__OK, "%s", d.reason);
    acc_policy_destroy(&p);
}

Test(policy_outcome, a_status_moves_forward_only)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_outcome_decision_t d;
    cr_assert_eq(s_outcome(p, "hv-to-cc", "accepted", ACC_OUTCOME_ACCEPTED, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER);
    cr_assert_str_eq(d.reason, "already accepted; a status moves forward only");
    cr_assert_eq(s_outcome(p, "hv-to-cc", "declined", ACC_OUTCOME_ACCEPTED, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER);
    cr_assert_eq(s_outcome(p, "hv-to-cc", "received", ACC_OUTCOME_CLOSED, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER);
    cr_assert_str_eq(d.reason, "already closed; a status moves forward only");
    cr_assert_eq(s_outcome(p, "hv-to-cc", "received", ACC_OUTCOME_RECEIVED, NULL, &d),
                 ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER);
    acc_policy_destroy(&p);
}

Test(policy_outcome, each_field_fault_is_invalid_field_naming_the_field)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_outcome_decision_t d;
    static const struct {
        const char *rules;
        const char *name;
        const char *text; /* NULL: an integer */
        const char *reason;
    } cases[] = {
        { "hv-to-cc", "shoe_size", "4",
          "field \"shoe_size\": not a field of this share's outcomes" },
        { "hv-to-cc", "note", "x", "field \"note\": not a field of this share's outcomes" },
        { "hv-to-cc", "decision_date", NULL,
          "field \"decision_date\": expected a date (YYYY-MM-DD)" },
        { "hv-to-cc", "decision_date", "tomorrow", "field \"decision_date\": expected a date" },
        { "hv-to-cc", "reason", "groups", "field \"reason\": not one of the allowed values" },
        { "hv-type-to-cc", "note", "far more than ten bytes", "field \"note\": text is too long" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fields_t f = { .count = 0 };
        if (cases[i].text != NULL) {
            s_text(&f, cases[i].name, cases[i].text);
        } else {
            s_integer(&f, cases[i].name, 20261121);
        }
        cr_assert_eq(s_outcome(p, cases[i].rules, "received", 0, &f, &d),
                     ACCORD__V1__ERROR_CODE__INVALID_FIELD, "case %zu: %s", i, d.reason);
        cr_assert(strncmp(d.reason, cases[i].reason, strlen(cases[i].reason)) == 0, "case %zu: %s",
                  i, d.reason);
        cr_assert_eq(d.status, 0);
        cr_assert(!d.to_sender);
    }
    fields_t twice = { .count = 0 };
    s_text(&twice, "decision_date", "2026-11-21");
    s_text(&twice, "decision_date", "2026-11-22");
    cr_assert_eq(s_outcome(p, "hv-to-cc", "received", 0, &twice, &d),
                 ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(d.reason, "field \"decision_date\": given twice");
    fields_t many = { .count = 0 };
    for (size_t i = 0; i < 33; i++) {
        s_text(&many, "decision_date", "2026-11-21");
    }
    cr_assert_eq(s_outcome(p, "hv-to-cc", "received", 0, &many, &d),
                 ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(d.reason, "an outcome carries at most 32 fields, not 33");
    acc_policy_destroy(&p);
}

Test(policy_outcome, a_share_under_two_rules_takes_the_union_of_their_outcomes)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_outcome_decision_t d;
    /* reason is enum(no-further-action,early-help) in one rule, enum(groups) in the other:
     * a value that suits either is accepted */
    const char *values[] = { "groups", "early-help" };
    for (size_t i = 0; i < 2; i++) {
        fields_t f = { .count = 0 };
        s_text(&f, "reason", values[i]);
        s_text(&f, "note", "short");
        cr_assert_eq(s_outcome(p, "hv-type-to-cc hv-to-cc", "accepted", 0, &f, &d),
                     ACCORD__V1__ERROR_CODE__OK, "%s: %s", values[i], d.reason);
        cr_assert(d.to_sender, "one of the rules sends outcomes back");
        cr_assert_eq(d.status, ACC_OUTCOME_ACCEPTED);
    }
    fields_t f = { .count = 0 };
    s_text(&f, "reason", "assessment");
    cr_assert_eq(s_outcome(p, "hv-type-to-cc hv-to-cc", "received", 0, &f, &d),
                 ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_str_eq(d.reason, "field \"reason\": not one of the allowed values");
    acc_policy_destroy(&p);
}

/* ---- deciding lookups ---- */

Test(policy_outcome, a_lookup_is_decided_by_agency_purpose_and_day)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, s_lookups));
    acc_lookup_decision_t d;
    acc_policy_decide_lookup(p, s_agency(p, "eh"), "Early help triage", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__OK, "%s", d.reason);
    cr_assert_eq(d.lookup, 0);
    cr_assert_str_eq(d.reason, "");
    /* both of eh's lookups list "Other": the first in the file wins */
    acc_policy_decide_lookup(p, s_agency(p, "eh"), "Other", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(d.lookup, 0);
    acc_policy_decide_lookup(p, s_agency(p, "cc"), "Other", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(d.lookup, 1);

    acc_policy_decide_lookup(p, s_agency(p, "cc"), "Early help triage", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__PURPOSE_NOT_PERMITTED);
    cr_assert_str_eq(d.reason, "no lookup made by cc lists the purpose \"Early help triage\"");
    acc_policy_decide_lookup(p, s_agency(p, "eh"), "other", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__PURPOSE_NOT_PERMITTED, "purposes match exactly");

    acc_policy_decide_lookup(p, s_agency(p, "hv"), "Other", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__NOT_PERMITTED);
    cr_assert_str_eq(d.reason, "no lookup in the agreement is made by hv");

    acc_policy_decide_lookup(p, s_agency(p, "eh"), "Other", "2029-04-01", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE);
    cr_assert_str_eq(d.reason, "the agreement is in force from 2026-04-01 to 2029-03-31");
    acc_policy_decide_lookup(p, s_agency(p, "hv"), "Other", "2026-03-31", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE, "checked first");
    acc_policy_destroy(&p);
}

Test(policy_outcome, no_lookups_means_no_agency_may_look_up)
{
    acc_policy_t *p = s_load(s_agreement(s_rules, ""));
    acc_lookup_decision_t d;
    acc_policy_decide_lookup(p, s_agency(p, "eh"), "Other", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__NOT_PERMITTED);
    acc_policy_decide_lookup(p, 99, "Other", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__NOT_PERMITTED);
    acc_policy_destroy(&p);
}

Test(policy_outcome, the_example_agreement_has_the_mash_referral_and_its_lookup)
{
    acc_policy_t *p = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    cr_assert_eq(acc_policy_load(&p, ACCORD_SOURCE_DIR "/deploy/examples/best-start-agreement.yaml",
                                 &diag, &err),
                 ACC_OK, "%s", err.msg);
    acc_diag_clear(&diag);
    size_t r = s_rule(p, "ed-attendance-to-mash");
    unsigned statuses = 0;
    bool to_sender = false;
    cr_assert(acc_policy_rule_outcomes(p, r, &statuses, &to_sender));
    cr_assert_eq(statuses, ACC_OUTCOME_RECEIVED | ACC_OUTCOME_ACCEPTED | ACC_OUTCOME_DECLINED |
                               ACC_OUTCOME_CLOSED);
    cr_assert(to_sender);
    cr_assert_eq(acc_policy_rule_outcome_field_count(p, r), 3);
    cr_assert_str_eq(acc_policy_rule_outcome_field_name(p, r, 1), "next_step");
    cr_assert_str_eq(acc_policy_rule_outcome_field_spec(p, r, 1), "text(500)");
    cr_assert_eq(acc_policy_lookup_count(p), 1);
    cr_assert_str_eq(acc_policy_lookup_id(p, 0), "mash-involvement");
    cr_assert_str_eq(acc_policy_lookup_window(p, 0), "24 months");
    cr_assert(acc_policy_lookup_notifies(p, 0));
    acc_lookup_decision_t d;
    acc_policy_decide_lookup(p, s_agency(p, "rmbc-childrens-social-care"),
                             "MASH triage of a safeguarding referral", "2026-11-20", &d);
    cr_assert_eq(d.code, ACCORD__V1__ERROR_CODE__OK, "%s", d.reason);
    acc_policy_destroy(&p);
}
