// SPDX-License-Identifier: GPL-2.0-or-later
#include "tc_netlink.hpp"

#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "tc_codec.hpp"

namespace dpo::kernel {

namespace {

// Requests go out in batches of at most this many bytes (well under the socket's
// send buffer) and at most receive buffer / kAckRoom messages: every request gets an
// ack, and each ack holds a whole skb (~0.8 KiB, more with an extack) of the receive
// buffer until read. With the kernel's default buffer (208 KiB) a 64 KiB batch of
// ~230-byte requests overran it, and the acks lost with it left the sender waiting.
constexpr std::size_t kBatchBytes = 64 * 1024;
constexpr std::size_t kAckRoom = 2048;
// Room for the acks of many batches; SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN.
constexpr int kReceiveBuffer = 8 * 1024 * 1024;
// The kernel answers a batch while sendto() runs (rtnetlink is synchronous), so the
// acks are queued before the first read; this only bounds a wait that cannot end.
constexpr int kAckTimeoutSeconds = 30;

std::string errno_text(int e) { return std::strerror(e); }

int ifindex_of(const std::string& dev) { return static_cast<int>(if_nametoindex(dev.c_str())); }

// The extack message of an NLMSG_ERROR, if the kernel sent one.
std::string extack_of(const nlmsghdr* nlh) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    // With NETLINK_CAP_ACK the request comes back as its header only.
    std::size_t offset = sizeof(nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED) && err->error != 0) offset += err->msg.nlmsg_len - sizeof(nlmsghdr);
    std::string msg;
    mnl_attr_parse(
        nlh, static_cast<unsigned>(offset),
        [](const nlattr* a, void* data) {
            if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                *static_cast<std::string*>(data) = mnl_attr_get_str(a);
            return MNL_CB_OK;
        },
        &msg);
    return msg;
}

}  // namespace

Result<std::unique_ptr<TcNetlink>> TcNetlink::open() {
    mnl_socket* s = mnl_socket_open(NETLINK_ROUTE);
    if (!s) return fail("cannot open rtnetlink: " + errno_text(errno));
    if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
        const int e = errno;
        mnl_socket_close(s);
        return fail("cannot bind rtnetlink: " + errno_text(e));
    }
    int on = 1;
    // extack: the kernel says why it refused; cap_ack: acks carry no request copy.
    mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &on, sizeof on);
    mnl_socket_setsockopt(s, NETLINK_CAP_ACK, &on, sizeof on);
    const int fd = mnl_socket_get_fd(s);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kReceiveBuffer, sizeof kReceiveBuffer) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kReceiveBuffer, sizeof kReceiveBuffer);
    timeval timeout{kAckTimeoutSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    int rcvbuf = 0;
    socklen_t len = sizeof rcvbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len) != 0 || rcvbuf <= 0) rcvbuf = 212992;
    const std::size_t max_messages = std::max<std::size_t>(1, static_cast<std::size_t>(rcvbuf) / kAckRoom);
    return std::unique_ptr<TcNetlink>(new TcNetlink(s, max_messages));
}

TcNetlink::~TcNetlink() { mnl_socket_close(sock_); }

Result<std::vector<tc::Installed>> TcNetlink::dump(const std::string& dev) {
    const int ifindex = ifindex_of(dev);
    if (!ifindex) return fail("no device " + dev);
    std::vector<char> buf(kMessageRoom);
    nlmsghdr* req = put_dump_filters(buf.data(), ifindex);
    req->nlmsg_seq = next_seq();
    if (mnl_socket_sendto(sock_, req, req->nlmsg_len) < 0) return fail("filter dump: " + errno_text(errno));

    std::vector<tc::Installed> out;
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE * 4);
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(sock_, rx.data(), rx.size());
        if (n < 0) return fail("filter dump: " + errno_text(errno));
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx.data()); mnl_nlmsg_ok(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != req->nlmsg_seq) continue;  // a late ack of something else
            if (nlh->nlmsg_type == NLMSG_DONE) return out;
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                // No clsact qdisc yet: nothing installed.
                if (err->error == -EINVAL || err->error == -ENOENT) return out;
                return fail("filter dump: " + errno_text(-err->error));
            }
            auto f = parse_filter(nlh);
            if (!f || !f->handle) continue;  // chain/prio headers of the dump
            f->rule.dev = dev;
            for (auto& a : f->rule.actions)
                if (auto* r = std::get_if<tc::Redirect>(&a)) {
                    char name[IF_NAMESIZE] = {};
                    if (if_indextoname(static_cast<unsigned>(r->ifindex), name)) r->dev = name;
                }
            out.push_back(std::move(*f));
        }
    }
}

