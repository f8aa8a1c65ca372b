#include "webhook/app/commands.h"

#include <iostream>

namespace sizeguard {

void add_recommender_commands(CLI::App& app, int& exit_code) {
  for (const char* name : {"train", "recommend", "evaluate"}) {
    auto* cmd = app.add_subcommand(name, "(not built yet)");
    cmd->callback([&exit_code, name] {
      std::cerr << "sizeguard " << name << ": not implemented yet\n";
      exit_code = 2;
    });
  }
}

}  // namespace sizeguard
