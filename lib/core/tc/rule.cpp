// SPDX-License-Identifier: GPL-2.0-or-later
#include "rule.hpp"

#include <cstdio>
#include <cstring>

namespace dpo::tc {

namespace {

std::string protocol_name(std::uint16_t p) {
    switch (p) {
        case kEthAll: return "all";
        case kEthIpv4: return "ip";
        case kEthIpv6: return "ipv6";
        case kEth8021Q: return "802.1Q";
        default: {
            char buf[8];
            std::snprintf(buf, sizeof buf, "0x%04x", p);
            return buf;
        }
    }
}

std::string hex8(std::uint8_t v) {
    char buf[5];
    std::snprintf(buf, sizeof buf, "0x%02x", v);
    return buf;
}

std::string match_text(const FlowerMatch& m) {
    std::string s;
    if (m.dst_mac) s += " dst_mac " + mac_str(*m.dst_mac);
    if (m.vlan_id) s += " vlan_id " + std::to_string(*m.vlan_id);
    if (m.vlan_ethtype) s += " vlan_ethtype " + protocol_name(*m.vlan_ethtype);
    if (m.dst_ip) s += " dst_ip " + m.dst_ip->str();
    if (m.src_ip) s += " src_ip " + m.src_ip->str();
    if (m.ip_ttl) s += " ip_ttl " + hex8(m.ip_ttl->value) + "/" + hex8(m.ip_ttl->mask);
    if (m.ct_zone) s += " ct_zone " + std::to_string(*m.ct_zone);
    if (m.ct_state) {
        s += " ct_state ";
        static const std::pair<std::uint16_t, const char*> kBits[] = {{kCtTracked, "trk"}, {kCtNew, "new"},
                                                                     {kCtEstablished, "est"}, {kCtRelated, "rel"},
                                                                     {kCtInvalid, "inv"}, {kCtReply, "rpl"}};
        for (const auto& [bit, name] : kBits)
            if (m.ct_state->mask & bit) s += std::string(m.ct_state->value & bit ? "+" : "-") + name;
    }
    if (m.enc_dst_ip) s += " enc_dst_ip " + m.enc_dst_ip->str();
    if (m.enc_key_id) s += " enc_key_id " + std::to_string(*m.enc_key_id);
    if (m.enc_dst_port) s += " enc_dst_port " + std::to_string(*m.enc_dst_port);
    return s;
}

struct ActionText {
    std::string operator()(const Goto& g) const { return "gact goto chain " + std::to_string(g.chain); }
    std::string operator()(const Pass&) const { return "gact ok"; }
    std::string operator()(const Drop& d) const {
        return d.index ? "gact drop index " + std::to_string(d.index) : "gact drop";
    }
    std::string operator()(const VlanPop&) const { return "vlan pop pipe"; }
    std::string operator()(const VlanPush& p) const { return "vlan push id " + std::to_string(p.vid) + " pipe"; }
    std::string operator()(const Rewrite& r) const {
        std::string s = "pedit ex";
        if (r.eth_dst) s += " munge eth dst set " + mac_str(*r.eth_dst);
        if (r.eth_src) s += " munge eth src set " + mac_str(*r.eth_src);
        if (r.dec_ttl) s += " munge ip ttl add 255";
        if (r.dec_hoplimit) s += " munge ip6 hoplimit add 255";
        return s + " pipe";
    }
    std::string operator()(const CsumIp4h&) const { return "csum iph pipe"; }
    std::string operator()(const Police& p) const {
        return "police pkts_rate " + std::to_string(p.packets_per_second) + " pkts_burst " + std::to_string(p.burst) +
               " conform-exceed drop/pipe";
    }
    std::string operator()(const Ct& c) const {
        if (c.clear) return "ct clear pipe";
        std::string s = "ct";
        if (c.commit) s += " commit";
        s += " zone " + std::to_string(c.zone);
        if (c.nat) s += " nat";
        if (c.snat)
            s += " src addr " + c.snat->min.str() + "-" + c.snat->max.str() + " port " +
                 std::to_string(c.snat->port_min) + "-" + std::to_string(c.snat->port_max);
        return s + " pipe";
    }
    std::string operator()(const TunnelSet& t) const {
        return "tunnel_key set src_ip " + t.src.str() + " dst_ip " + t.dst.str() + " id " + std::to_string(t.vni) +
               " dst_port " + std::to_string(t.dst_port) + (t.csum ? " csum" : " nocsum") + " pipe";
    }
    std::string operator()(const TunnelUnset&) const { return "tunnel_key unset pipe"; }
    std::string operator()(const Redirect& r) const {
        std::string s = std::string(r.ingress ? "mirred ingress" : "mirred egress") + " redirect dev " + r.dev;
        if (r.index) s += " index " + std::to_string(r.index);
        return s;
    }
};

}  // namespace

namespace {

// A fast, well-mixed hash of the identity's fields, eight bytes at a time: rules are
// looked up by identity several times on every change.
struct Mixer {
    std::uint64_t h = 0x243f6a8885a308d3ULL;
    void add(std::uint64_t v) {
        h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
    }
    void bytes(const std::uint8_t* p, std::size_t n) {
        while (n >= 8) {
            std::uint64_t w;
            std::memcpy(&w, p, 8);
            add(w);
            p += 8;
            n -= 8;
        }
        std::uint64_t w = n;
        std::memcpy(&w, p, n);
        add(w ^ (static_cast<std::uint64_t>(n) << 56));
    }
    void ip(const IpAddress& a) {
        add(static_cast<std::uint64_t>(a.family));
        bytes(a.bytes.data(), a.size());
    }
};

std::size_t identity_hash(const std::string& dev, std::uint32_t chain, std::uint16_t prio, std::uint16_t protocol,
                          const FlowerMatch& m) noexcept {
    Mixer x;
    x.bytes(reinterpret_cast<const std::uint8_t*>(dev.data()), dev.size());
    x.add((static_cast<std::uint64_t>(chain) << 32) | (static_cast<std::uint64_t>(prio) << 16) | protocol);
    if (m.dst_mac) x.bytes(m.dst_mac->data(), 6);
    x.add((static_cast<std::uint64_t>(m.vlan_id.value_or(0xffff)) << 16) | m.vlan_ethtype.value_or(0));
    for (const auto* p : {&m.dst_ip, &m.src_ip}) {
        if (!*p) {
            x.add(0xfe);
            continue;
        }
        x.ip((*p)->address);
        x.add((*p)->length);
    }
    if (m.ip_ttl) x.add(0x100u | m.ip_ttl->value | (static_cast<std::uint64_t>(m.ip_ttl->mask) << 16));
    if (m.ct_state) x.add(0x10000u | m.ct_state->value | (static_cast<std::uint64_t>(m.ct_state->mask) << 20));
    x.add((static_cast<std::uint64_t>(m.ct_zone.value_or(0)) << 48) |
          (static_cast<std::uint64_t>(m.enc_dst_port.value_or(0)) << 32) | m.enc_key_id.value_or(0));
    if (m.enc_dst_ip) x.ip(*m.enc_dst_ip);
    return static_cast<std::size_t>(x.h);
}

}  // namespace

std::size_t IdentityHash::operator()(const Identity& i) const noexcept {
    return identity_hash(i.dev, i.chain, i.prio, i.protocol, i.match);
}

std::size_t IdentityHash::operator()(const Rule& r) const noexcept {
    return identity_hash(r.dev, r.chain, r.prio, r.protocol, r.match);
}

bool IdentityEq::operator()(const Identity& a, const Rule& b) const noexcept {
    return a.chain == b.chain && a.prio == b.prio && a.protocol == b.protocol && a.dev == b.dev && a.match == b.match;
}

std::string Rule::key() const {
    return dev + " chain " + std::to_string(chain) + " prio " + std::to_string(prio) + " protocol " +
           protocol_name(protocol) + match_text(match);
}

Rule placed_at(const Identity& id) {
    Rule r;
    r.dev = id.dev;
    r.chain = id.chain;
    r.prio = id.prio;
    r.protocol = id.protocol;
    r.match = id.match;
    return r;
}

std::string action_text(const Action& a) { return std::visit(ActionText{}, a); }

std::string to_tc_command(const Rule& r) {
    std::string s = "tc filter add dev " + r.dev + " ingress chain " + std::to_string(r.chain) + " prio " +
                    std::to_string(r.prio) + " protocol " + protocol_name(r.protocol) + " flower" + match_text(r.match);
    for (const auto& a : r.actions) s += " action " + std::visit(ActionText{}, a);
    return s;
}

}  // namespace dpo::tc
