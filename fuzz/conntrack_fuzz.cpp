// SPDX-License-Identifier: GPL-2.0-or-later
// libFuzzer harness: the conntrack event mapping (lib/kernel/conntrack_watcher.cpp):
// a ctnetlink datagram as the event socket receives it, each message parsed by
// libnetfilter_conntrack (nfct_nlmsg_parse) and mapped to the daemon's entry
// (entry_of, which also reads the reply tuple's ICMP id from the raw message).
//
// Not reachable without a socket today: ConntrackWatcher::process() reads its own
// socket, and entry_of() is file-local. Until the lead exposes the per-message step
// (see fuzz/README.md: `parse_event(const nlmsghdr*, zone)`), this harness compiles
// the watcher's source into itself and repeats process()'s loop over one datagram,
// line for line; keep the two in step.
//
// Each message is a heap block of exactly its length; mnl_checked.cpp catches a
// getter's read past its attribute (libnetfilter_conntrack's calls included).
#include "kernel/conntrack_watcher.cpp"  // NOLINT: entry_of() is file-local (see above)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr std::uint16_t kZone = 1;  // as the lab's NAT configurations

// process()'s inner loop over one received datagram.
void process_datagram(std::vector<char>& buf, dpo::kernel::ConntrackWatcher::Batch& batch) {
    using namespace dpo::kernel;
    int len = static_cast<int>(buf.size());
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
        // libmnl 1.0.4's mnl_nlmsg_ok() compares (int)nlmsg_len with what is left, so
        // a length of 2 GiB or more passes, and nfct_nlmsg_parse() would read that far.
        if (nlh->nlmsg_len > static_cast<unsigned>(len)) {
            std::fprintf(stderr, "fuzz-conntrack: mnl_nlmsg_ok() accepted nlmsg_len %u with %d bytes left\n",
                         nlh->nlmsg_len, len);
            std::abort();
        }
        // The harness's addition: the message alone in a block of its own length.
        const auto* at = reinterpret_cast<const char*>(nlh);
        std::vector<char> one(at, at + nlh->nlmsg_len);
        const auto* msg = reinterpret_cast<const nlmsghdr*>(one.data());

        if (NFNL_SUBSYS_ID(msg->nlmsg_type) != NFNL_SUBSYS_CTNETLINK) continue;
        ConntrackEvent::Kind kind;
        const auto type = NFNL_MSG_TYPE(msg->nlmsg_type);
        if (type == IPCTNL_MSG_CT_DELETE)
            kind = ConntrackEvent::Kind::Destroy;
        else if (type == IPCTNL_MSG_CT_NEW && (msg->nlmsg_flags & NLM_F_CREATE))
            kind = ConntrackEvent::Kind::New;
        else
            continue;
        CtPtr ct(nfct_new());
        if (!ct) std::abort();
        if (mnl_nlmsg_get_payload_len(msg) < sizeof(nfgenmsg) || nfct_nlmsg_parse(msg, ct.get()) < 0) {
            batch.overrun = true;
            continue;
        }
        if (auto e = entry_of(ct.get(), msg, kZone)) batch.events.push_back({kind, std::move(*e)});
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<char> buf(data, data + size);
    dpo::kernel::ConntrackWatcher::Batch batch;
    process_datagram(buf, batch);
    for (const auto& e : batch.events) {
        // What nat_runtime.cpp does with an event: an IPv4 connection of the zone.
        if (e.entry.zone != kZone) std::abort();
        if (e.entry.orig_src.family != e.entry.reply_dst.family) std::abort();
        (void)e.entry.orig_src.str();
        (void)e.entry.reply_dst.str();
    }
    return 0;
}
