// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Follows links, addresses, routes and neighbours with libnl-route-3's cache
// manager: it subscribes to the multicast groups before it dumps, so no change
// falls between the two. A netlink overrun (ENOBUFS) loses events: the watcher
// then rebuilds its caches from a fresh dump, a full resync, and says so.

#include <memory>

#include "core/model/kernel_state.hpp"
#include "core/result.hpp"

struct nl_cache_mngr;
struct nl_cache;

namespace dpo::kernel {

class RtnlWatcher {
public:
    // Large enough for a burst of route updates from a routing daemon's full table.
    static constexpr int kDefaultReceiveBuffer = 32 * 1024 * 1024;
    static Result<std::unique_ptr<RtnlWatcher>> open(int receive_buffer = kDefaultReceiveBuffer);
    ~RtnlWatcher();

    int fd() const;

    struct Progress {
        bool changed = false;
        bool resynced = false;  // an overrun forced a full resync
    };
    // Reads whatever is pending without blocking.
    Result<Progress> process();

    KernelState state() const;

private:
    explicit RtnlWatcher(int receive_buffer) : receive_buffer_(receive_buffer) {}
    Result<Done> start();
    void stop();

    nl_cache_mngr* mngr_ = nullptr;
    nl_cache* links_ = nullptr;
    nl_cache* addrs_ = nullptr;
    nl_cache* routes_ = nullptr;
    nl_cache* neigh_ = nullptr;
    bool changed_ = false;
    int receive_buffer_;
};

}  // namespace dpo::kernel
