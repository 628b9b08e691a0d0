/* nhs.c - NHS number normalisation and modulus-11 check */
#include "accord/nhs.h"

#include <stddef.h>

/* Copies digits, allowing single spaces or hyphens only between the 3-3-4 groups. */
static acc_rc_t s_normalise(char out[ACC_NHS_DIGITS + 1], const char *text, acc_err_t *err)
{
    size_t n = 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p >= '0' && *p <= '9') {
            if (n == ACC_NHS_DIGITS) {
                return acc_err_set(err, ACC_ERR_INVALID, "NHS number has more than 10 digits");
            }
            out[n++] = *p;
            continue;
        }
        bool separator = (*p == ' ' || *p == '-') && (n == 3 || n == 6) && p[1] >= '0' &&
                         p[1] <= '9' && p != text && p[-1] >= '0' && p[-1] <= '9';
        if (!separator) {
            return acc_err_set(err, ACC_ERR_INVALID,
                               "NHS number contains a character that is not a digit");
        }
    }
    if (n != ACC_NHS_DIGITS) {
        return acc_err_set(err, ACC_ERR_INVALID, "NHS number must have 10 digits (found %zu)", n);
    }
    out[n] = '\0';
    return ACC_OK;
}

acc_rc_t acc_nhs_check(char out[ACC_NHS_DIGITS + 1], const char *text, acc_err_t *err)
{
    char digits[ACC_NHS_DIGITS + 1] = { 0 };
    acc_rc_t rc = s_normalise(digits, text, err);
    if (rc != ACC_OK) {
        return rc;
    }
    int sum = 0;
    for (int i = 0; i < 9; i++) {
        sum += (digits[i] - '0') * (10 - i);
    }
    int check = 11 - sum % 11;
    if (check == 11) {
        check = 0;
    }
    if (check == 10) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "NHS number is not valid (its check digit would be 10)");
    }
    if (check != digits[9] - '0') {
        return acc_err_set(err, ACC_ERR_INVALID, "NHS number check digit does not match");
    }
    for (size_t i = 0; i <= ACC_NHS_DIGITS; i++) {
        out[i] = digits[i];
    }
    return ACC_OK;
}

bool acc_nhs_is_valid(const char *text)
{
    char out[ACC_NHS_DIGITS + 1];
    return acc_nhs_check(out, text, NULL) == ACC_OK;
}
