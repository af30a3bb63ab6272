// SPDX-License-Identifier: GPL-2.0-or-later
// libFuzzer harness: the tc decoder (lib/kernel/tc_codec), as the daemon's tc socket
// feeds it (lib/kernel/tc_netlink.cpp): every RTM_NEWTFILTER of a dump, an echo or a
// notification goes through parse_tc_header, filter_hw_flags and parse_filter.
//
// The input is a netlink datagram as recv() returns it; the seeds are real ones (a
// kernel's dump of every rule shape the daemon writes, fuzz/corpus/tc_filter/). Each
// message mnl_nlmsg_ok() accepts is copied into a heap block of exactly its length,
// so a read past the message is a heap-buffer-overflow, and is decoded as a filter
// (its type forced to RTM_NEWTFILTER, or parse_filter would stop at the first check).
// mnl_checked.cpp turns a getter's read past its attribute into a crash too.
//
// And one property: a rule decoded as ours and understood is what the daemon compares
// with the rules it computes; encoding it again must decode to the same rule, or the
// daemon would replace that rule on every pass.
#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernel/tc_codec.hpp"

using namespace dpo;

namespace {

void decode(const std::vector<std::uint8_t>& msg) {
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(msg.data());
    (void)kernel::parse_tc_header(nlh);
    (void)kernel::filter_hw_flags(nlh);
    auto got = kernel::parse_filter(nlh);
    if (!got || !got->decoded || !got->owned) return;
    // The encoder writes into kMessageRoom bytes; a rule decoded from a large message
    // could need more, which no rule the compiler makes does.
    if (msg.size() > kernel::kMessageRoom / 4) return;
    std::vector<std::uint8_t> buf(kernel::kMessageRoom);
    const auto* again = kernel::put_new_filter(buf.data(), got->rule, 2, got->handle, kernel::FilterOp::Replace);
    auto back = kernel::parse_filter(again);
    if (!back || !back->decoded || !back->owned || !(back->rule == got->rule)) {
        std::fprintf(stderr, "fuzz-tc-filter: decoded %s\n re-encoded and decoded %s\n",
                     tc::to_tc_command(got->rule).c_str(), back ? tc::to_tc_command(back->rule).c_str() : back.error().c_str());
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::uint8_t> datagram(data, data + size);  // aligned, as a receive buffer is
    int left = static_cast<int>(size);
    // The daemon's receive loops walk with kernel::message_fits() (libmnl 1.0.4's
    // mnl_nlmsg_ok() passes an nlmsg_len of 2 GiB or more: fuzz/crashes/.../nlmsg-len-over-2gib).
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data()); kernel::message_fits(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left)) {
        // The message alone in a block of its aligned length (zero-padded): libmnl walks
        // attributes up to MNL_ALIGN(nlmsg_len), as a receive buffer always has room for
        // (the kernel pads every message), so a read past that is a read past the block.
        const auto* at = reinterpret_cast<const std::uint8_t*>(nlh);
        std::vector<std::uint8_t> msg(MNL_ALIGN(nlh->nlmsg_len), 0);
        std::memcpy(msg.data(), at, nlh->nlmsg_len);
        reinterpret_cast<nlmsghdr*>(msg.data())->nlmsg_type = RTM_NEWTFILTER;
        decode(msg);
    }
    return 0;
}
