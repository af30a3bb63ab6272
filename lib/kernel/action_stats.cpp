// SPDX-License-Identifier: GPL-2.0-or-later
#include "action_stats.hpp"

#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>
#include <unordered_map>

#include "core/malformed.hpp"

namespace dpo::kernel {

namespace {

// A dump the kernel stops answering is a broken kernel, not a slow one; a scrape waits
// for it at most this long.
constexpr int kAnswerTimeoutSeconds = 5;

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

Result<std::unique_ptr<ActionStatsReader>> ActionStatsReader::open() {
    mnl_socket* s = mnl_socket_open(NETLINK_ROUTE);
    if (!s) return fail("cannot open rtnetlink: " + errno_text(errno));
    if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
        const int e = errno;
        mnl_socket_close(s);
        return fail("cannot bind rtnetlink: " + errno_text(e));
    }
    int on = 1;
    mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &on, sizeof on);
    timeval timeout{kAnswerTimeoutSeconds, 0};
    setsockopt(mnl_socket_get_fd(s), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return std::unique_ptr<ActionStatsReader>(new ActionStatsReader(s));
}

ActionStatsReader::~ActionStatsReader() { mnl_socket_close(sock_); }

Result<std::vector<ActionStats>> ActionStatsReader::read(const std::string& kind) {
    std::vector<char> buf(kMessageRoom);
    nlmsghdr* req = put_dump_actions(buf.data(), kind);
    req->nlmsg_seq = ++seq_;
    if (mnl_socket_sendto(sock_, req, req->nlmsg_len) < 0) return fail(kind + " action dump: " + errno_text(errno));
    std::vector<ActionStats> out;
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE * 4);
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(sock_, rx.data(), rx.size());
        if (n < 0) return fail(kind + " action dump: " + errno_text(errno));
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx.data()); message_fits(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != req->nlmsg_seq) continue;  // a late answer of an earlier dump
            if (nlh->nlmsg_type == NLMSG_DONE) return out;
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                // The kind's module not loaded: no action of it exists.
                if (err->error == -ENOENT || err->error == -EINVAL) return out;
                return fail(kind + " action dump: " + errno_text(-err->error));
            }
            auto actions = parse_actions(nlh);
            if (!actions) {  // skipped: the others of the dump still count
                malformed(Malformed::TcAction, actions.error());
                continue;
            }
            for (auto& a : *actions) out.push_back(std::move(a));
        }
    }
}

Result<std::vector<Counter>> ActionStatsReader::counters(const std::vector<compile::CounterName>& names) {
    std::unordered_map<std::uint32_t, const compile::CounterName*> by_index;
    for (const auto& n : names) by_index.emplace(n.index, &n);
    std::vector<Counter> out;
    // Drops are gact, egress (and the punt path's redirects) mirred: an index of the
    // other kind is somebody else's action that happens to share the number.
    for (const auto* kind : {"gact", "mirred"}) {
        auto actions = read(kind);
        if (!actions) return fail(actions.error());
        const auto want = std::string(kind) == "gact" ? compile::CounterKind::Drop : compile::CounterKind::Egress;
        for (const auto& a : *actions) {
            const auto it = by_index.find(a.index);
            if (it == by_index.end() || it->second->kind != want) continue;
            const auto& n = *it->second;
            out.push_back(Counter{compile::to_string(n.kind), n.name, a.index, a.packets, a.bytes, a.hw_packets,
                                  a.hw_bytes, n.device, n.detail});
        }
    }
    std::sort(out.begin(), out.end(),
              [](const Counter& a, const Counter& b) { return std::tie(a.kind, a.index) < std::tie(b.kind, b.index); });
    return out;
}

Result<std::vector<Counter>> counters(const Mapping& m) {
    auto reader = ActionStatsReader::open();
    if (!reader) return fail(reader.error());
    return (*reader)->counters(compile::counter_names(m));
}

}  // namespace dpo::kernel
