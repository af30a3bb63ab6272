// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The NAT stage at run time: the punt port (first packets), the conntrack watcher
// (connections per chunk), a one-second timer (idle chunks), around the pure
// nat::NatManager. It says when the rules must change; the daemon reconciles, then
// hands back the first packets that waited for their subscriber's rule.

#include <ctime>
#include <memory>
#include <vector>

#include "core/mapping.hpp"
#include "core/nat/nat_manager.hpp"
#include "kernel/conntrack_watcher.hpp"
#include "kernel/punt_port.hpp"

namespace dpo::agent {

class NatRuntime {
public:
    static Result<std::unique_ptr<NatRuntime>> open(const Mapping& m);
    ~NatRuntime();

    int punt_fd() const { return punt_->fd(); }
    int conntrack_fd() const { return conntrack_->fd(); }
    int timer_fd() const { return timer_; }

    // Each returns whether the rules must change.
    bool on_punt();
    bool on_conntrack();
    bool on_timer();
    // After the rules changed: the waiting first packets go back into the uplink.
    void reinject_waiting();

    nat::NatState state() const { return manager_.state(punt_->punt_ifindex(), punt_->punt_dev()); }
    std::string punt_dev() const { return punt_->punt_dev(); }
    const Nat& config() const { return config_; }

private:
    NatRuntime(const Nat& config, std::unique_ptr<kernel::PuntPort> punt,
               std::unique_ptr<kernel::ConntrackWatcher> conntrack, int timer);
    bool log_chunk_events();
    bool resync();

    Nat config_;
    nat::NatManager manager_;
    std::unique_ptr<kernel::PuntPort> punt_;
    std::unique_ptr<kernel::ConntrackWatcher> conntrack_;
    int timer_;
    std::vector<std::vector<std::uint8_t>> waiting_;  // first packets whose rule is on its way
};

}  // namespace dpo::agent
