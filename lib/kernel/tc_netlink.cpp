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
#include <unordered_map>

#include "core/malformed.hpp"

namespace dpo::kernel {

namespace {

// Requests go out in batches of at most this many bytes (well under the socket's send
// buffer) and at most receive buffer / kAnswerRoom changes: observed, every change is
// answered by an echo (the filter as the kernel keeps it) and an ack, and each holds a whole skb of
// the receive buffer until read. With the kernel's default buffer (208 KiB) a 64 KiB
// batch of ~230-byte requests once overran it, and the answers lost with it left the
// sender waiting.
constexpr std::size_t kBatchBytes = 64 * 1024;
constexpr std::size_t kAnswerRoom = 4096;
// Room for the answers of many batches; SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN.
constexpr int kReceiveBuffer = 8 * 1024 * 1024;
// The kernel answers a batch while sendto() runs (rtnetlink is synchronous), so the
// answers are queued before the first read; this only bounds a wait that cannot end.
constexpr int kAnswerTimeoutSeconds = 30;

std::string errno_text(int e) { return std::strerror(e); }

int ifindex_of(const std::string& dev) { return static_cast<int>(if_nametoindex(dev.c_str())); }

Result<mnl_socket*> open_socket() {
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
    timeval timeout{kAnswerTimeoutSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return s;
}

}  // namespace

Result<std::unique_ptr<TcNetlink>> TcNetlink::open(bool listen) {
    auto s = open_socket();
    if (!s) return fail(s.error());
    const int fd = mnl_socket_get_fd(*s);
    if (listen) {
        int group = RTNLGRP_TC;
        if (mnl_socket_setsockopt(*s, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
            const int e = errno;
            mnl_socket_close(*s);
            return fail("cannot listen to tc notifications: " + errno_text(e));
        }
    }
    int rcvbuf = 0;
    socklen_t len = sizeof rcvbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len) != 0 || rcvbuf <= 0) rcvbuf = 212992;
    const std::size_t max_changes = std::max<std::size_t>(1, static_cast<std::size_t>(rcvbuf) / kAnswerRoom);
    std::unique_ptr<TcNetlink> t(new TcNetlink(*s, max_changes, listen));
    t->portid_ = mnl_socket_get_portid(*s);
    return t;
}

TcNetlink::~TcNetlink() {
    mnl_socket_close(sock_);
    if (dump_sock_) mnl_socket_close(dump_sock_);
}

void TcNetlink::set_observed(bool on) {
    if (on == observed_) return;
    observed_ = on;
    if (!listen_) return;
    // While unobserved nobody of ours listens: the kernel builds no notification for the
    // daemon's changes (a 6.1 kernel does then, with a listener, for every change).
    int group = RTNLGRP_TC;
    mnl_socket_setsockopt(sock_, on ? NETLINK_ADD_MEMBERSHIP : NETLINK_DROP_MEMBERSHIP, &group, sizeof group);
}

Result<Done> TcNetlink::dump(const std::string& dev, bool terse, const Visitor& each) {
    const int ifindex = ifindex_of(dev);
    // A device that is gone holds no filter (its link event may not have been read yet).
    if (!ifindex) return Done{};
    if (!dump_sock_) {
        auto s = open_socket();
        if (!s) return fail(s.error());
        dump_sock_ = *s;
    }
    ++stats_.dumps;
    std::vector<char> buf(kMessageRoom);
    nlmsghdr* req = put_dump_filters(buf.data(), ifindex, terse);
    req->nlmsg_seq = next_seq();
    if (mnl_socket_sendto(dump_sock_, req, req->nlmsg_len) < 0) return fail("filter dump: " + errno_text(errno));

    std::unordered_map<int, std::string> names;  // one lookup per redirect target, not per rule
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE * 4);
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(dump_sock_, rx.data(), rx.size());
        if (n < 0) return fail("filter dump: " + errno_text(errno));
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx.data()); message_fits(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_seq != req->nlmsg_seq) continue;  // a late answer of something else
            if (nlh->nlmsg_type == NLMSG_DONE) return Done{};
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                // No clsact qdisc yet: nothing installed.
                if (err->error == -EINVAL || err->error == -ENOENT) return Done{};
                return fail("filter dump: " + errno_text(-err->error));
            }
            auto f = parse_filter(nlh);
            if (!f) {  // skipped: what was not read is not installed, as far as we know
                malformed(Malformed::TcFilter, f.error());
                continue;
            }
            if (!f->handle) continue;  // chain/prio headers of the dump
            f->rule.dev = dev;
            for (auto& a : f->rule.actions)
                if (auto* r = std::get_if<tc::Redirect>(&a)) {
                    auto [it, fresh] = names.try_emplace(r->ifindex);
                    if (fresh) {
                        char name[IF_NAMESIZE] = {};
                        if (if_indextoname(static_cast<unsigned>(r->ifindex), name)) it->second = name;
                    }
                    r->dev = it->second;
                }
            each(std::move(*f));
        }
    }
}

