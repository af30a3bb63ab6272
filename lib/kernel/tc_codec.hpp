// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Encodes tc::Rule into rtnetlink filter messages and decodes the kernel's filter
// dumps back into tc::Rule, symmetrically, with libmnl's attribute helpers. A rule
// is ours when its first action carries kOwnerCookie (TCA_ACT_COOKIE), so a dump
// after a restart finds exactly our rules and nobody else's.

#include <linux/netlink.h>

#include <array>
#include <cstdint>

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

// RTM_NEWTFILTER: create (NLM_F_CREATE|NLM_F_EXCL) when handle is 0, else replace
// that handle in place (NLM_F_REPLACE).
nlmsghdr* put_new_filter(void* buf, const tc::Rule& r, int ifindex, std::uint32_t handle);
nlmsghdr* put_del_filter(void* buf, const FilterRef& f);
// RTM_GETTFILTER dump of every chain of the device's clsact ingress.
nlmsghdr* put_dump_filters(void* buf, int ifindex);
// RTM_NEWACTION with NLM_F_REPLACE: changes a shared action (one with an index) in
// place, for every rule that holds it.
nlmsghdr* put_replace_action(void* buf, const tc::Action& a);
// RTM_NEWQDISC clsact (an existing one is fine: EEXIST is "done").
nlmsghdr* put_new_clsact(void* buf, int ifindex);

// Decodes one RTM_NEWTFILTER (from a dump or an echo). A message that is not a
// flower filter on clsact ingress is an error; unknown keys or actions leave
// `decoded` false but still report ownership and hardware state.
Result<tc::Installed> parse_filter(const nlmsghdr* nlh);

}  // namespace dpo::kernel