Result<Done> TcNetlink::ensure_clsact(const std::string& dev) {
    const int ifindex = ifindex_of(dev);
    if (!ifindex) return fail("no device " + dev);
    std::vector<char> buf(kMessageRoom);
    program::ApplyReport report;
    Pending pending;
    queue(pending, put_new_clsact(buf.data(), ifindex), "clsact " + dev, report);
    flush(pending, report);
    if (!report.refused.empty() && report.refused[0].error != EEXIST)
        return fail("clsact on " + dev + ": " + errno_text(report.refused[0].error) +
                    (report.refused[0].extack.empty() ? "" : " (" + report.refused[0].extack + ")"));
    return Done{};
}

void TcNetlink::queue(Pending& p, nlmsghdr* nlh, std::string what, program::ApplyReport& report) {
    nlh->nlmsg_seq = next_seq();
    if (p.bytes.size() + nlh->nlmsg_len > kBatchBytes || p.sent.size() >= max_batch_messages_) flush(p, report);
    const auto* bytes = reinterpret_cast<const char*>(nlh);
    p.bytes.insert(p.bytes.end(), bytes, bytes + nlh->nlmsg_len);
    p.sent.push_back({nlh->nlmsg_seq, std::move(what)});
}

void TcNetlink::flush(Pending& p, program::ApplyReport& report) {
    if (!p.bytes.empty()) send_batch(p.bytes, p.sent, report);
    p.bytes.clear();
    p.sent.clear();
}

program::ApplyReport TcNetlink::apply(const reconcile::Plan& plan) {
    program::ApplyReport report;
    Pending pending;
    std::vector<char> buf(kMessageRoom);
    std::map<std::string, int> ifindex;
    auto index_of = [&](const std::string& dev) {
        auto [it, fresh] = ifindex.emplace(dev, 0);
        if (fresh) it->second = ifindex_of(dev);
        return it->second;
    };
    auto missing_dev = [&](const tc::Rule& r) { report.refused.push_back({r.key(), ENODEV, "no device " + r.dev}); };

    // Deletes first: a stale rule must not shadow its replacement in between.
    for (const auto& d : plan.deletes) {
        const int ifi = index_of(d.rule.dev);
        if (!ifi) { missing_dev(d.rule); continue; }
        queue(pending, put_del_filter(buf.data(), {ifi, d.rule.chain, d.rule.prio, d.rule.protocol, d.handle}),
              d.rule.key(), report);
    }
    flush(pending, report);
    for (const auto& r : plan.replaces) {
        const int ifi = index_of(r.rule.dev);
        if (!ifi) { missing_dev(r.rule); continue; }
        queue(pending, put_new_filter(buf.data(), r.rule, ifi, r.handle), r.rule.key(), report);
    }
    for (const auto& r : plan.adds) {
        const int ifi = index_of(r.dev);
        if (!ifi) { missing_dev(r); continue; }
        queue(pending, put_new_filter(buf.data(), r, ifi, 0), r.key(), report);
    }
    flush(pending, report);
    return report;
}

program::ApplyReport TcNetlink::replace_actions(const std::vector<tc::Action>& actions) {
    program::ApplyReport report;
    Pending pending;
    std::vector<char> buf(kMessageRoom);
    for (const auto& a : actions)
        queue(pending, put_replace_action(buf.data(), a), "shared action " + tc::action_text(a), report);
    flush(pending, report);
    return report;
}

void TcNetlink::send_batch(const std::vector<char>& buf, const std::vector<Sent>& sent, program::ApplyReport& report) {
    report.sent += sent.size();
    if (mnl_socket_sendto(sock_, buf.data(), buf.size()) < 0) {
        const int e = errno;
        for (const auto& s : sent) report.refused.push_back({s.rule, e, "send failed"});
        return;
    }
    std::map<std::uint32_t, const Sent*> waiting;
    for (const auto& s : sent) waiting.emplace(s.seq, &s);
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE * 4);
    bool overrun = false;
    while (!waiting.empty()) {
        // After an overrun the acks that made it are all queued already: read them
        // without waiting, and stop at an empty queue instead of waiting for the lost.
        const ssize_t n = recv(mnl_socket_get_fd(sock_), rx.data(), rx.size(), overrun ? MSG_DONTWAIT : 0);
        if (n < 0 && errno == ENOBUFS && !overrun) {
            overrun = true;
            continue;
        }
        if (n < 0) {
            // Unknown outcome: the caller's dump after the batch says what is installed.
            report.lost += waiting.size();
            return;
        }
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx.data()); mnl_nlmsg_ok(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_type != NLMSG_ERROR) continue;
            const auto it = waiting.find(nlh->nlmsg_seq);
            if (it == waiting.end()) continue;
            const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            if (err->error == 0) ++report.done;
            else report.refused.push_back({it->second->rule, -err->error, extack_of(nlh)});
            waiting.erase(it);
        }
    }
}

}  // namespace dpo::kernel
