// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The per-key compilers' only way to what they compile from: the mapping, the kernel
// model, the egress facts, the NAT stage and the adjacency ids. Every read is recorded
// (when a recorder is given), so the engine knows which keys to recompile when
// something changes: a key can depend on nothing it did not ask the view for.

#include <optional>
#include <string>
#include <vector>

#include "core/compile/adjacency.hpp"
#include "core/compile/facts.hpp"
#include "core/compile/keys.hpp"
#include "core/mapping.hpp"
#include "core/model/kernel_model.hpp"
#include "core/nat/state.hpp"
#include "core/tc/rule.hpp"

namespace dpo::compile {

// What one key read and which next hops its rules jump to.
struct Reads {
    std::vector<Input> inputs;
    std::vector<AdjacencyKey> uses;
    void clear() {
        inputs.clear();
        uses.clear();
    }
};

// What one key produced.
struct KeyOutput {
    std::vector<tc::Rule> rules;
    std::vector<std::string> notes;  // what is left to the kernel, and why
    void clear() {
        rules.clear();
        notes.clear();
    }
};

class View {
public:
    View(const Mapping& m, const model::KernelModel& k, const Facts& facts, const nat::NatView* nat,
         Adjacencies& adjacencies, Reads* reads)
        : m_(m), k_(k), facts_(facts), nat_(nat), adjacencies_(adjacencies), reads_(reads) {}

    const Mapping& mapping() const { return m_; }
    // Global inputs (see keys.hpp): not recorded.
    const Facts& facts() const { return facts_; }
    // The NAT stage, when the mapping has `nat` and the stage runs.
    const nat::NatView* nat() const { return m_.nat ? nat_ : nullptr; }

    const Link* link(int ifindex);
    const Link* link_named(const std::string& name);
    std::string link_name(int ifindex);
    bool local(const IpAddress& a);
    // The best route of exactly this prefix in the mapping's table (a prefix key's own).
    const Route* prefix_route(const IpPrefix& p) const;
    // Longest-prefix match in the mapping's table.
    const Route* lookup(const IpAddress& a);
    const Neighbour* neighbour(int ifindex, const IpAddress& a);
    // Resolved (with a MAC) or nothing.
    const Neighbour* resolved(int ifindex, const IpAddress& a);
    // The same, for a key that depends only on whether it is resolved: a gateway's new
    // MAC does not recompile the routes through it. Its MAC may be read only to name a
    // next hop that gets its id now (the signature of adjacency()), never into a rule.
    const Neighbour* resolved_gateway(int ifindex, const IpAddress& a);
    const EgressPort* egress(int ifindex);
    // Why the netdev with this ifindex is no egress of the fast path.
    std::string why_no_egress(int ifindex);
    std::optional<nat::NatSubscriber> subscriber(const IpAddress& a);

    // The id of a next hop the key's rules jump to (a new one gets an id now); nothing
    // when every id is in use.
    std::optional<std::uint32_t> adjacency(const AdjacencyKey& a, const AdjacencySignature& s);
    // An adjacency key's own id (it does not use itself).
    std::optional<std::uint32_t> adjacency_id(const AdjacencyKey& a) const { return adjacencies_.id(a); }

private:
    void record(Input i) {
        if (reads_) reads_->inputs.push_back(std::move(i));
    }

    const Mapping& m_;
    const model::KernelModel& k_;
    const Facts& facts_;
    const nat::NatView* nat_;
    Adjacencies& adjacencies_;
    Reads* reads_;
};

// Compiles one key into `out` (cleared first).
void compile_key(const Key& key, View& view, KeyOutput& out);

}  // namespace dpo::compile
