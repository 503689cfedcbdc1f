/*
 * governor-sqlite-busy: how a Governor process waits for SQLite's write lock.
 *
 * On the embedded default (SQLite in WAL mode) the scheduler, django-q2's pusher and
 * monitor and every worker write to one file, and only one of them can write at a time.
 * Their transactions hold the lock for a fraction of a millisecond. SQLite's own busy
 * handler (what Python's `timeout` installs through sqlite3_busy_timeout) sleeps 1, 2, 5,
 * 10, 15, 20, 25 ... ms between attempts, so a waiter oversleeps a lock that was free again
 * after 0.2 ms, and every run pays for it several times (claim, record, acknowledge).
 *
 * This handler retries after 20 µs, 40 µs, 60 µs ... (capped at 5 ms) and gives up, like
 * SQLite's, once `timeout` milliseconds have passed since the first attempt: the statement
 * then fails with SQLITE_BUSY ("database is locked") as before.
 *
 * governance/sqlite.py installs it on each connection with sqlite3_busy_handler(db,
 * governor_sqlite_busy, (void *)timeout_ms). A connection is used by one thread at a time,
 * and a thread waits for one lock at a time, so the start of the wait is kept per thread.
 * A wait starts when SQLite counts 0 attempts, or when the last call is long past: SQLite
 * resets its count per statement, so a second wait within one statement (rare: a schema
 * reload, a backup step) would otherwise be timed from the first one's start.
 */
#include <errno.h>
#include <stdint.h>
#include <time.h>

#define FIRST_DELAY_US 20
#define MAX_DELAY_US 5000
/* Longer than any pause between two calls of one wait, however loaded the machine. */
#define NEW_WAIT_GAP_US 250000

static __thread struct timespec wait_started, last_call;

static int64_t microseconds_since(const struct timespec *start, const struct timespec *now)
{
    return (int64_t)(now->tv_sec - start->tv_sec) * 1000000 + (now->tv_nsec - start->tv_nsec) / 1000;
}

int governor_sqlite_busy(void *timeout_ms, int attempts)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (attempts == 0 || microseconds_since(&last_call, &now) > NEW_WAIT_GAP_US)
        wait_started = now;
    last_call = now;
    int64_t waited = microseconds_since(&wait_started, &now);
    int64_t limit = (int64_t)(intptr_t)timeout_ms * 1000;
    if (waited >= limit)
        return 0; /* SQLite returns SQLITE_BUSY to the statement */
    int64_t delay = (int64_t)FIRST_DELAY_US * ((int64_t)attempts + 1);
    if (delay > MAX_DELAY_US)
        delay = MAX_DELAY_US;
    if (delay > limit - waited)
        delay = limit - waited;
    struct timespec pause = {(time_t)(delay / 1000000), (long)(delay % 1000000) * 1000};
    while (nanosleep(&pause, &pause) == -1 && errno == EINTR) {
    }
    return 1; /* try again */
}
