// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The daemon loop: kernel events and signals in, reconciled tc rules out.

#include <string>

namespace dpo::agent {

// Runs until SIGTERM/SIGINT (exit 0, rules left in place for a hitless restart).
struct Options {
    // rtnetlink receive buffer: what a burst of route changes may queue before the
    // kernel drops events (then the daemon resyncs from a full dump).
    int netlink_rcvbuf = 32 * 1024 * 1024;
};

int run(const std::string& config_file, const Options& options = {});
// Removes every rule of ours from the mapping's devices and exits.
int flush(const std::string& config_file);

}  // namespace dpo::agent
