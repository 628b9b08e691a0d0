/* test_explain.c - `accord agreement explain`: the outcomes a rule takes and the lookups
 * an agency may make, as printed from the example agreement */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/policy.h"
#include "explain.h" /* agents/explain.c is linked into this test (tests/CMakeLists.txt) */

static acc_policy_t *s_policy;

static void setup(void)
{
    acc_err_t err;
    cr_assert_eq(acc_policy_load(&s_policy,
                                 ACCORD_SOURCE_DIR "/deploy/examples/best-start-agreement.yaml",
                                 NULL, &err),
                 ACC_OK, "%s", err.msg);
}

static void teardown(void)
{
    acc_policy_destroy(&s_policy);
}

TestSuite(explain, .init = setup, .fini = teardown);

/* What explain_type prints for from and type (caller frees), and its status. */
static char *s_explain(const char *from, const char *type, int *status)
{
    size_t agency = 0;
    cr_assert(acc_policy_find_agency(s_policy, from, &agency), "no agency %s", from);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cr_assert_not_null(out);
    *status = explain_type(out, s_policy, agency, type);
    cr_assert_eq(fclose(out), 0);
    return text;
}

static void s_assert_lines(const char *text, const char *const *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char line[1024];
        snprintf(line, sizeof(line), "\n%s\n", lines[i]);
        cr_assert(strstr(text, line) != NULL, "missing line: %s\nin:\n%s", lines[i], text);
    }
}

Test(explain, a_rule_that_takes_outcomes_shows_statuses_fields_and_where_they_go)
{
    int status = -1;
    char *text = s_explain("rft-emergency-department", "ed-attendance", &status);
    cr_assert_eq(status, 0);
    const char *lines[] = {
        "      rule ed-attendance-to-mash: with consent given, or without it on a safeguarding "
        "justification",
        "        purpose: Safeguarding referral from the emergency department to the MASH",
        "        lawful basis: UK GDPR 6(1)(e), 9(2)(h); Children Act 1989 s47",
        "        outcomes: received, accepted, declined, closed; each goes back to "
        "rft-emergency-department",
        "        outcome fields: decision_date (date), next_step (text(500)), reason "
        "(enum(no-further-action, early-help-offered, social-work-assessment, "
        "strategy-discussion))",
        "lookups rft-emergency-department may make: none",
    };
    s_assert_lines(text, lines, sizeof(lines) / sizeof(lines[0]));
    /* a rule without outcomes prints none of it: exactly one outcomes line in all */
    const char *first = strstr(text, "        outcomes: ");
    cr_assert_not_null(first);
    cr_assert_null(strstr(first + 1, "        outcomes: "), "%s", text);
    free(text);
}

Test(explain, the_lookups_an_agency_may_make_are_listed_after_its_recipients)
{
    int status = -1;
    char *text = s_explain("rmbc-childrens-social-care", "cp-plan-status", &status);
    cr_assert_eq(status, 0);
    const char *lines[] = {
        "lookups rmbc-childrens-social-care may make: 1",
        "  lookup mash-involvement: asked by rmbc-childrens-social-care",
        "    purpose: MASH triage of a safeguarding referral",
        "    window: 24 months",
        "    notify: yes, each agency named in an answer is told",
    };
    s_assert_lines(text, lines, sizeof(lines) / sizeof(lines[0]));
    cr_assert(strstr(text, "recipient(s):") < strstr(text, "lookups "), "%s", text);
    free(text);
}

Test(explain, a_refused_type_still_lists_the_lookups)
{
    int status = -1;
    char *text = s_explain("rmbc-childrens-social-care", "ed-attendance", &status);
    cr_assert_eq(status, 1);
    cr_assert(strncmp(text, "refused NO_AGREEMENT: ", 22) == 0, "%s", text);
    s_assert_lines(text, (const char *const[]){ "lookups rmbc-childrens-social-care may make: 1" },
                   1);
    free(text);
}
