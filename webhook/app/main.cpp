#include <CLI/CLI.hpp>

#include "webhook/app/commands.h"
#include <spdlog/spdlog.h>

#include "webhook/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"sizeguard: Kubernetes admission webhook for right-sizing and guardrails"};
  app.set_version_flag("--version", std::string("sizeguard ") + SIZEGUARD_VERSION);
  app.require_subcommand(1);
  // Subcommands other than serve keep stdout for their output: logs go to stderr, and
  // only warnings and errors.
  auto logger = sizeguard::make_logger("sizeguard", sizeguard::LogFormat::Text);
  logger->set_level(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  int exit_code = 0;
  sizeguard::add_serve_command(app, exit_code);
  sizeguard::add_review_command(app, exit_code);
  sizeguard::add_policy_command(app, exit_code);
  sizeguard::add_recommender_commands(app, exit_code);
  sizeguard::add_report_command(app, exit_code);
  sizeguard::add_scan_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors are bad input (exit 2); --help and --version exit 0.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return exit_code;
}
