// SPDX-License-Identifier: GPL-2.0-or-later
#include "counter_names.hpp"

#include <algorithm>
#include <map>

#include "core/compile/pipeline.hpp"

namespace dpo::compile {

namespace {

struct Fixed {
    std::uint32_t index;
    CounterKind kind;
    const char* name;
    const char* detail;
};

constexpr Fixed kFixed[] = {
    {kDropOuterNew, CounterKind::Drop, "outer-new", "outer ingress, new connection (not a reply)"},
    {kDropInvalid, CounterKind::Drop, "invalid", "conntrack state invalid"},
    {kDropChunkLimit, CounterKind::Drop, "chunk-limit", "NAT subscriber at its chunk limit"},
    {kDropNoPunt, CounterKind::Drop, "no-punt", "NAT first packet, punt path down"},
    {kDropPoolEmpty, CounterKind::Drop, "pool-empty", "NAT first packet, no chunk left in the pool"},
    {kPuntIndex, CounterKind::Egress, "nat-punt", "NAT first packets to the daemon"},
    {kReinjectIndex, CounterKind::Egress, "nat-reinject", "NAT first packets back into the uplink"},
    {kReinjectVxlanIndex, CounterKind::Egress, "nat-reinject-vxlan", "NAT first packets back into the VXLAN device"},
};

// The VLAN range holds 4096 ids; the VXLAN range 2^24 VNIs. The fixed indices
// (0xd92..., 0xd93...) sit inside the VLAN range's span but above any VID.
constexpr std::uint32_t kVidSpan = 4096;
constexpr std::uint32_t kVniSpan = 1u << 24;

std::string joined(const std::vector<const Interface*>& is) {
    std::string s;
    for (const auto* i : is) s += (s.empty() ? "" : ",") + i->name;
    return s;
}

std::optional<std::uint32_t> vni_of(const Interface& i) {
    if (const auto* e = std::get_if<EvpnEncap>(&i.encap)) return e->vni;
    if (const auto* a = std::get_if<AciEncap>(&i.encap)) return a->vni;
    return std::nullopt;
}

}  // namespace

const char* to_string(CounterKind k) { return k == CounterKind::Egress ? "egress" : "drop"; }

std::optional<CounterName> counter_name(const Mapping& m, std::uint32_t index) {
    for (const auto& f : kFixed) {
        if (f.index != index) continue;
        CounterName n{f.kind, f.name, f.index, "", f.detail};
        if (index == kReinjectIndex) n.device = m.uplink;
        else if (index == kReinjectVxlanIndex && m.vxlan) n.device = m.vxlan->device;
        return n;
    }
    if (index >= kEgressCounterVlanBase && index < kEgressCounterVlanBase + kVidSpan) {
        const auto vid = static_cast<std::uint16_t>(index - kEgressCounterVlanBase);
        std::vector<const Interface*> is;
        for (const auto& i : m.interfaces)
            if (const auto* v = std::get_if<VlanEncap>(&i.encap); v && v->vid == vid) is.push_back(&i);
        const std::string vlan = "vlan " + std::to_string(vid);
        return CounterName{CounterKind::Egress, is.empty() ? "vlan-" + std::to_string(vid) : joined(is), index,
                           m.uplink, vlan};
    }
    if (index >= kEgressCounterVxlanBase && index < kEgressCounterVxlanBase + kVniSpan) {
        const std::uint32_t vni = index - kEgressCounterVxlanBase;
        std::vector<const Interface*> is;
        bool aci = false;
        for (const auto& i : m.interfaces)
            if (vni_of(i) == vni) {
                is.push_back(&i);
                aci = aci || std::holds_alternative<AciEncap>(i.encap);
            }
        return CounterName{CounterKind::Egress, is.empty() ? "vni-" + std::to_string(vni) : joined(is), index,
                           m.vxlan ? m.vxlan->device : "",
                           std::string(is.empty() ? "" : aci ? "aci " : "evpn ") + "vni " + std::to_string(vni)};
    }
    return std::nullopt;
}

std::vector<CounterName> counter_names(const Mapping& m) {
    std::vector<std::uint32_t> indices;
    for (const auto& f : kFixed) indices.push_back(f.index);
    for (const auto& i : m.interfaces) {
        if (const auto* v = std::get_if<VlanEncap>(&i.encap)) indices.push_back(kEgressCounterVlanBase + v->vid);
        else if (const auto vni = vni_of(i)) indices.push_back(kEgressCounterVxlanBase + *vni);
    }
    std::sort(indices.begin(), indices.end());
    indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
    std::vector<CounterName> out;
    for (const auto index : indices)
        if (auto n = counter_name(m, index)) out.push_back(std::move(*n));
    return out;
}

}  // namespace dpo::compile
