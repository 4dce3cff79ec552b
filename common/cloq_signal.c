/* cloq_signal: see cloq_signal.h. */
#include "cloq_signal.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

static volatile sig_atomic_t pending;
static sem_t wake;
static int installed;

static void on_signal(int sig) {
  pending = sig;
  sem_post(&wake); /* async-signal-safe: starts the watchdog's grace period */
  /* the next one of this kind ends the process the default way */
  signal(sig, SIG_DFL);
}

/* The run polls for the signal between samples, modules and blocks, but one LAPACK call on a
 * large matrix can take minutes. Block files are renamed into place only when complete, so
 * ending the process is always safe for a resume: after the grace period (CLOQ_STOP_GRACE
 * seconds, default 25, within Slurm's usual 30 s), the watchdog exits the process itself. */
static void *watchdog(void *arg) {
  (void)arg;
  while (sem_wait(&wake) != 0) {
  }
  const char *g = getenv("CLOQ_STOP_GRACE");
  unsigned grace = g ? (unsigned)atoi(g) : 25u;
  sleep(grace);
  static const char msg[] = "cloq: stopped by signal after the grace period (inside a long "
                            "computation); the complete blocks are kept: re-run the same command "
                            "to resume\n";
  ssize_t n = write(2, msg, sizeof msg - 1);
  (void)n;
  _exit(128 + pending);
  return NULL;
}

void cloq_signal_install(void) {
  if (installed) return;
  installed = 1;
  pthread_t th;
  if (sem_init(&wake, 0, 0) == 0 && pthread_create(&th, NULL, watchdog, NULL) == 0)
    pthread_detach(th);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
}

int cloq_signal_pending(void) { return pending; }

void cloq_debug_kill_point(const char *point, long long n, int rank) {
  const char *v = getenv("CLOQ_DEBUG_KILL");
  if (!v) return;
  char p[32], sig[16] = "kill";
  long long want_n;
  int want_rank;
  if (sscanf(v, "%31[a-z]:%lld:%d:%15[a-z]", p, &want_n, &want_rank, sig) < 3) return;
  if (strcmp(p, point) == 0 && want_n == n && (want_rank == rank || want_rank == -1)) {
    raise(strcmp(sig, "kill") == 0 ? SIGKILL : SIGTERM);
    if (strcmp(sig, "termstall") == 0) sleep(600); /* a long computation that cannot poll */
  }
}
