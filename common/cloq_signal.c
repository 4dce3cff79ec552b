/* cloq_signal: see cloq_signal.h. */
#include "cloq_signal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t pending;

static void on_signal(int sig) {
  pending = sig;
  /* the next one of this kind ends the process the default way */
  signal(sig, SIG_DFL);
}

void cloq_signal_install(void) {
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
  char p[32], sig[8] = "kill";
  long long want_n;
  int want_rank;
  if (sscanf(v, "%31[a-z]:%lld:%d:%7[a-z]", p, &want_n, &want_rank, sig) < 3) return;
  if (strcmp(p, point) == 0 && want_n == n && (want_rank == rank || want_rank == -1))
    raise(strcmp(sig, "term") == 0 ? SIGTERM : SIGKILL);
}
