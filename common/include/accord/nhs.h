/* nhs.h - NHS number normalisation and modulus-11 check */
#ifndef ACCORD_NHS_H
#define ACCORD_NHS_H

#include <stdbool.h>

#include "accord/rc.h"

#define ACC_NHS_DIGITS 10

/* Normalises an NHS number written with optional spaces or hyphens in the
 * usual 3-3-4 groups ("943 476 5919") into ten digits in out (11 bytes with the
 * terminator) and checks its modulus-11 check digit. On failure err says why
 * without echoing the number. */
ACC_NODISCARD acc_rc_t acc_nhs_check(char out[ACC_NHS_DIGITS + 1], const char *text,
                                     acc_err_t *err);

/* True when text is a valid NHS number. */
bool acc_nhs_is_valid(const char *text);

#endif
