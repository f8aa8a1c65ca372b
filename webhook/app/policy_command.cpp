// `sizeguard policy lint PATH...`: every error of every policy file, with positions.
#include <iostream>

#include "policies/loader.h"
#include "webhook/app/commands.h"
#include "webhook/logging.h"

namespace sizeguard {

void add_policy_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("policy", "Work with policy files");
  cmd->require_subcommand(1);
  auto paths = std::make_shared<std::vector<std::string>>();
  auto* lint = cmd->add_subcommand(
      "lint", "Check policy files or directories; print every error (file[document] field: problem); exit 0 if none, 1 otherwise");
  lint->add_option("paths", *paths, "policy files or directories")->required();
  lint->callback([paths, &exit_code] {
    size_t policies = 0, files = 0, errors = 0;
    for (const auto& path : *paths) {
      PolicyLoad load = load_policies(path);
      // Errors quote the files: no raw control characters reach the terminal.
      for (const auto& error : load.errors) std::cout << printable(error) << "\n";
      policies += load.policies.size();
      files += load.files.size();
      errors += load.errors.size();
    }
    if (errors == 0) {
      std::cout << "ok: " << policies << " policies in " << files << " files\n";
      exit_code = 0;
    } else {
      std::cout << errors << " error(s); " << policies << " valid policies in " << files << " files\n";
      exit_code = 1;
    }
  });
}

}  // namespace sizeguard
