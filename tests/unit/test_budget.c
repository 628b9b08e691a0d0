/* test_budget.c - so many a second, a second's worth at once */
#include <criterion/criterion.h>

#include "budget.h"

static int s_taken(budget_t *b, int64_t per_second, int64_t now_ms, int tries)
{
    int taken = 0;
    for (int i = 0; i < tries; i++) {
        taken += budget_take(b, per_second, now_ms) ? 1 : 0;
    }
    return taken;
}

Test(budget, a_second_s_worth_at_once_then_the_rate)
{
    budget_t b = { 0 };
    cr_assert_eq(s_taken(&b, 10, 5000, 50), 10, "full at the first use");
    cr_assert_not(budget_take(&b, 10, 5000));
    cr_assert_not(budget_take(&b, 10, 5099), "a tenth of a second is not yet one more");
    cr_assert(budget_take(&b, 10, 5100));
    cr_assert_not(budget_take(&b, 10, 5100));
    cr_assert_eq(s_taken(&b, 10, 5600, 50), 5, "half a second: five");
}

Test(budget, never_holds_more_than_a_second_s_worth)
{
    budget_t b = { 0 };
    cr_assert_eq(s_taken(&b, 3, 0, 3), 3);
    cr_assert_eq(s_taken(&b, 3, 3600000, 100), 3, "an hour idle is still one second's worth");
}

Test(budget, a_clock_that_goes_back_gains_nothing)
{
    budget_t b = { 0 };
    cr_assert_eq(s_taken(&b, 2, 10000, 5), 2);
    cr_assert_eq(s_taken(&b, 2, 9000, 5), 0);
    cr_assert_eq(s_taken(&b, 2, 9500, 5), 1, "counted again from where it went back to");
}

Test(budget, a_fraction_of_a_token_carries_over)
{
    budget_t b = { 0 };
    cr_assert_eq(s_taken(&b, 4, 0, 4), 4);
    /* 4 a second is one every 250 ms: 100 + 100 + 50 ms make one */
    cr_assert_not(budget_take(&b, 4, 100));
    cr_assert_not(budget_take(&b, 4, 200));
    cr_assert(budget_take(&b, 4, 250));
}
