/* clock.h - the monotonic clock every timeout, interval and deadline is read on
 *
 * CLOCK_MONOTONIC: it never goes back when the wall clock is set, so a deadline
 * computed from it holds across an NTP step. Never for times written to the log
 * (those are wall-clock, from PostgreSQL or time()). */
#ifndef ACCORD_CLOCK_H
#define ACCORD_CLOCK_H

#include <stdint.h>

int64_t acc_now_ms(void);
int64_t acc_now_us(void);

/* Sleeps ms milliseconds (less if a signal arrives: callers check their stop
 * flag and the clock, never that the sleep was whole). */
void acc_sleep_ms(int64_t ms);

#endif
