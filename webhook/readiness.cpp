#include "webhook/readiness.h"

namespace sizeguard {

// ---------------------------------------------------------------------------------------
// Readiness.

void Readiness::set(const std::string& component, bool ready, std::string reason) {
  std::lock_guard lock(mutex_);
  components_[component] = State{ready, std::move(reason)};
}

Readiness::Report Readiness::report() const {
  std::lock_guard lock(mutex_);
  Report report;
  report.ready = !components_.empty();
  for (const auto& [name, state] : components_) {
    report.ready = report.ready && state.ready;
    // A ready component may still carry a reason: it is serving but degraded.
    if (state.ready) report.text += name + (state.reason.empty() ? ": ok" : ": ok (degraded: " + state.reason + ")");
    else report.text += name + ": not ready: " + (state.reason.empty() ? "starting" : state.reason);
    report.text += '\n';
  }
  if (components_.empty()) report.text = "not ready: nothing registered yet\n";
  return report;
}

}  // namespace sizeguard
