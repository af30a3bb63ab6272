// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon.hpp"

#include <net/if.h>

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <set>

#include "core/compile/compiler.hpp"
#include "core/compile/pipeline.hpp"
#include "core/log.hpp"
#include "core/mapping_loader.hpp"
#include "core/program/reconciler.hpp"
#include "kernel/punt_port.hpp"
#include "kernel/rtnl_watcher.hpp"
#include "kernel/tc_netlink.hpp"
#include "nat_runtime.hpp"

namespace dpo::agent {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;

void log_problems(const Problems& problems) {
    for (const auto& p : problems)
        log::error("config-problem", {{"file", p.file}, {"path", p.path}, {"reason", p.reason}});
}

using compile::rule_devices;

class Daemon {
public:
    Daemon(Mapping m, program::Backend& backend, kernel::RtnlWatcher& watcher)
        : mapping_(std::move(m)), reconciler_(backend), watcher_(watcher) {}

    // The NAT stage runs when the mapping has a `nat` section; without it, or while
    // it cannot start, inner -> outer IPv4 is left to the kernel.
    void start_nat() {
        nat_.reset();
        if (!mapping_.nat) return;
        auto rt = NatRuntime::open(mapping_);
        if (!rt) {
            log::error("nat-not-running", {{"reason", rt.error()}, {"effect", "inner -> outer IPv4 left to the kernel"}});
            return;
        }
        nat_ = std::move(*rt);
        log::notice("nat-running", {{"zone", std::to_string(mapping_.nat->zone)}});
    }
    NatRuntime* nat() { return nat_.get(); }

    // Compiles the current kernel state and sends the difference. `extra_devs`
    // are devices that held our rules before a reload and must be cleaned.
    void reconcile(const std::vector<std::string>& extra_devs = {}) {
        const auto t0 = std::chrono::steady_clock::now();
        const KernelState state = watcher_.state();
        // The punt pair can be deleted under a running NAT stage (by hand, by a
        // --flush): start the stage again, which re-creates it, rather than failing
        // every pass on a device that is gone.
        if (nat_ && if_nametoindex(nat_->punt_dev().c_str()) == 0) {
            log::warning("nat-punt-pair-gone", {{"dev", nat_->punt_dev()}, {"effect", "NAT stage restarted"}});
            nat_.reset();
            nat_tried_ifindex_ = 0;
        }
        // The uplink may appear after the daemon started (or be re-created): try
        // the NAT stage again once per uplink ifindex, not on every event.
        if (const Link* up = state.link_by_name(mapping_.uplink);
            mapping_.nat && !nat_ && up && up->ifindex != nat_tried_ifindex_) {
            nat_tried_ifindex_ = up->ifindex;
            start_nat();
        }
        const std::optional<compile::NatState> nat_state =
            nat_ ? std::optional<compile::NatState>(nat_->state()) : std::nullopt;
        // The first pass takes the next-hop ids of a previous run back from its chains,
        // so that a restart changes nothing.
        if (first_pass_) {
            if (auto installed = reconciler_.installed(rule_devices(mapping_))) {
                std::vector<tc::Rule> ours;
                for (const auto& i : *installed)
                    if (i.owned && i.decoded) ours.push_back(i.rule);
                compile::reserve_adjacencies(adjacencies_, ours);
            }
        }
        const auto program = compile::compile(mapping_, state, nat_state ? &*nat_state : nullptr, &adjacencies_);
        if (first_pass_) adjacencies_.drop_reservations();
        first_pass_ = false;
        std::set<std::string> devs;
        for (const auto& d : rule_devices(mapping_)) devs.insert(d);
        for (const auto& d : extra_devs) devs.insert(d);
        std::vector<std::string> present;
        // The punt pair's inject end holds the way back: it exists while the NAT
        // stage runs, even before the link event that tells the watcher so.
        if (nat_state) {
            present.push_back(nat_state->punt_dev);
            devs.erase(nat_state->punt_dev);
        }
        for (const auto& d : devs) {
            if (state.link_by_name(d)) present.push_back(d);
            else log::warning("device-missing", {{"dev", d}, {"effect", "no rules until it appears"}});
        }
        auto out = reconciler_.sync(program.rules, present);
        const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (!out) {
            log::error("reconcile-failed", {{"reason", out.error()}});
            return;
        }
        if (out->lost)
            log::warning("acks-lost", {{"messages", std::to_string(out->lost)},
                                       {"effect", "outcome read back from a dump and the difference sent again"}});
        for (const auto& r : out->refused)
            log::error("rule-refused", {{"rule", r.rule}, {"error", std::strerror(r.error)}, {"extack", r.extack}});
        log::info("reconciled", {{"rules", std::to_string(program.rules.size())},
                                 {"kept", std::to_string(out->kept)},
                                 {"added", std::to_string(out->added)},
                                 {"replaced", std::to_string(out->replaced)},
                                 {"deleted", std::to_string(out->deleted)},
                                 {"refused", std::to_string(out->refused.size())},
                                 {"messages", std::to_string(out->messages)},
                                 {"repointed", std::to_string(out->repointed)},
                                 {"in_hw", std::to_string(out->in_hw)},
                                 {"not_in_hw", std::to_string(out->not_in_hw)},
                                 {"routes", std::to_string(state.routes.size())},
                                 {"neighbours", std::to_string(state.neighbours.size())},
                                 {"ms", std::to_string(static_cast<long>(ms))}});
    }

