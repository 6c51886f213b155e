// tun/ uses the project-wide owner of a file descriptor.
#pragma once

#include "common/scoped_fd.h"

namespace osh::tun {
using ScopedFd = osh::ScopedFd;
}  // namespace osh::tun
