// Readiness (/readyz) as a set of named components that report themselves.
#pragma once

#include <map>
#include <mutex>
#include <string>

namespace sizeguard {

// Readiness as a set of named components (the webhook listener now; policies, model,
// recommendations later). Ready when at least one component is registered and all are
// ready; a component that is not ready carries the reason shown by /readyz.
class Readiness {
 public:
  void set(const std::string& component, bool ready, std::string reason = {});
  struct Report {
    bool ready = false;
    std::string text;  // one "component: ok" / "component: not ready: reason" line each
  };
  Report report() const;

 private:
  struct State {
    bool ready = false;
    std::string reason;
  };
  mutable std::mutex mutex_;
  std::map<std::string, State> components_;
};

}  // namespace sizeguard
