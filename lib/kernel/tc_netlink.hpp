// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// tc over rtnetlink with libmnl: batched requests, one ack per message with the
// kernel's extack text, dumps decoded by tc_codec.

#include <libmnl/libmnl.h>

#include <memory>

#include "core/program/backend.hpp"

namespace dpo::kernel {

class TcNetlink final : public program::Backend {
public:
    static Result<std::unique_ptr<TcNetlink>> open();
    ~TcNetlink() override;

    Result<std::vector<tc::Installed>> dump(const std::string& dev) override;
    Result<Done> ensure_clsact(const std::string& dev) override;
    program::ApplyReport apply(const reconcile::Plan& plan) override;
    program::ApplyReport replace_actions(const std::vector<tc::Action>& actions) override;

private:
    TcNetlink(mnl_socket* s, std::size_t max_batch_messages) : sock_(s), max_batch_messages_(max_batch_messages) {}
    struct Sent {
        std::uint32_t seq;
        std::string rule;
    };
    // Requests gathered up to the batch limits, then sent with one sendto.
    struct Pending {
        std::vector<char> bytes;
        std::vector<Sent> sent;
    };
    // Numbers `nlh` and adds it to `p`, sending `p` first when it is full.
    void queue(Pending& p, nlmsghdr* nlh, std::string what, program::ApplyReport& report);
    // Sends what `p` holds and collects one ack per message.
    void flush(Pending& p, program::ApplyReport& report);
    void send_batch(const std::vector<char>& buf, const std::vector<Sent>& sent, program::ApplyReport& report);
    std::uint32_t next_seq() { return ++seq_; }

    mnl_socket* sock_;
    std::size_t max_batch_messages_;  // acks of one batch must fit the receive buffer
    std::uint32_t seq_ = 0;
};

}  // namespace dpo::kernel