Result<Done> TcNetlink::ensure_clsact(const std::string& dev) {
    const int ifindex = ifindex_of(dev);
    if (!ifindex) return fail("no device " + dev);
    std::vector<char> buf(kMessageRoom);
    nlmsghdr* nlh = put_new_clsact(buf.data(), ifindex);
    nlh->nlmsg_seq = next_seq();
    std::vector<char> batch(reinterpret_cast<char*>(nlh), reinterpret_cast<char*>(nlh) + nlh->nlmsg_len);
    program::Applied answer;
    answer.results.resize(1);
    std::size_t answered = 0;
    send_batch(batch, {{nlh->nlmsg_seq, 0}}, answer, answered, true);
    // What others did meanwhile is handed over by the next poll_events().
    for (std::size_t i = 0; i < answer.events.size(); ++i) held_.events.push_back(std::move(answer.events[i]));
    held_.overrun = held_.overrun || answer.overrun;
    const auto& r = answer.results[0];
    if (r.lost) return fail("clsact on " + dev + ": no answer");
    if (r.error && r.error != EEXIST)
        return fail("clsact on " + dev + ": " + errno_text(r.error) + (r.extack.empty() ? "" : " (" + r.extack + ")"));
    return Done{};
}

program::Applied TcNetlink::apply(const std::vector<program::Change>& changes) {
    using Kind = program::Change::Kind;
    program::Applied out;
    // What was read before these changes happened before them.
    for (auto& e : held_.events) {
        out.events.push_back(std::move(e));
        out.after.push_back(0);
    }
    out.overrun = held_.overrun;
    held_ = {};
    out.results.resize(changes.size());
    std::vector<char> buf(kMessageRoom);
    std::vector<char> batch;
    std::vector<Sent> sent;
    std::size_t answered = 0;
    // Observed, every change is answered in order (its echo or its error, then its ack),
    // which places what others did among our changes. Unobserved (a first start: nobody
    // else is heard), only the last change of a batch asks for an ack: the kernel answers
    // the others only when they fail, and in order, so that one ack says the rest went
    // in. It saves the kernel an answer per change and us reading it.
    const bool ack_each = observed_;
    std::size_t last = 0;  // offset of the batch's last message
    auto flush = [&] {
        if (sent.empty()) return;
        if (!ack_each) reinterpret_cast<nlmsghdr*>(batch.data() + last)->nlmsg_flags |= NLM_F_ACK;
        send_batch(batch, sent, out, answered, ack_each);
        batch.clear();
        sent.clear();
    };
    for (std::size_t i = 0; i < changes.size(); ++i) {
        const auto& c = changes[i];
        nlmsghdr* const nlh =
            c.kind == Kind::Add       ? put_new_filter(buf.data(), c.rule, c.ifindex, c.handle, FilterOp::Create)
            : c.kind == Kind::Replace ? put_new_filter(buf.data(), c.rule, c.ifindex, c.handle, FilterOp::Replace)
            : c.kind == Kind::Delete
                ? put_del_filter(buf.data(), {c.ifindex, c.rule.chain, c.rule.prio, c.rule.protocol, c.handle})
                : put_replace_action(buf.data(), c.action);
        nlh->nlmsg_seq = next_seq();
        if (!ack_each) nlh->nlmsg_flags &= static_cast<std::uint16_t>(~(NLM_F_ECHO | NLM_F_ACK));
        if (batch.size() + nlh->nlmsg_len > kBatchBytes || sent.size() >= max_batch_messages_) flush();
        last = batch.size();
        const auto* bytes = reinterpret_cast<const char*>(nlh);
        batch.insert(batch.end(), bytes, bytes + nlh->nlmsg_len);
        sent.push_back({nlh->nlmsg_seq, i});
    }
    flush();
    return out;
}

void TcNetlink::submit(const std::vector<program::Change>& changes) {
    submitted_ = std::async(std::launch::async, [this, &changes] { return apply(changes); });
}

program::Applied TcNetlink::collect() { return submitted_.valid() ? submitted_.get() : program::Applied{}; }

