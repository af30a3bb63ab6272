// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The compiler is a pure function: mapping + kernel state -> the tc rules that
// implement the flow chart (see pipeline.hpp for the chain layout). It never decides
// to modify a packet it might not carry to the wire: anything it cannot carry
// (no route, unresolved neighbour, TTL <= 1, to the host, not a mapped egress)
// matches a rule that hands the packet to the kernel untouched, or matches nothing.

#include <string>
#include <vector>

#include "core/model/kernel_state.hpp"
#include "core/mapping.hpp"
#include "core/nat/state.hpp"
#include "core/tc/rule.hpp"

namespace dpo::compile {

struct Program {
    std::vector<tc::Rule> rules;     // sorted by (dev, chain, prio, key); keys unique
    std::vector<std::string> notes;  // what is left to the kernel, and why
};

using nat::NatState;
using nat::NatSubscriber;

Program compile(const Mapping& m, const KernelState& k, const NatState* nat = nullptr);

// What a running daemon's NAT stage held, read back from its installed rules: the
// subscribers' commit and drop rules and the punt redirect. `--show` compiles with
// it to compare like for like without the daemon's chunk table.
NatState nat_state_from(const std::vector<tc::Rule>& installed);

// The devices whose clsact ingress holds the program's rules (besides the punt
// pair's inject end, while the NAT stage runs).
std::vector<std::string> rule_devices(const Mapping& m);

// The punt pair's way back for frames punted from the uplink (tagged): into the
// uplink's ingress from chain 0. The punt port installs it on its own and the
// program carries it too, so either may come first.
tc::Rule reinject_vlan_rule(const std::string& inject_dev, const std::string& uplink, int uplink_ifindex);

}  // namespace dpo::compile