    void reload(const std::string& file) {
        auto next = load_mapping(file);
        if (!next) {
            log_problems(next.error());
            log::error("reload-refused", {{"file", file}, {"kept", "running configuration"}});
            return;
        }
        const auto before = rule_devices(mapping_);
        const bool nat_changed = mapping_.nat != next->nat || mapping_.uplink != next->uplink;
        mapping_ = std::move(next).value();
        log::notice("reloaded", {{"file", file}, {"interfaces", std::to_string(mapping_.interfaces.size())}});
        if (nat_changed) {
            nat_.reset();
            nat_tried_ifindex_ = 0;  // the next reconcile starts it on the new terms
        }
        reconcile(before);
        if (nat_) nat_->reinject_waiting();
        // Without `nat` any more, nothing punts: the pair and its rules go too.
        if (nat_changed && !mapping_.nat) {
            if (auto removed = kernel::PuntPort::remove(); !removed)
                log::warning("nat-punt-pair-left", {{"reason", removed.error()}});
            else if (*removed)
                log::notice("nat-stopped", {{"punt_pair", "deleted"}});
        }
    }

private:
    Mapping mapping_;
    reconcile::Reconciler reconciler_;
    kernel::RtnlWatcher& watcher_;
    std::unique_ptr<NatRuntime> nat_;
    int nat_tried_ifindex_ = 0;
    compile::Adjacencies adjacencies_{compile::kMaxAdjacencies};
    bool first_pass_ = true;
};

}  // namespace

int run(const std::string& file, const Options& options) {
    auto loaded = load_mapping(file);
    if (!loaded) {
        log_problems(loaded.error());
        log::error("config-refused", {{"file", file}, {"problems", std::to_string(loaded.error().size())}});
        return kExitFailure;
    }

    // Signals arrive as readable events, so handling them is ordinary code.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) {
        log::error("startup-failed", {{"reason", std::string("sigprocmask: ") + std::strerror(errno)}});
        return kExitFailure;
    }
    const int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        log::error("startup-failed", {{"reason", std::string("signalfd: ") + std::strerror(errno)}});
        return kExitFailure;
    }
    auto watcher = kernel::RtnlWatcher::open(options.netlink_rcvbuf);
    if (!watcher) {
        log::error("startup-failed", {{"reason", watcher.error()}});
        return kExitFailure;
    }
    auto tc = kernel::TcNetlink::open();
    if (!tc) {
        log::error("startup-failed", {{"reason", tc.error()}});
        return kExitFailure;
    }
    Daemon daemon(std::move(loaded).value(), **tc, **watcher);
    log::notice("started", {{"file", file}});

    bool dirty = true;  // the initial dump
    for (;;) {
        if (dirty) {
            daemon.reconcile();
            // First packets go back only now that their subscriber's rule is in.
            if (daemon.nat()) daemon.nat()->reinject_waiting();
            dirty = false;
        }
        NatRuntime* nat = daemon.nat();
        pollfd fds[5] = {{sfd, POLLIN, 0},
                         {(*watcher)->fd(), POLLIN, 0},  // a resync opens a new socket: ask every time
                         {nat ? nat->punt_fd() : -1, POLLIN, 0},
                         {nat ? nat->conntrack_fd() : -1, POLLIN, 0},
                         {nat ? nat->timer_fd() : -1, POLLIN, 0}};
        if (poll(fds, 5, -1) < 0) {
            if (errno == EINTR) continue;
            log::error("poll-failed", {{"reason", std::strerror(errno)}});
            return kExitFailure;
        }
        if (fds[1].revents) {
            auto p = (*watcher)->process();
            if (!p) {
                log::error("events-failed", {{"reason", p.error()}});
                return kExitFailure;
            }
            if (p->resynced) log::warning("resync", {{"reason", "netlink overrun (ENOBUFS): events lost, state dumped again"}});
            dirty = dirty || p->changed || p->resynced;
        }
        if (nat && fds[2].revents) dirty = nat->on_punt() || dirty;
        if (nat && fds[3].revents) dirty = nat->on_conntrack() || dirty;
        if (nat && fds[4].revents) dirty = nat->on_timer() || dirty;
        if (fds[0].revents) {
            signalfd_siginfo si{};
            if (read(sfd, &si, sizeof si) != static_cast<ssize_t>(sizeof si)) continue;
            if (si.ssi_signo == SIGHUP) {
                daemon.reload(file);
                continue;
            }
            // SIGTERM/SIGINT: the rules stay, so a restart does not interrupt traffic.
            log::notice("stopping", {{"signal", strsignal(static_cast<int>(si.ssi_signo))}, {"rules", "left in place"}});
            close(sfd);
            return kExitOk;
        }
    }
}

int flush(const std::string& file) {
    auto m = load_mapping(file);
    if (!m) {
        log_problems(m.error());
        return kExitFailure;
    }
    auto tc = kernel::TcNetlink::open();
    if (!tc) {
        log::error("flush-failed", {{"reason", tc.error()}});
        return kExitFailure;
    }
    reconcile::Reconciler reconciler(**tc);
    // A device that does not exist holds no rules.
    std::vector<std::string> devs;
    for (const auto& d : rule_devices(*m))
        if (if_nametoindex(d.c_str()) != 0) devs.push_back(d);
    auto out = reconciler.flush(devs);
    if (!out) {
        log::error("flush-failed", {{"reason", out.error()}});
        return kExitFailure;
    }
    bool ok = out->refused.empty();
    std::string punt_pair = "none";
    if (auto removed = kernel::PuntPort::remove(); !removed) {
        log::error("flush-failed", {{"reason", removed.error()}});
        ok = false;
    } else if (*removed) {
        punt_pair = "deleted";
    }
    log::notice("flushed", {{"deleted", std::to_string(out->deleted)}, {"refused", std::to_string(out->refused.size())},
                            {"nat_punt_pair", punt_pair}});
    return ok ? kExitOk : kExitFailure;
}

}  // namespace dpo::agent
