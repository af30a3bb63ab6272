// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The daemon loop: kernel events and signals in, reconciled tc rules out.

#include <string>

namespace dpo::agent {

// Runs until SIGTERM/SIGINT (exit 0, rules left in place for a hitless restart).
int run(const std::string& config_file);
// Removes every rule of ours from the mapping's devices and exits.
int flush(const std::string& config_file);

}  // namespace dpo::agent
