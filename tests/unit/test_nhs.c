/* test_nhs.c - NHS number normalisation and the modulus-11 check digit */
#include <criterion/criterion.h>
#include <string.h>

#include "accord/nhs.h"

typedef struct {
    const char *text;
    const char *normalised; /* NULL when invalid */
    const char *why;        /* part of the message when invalid */
} nhs_case_t;

static const nhs_case_t s_cases[] = {
    { "9434765919", "9434765919", NULL },
    { "943 476 5919", "9434765919", NULL },
    { "943-476-5919", "9434765919", NULL },
    { "4010232137", "4010232137", NULL },
    { "9997877896", "9997877896", NULL },
    { "9434765918", NULL, "check digit does not match" },
    { "943476591", NULL, "10 digits (found 9)" },
    { "94347659190", NULL, "more than 10 digits" },
    { "94347A5919", NULL, "not a digit" },
    { "9434 765919", NULL, "not a digit" },
    { " 9434765919", NULL, "not a digit" },
    { "943  476 5919", NULL, "not a digit" },
    { "", NULL, "10 digits (found 0)" },
    { "1000000010", NULL, "would be 10" },
};

Test(nhs, checks_a_table_of_valid_and_invalid_numbers)
{
    for (size_t i = 0; i < sizeof(s_cases) / sizeof(s_cases[0]); i++) {
        const nhs_case_t *c = &s_cases[i];
        char out[ACC_NHS_DIGITS + 1] = "";
        acc_err_t err;
        acc_err_clear(&err);
        acc_rc_t rc = acc_nhs_check(out, c->text, &err);
        if (c->normalised != NULL) {
            cr_assert_eq(rc, ACC_OK, "\"%s\" should be valid: %s", c->text, err.msg);
            cr_assert_str_eq(out, c->normalised);
            cr_assert(acc_nhs_is_valid(c->text));
        } else {
            cr_assert_eq(rc, ACC_ERR_INVALID, "\"%s\" should be invalid", c->text);
            cr_assert(strstr(err.msg, c->why) != NULL, "\"%s\": %s", c->text, err.msg);
            cr_assert(!acc_nhs_is_valid(c->text));
        }
    }
}

Test(nhs, error_messages_never_echo_the_number)
{
    char out[ACC_NHS_DIGITS + 1];
    acc_err_t err;
    cr_assert_eq(acc_nhs_check(out, "9434765918", &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, "943") == NULL, "%s", err.msg);
}
