// The sizeguard subcommands. Each add_* registers one subcommand; its callback stores
// the process exit code in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace sizeguard {

void add_serve_command(CLI::App& app, int& exit_code);      // serve_command.cpp
void add_review_command(CLI::App& app, int& exit_code);     // review_command.cpp
void add_policy_command(CLI::App& app, int& exit_code);     // policy_command.cpp
void add_recommender_commands(CLI::App& app, int& exit_code);  // train, recommend, evaluate
void add_report_command(CLI::App& app, int& exit_code);     // report_command.cpp
void add_scan_command(CLI::App& app, int& exit_code);       // scan_command.cpp

}  // namespace sizeguard
