// SPDX-License-Identifier: GPL-2.0-or-later
#include "rtnl_watcher.hpp"

#include <linux/rtnetlink.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/object.h>
#include <netlink/socket.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "core/malformed.hpp"
#include "rtnl_snapshot.hpp"

namespace dpo::kernel {

namespace {
// NL_ACT_NEW and NL_ACT_CHANGE hand over the object as the cache now has it (merged);
// NL_ACT_DEL the object that went.
void on_change(nl_cache*, nl_object* o, int action, void* events) {
    if (auto e = event_of(o, action == NL_ACT_DEL)) static_cast<std::vector<model::Event>*>(events)->push_back(std::move(*e));
}
}  // namespace

Result<std::unique_ptr<RtnlWatcher>> RtnlWatcher::open(int receive_buffer) {
    std::unique_ptr<RtnlWatcher> w(new RtnlWatcher(receive_buffer));
    if (auto s = w->start(); !s) return fail(s.error());
    return w;
}

RtnlWatcher::~RtnlWatcher() { stop(); }

Result<Done> RtnlWatcher::start() {
    if (int err = nl_cache_mngr_alloc(nullptr, NETLINK_ROUTE, NL_AUTO_PROVIDE, &mngr_); err < 0)
        return fail(std::string("rtnetlink cache manager: ") + nl_geterror(err));
    const int fd = nl_cache_mngr_get_fd(mngr_);
    // SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN; SO_RCVBUF is the fallback.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &receive_buffer_, sizeof receive_buffer_) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_, sizeof receive_buffer_);
    // Routes: subscribed to before they are dumped, so that no change falls between.
    for (int group : {RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE}) {
        if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0) {
            stop();
            return fail(std::string("subscribe routes: ") + std::strerror(errno));
        }
    }
    struct Want {
        const char* name;
        nl_cache** cache;
    } wants[] = {{"route/link", &links_}, {"route/addr", &addrs_}, {"route/neigh", &neigh_}};
    for (const auto& w : wants) {
        if (int err = nl_cache_mngr_add(mngr_, w.name, on_change, &events_, w.cache); err < 0) {
            stop();
            return fail(std::string("subscribe ") + w.name + ": " + nl_geterror(err));
        }
    }
    std::unique_ptr<nl_sock, void (*)(nl_sock*)> sock(nl_socket_alloc(), nl_socket_free);
    if (!sock || nl_connect(sock.get(), NETLINK_ROUTE) < 0) {
        stop();
        return fail(std::string("route dump: cannot connect to rtnetlink"));
    }
    if (auto dumped = routes_.dump(sock.get()); !dumped) {
        stop();
        return fail(dumped.error());
    }
    return Done{};
}

void RtnlWatcher::stop() {
    if (mngr_) nl_cache_mngr_free(mngr_);  // frees the caches it manages too
    mngr_ = nullptr;
    links_ = addrs_ = neigh_ = nullptr;
    routes_.clear();
}

int RtnlWatcher::fd() const { return nl_cache_mngr_get_fd(mngr_); }

Result<RtnlWatcher::Progress> RtnlWatcher::process(std::size_t budget, std::chrono::microseconds time_budget) {
    // The cache manager's own reader (nl_cache_mngr_data_ready) reads until the socket
    // is empty: a burst of 10,000 route changes would hold the daemon for all of them
    // before a first packet is served. This reads at most `budget` messages, each parsed
    // and merged into its cache exactly as the manager does (nl_msg_parse, then
    // nl_cache_include with the same change callback); the rest waits for the next call.
    Progress p;
    const int fd = nl_cache_mngr_get_fd(mngr_);
    const auto deadline = std::chrono::steady_clock::now() + time_budget;
    std::size_t taken = 0;
    bool late = false;
    while (taken < budget && !late) {
        const ssize_t n = recv(fd, rx_.data(), rx_.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == ENOBUFS) {
                // The kernel dropped events: start over from a dump.
                stop();
                events_.clear();
                if (auto s = start(); !s) return fail("resync after overrun: " + s.error());
                p.resync = state();
                return p;
            }
            return fail(std::string("rtnetlink events: ") + std::strerror(errno));
        }
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<nlmsghdr*>(rx_.data()); NLMSG_OK(nlh, static_cast<unsigned>(len));
             nlh = NLMSG_NEXT(nlh, len)) {
            ++taken;
            if (nlh->nlmsg_type < RTM_BASE) continue;  // NLMSG_NOOP, _ERROR, _DONE, _OVERRUN
            nl_msg* msg = nlmsg_convert(nlh);
            if (!msg) continue;
            nlmsg_set_proto(msg, NETLINK_ROUTE);
            flags_ = nlh->nlmsg_flags;  // NLM_F_APPEND tells a route's second alias
            // libnl checks every attribute against its policy (type, length, a string's
            // NUL) before it makes an object; what it refuses is skipped and counted.
            if (const int err = nl_msg_parse(msg, &RtnlWatcher::include, this);
                err < 0 && err != -NLE_MSGTYPE_NOSUPPORT)  // a type no cache of ours reads
                malformed(Malformed::Rtnetlink, std::string("rtnetlink message type ") +
                                                    std::to_string(nlh->nlmsg_type) + ": " + nl_geterror(err));
            nlmsg_free(msg);
        }
        // A read takes one datagram: one notification (a part of a dump holds more).
        late = std::chrono::steady_clock::now() >= deadline;
    }
    p.more = taken >= budget || late;
    p.events = std::move(events_);
    events_.clear();
    return p;
}

void RtnlWatcher::include(nl_object* o, void* self) {
    auto* w = static_cast<RtnlWatcher*>(self);
    const std::string_view type = nl_object_get_type(o);
    if (type == "route/route") {
        w->routes_.include(o, w->flags_, &w->events_);
        return;
    }
    nl_cache* cache = type == "route/link"    ? w->links_
                      : type == "route/addr"  ? w->addrs_
                      : type == "route/neigh" ? w->neigh_
                                              : nullptr;
    if (cache) nl_cache_include(cache, o, on_change, &w->events_);
}

KernelState RtnlWatcher::state() const { return state_from_caches(links_, addrs_, routes_, neigh_); }

}  // namespace dpo::kernel
