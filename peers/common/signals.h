// SIGINT/SIGTERM handling for the peer executables: block both signals in
// every thread, then collect them synchronously with sigwait().
#pragma once

namespace osh::peers {

/// BlockTerminationSignals() - blocks SIGINT and SIGTERM in the calling
/// thread; threads created afterwards (including gRPC's) inherit the mask.
/// Call first thing in main(). Thread: main, before any other thread exists.
void BlockTerminationSignals();

/// WaitForTerminationSignal() - blocks until SIGINT or SIGTERM arrives.
/// Return: the signal number. Thread: the thread that called
/// BlockTerminationSignals() (usually main).
int WaitForTerminationSignal();

/// WaitForTerminationOrReload() - like WaitForTerminationSignal(), but also
/// returns on SIGHUP (blocked by BlockTerminationSignals() too).
int WaitForTerminationOrReload();

}  // namespace osh::peers