void TcNetlink::send_batch(const std::vector<char>& buf, const std::vector<Sent>& sent, program::Applied& out,
                           std::size_t& answered, bool acked_each) {
    stats_.messages += sent.size();
    ++stats_.batches;
    if (mnl_socket_sendto(sock_, buf.data(), buf.size()) < 0) {
        const int e = errno;
        for (const auto& s : sent) out.results[s.index] = program::ChangeResult{e, "send failed", false, false, false};
        return;
    }
    std::map<std::uint32_t, std::size_t> waiting;
    for (const auto& s : sent) waiting.emplace(s.seq, s.index);
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE * 4);
    bool overrun = false;
    while (!waiting.empty()) {
        // After an overrun the answers that made it are all queued already: read them
        // without waiting, and stop at an empty queue instead of waiting for the lost.
        const ssize_t n = recv(mnl_socket_get_fd(sock_), rx.data(), rx.size(), overrun ? MSG_DONTWAIT : 0);
        if (n < 0 && errno == ENOBUFS && !overrun) {
            overrun = true;
            out.overrun = true;  // notifications may be lost with the answers
            ++stats_.overruns;
            continue;
        }
        if (n < 0) {
            // Unknown outcome: the audit that follows says what is installed.
            for (const auto& [_, index] : waiting) out.results[index].lost = true;
            return;
        }
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx.data()); message_fits(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            const auto it = waiting.find(nlh->nlmsg_seq);
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                if (it == waiting.end()) continue;  // an answer to something earlier
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
                auto& r = out.results[it->second];
                r.error = -err->error;
                if (r.error) r.extack = extack_of(nlh);
                answered = std::max(answered, it->second + 1);
                waiting.erase(it);
                // The batch's one ack: what did not fail before it went in.
                if (!acked_each && nlh->nlmsg_seq == sent.back().seq) waiting.clear();
                continue;
            }
            if (nlh->nlmsg_pid == portid_ && it != waiting.end()) {
                // The echo of our change: the filter as the kernel now holds it.
                if (nlh->nlmsg_type == RTM_NEWTFILTER) {
                    const auto hw = filter_hw_flags(nlh);
                    out.results[it->second].in_hw = hw.in_hw;
                    out.results[it->second].not_in_hw = hw.not_in_hw;
                }
                continue;
            }
            take_notification(nlh, out, answered);
        }
    }
}

void TcNetlink::take_notification(const nlmsghdr* nlh, program::Applied& out, std::size_t answered) {
    using Kind = program::TcEvent::Kind;
    if (!listen_ || nlh->nlmsg_pid == portid_) return;  // not listening, or our own doing
    const std::uint16_t type = nlh->nlmsg_type;
    if (type != RTM_NEWTFILTER && type != RTM_DELTFILTER && type != RTM_DELQDISC) return;  // chains, actions, ...
    auto h = parse_tc_header(nlh);
    if (!h) {
        malformed(Malformed::TcNotification, h.error());
        return;
    }
    program::TcEvent e;
    e.ifindex = h->ifindex;
    e.chain = h->chain;
    e.prio = h->prio;
    e.protocol = h->protocol;
    e.handle = h->handle;
    if (type == RTM_DELQDISC) {
        if (h->kind != "clsact" && !is_clsact_parent(h->parent)) return;
        e.kind = Kind::QdiscDeleted;
    } else if (!is_ingress_parent(h->parent)) {
        return;  // egress filters are nobody's business here
    } else if (type == RTM_DELTFILTER) {
        // Without a handle: the whole (chain, prio, protocol) went, in one message.
        e.kind = h->handle ? Kind::FilterDeleted : Kind::PrioDeleted;
    } else {
        if (!h->handle) return;
        e.kind = Kind::FilterChanged;
        auto f = parse_filter(nlh);
        if (!f) {
            malformed(Malformed::TcFilter, f.error());
            return;
        }
        e.filter = std::move(*f);
    }
    ++stats_.notifications;
    out.events.push_back(std::move(e));
    out.after.push_back(answered);
}

program::Applied TcNetlink::poll_events() {
    program::Applied out = std::move(held_);
    out.after.assign(out.events.size(), 0);
    held_ = {};
    if (!listen_) return out;
    std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE * 4);
    for (;;) {
        const ssize_t n = recv(mnl_socket_get_fd(sock_), rx.data(), rx.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ENOBUFS) {
                out.overrun = true;
                ++stats_.overruns;
                continue;
            }
            break;  // EAGAIN: nothing more
        }
        int len = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx.data()); message_fits(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len))
            take_notification(nlh, out, 0);
    }
    return out;
}

}  // namespace dpo::kernel
