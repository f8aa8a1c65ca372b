#include "webhook/app/runtime.h"

namespace sizeguard {

void add_runtime_options(CLI::App&, RuntimeOptions&) {}

std::unique_ptr<Runtime> make_runtime(const RuntimeOptions&, Metrics&) {
  return std::make_unique<Runtime>();
}

}  // namespace sizeguard
