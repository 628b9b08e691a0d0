/* budget.h - a rate with a burst: so many a second, a second's worth at once
 *
 * A token bucket that holds at most per_second tokens and gains per_second
 * of them a second. The broker keeps two per agency (broker_take): the lookups
 * it answers, and the other reads of the log the agency's messages cause.
 * Plain data: zero-initialised, a budget is full at its first use. */
#ifndef ACCORD_BROKER_BUDGET_H
#define ACCORD_BROKER_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t tokens_ms; /* tokens held, in thousandths (a token is 1000) */
    int64_t at_ms;     /* when tokens_ms was last brought up to date */
    bool used;         /* false: full at the first use */
} budget_t;

/* Takes one token at now_ms (a monotonic clock), per_second being the rate and
 * the burst; false when none is left. */
bool budget_take(budget_t *b, int64_t per_second, int64_t now_ms);

#endif
