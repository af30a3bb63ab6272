// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The plain tc representation between the compiler and netlink: a flower match
// (key and mask), an ordered action list and a place (chain, prio). Value types with
// ==, so desired and installed rules compare directly, and a content key that
// identifies a rule by what it matches, for reconciling.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/ip.hpp"

namespace dpo::tc {

// Ethertypes, host order (netlink carries them big-endian).
inline constexpr std::uint16_t kEthAll = 0x0003;
inline constexpr std::uint16_t kEthIpv4 = 0x0800;
inline constexpr std::uint16_t kEthIpv6 = 0x86dd;
inline constexpr std::uint16_t kEth8021Q = 0x8100;

// Connection-state bits of flower's ct_state (TCA_FLOWER_KEY_CT_FLAGS_*).
inline constexpr std::uint16_t kCtNew = 1 << 0;
inline constexpr std::uint16_t kCtEstablished = 1 << 1;
inline constexpr std::uint16_t kCtRelated = 1 << 2;
inline constexpr std::uint16_t kCtTracked = 1 << 3;
inline constexpr std::uint16_t kCtInvalid = 1 << 4;
inline constexpr std::uint16_t kCtReply = 1 << 5;

// A value under a mask; a field matches when (packet & mask) == value.
template <class T>
struct Masked {
    T value{};
    T mask{};
    auto operator<=>(const Masked&) const = default;
};

struct FlowerMatch {
    std::optional<Mac> dst_mac;
    std::optional<std::uint16_t> vlan_id;
    std::optional<std::uint16_t> vlan_ethtype;  // the ethertype inside the tag
    std::optional<IpPrefix> dst_ip;             // never zero-length: leave unset instead
    std::optional<IpPrefix> src_ip;
    std::optional<Masked<std::uint8_t>> ip_ttl;  // TTL or hop limit
    std::optional<Masked<std::uint16_t>> ct_state;  // kCt* bits
    std::optional<std::uint16_t> ct_zone;
    std::optional<std::uint32_t> enc_key_id;   // VNI of a decapsulated packet
    std::optional<IpAddress> enc_dst_ip;       // its outer destination: the local VTEP
    std::optional<std::uint16_t> enc_dst_port;

    auto operator<=>(const FlowerMatch&) const = default;
};

// A rule's identity for reconciling: where it sits and what it matches. Two rules
// with the same identity are the same rule, possibly with different actions.
// Compared and hashed as values: reconciling 100k rules builds no strings.
struct Identity {
    std::string dev;
    std::uint32_t chain = 0;
    std::uint16_t prio = 0;
    std::uint16_t protocol = 0;
    FlowerMatch match;

