// SPDX-License-Identifier: GPL-2.0-or-later
// The NAT stage's rules (docs/nat-plan.md, pipeline.hpp): conntrack by connection
// state, one rule per subscriber, the punt of first packets and their way back in.
#include "parts.hpp"
#include "core/gcc_workarounds.hpp"

namespace dpo::compile {

void nat_outer_lookup(const IngressDevice& d, std::uint16_t zone, KeyOutput& out) {
    for (Family f : {Family::V4, Family::V6}) {
        const bool v4 = f == Family::V4;
        auto r = chain_rule(d, kChainOuter, v4 ? kPrioOuterCtV4 : kPrioOuterCtV6, f,
                            "nat: outer ingress, translate replies back");
        r.actions = {ct_lookup(zone, f), tc::Goto{d.base + kChainOuterTracked}};
        out.rules.push_back(std::move(r));
        r = tracked_rule(d, kChainOuterTracked, v4 ? kPrioOuterNewV4 : kPrioOuterNewV6, f, tc::kCtNew,
                         "nat: outer new: count, drop");
        r.actions = {tc::Drop{kDropOuterNew}};
        out.rules.push_back(std::move(r));
        r = tracked_rule(d, kChainOuterTracked, v4 ? kPrioOuterInvalidV4 : kPrioOuterInvalidV6, f, tc::kCtInvalid,
                         "nat: outer invalid: count, drop");
        r.actions = {tc::Drop{kDropInvalid}};
        out.rules.push_back(std::move(r));
    }
}

// The punt rule's rate limit: `first_packet_rate` a second, with a burst of a tenth of
// a second's worth. mlx5 offloads a police action whose excess is dropped and whose
// conforming packets pipe on (en/tc/act/police.c); before Linux 6.3 the punt rule's
// +trk+new match keeps it in software anyway.
tc::Police first_packet_police(const Nat& config) {
    return tc::Police{config.first_packet_rate, std::max<std::uint64_t>(1, config.first_packet_rate / 10)};
}

void nat_punt_rule(const IngressDevice& d, const nat::NatView& nat, const Nat& config, KeyOutput& out) {
    // A subscriber without a chunk: its first packet goes to the daemon, which pulls a
    // chunk, installs the subscriber's rule and puts the packet back (into this
    // device's ingress: see the Punt key).
    auto r = tracked_rule(d, kChainSnat, kPrioPunt, Family::V4, tc::kCtNew, "nat: new, no chunk yet: to the daemon");
    if (const int punt = nat.punt_ifindex())
        r.actions = {first_packet_police(config), tc::Redirect{punt, nat.punt_dev(), kPuntIndex}};
    else
        r.actions = {tc::Drop{kDropNoPunt}};
    out.rules.push_back(std::move(r));
}

// GCC 12 false positive at -O3: -Wnull-dereference inside std::variant's constructor once
// vector<tc::Action>::insert is inlined (none of the pointers involved can be null).
DPO_GCC_WARNING_OFF("-Wnull-dereference")
void nat_adjacency_chain(const IngressDevice& d, std::uint16_t zone, std::uint32_t id, Family f,
                         const std::vector<tc::Action>& tail, const std::string& toward, KeyOutput& out) {
    const std::uint32_t chain = kChainNatAdjacencyBase + id;
    const std::string to = "nat: " + toward + ": ";
    auto est = tracked_rule(d, chain, kPrioNatEstablished, f, tc::kCtEstablished, to + "established: offloaded");
    est.actions = tail;
    out.rules.push_back(std::move(est));
    auto rel = tracked_rule(d, chain, kPrioNatRelated, f, tc::kCtRelated, to + "related");
    rel.actions = tail;
    out.rules.push_back(std::move(rel));
    auto inv = tracked_rule(d, chain, kPrioNatInvalid, f, tc::kCtInvalid, to + "invalid: drop");
    inv.actions = {tc::Drop{kDropInvalid}};
    out.rules.push_back(std::move(inv));
    auto fresh = tracked_rule(d, chain, kPrioNatNew, f, tc::kCtNew,
                              to + (f == Family::V4 ? "new: to its subscriber's chunk" : "new: commit"));
    if (f == Family::V4) {
        fresh.actions = {tc::Goto{d.base + kChainSnat}};
    } else {
        // IPv6 is not translated; committing makes its replies "established".
        fresh.actions = tail;
        fresh.actions.insert(fresh.actions.begin(), ct_commit(zone));
    }
    out.rules.push_back(std::move(fresh));
}
DPO_GCC_WARNING_ON

void compile_subscriber(const SubscriberKey& k, View& v, KeyOutput& out) {
    const auto s = v.subscriber(k.address);
    if (!v.nat() || !s) return;
    const std::uint16_t zone = v.mapping().nat->zone;
    for (const auto& d : v.facts().ingress) {
        if (!d || !d->inner) continue;
        auto r = tracked_rule(*d, kChainSnat, kPrioSubscriber, Family::V4, tc::kCtNew,
                              "nat: new from subscriber " + k.address.str());
        r.match.src_ip = IpPrefix{k.address, 32};
        if (s->commit) {
            const auto& c = *s->commit;
            r.actions = {ct_commit(zone, tc::SnatRange{c.address, c.address, c.first, c.last}),
                         tc::Goto{d->base + kChainToOutside}};
        } else {
            // No ports left for this subscriber: drop, counted by reason.
            r.actions = {tc::Drop{s->refusal == nat::Refusal::PoolEmpty ? kDropPoolEmpty : kDropChunkLimit}};
        }
        out.rules.push_back(std::move(r));
    }
}

tc::Rule reinject_vlan_rule(const std::string& inject_dev, const std::string& uplink, int uplink_ifindex) {
    tc::Rule r;
    r.dev = inject_dev;
    r.chain = 0;
    r.prio = kPrioReinjectVlan;
    r.protocol = tc::kEth8021Q;
    r.actions = {tc::Redirect{uplink_ifindex, uplink, kReinjectIndex, true}};
    r.why = "re-injected first packets of VLAN interfaces -> the uplink's ingress, from chain 0";
    return r;
}

void compile_punt(View& v, KeyOutput& out) {
    const nat::NatView* nat = v.nat();
    if (!nat || !nat->punt_ifindex()) return;
    const std::string inject = nat->punt_dev();
    if (const IngressDevice* up = v.facts().device(IngressDev::Uplink))
        out.rules.push_back(reinject_vlan_rule(inject, up->dev, up->ifindex));
    const IngressDevice* vx = v.facts().device(IngressDev::Vxlan);
    if (vx && vx->inner) {
        // Decapsulated first packets go back into the VXLAN device's ingress, marked
        // with a tunnel key no wire packet carries, which one rule there takes to the
        // inner chain again.
        tc::TunnelSet mark;
        mark.vni = kReentryVni;
        mark.src = *IpAddress::parse("0.0.0.0");
        mark.dst = mark.src;
        mark.dst_port = kReentryPort;
        tc::Rule back;
        back.dev = inject;
        back.chain = 0;
        back.prio = kPrioReinjectVxlan;
        back.protocol = tc::kEthIpv4;
        back.actions = {mark, tc::Redirect{vx->ifindex, vx->dev, kReinjectVxlanIndex, true}};
        back.why = "re-injected first packets of EVPN / ACI interfaces -> the VXLAN device's ingress, marked";
        out.rules.push_back(std::move(back));
        tc::Rule reentry;
        reentry.dev = vx->dev;
        reentry.chain = kChainSharedIngress;
        reentry.prio = kPrioReentry;
        reentry.protocol = tc::kEthIpv4;
        reentry.match.enc_key_id = kReentryVni;
        reentry.match.enc_dst_port = kReentryPort;
        reentry.actions = {tc::Goto{vx->base + kChainInner}};
        reentry.why = "a first packet back from the daemon: inner again, the NAT rule now in place";
        out.rules.push_back(std::move(reentry));
    }
    // What arrives at the punt pair's other end is the daemon's socket's; the stack
    // there has no business with somebody else's frames.
    if (const std::string sink = nat->punt_sink_dev(); !sink.empty()) {
        tc::Rule r;
        r.dev = sink;
        r.chain = 0;
        r.prio = kPrioPuntSink;
        r.protocol = tc::kEthAll;
        r.actions = {tc::Drop{}};
        r.why = "punted frames: the daemon's socket has its copy";
        out.rules.push_back(std::move(r));
    }
}

}  // namespace dpo::compile
