// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The daemon loop: a thin owner of the engine (core/engine). It reads what is readable
// (signals, rtnetlink, tc notifications, punted first packets, conntrack, the NAT
// timer), hands it to the engine as typed events, lets the engine flush when it is due,
// and logs what each pass did.

#include <chrono>
#include <string>

namespace dpo::agent {

// Runs until SIGTERM/SIGINT (exit 0, rules left in place for a hitless restart).
struct Options {
    // rtnetlink receive buffer: what a burst of route changes may queue before the
    // kernel drops events (then the daemon resyncs from a full dump).
    int netlink_rcvbuf = 32 * 1024 * 1024;
    // A full dump of the devices, compared with what the daemon believes installed, about
    // this often (+-20 %); 0: only at start, after overruns, on reload and on request.
    std::chrono::seconds audit_interval{600};
    // The control socket dpoffloadctl talks to (control_server.hpp); empty: none.
    std::string control_socket = "/run/dpoffload/control.sock";
    // Where the NAT chunk-event record is kept (chunk_record_file.hpp); empty: none.
    std::string state_dir = "/var/lib/dpoffload";
    std::string version;
    // Prometheus metrics at http://ADDRESS:PORT/metrics ("127.0.0.1:9641", "[::1]:9641");
    // empty: off.
    std::string metrics;
};

int run(const std::string& config_file, const Options& options = {});
// Removes every rule of ours from the mapping's devices and exits.
int flush(const std::string& config_file);

}  // namespace dpo::agent
