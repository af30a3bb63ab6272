// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The one tc writer, over rtnetlink with libmnl. One socket carries the daemon's changes
// (batched, each echoed and acked, so the answer says what the kernel holds and whether
// it is in hardware) and, subscribed to RTNLGRP_TC, what other processes do to tc; the
// kernel leaves the requester of an echoed change out of its multicast copy, so every
// notification on it is somebody else's. Dumps go through a second socket, so that no
// notification is read and dropped by a dump.

#include <libmnl/libmnl.h>

#include <future>
#include <memory>

#include "core/program/backend.hpp"
#include "kernel/tc_codec.hpp"

namespace dpo::kernel {

class TcNetlink final : public program::Backend {
public:
    // `listen`: subscribe to other processes' tc changes (the daemon); one-shot tools
    // (--show, --flush, probes) do not.
    static Result<std::unique_ptr<TcNetlink>> open(bool listen = false);
    ~TcNetlink() override;

    program::Applied apply(const std::vector<program::Change>& changes) override;
    // On a thread of its own: the kernel works on a batch (in the sender's context) while
    // the engine compiles the next one, on another CPU.
    void submit(const std::vector<program::Change>& changes) override;
    program::Applied collect() override;
    program::Applied poll_events() override;
    int event_fd() const override { return listen_ ? mnl_socket_get_fd(sock_) : -1; }
    using program::Backend::dump;
    Result<Done> dump(const std::string& dev, bool terse, const Visitor& each) override;
    void set_observed(bool on) override;
    Result<Done> ensure_clsact(const std::string& dev) override;

    // Counters for the operator: messages sent, batches, dumps, notifications read.
    struct Stats {
        std::size_t messages = 0, batches = 0, dumps = 0, notifications = 0, overruns = 0;
    };
    const Stats& stats() const { return stats_; }

private:
    TcNetlink(mnl_socket* s, std::size_t max_batch_messages, bool listen)
        : sock_(s), max_batch_messages_(max_batch_messages), listen_(listen) {}
    struct Sent {
        std::uint32_t seq;
        std::size_t index;  // into the changes of the apply() call
    };
    // Sends one batch and reads its answers (and what others did meanwhile) into `out`;
    // without `acked_each` only the last message asked for an ack.
    void send_batch(const std::vector<char>& buf, const std::vector<Sent>& sent, program::Applied& out,
                    std::size_t& answered, bool acked_each);
    // A message that is no answer of ours: what others did, or nothing we care about.
    void take_notification(const nlmsghdr* nlh, program::Applied& out, std::size_t answered);
    std::uint32_t next_seq() { return ++seq_; }

    mnl_socket* sock_;
    mnl_socket* dump_sock_ = nullptr;  // opened on the first dump
    std::size_t max_batch_messages_;  // answers of one batch must fit the receive buffer
    bool listen_;        // meant to listen (open(true))
    bool observed_ = true;  // echo changes and listen now
    std::uint32_t seq_ = 0;
    std::uint32_t portid_ = 0;
    Stats stats_;
    program::Applied held_;  // notifications read outside apply() and poll_events()
    std::future<program::Applied> submitted_;
};

}  // namespace dpo::kernel
