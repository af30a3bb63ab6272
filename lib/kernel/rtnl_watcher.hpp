// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Follows links, addresses and neighbours with libnl-route-3's cache manager, and routes
// on the manager's socket with a store of its own (route_store.hpp: libnl's route cache
// is quadratic at 100k routes and wrong on IPv6 replace). Every group is subscribed to
// before its dump, so no change falls between the two. Each change comes out as one
// typed event for the model (model/kernel_model.hpp).
// A netlink overrun (ENOBUFS) loses events: the watcher then rebuilds its caches from a
// fresh dump and hands over the whole snapshot, which the model turns into changes.

#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include "core/model/kernel_model.hpp"
#include "core/model/kernel_state.hpp"
#include "core/result.hpp"
#include "kernel/route_store.hpp"

struct nl_cache_mngr;
struct nl_cache;
struct nl_object;

namespace dpo::kernel {

class RtnlWatcher {
public:
    // Large enough for a burst of route updates from a routing daemon's full table.
    static constexpr int kDefaultReceiveBuffer = 32 * 1024 * 1024;
    static Result<std::unique_ptr<RtnlWatcher>> open(int receive_buffer = kDefaultReceiveBuffer);
    ~RtnlWatcher();

    int fd() const;

    struct Progress {
        std::vector<model::Event> events;   // in the order they happened
        std::optional<KernelState> resync;  // an overrun: everything, dumped again
        bool more = false;                  // the budget ran out: more may be waiting
    };
    // Reads what is pending without blocking: at most about `budget` messages, and no
    // longer than about `time_budget`, so that a first packet waiting behind a burst of
    // route changes waits that long at most (parsing a message costs ~2 us on a server,
    // 50-100 us under emulation).
    static constexpr std::size_t kDefaultBudget = 2048;
    static constexpr std::chrono::microseconds kDefaultTimeBudget{5000};
    Result<Progress> process(std::size_t budget = kDefaultBudget,
                             std::chrono::microseconds time_budget = kDefaultTimeBudget);

    // The whole state the caches hold (at start).
    KernelState state() const;

private:
    explicit RtnlWatcher(int receive_buffer) : receive_buffer_(receive_buffer) {}
    Result<Done> start();
    void stop();

    nl_cache_mngr* mngr_ = nullptr;
    nl_cache* links_ = nullptr;
    nl_cache* addrs_ = nullptr;
    RouteStore routes_;  // not libnl's route cache: see route_store.hpp
    std::uint16_t flags_ = 0;  // of the message being parsed
    nl_cache* neigh_ = nullptr;
    static void include(nl_object* o, void* self);

    std::vector<model::Event> events_;  // filled by the caches' change callback
    std::vector<char> rx_ = std::vector<char>(64 * 1024);
    int receive_buffer_;
};

}  // namespace dpo::kernel
