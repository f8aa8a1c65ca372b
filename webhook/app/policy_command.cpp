#include "webhook/app/commands.h"

#include <iostream>

namespace sizeguard {

void add_policy_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("policy", "(not built yet)");
  cmd->callback([&exit_code] {
    std::cerr << "sizeguard policy: not implemented yet\n";
    exit_code = 2;
  });
}

}  // namespace sizeguard
