#include <CLI/CLI.hpp>

#include "webhook/app/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"sizeguard: Kubernetes admission webhook for right-sizing and guardrails"};
  app.set_version_flag("--version", std::string("sizeguard ") + SIZEGUARD_VERSION);
  app.require_subcommand(1);
  int exit_code = 0;
  sizeguard::add_serve_command(app, exit_code);
  sizeguard::add_review_command(app, exit_code);
  sizeguard::add_policy_command(app, exit_code);
  sizeguard::add_recommender_commands(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
