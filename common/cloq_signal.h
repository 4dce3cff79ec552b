/* cloq_signal: graceful stop on SIGTERM / SIGINT (Slurm preemption, scancel, Ctrl-C).
 *
 * The handler only records the signal; the long loops poll cloq_signal_pending() at safe points
 * (between samples of the stream, between modules and blocks of the initialization), stop there,
 * and leave the store's work folder resumable: complete blocks are files renamed into place, so
 * nothing else needs saving. A second signal of the same kind is not caught (default action).
 */
#ifndef CLOQ_SIGNAL_H
#define CLOQ_SIGNAL_H

/* Not collective. Installs the handlers (idempotent) and a watchdog thread that ends the process
 * CLOQ_STOP_GRACE seconds (default 25) after the first signal if the run has not stopped by
 * itself (a long LAPACK call cannot poll). */
void cloq_signal_install(void);
/* The signal number received so far, or 0. */
int cloq_signal_pending(void);

/* Fault injection for the resume tests (in the spirit of Lua's failnext allocator): when the
 * environment has CLOQ_DEBUG_KILL=POINT:N:RANK[:term|:termstall], the process of MPI rank RANK
 * (-1: every rank) kills itself with SIGKILL (as `kill -9` would), or sends itself SIGTERM (as
 * Slurm's preemption does; termstall then sleeps as a long LAPACK call would, to exercise the
 * watchdog), on reaching POINT with counter N. Points: "sample" (the stream
 * reached sample N on this rank), "write" (block N: first module written, file not committed),
 * "block" (block N committed). No effect without the variable. */
void cloq_debug_kill_point(const char *point, long long n, int rank);

#endif