    auto operator<=>(const Identity&) const = default;
};

// Hash and equality of identities that also take a Rule for its identity, so that a
// table keyed by Identity can be searched with a Rule without copying its identity out
// (is_transparent: C++20 heterogeneous lookup).
struct IdentityHash {
    using is_transparent = void;
    std::size_t operator()(const Identity& i) const noexcept;
    std::size_t operator()(const struct Rule& r) const noexcept;
};
struct IdentityEq {
    using is_transparent = void;
    bool operator()(const Identity& a, const Identity& b) const noexcept { return a == b; }
    bool operator()(const Identity& a, const struct Rule& b) const noexcept;
    bool operator()(const struct Rule& a, const Identity& b) const noexcept { return (*this)(b, a); }
};

// Actions, in the kernel's words.
struct Goto {       // gact goto chain N
    std::uint32_t chain = 0;
    bool operator==(const Goto&) const = default;
};
struct Pass {       // gact ok: stop here, hand the packet to the kernel as it is now
    bool operator==(const Pass&) const = default;
};
// gact drop. A non-zero `index` shares the action between rules, so its
// statistics count every drop of one reason.
struct Drop {
    std::uint32_t index = 0;
    bool operator==(const Drop&) const = default;
};
struct VlanPop {
    bool operator==(const VlanPop&) const = default;
};
struct VlanPush {
    std::uint16_t vid = 0;
    bool operator==(const VlanPush&) const = default;
};
// pedit: the header rewrites of routing. Each set field is one modify-header action
// for mlx5; identical lists are de-duplicated by the driver.
struct Rewrite {
    std::optional<Mac> eth_dst;
    std::optional<Mac> eth_src;
    bool dec_ttl = false;       // IPv4 TTL - 1 (pedit add 0xff), one rule for every TTL
    bool dec_hoplimit = false;  // IPv6 hop limit - 1
    bool operator==(const Rewrite&) const = default;
};
struct CsumIp4h {   // csum iph: the IPv4 header checksum after a TTL change
    bool operator==(const CsumIp4h&) const = default;
};
// mirred egress redirect: out of `dev`. The `index` makes the action shared between
// rules, so its statistics count everything sent through one egress interface (the
// flow chart's "count"). Always give one: with 0 the kernel picks an index, and the
// rule never compares equal to its own dump.
// With `ingress`, mirred ingress redirect: the packet is received again on `dev` and
// runs its tc ingress from chain 0 (the punt path's way back to the uplink).
struct Redirect {
    int ifindex = 0;
    std::string dev;  // for people: netlink carries only the ifindex, so == ignores it
    std::uint32_t index = 0;
    bool ingress = false;
    bool operator==(const Redirect& o) const {
        return ifindex == o.ifindex && index == o.index && ingress == o.ingress;
    }
};

// conntrack in a zone. Without commit: look the packet up (and, with `nat`, apply
// the connection's translation). With commit and `snat`: a new connection, its
// source translated into the range. `clear` forgets the packet's conntrack state.
struct SnatRange {
    IpAddress min, max;
    std::uint16_t port_min = 0, port_max = 0;
    bool operator==(const SnatRange&) const = default;
};
struct Ct {
    std::uint16_t zone = 0;
    bool commit = false;
    bool nat = false;
    bool clear = false;
    std::optional<SnatRange> snat;
    bool operator==(const Ct&) const = default;
};
// tunnel_key set: the VXLAN metadata for an encapsulating redirect.
struct TunnelSet {
    std::uint32_t vni = 0;
    IpAddress src, dst;
    std::uint16_t dst_port = 4789;
    bool csum = false;  // outer UDP checksum
    bool operator==(const TunnelSet&) const = default;
};
struct TunnelUnset {
    bool operator==(const TunnelUnset&) const = default;
};

// police: a packet-rate token bucket; what conforms goes on (pipe), what exceeds is
// dropped and counted in the action's statistics. It bounds the first packets a punt
// rule sends to the daemon. Not shared: each rule has its own bucket, so a changed
// rate is a changed rule and nothing else (a shared action keeps its parameters when a
// rule binds to it again).
struct Police {
    std::uint64_t packets_per_second = 0;
    std::uint64_t burst = 0;  // packets
    bool operator==(const Police&) const = default;
};

using Action =
    std::variant<Goto, Pass, Drop, VlanPop, VlanPush, Rewrite, CsumIp4h, Redirect, Ct, TunnelSet, TunnelUnset, Police>;

enum class Hook : std::uint8_t { Ingress };

struct Rule {
    std::string dev;        // the netdev whose clsact ingress holds it
    std::uint32_t chain = 0;
    std::uint16_t prio = 0;
    std::uint16_t protocol = kEthAll;
    FlowerMatch match;
    std::vector<Action> actions;
    std::string why;        // what the rule is for, in the flow chart's words (not compared)

    Identity identity() const { return {dev, chain, prio, protocol, match}; }
    // The identity as text, for logs and messages.
    std::string key() const;

    bool operator==(const Rule& o) const {
        return dev == o.dev && chain == o.chain && prio == o.prio && protocol == o.protocol && match == o.match &&
               actions == o.actions;
    }
};

// What the kernel's dump says of one filter on a device we manage.
struct Installed {
    Rule rule;                    // as decoded; meaningful when `decoded`
    std::uint32_t handle = 0;
    bool owned = false;           // carries our cookie: ours to change or delete
    bool decoded = false;         // every key and action understood
    bool in_hw = false;           // TCA_CLS_FLAGS_IN_HW
    bool not_in_hw = false;       // TCA_CLS_FLAGS_NOT_IN_HW
    std::uint32_t in_hw_count = 0;
    std::uint64_t packets = 0, bytes = 0;  // what the rule took (its first action's counters)
};

// A rule with this identity and no actions: where a rule sits (a delete needs no more)
// and how messages name it (key()).
Rule placed_at(const Identity& id);

// The rule as a `tc filter add` command a person can read and run.
std::string to_tc_command(const Rule& r);
// One action in tc's words (`mirred egress redirect dev p0 index 3640655972`).
std::string action_text(const Action& a);

}  // namespace dpo::tc

#ifdef __GLIBCXX__
// libstdc++ keeps a node's hash code only for hashers it does not call fast: an
// identity's hash reads a hundred bytes, and tables of a third of a million identities
// rehash as they grow and compare on lookup. Keeping the code saves both.
template <>
struct std::__is_fast_hash<dpo::tc::IdentityHash> : std::false_type {};
#endif
