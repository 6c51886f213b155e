#include "peers/common/signals.h"

#include <pthread.h>
#include <signal.h>

namespace osh::peers {
namespace {

sigset_t TerminationSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

sigset_t BlockedSet() {
  sigset_t set = TerminationSet();
  sigaddset(&set, SIGHUP);  // the gateway's reload; blocked everywhere, waited for explicitly
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = BlockedSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  const sigset_t set = TerminationSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

int WaitForTerminationOrReload() {
  sigset_t set = BlockedSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

}  // namespace osh::peers
