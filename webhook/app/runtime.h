// Options shared by `serve` and `review` (where policies, recommendations and the model
// come from) and the runtime built from them: the AdmissionContext plus whatever keeps
// it fresh (hot reloaders). Later issues add fields.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "webhook/app/handlers.h"
#include "webhook/metrics.h"

namespace sizeguard {

struct RuntimeOptions {};

void add_runtime_options(CLI::App& command, RuntimeOptions& options);

struct Runtime {
  AdmissionContext context;
};

// Builds the runtime; throws std::runtime_error with a clear message on bad configuration.
std::unique_ptr<Runtime> make_runtime(const RuntimeOptions& options, Metrics& metrics);

}  // namespace sizeguard
