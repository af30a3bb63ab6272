// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The compiler: mapping + kernel state (+ the NAT stage) -> the tc rules that implement
// the flow chart (see pipeline.hpp for the chain layout). It never decides to modify a
// packet it might not carry to the wire: anything it cannot carry (no route,
// unresolved neighbour, TTL <= 1, to the host, not a mapped egress) matches a rule that
// hands the packet to the kernel untouched, or matches nothing.
//
// It works by source key (keys.hpp): compile_key() (view.hpp) compiles one; the engine
// recompiles the keys a change touches. compile() below compiles every key of a whole
// state from scratch: it serves --dry-run, --show and tests, and is the oracle the
// incremental engine must always agree with.

#include <string>
#include <vector>

#include "core/compile/adjacency.hpp"
#include "core/compile/facts.hpp"
#include "core/compile/keys.hpp"
#include "core/mapping.hpp"
#include "core/model/kernel_model.hpp"
#include "core/model/kernel_state.hpp"
#include "core/nat/state.hpp"
#include "core/tc/rule.hpp"

namespace dpo::compile {

using nat::NatState;
using nat::NatSubscriber;

struct Program {
    std::vector<tc::Rule> rules;     // sorted by (dev, chain, prio, protocol, match); identities unique
    std::vector<std::string> notes;  // what is left to the kernel, and why
};

// `adjacencies`: the next hops' ids to use (a running daemon's); those missing are
// given in the order of first use. Without it, a fresh table.
Program compile(const Mapping& m, const KernelState& k, const NatState* nat = nullptr,
                Adjacencies* adjacencies = nullptr);

// Every key a state has, adjacencies excepted (they come from the others' uses), in a
// fixed order.
std::vector<Key> all_keys(const Mapping& m, const model::KernelModel& k, const nat::NatView* nat);

// What a running daemon's NAT stage held, read back from its installed rules: the
// subscribers' commit and drop rules and the punt redirect. `--show` compiles with
// it to compare like for like without the daemon's chunk table.
NatState nat_state_from(const std::vector<tc::Rule>& installed);

// Reserves the next-hop ids of the adjacency chains found installed (a previous run's),
// under their signatures, so that the same next hops take the same ids again.
void reserve_adjacencies(Adjacencies& a, const std::vector<tc::Rule>& installed);
// The same for one rule (a dump read one at a time); a rule of no next-hop chain is ignored.
void reserve_adjacency(Adjacencies& a, const tc::Rule& installed);

// The devices whose clsact ingress holds the program's rules (besides the punt
// pair's two ends, while the NAT stage runs).
std::vector<std::string> rule_devices(const Mapping& m);

// The punt pair's way back for frames punted from the uplink (tagged): into the
// uplink's ingress from chain 0.
tc::Rule reinject_vlan_rule(const std::string& inject_dev, const std::string& uplink, int uplink_ifindex);

}  // namespace dpo::compile
