/* test_harden.c - a hardened process dumps no core */
#include <criterion/criterion.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "accord/harden.h"

Test(harden, turns_core_dumps_off_for_good)
{
    /* as an operator's shell might leave it: cores allowed */
    struct rlimit limit = { RLIM_INFINITY, RLIM_INFINITY };
    cr_assert_eq(setrlimit(RLIMIT_CORE, &limit), 0);
    cr_assert_eq(prctl(PR_SET_DUMPABLE, 1L, 0L, 0L, 0L), 0);
    acc_err_t err;
    cr_assert_eq(acc_process_harden(&err), ACC_OK, "%s", err.msg);
    cr_assert_eq(prctl(PR_GET_DUMPABLE, 0L, 0L, 0L, 0L), 0);
    cr_assert_eq(getrlimit(RLIMIT_CORE, &limit), 0);
    cr_assert_eq(limit.rlim_cur, 0);
    cr_assert_eq(limit.rlim_max, 0);
}

Test(harden, is_safe_to_apply_twice)
{
    acc_err_t err;
    cr_assert_eq(acc_process_harden(&err), ACC_OK, "%s", err.msg);
    cr_assert_eq(acc_process_harden(&err), ACC_OK, "%s", err.msg);
    cr_assert_eq(prctl(PR_GET_DUMPABLE, 0L, 0L, 0L, 0L), 0);
}
