/* budget.c - a rate with a burst (see budget.h) */
#include "budget.h"

#define TOKEN 1000 /* thousandths */

bool budget_take(budget_t *b, int64_t per_second, int64_t now_ms)
{
    int64_t full = per_second * TOKEN;
    if (!b->used) {
        b->tokens_ms = full;
    } else if (now_ms > b->at_ms) { /* a clock that went back gains nothing */
        /* per_second tokens a second is per_second thousandths a millisecond */
        int64_t gained = (now_ms - b->at_ms) * per_second;
        b->tokens_ms = gained >= full - b->tokens_ms ? full : b->tokens_ms + gained;
    }
    b->used = true;
    b->at_ms = now_ms;
    if (b->tokens_ms < TOKEN) {
        return false;
    }
    b->tokens_ms -= TOKEN;
    return true;
}
