// SPDX-License-Identifier: GPL-2.0-or-later
#include "rtnl_watcher.hpp"

#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <sys/socket.h>

#include <string>

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
    struct Want {
        const char* name;
        nl_cache** cache;
    } wants[] = {{"route/link", &links_}, {"route/addr", &addrs_}, {"route/route", &routes_}, {"route/neigh", &neigh_}};
    for (const auto& w : wants) {
        if (int err = nl_cache_mngr_add(mngr_, w.name, on_change, &events_, w.cache); err < 0) {
            stop();
            return fail(std::string("subscribe ") + w.name + ": " + nl_geterror(err));
        }
    }
    return Done{};
}

void RtnlWatcher::stop() {
    if (mngr_) nl_cache_mngr_free(mngr_);  // frees the caches it manages too
    mngr_ = nullptr;
    links_ = addrs_ = routes_ = neigh_ = nullptr;
}

int RtnlWatcher::fd() const { return nl_cache_mngr_get_fd(mngr_); }

Result<RtnlWatcher::Progress> RtnlWatcher::process() {
    Progress p;
    const int n = nl_cache_mngr_data_ready(mngr_);
    if (n == -NLE_NOMEM || n == -NLE_DUMP_INTR || n == -NLE_MSG_OVERFLOW) {
        // The kernel dropped events (libnl reports ENOBUFS as NLE_NOMEM): start over.
        stop();
        events_.clear();
        if (auto s = start(); !s) return fail("resync after overrun: " + s.error());
        p.resync = state();
        return p;
    }
    if (n < 0) return fail(std::string("rtnetlink events: ") + nl_geterror(n));
    p.events = std::move(events_);
    events_.clear();
    return p;
}

KernelState RtnlWatcher::state() const { return state_from_caches(links_, addrs_, routes_, neigh_); }

}  // namespace dpo::kernel
