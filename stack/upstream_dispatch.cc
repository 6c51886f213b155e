#include "stack/upstream_dispatch.h"

#include <future>
#include <memory>

namespace osh::stack {

void UpstreamDispatch::finish() {
  if (started_) {
    // Posted last, so it runs after every call queued before. If the loop
    // drops it instead (stopped already), the promise breaks: no hang.
    auto drained = std::make_shared<std::promise<void>>();
    std::future<void> done = drained->get_future();
    loop_.post([drained] { drained->set_value(); });
    drained.reset();
    done.wait();
  }
  loop_.stop();
}

}  // namespace osh::stack
