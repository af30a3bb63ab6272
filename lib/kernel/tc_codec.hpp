// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Encodes tc::Rule into rtnetlink filter messages and decodes the kernel's filter
// dumps back into tc::Rule, symmetrically, with libmnl's attribute helpers. A rule
// is ours when its first action carries kOwnerCookie (TCA_ACT_COOKIE), so a dump
// after a restart finds exactly our rules and nobody else's.

#include <linux/netlink.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>
#include <string>

#include "core/result.hpp"
#include "core/tc/rule.hpp"

namespace dpo::kernel {

inline constexpr std::array<std::uint8_t, 8> kOwnerCookie = {'d', 'p', 'o', 'f', 'f', 'l', 'd', '1'};

// Where a filter lives, for messages that name one without its content.
struct FilterRef {
    int ifindex = 0;
    std::uint32_t chain = 0;
    std::uint16_t prio = 0;
    std::uint16_t protocol = 0;
    std::uint32_t handle = 0;
};

// Each put_* writes one message at `buf` (at least kMessageRoom bytes) and returns
// its header; the caller sets nlmsg_seq and sends.
inline constexpr std::size_t kMessageRoom = 8192;

// Every change asks for an echo (NLM_F_ECHO): the kernel answers the requester with the
// filter as it now holds it (its in_hw state among it) before the ack, and leaves the
// requester out of the multicast copy, so a socket that also listens to RTNLGRP_TC hears
// only what others do.
enum class FilterOp : std::uint8_t {
    Create,   // NLM_F_CREATE|NLM_F_EXCL: at `handle` (0: the kernel picks), which must be free
    Replace,  // NLM_F_REPLACE: the filter at `handle`, which must exist
};
// `cls_flags`: TCA_CLS_FLAGS_* (the daemon's rules: none; the feature probe: skip_hw).
nlmsghdr* put_new_filter(void* buf, const tc::Rule& r, int ifindex, std::uint32_t handle, FilterOp op,
                         std::uint32_t cls_flags = 0);
nlmsghdr* put_del_filter(void* buf, const FilterRef& f);
// RTM_GETTFILTER dump of every chain of the device's clsact ingress. `terse`: each
// filter with its handle, flags (in_hw) and its actions' kinds and cookies only
// (TCA_DUMP_FLAGS_TERSE): a fraction of the kernel's work of a full dump.
nlmsghdr* put_dump_filters(void* buf, int ifindex, bool terse = false);
// RTM_NEWACTION with NLM_F_REPLACE: changes a shared action (one with an index) in
// place, for every rule that holds it.
nlmsghdr* put_replace_action(void* buf, const tc::Action& a);
// RTM_NEWQDISC clsact (an existing one is fine: EEXIST is "done").
nlmsghdr* put_new_clsact(void* buf, int ifindex);

// What a tc message says about where it is, whatever it is (filter, chain, qdisc).
struct TcHeader {
    std::uint16_t type = 0;  // RTM_*
    std::uint32_t pid = 0, seq = 0;
    int ifindex = 0;
    std::uint32_t parent = 0, handle = 0;
    std::uint16_t prio = 0, protocol = 0;  // host order
    std::uint32_t chain = 0;
    std::string kind;  // TCA_KIND: "flower", "clsact", ...
};
Result<TcHeader> parse_tc_header(const nlmsghdr* nlh);
// The parent of filters on a clsact qdisc's ingress.
bool is_ingress_parent(std::uint32_t parent);
bool is_clsact_parent(std::uint32_t parent);
// The in_hw / not_in_hw flags of a flower filter message (an echo), without decoding
// the rest.
struct HwFlags {
    bool in_hw = false, not_in_hw = false;
};
HwFlags filter_hw_flags(const nlmsghdr* nlh);

// Decodes one RTM_NEWTFILTER (from a dump or an echo). A message that is not a
// flower filter on clsact ingress is an error; unknown keys or actions leave
// `decoded` false but still report ownership and hardware state.
Result<tc::Installed> parse_filter(const nlmsghdr* nlh);

// One shared action's statistics, from an RTM_GETACTION dump (action_stats.hpp).
struct ActionStats {
    std::string kind;  // "gact", "mirred"
    std::uint32_t index = 0;
    std::uint64_t packets = 0, bytes = 0;  // everything it counted, software and hardware
    // What the hardware counted (TCA_STATS_BASIC_HW), where the kernel says.
    std::optional<std::uint64_t> hw_packets, hw_bytes;
    bool operator==(const ActionStats&) const = default;
};
// RTM_GETACTION dump of every action of `kind` ("gact", "mirred"), terse (kind, index,
// statistics: no options) and in large messages.
nlmsghdr* put_dump_actions(void* buf, const std::string& kind);
// The actions of one message of such a dump (RTM_GETACTION, as the request), each attribute checked
// before it is read; a malformed one fails the message (counted as Malformed::TcAction
// by the caller).
Result<std::vector<ActionStats>> parse_actions(const nlmsghdr* nlh);

// mnl_nlmsg_ok() with the length compared unsigned: libmnl casts nlmsg_len to int, so a
// length of 2 GiB or more passed its check and the walk went past the buffer.
inline bool message_fits(const nlmsghdr* nlh, int len) {
    return len >= static_cast<int>(sizeof(nlmsghdr)) && nlh->nlmsg_len >= sizeof(nlmsghdr) &&
           nlh->nlmsg_len <= static_cast<unsigned>(len);
}

// The extack message of an NLMSG_ERROR, if the kernel sent one ("" otherwise, and for a
// message too short for what it says it holds).
std::string extack_of(const nlmsghdr* nlh);

}  // namespace dpo::kernel
