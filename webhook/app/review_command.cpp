#include "webhook/app/commands.h"

#include <iostream>

namespace sizeguard {

void add_review_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("review", "(not built yet)");
  cmd->callback([&exit_code] {
    std::cerr << "sizeguard review: not implemented yet\n";
    exit_code = 2;
  });
}

}  // namespace sizeguard
