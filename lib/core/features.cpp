// SPDX-License-Identifier: GPL-2.0-or-later
#include "features.hpp"

#include <algorithm>
#include <cerrno>

namespace dpo::features {

namespace {

const std::vector<Spec> kSpecs = {
    {Feature::Clsact, "clsact", "sch_ingress", "clsact", Stage::Core},
    {Feature::Flower, "cls_flower", "cls_flower", "flower", Stage::Core},
    {Feature::Gact, "act_gact", "act_gact", "gact", Stage::Core},
    {Feature::Mirred, "act_mirred", "act_mirred", "mirred", Stage::Core},
    {Feature::Pedit, "act_pedit", "act_pedit", "pedit", Stage::Core},
    {Feature::Csum, "act_csum", "act_csum", "csum", Stage::Core},
    {Feature::Vlan, "act_vlan", "act_vlan", "vlan", Stage::Core},
    {Feature::Ct, "act_ct", "act_ct", "ct", Stage::Nat},
    {Feature::TunnelKey, "act_tunnel_key", "act_tunnel_key", "tunnel_key", Stage::Vxlan},
    {Feature::Police, "act_police", "act_police", "police", Stage::Nat},
    {Feature::Ctnetlink, "ctnetlink", "nf_conntrack_netlink", "", Stage::Nat},
};

bool tunnelled(const Interface& i) { return !std::holds_alternative<VlanEncap>(i.encap); }

}  // namespace

const Spec& spec(Feature f) { return kSpecs[static_cast<std::size_t>(f)]; }

const std::vector<Feature>& all() {
    static const std::vector<Feature> every = [] {
        std::vector<Feature> v;
        for (const auto& s : kSpecs) v.push_back(s.feature);
        return v;
    }();
    return every;
}

std::vector<Feature> needed(const Mapping& m) {
    const bool vxlan = std::any_of(m.interfaces.begin(), m.interfaces.end(), tunnelled);
    std::vector<Feature> out;
    for (const auto& s : kSpecs)
        if (s.stage == Stage::Core || (s.stage == Stage::Nat && m.nat) || (s.stage == Stage::Vxlan && vxlan))
            out.push_back(s.feature);
    return out;
}

Answer classify(Feature f, int error) {
    if (error == 0) return Answer::Present;
    if (f == Feature::Ctnetlink)
        // nfnetlink answers EINVAL for a subsystem it has not (after trying to load
        // it); no NETLINK_NETFILTER at all is EPROTONOSUPPORT at socket().
        return error == EINVAL || error == EPROTONOSUPPORT ? Answer::Missing : Answer::Unknown;
    // tc: a kind the kernel cannot load is ENOENT ("TC classifier not found", "Failed
    // to load TC action module", "Specified qdisc kind is unknown"); a module without
    // the support built in (act_ct without NAT) is EOPNOTSUPP.
    return error == ENOENT || error == EOPNOTSUPP ? Answer::Missing : Answer::Unknown;
}

Verdict decide(const std::vector<Finding>& findings) {
    Verdict v;
    for (const auto& f : findings) {
        if (f.answer != Answer::Missing) continue;
        v.missing.push_back(f.feature);
        switch (spec(f.feature).stage) {
            case Stage::Core: v.refuse = true; break;
            case Stage::Nat: v.nat = false; break;
            case Stage::Vxlan: v.vxlan = false; break;
        }
    }
    return v;
}

std::string effect(Feature f) {
    switch (spec(f).stage) {
        case Stage::Core: return "every rule needs it: not starting";
        case Stage::Nat: return "NAT stage not running: inner -> outer IPv4 left to the kernel";
        case Stage::Vxlan: return "EVPN and ACI interfaces left to the kernel";
    }
    return "";
}

Mapping admit(Mapping m, const Verdict& v) {
    if (!v.vxlan) std::erase_if(m.interfaces, tunnelled);
    return m;
}

}  // namespace dpo::features
