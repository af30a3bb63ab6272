// SPDX-License-Identifier: GPL-2.0-or-later
#include "tc_codec.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/gen_stats.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_csum.h>
#include <linux/tc_act/tc_ct.h>
#include <linux/tc_act/tc_gact.h>
#include <linux/tc_act/tc_mirred.h>
#include <linux/tc_act/tc_pedit.h>
#include <linux/tc_act/tc_tunnel_key.h>
#include <linux/tc_act/tc_vlan.h>

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace dpo::kernel {

namespace {

constexpr std::uint32_t kIngressParent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);
// Shared action indices we assign live at and above this (compile/pipeline.hpp);
// the kernel numbers unshared actions from 1 upward.
constexpr std::uint32_t kSharedIndexFloor = 0xd9000000;

// The kernel keeps a police action's packet burst as the time its rate takes to pass
// that many packets, in psched ticks of 64 ns (PSCHED_SHIFT; iproute2's
// tc_calc_xmittime computes the same), and dumps it so.
std::uint64_t police_burst_ticks(const tc::Police& p) {
    return p.packets_per_second ? p.burst * 1000000000ULL / p.packets_per_second / 64 : 0;
}
std::uint64_t police_burst_packets(std::uint64_t packets_per_second, std::uint64_t ticks) {
    return (ticks * 64 * packets_per_second + 500000000ULL) / 1000000000ULL;  // rounded
}

nlmsghdr* put_tc_header(void* buf, std::uint16_t type, std::uint16_t flags, int ifindex, std::uint32_t parent,
                        std::uint32_t handle, std::uint32_t info) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | flags);
    auto* t = static_cast<tcmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(tcmsg)));
    t->tcm_family = AF_UNSPEC;
    t->tcm_ifindex = ifindex;
    t->tcm_parent = parent;
    t->tcm_handle = handle;
    t->tcm_info = info;
    return nlh;
}

std::uint32_t tcm_info(std::uint16_t prio, std::uint16_t protocol) {
    return TC_H_MAKE(static_cast<std::uint32_t>(prio) << 16, htons(protocol));
}

// One pedit key: the 32-bit word at `off` of header `htype`; `keep` bytes are 0xff
// where the packet byte stays (the kernel ANDs with it), `val` holds the new bytes.
struct PeditKey {
    std::uint16_t htype = 0;
    std::uint16_t cmd = 0;
    std::uint32_t off = 0;
    std::array<std::uint8_t, 4> keep{};
    std::array<std::uint8_t, 4> val{};
};

std::vector<PeditKey> pedit_keys(const tc::Rewrite& rw) {
    std::vector<PeditKey> keys;
    // Ethernet: bytes 0..5 dst, 6..11 src, written whole words at a time.
    std::array<int, 12> eth{};
    std::array<std::uint8_t, 12> bytes{};
    eth.fill(0);
    if (rw.eth_dst)
        for (int i = 0; i < 6; ++i) eth[i] = 1, bytes[i] = (*rw.eth_dst)[i];
    if (rw.eth_src)
        for (int i = 0; i < 6; ++i) eth[6 + i] = 1, bytes[6 + i] = (*rw.eth_src)[i];
    for (unsigned word = 0; word < 3; ++word) {
        PeditKey k{TCA_PEDIT_KEY_EX_HDR_TYPE_ETH, TCA_PEDIT_KEY_EX_CMD_SET, word * 4, {}, {}};
        bool any = false;
        for (unsigned j = 0; j < 4; ++j) {
            const unsigned b = word * 4 + j;
            k.keep[j] = eth[b] ? 0x00 : 0xff;
            k.val[j] = eth[b] ? bytes[b] : 0;
            any = any || eth[b];
        }
        if (any) keys.push_back(k);
    }
    // TTL is byte 0 of the word at offset 8 of IPv4; adding 0xff and keeping only
    // that byte is a decrement that never borrows into the protocol byte.
    if (rw.dec_ttl)
        keys.push_back({TCA_PEDIT_KEY_EX_HDR_TYPE_IP4, TCA_PEDIT_KEY_EX_CMD_ADD, 8, {0x00, 0xff, 0xff, 0xff},
                        {0xff, 0, 0, 0}});
    // Hop limit is byte 3 of the word at offset 4 of IPv6.
    if (rw.dec_hoplimit)
        keys.push_back({TCA_PEDIT_KEY_EX_HDR_TYPE_IP6, TCA_PEDIT_KEY_EX_CMD_ADD, 4, {0xff, 0xff, 0xff, 0x00},
                        {0, 0, 0, 0xff}});
    return keys;
}

void put_pedit(nlmsghdr* nlh, const tc::Rewrite& rw) {
    const auto keys = pedit_keys(rw);
    std::vector<std::uint8_t> parms(sizeof(tc_pedit_sel) + keys.size() * sizeof(tc_pedit_key), 0);
    tc_pedit_sel sel{};
    sel.action = TC_ACT_PIPE;
    sel.nkeys = static_cast<unsigned char>(keys.size());
    std::memcpy(parms.data(), &sel, sizeof sel);
    for (std::size_t i = 0; i < keys.size(); ++i) {
        tc_pedit_key k{};
        std::memcpy(&k.mask, keys[i].keep.data(), 4);
        std::memcpy(&k.val, keys[i].val.data(), 4);
        k.off = keys[i].off;
        std::memcpy(parms.data() + sizeof(tc_pedit_sel) + i * sizeof(tc_pedit_key), &k, sizeof k);
    }
    mnl_attr_put(nlh, TCA_PEDIT_PARMS_EX, parms.size(), parms.data());
    nlattr* ex = mnl_attr_nest_start(nlh, TCA_PEDIT_KEYS_EX);
    for (const auto& k : keys) {
        nlattr* one = mnl_attr_nest_start(nlh, TCA_PEDIT_KEY_EX);
        mnl_attr_put_u16(nlh, TCA_PEDIT_KEY_EX_HTYPE, k.htype);
        mnl_attr_put_u16(nlh, TCA_PEDIT_KEY_EX_CMD, k.cmd);
        mnl_attr_nest_end(nlh, one);
    }
    mnl_attr_nest_end(nlh, ex);
}

struct ActionEncoder {
    nlmsghdr* nlh;

    const char* kind(const tc::Action& a) const {
        switch (a.index()) {
            case 0: case 1: case 2: return "gact";
            case 3: case 4: return "vlan";
            case 5: return "pedit";
            case 6: return "csum";
            case 7: return "mirred";
            case 8: return "ct";
            case 9: case 10: return "tunnel_key";
            default: return "police";
        }
    }
    void gact(int action, std::uint32_t index = 0) const {
        tc_gact p{};
        p.action = action;
        p.index = index;
        mnl_attr_put(nlh, TCA_GACT_PARMS, sizeof p, &p);
    }
    void operator()(const tc::Goto& g) const { gact(static_cast<int>(TC_ACT_GOTO_CHAIN | g.chain)); }
    void operator()(const tc::Pass&) const { gact(TC_ACT_OK); }
    void operator()(const tc::Drop& d) const { gact(TC_ACT_SHOT, d.index); }
    void vlan(int v_action) const {
        tc_vlan p{};
        p.action = TC_ACT_PIPE;
        p.v_action = v_action;
        mnl_attr_put(nlh, TCA_VLAN_PARMS, sizeof p, &p);
    }
    void operator()(const tc::VlanPop&) const { vlan(TCA_VLAN_ACT_POP); }
    void operator()(const tc::VlanPush& v) const {
        vlan(TCA_VLAN_ACT_PUSH);
        mnl_attr_put_u16(nlh, TCA_VLAN_PUSH_VLAN_ID, v.vid);
        mnl_attr_put_u16(nlh, TCA_VLAN_PUSH_VLAN_PROTOCOL, htons(ETH_P_8021Q));
    }
    void operator()(const tc::Rewrite& rw) const { put_pedit(nlh, rw); }
    void operator()(const tc::CsumIp4h&) const {
        tc_csum p{};
        p.action = TC_ACT_PIPE;
        p.update_flags = TCA_CSUM_UPDATE_FLAG_IPV4HDR;
        mnl_attr_put(nlh, TCA_CSUM_PARMS, sizeof p, &p);
    }
    void operator()(const tc::Ct& c) const {
        tc_ct p{};
        p.action = TC_ACT_PIPE;
        mnl_attr_put(nlh, TCA_CT_PARMS, sizeof p, &p);
        std::uint16_t flags = 0;
        if (c.clear) flags |= TCA_CT_ACT_CLEAR;
        if (c.commit) flags |= TCA_CT_ACT_COMMIT;
        if (c.nat || c.snat) flags |= TCA_CT_ACT_NAT;
        if (c.snat) flags |= TCA_CT_ACT_NAT_SRC;
        mnl_attr_put_u16(nlh, TCA_CT_ACTION, flags);
        if (c.clear) return;
        mnl_attr_put_u16(nlh, TCA_CT_ZONE, c.zone);
        if (c.snat) {
            mnl_attr_put(nlh, TCA_CT_NAT_IPV4_MIN, 4, c.snat->min.bytes.data());
            mnl_attr_put(nlh, TCA_CT_NAT_IPV4_MAX, 4, c.snat->max.bytes.data());
            mnl_attr_put_u16(nlh, TCA_CT_NAT_PORT_MIN, htons(c.snat->port_min));
            mnl_attr_put_u16(nlh, TCA_CT_NAT_PORT_MAX, htons(c.snat->port_max));
        }
    }
    void tunnel_key(int t_action) const {
        tc_tunnel_key p{};
        p.action = TC_ACT_PIPE;
        p.t_action = t_action;
        mnl_attr_put(nlh, TCA_TUNNEL_KEY_PARMS, sizeof p, &p);
    }
    void operator()(const tc::TunnelSet& t) const {
        tunnel_key(TCA_TUNNEL_KEY_ACT_SET);
        const bool v4 = t.src.family == Family::V4;
        mnl_attr_put(nlh, v4 ? TCA_TUNNEL_KEY_ENC_IPV4_SRC : TCA_TUNNEL_KEY_ENC_IPV6_SRC, t.src.size(), t.src.bytes.data());
        mnl_attr_put(nlh, v4 ? TCA_TUNNEL_KEY_ENC_IPV4_DST : TCA_TUNNEL_KEY_ENC_IPV6_DST, t.dst.size(), t.dst.bytes.data());
        mnl_attr_put_u32(nlh, TCA_TUNNEL_KEY_ENC_KEY_ID, htonl(t.vni));
        mnl_attr_put_u16(nlh, TCA_TUNNEL_KEY_ENC_DST_PORT, htons(t.dst_port));
        mnl_attr_put_u8(nlh, TCA_TUNNEL_KEY_NO_CSUM, t.csum ? 0 : 1);
    }
    void operator()(const tc::TunnelUnset&) const { tunnel_key(TCA_TUNNEL_KEY_ACT_RELEASE); }
    void operator()(const tc::Police& p) const {
        tc_police parms{};
        parms.action = TC_ACT_SHOT;  // exceeding: dropped (mlx5 offloads only drop here)
        mnl_attr_put(nlh, TCA_POLICE_TBF, sizeof parms, &parms);
        mnl_attr_put_u32(nlh, TCA_POLICE_RESULT, TC_ACT_PIPE);  // conforming: on to the next action
        mnl_attr_put_u64(nlh, TCA_POLICE_PKTRATE64, p.packets_per_second);
        mnl_attr_put_u64(nlh, TCA_POLICE_PKTBURST64, police_burst_ticks(p));
    }
    void operator()(const tc::Redirect& r) const {
        tc_mirred p{};
        p.index = r.index;
        p.action = TC_ACT_STOLEN;
        p.eaction = r.ingress ? TCA_INGRESS_REDIR : TCA_EGRESS_REDIR;
        p.ifindex = static_cast<__u32>(r.ifindex);
        mnl_attr_put(nlh, TCA_MIRRED_PARMS, sizeof p, &p);
    }
};

// One action at position `order` of an action list, with our cookie if `owner`.
void put_action(nlmsghdr* nlh, std::size_t order, const tc::Action& a, bool owner) {
    ActionEncoder enc{nlh};
    nlattr* one = mnl_attr_nest_start(nlh, static_cast<std::uint16_t>(order));
    mnl_attr_put_strz(nlh, TCA_ACT_KIND, enc.kind(a));
    nlattr* aopts = mnl_attr_nest_start(nlh, TCA_ACT_OPTIONS);
    std::visit(enc, a);
    mnl_attr_nest_end(nlh, aopts);
    if (owner) mnl_attr_put(nlh, TCA_ACT_COOKIE, kOwnerCookie.size(), kOwnerCookie.data());
    mnl_attr_nest_end(nlh, one);
}

void put_prefix(nlmsghdr* nlh, const IpPrefix& p, int v4_key, int v4_mask, int v6_key, int v6_mask) {
    const bool v4 = p.address.family == Family::V4;
    const std::size_t n = p.address.size();
    std::array<std::uint8_t, 16> mask{};
    for (unsigned bit = 0; bit < p.length; ++bit) mask[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
    mnl_attr_put(nlh, static_cast<std::uint16_t>(v4 ? v4_key : v6_key), n, p.address.bytes.data());
    mnl_attr_put(nlh, static_cast<std::uint16_t>(v4 ? v4_mask : v6_mask), n, mask.data());
}

}  // namespace

nlmsghdr* put_new_filter(void* buf, const tc::Rule& r, int ifindex, std::uint32_t handle, FilterOp op,
                         std::uint32_t cls_flags) {
    const std::uint16_t flags = op == FilterOp::Replace ? NLM_F_REPLACE : (NLM_F_CREATE | NLM_F_EXCL);
    nlmsghdr* nlh = put_tc_header(buf, RTM_NEWTFILTER, static_cast<std::uint16_t>(flags | NLM_F_ACK | NLM_F_ECHO), ifindex,
                                  kIngressParent, handle, tcm_info(r.prio, r.protocol));
    mnl_attr_put_strz(nlh, TCA_KIND, "flower");
    mnl_attr_put_u32(nlh, TCA_CHAIN, r.chain);
    nlattr* opts = mnl_attr_nest_start(nlh, TCA_OPTIONS);
    // No skip_sw, no skip_hw: in hardware where the driver can, and always in
    // software, where a hardware miss resumes.
    mnl_attr_put_u32(nlh, TCA_FLOWER_FLAGS, cls_flags);
    if (r.protocol != tc::kEthAll) mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_ETH_TYPE, htons(r.protocol));
    const auto& m = r.match;
    if (m.dst_mac) {
        static const Mac kAllOnes = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        mnl_attr_put(nlh, TCA_FLOWER_KEY_ETH_DST, 6, m.dst_mac->data());
        mnl_attr_put(nlh, TCA_FLOWER_KEY_ETH_DST_MASK, 6, kAllOnes.data());
    }
    if (m.vlan_id) mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_VLAN_ID, *m.vlan_id);
    if (m.vlan_ethtype) mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_VLAN_ETH_TYPE, htons(*m.vlan_ethtype));
    if (m.dst_ip)
        put_prefix(nlh, *m.dst_ip, TCA_FLOWER_KEY_IPV4_DST, TCA_FLOWER_KEY_IPV4_DST_MASK, TCA_FLOWER_KEY_IPV6_DST,
                   TCA_FLOWER_KEY_IPV6_DST_MASK);
    if (m.src_ip)
        put_prefix(nlh, *m.src_ip, TCA_FLOWER_KEY_IPV4_SRC, TCA_FLOWER_KEY_IPV4_SRC_MASK, TCA_FLOWER_KEY_IPV6_SRC,
                   TCA_FLOWER_KEY_IPV6_SRC_MASK);
    if (m.ip_ttl) {
        mnl_attr_put_u8(nlh, TCA_FLOWER_KEY_IP_TTL, m.ip_ttl->value);
        mnl_attr_put_u8(nlh, TCA_FLOWER_KEY_IP_TTL_MASK, m.ip_ttl->mask);
    }
    if (m.ct_state) {
        mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_CT_STATE, m.ct_state->value);
        mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_CT_STATE_MASK, m.ct_state->mask);
    }
    if (m.ct_zone) {
        mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_CT_ZONE, *m.ct_zone);
        mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_CT_ZONE_MASK, 0xffff);
    }
    if (m.enc_key_id) mnl_attr_put_u32(nlh, TCA_FLOWER_KEY_ENC_KEY_ID, htonl(*m.enc_key_id));
    if (m.enc_dst_ip)
        put_prefix(nlh, IpPrefix{*m.enc_dst_ip, static_cast<std::uint8_t>(m.enc_dst_ip->size() * 8)},
                   TCA_FLOWER_KEY_ENC_IPV4_DST, TCA_FLOWER_KEY_ENC_IPV4_DST_MASK, TCA_FLOWER_KEY_ENC_IPV6_DST,
                   TCA_FLOWER_KEY_ENC_IPV6_DST_MASK);
    if (m.enc_dst_port) {
        mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_ENC_UDP_DST_PORT, htons(*m.enc_dst_port));
        mnl_attr_put_u16(nlh, TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK, 0xffff);
    }
    nlattr* acts = mnl_attr_nest_start(nlh, TCA_FLOWER_ACT);
    for (std::size_t i = 0; i < r.actions.size(); ++i) put_action(nlh, i + 1, r.actions[i], i == 0);
    mnl_attr_nest_end(nlh, acts);
    mnl_attr_nest_end(nlh, opts);
    return nlh;
}

nlmsghdr* put_replace_action(void* buf, const tc::Action& a) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWACTION;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_REPLACE | NLM_F_ACK | NLM_F_ECHO;
    auto* t = static_cast<tcamsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(tcamsg)));
    t->tca_family = AF_UNSPEC;
    nlattr* tab = mnl_attr_nest_start(nlh, TCA_ACT_TAB);
    // The cookie counts only on a rule's first action; a shared action that is first
    // somewhere (the punt mirred) must keep it.
    put_action(nlh, 1, a, true);
    mnl_attr_nest_end(nlh, tab);
    return nlh;
}

nlmsghdr* put_del_filter(void* buf, const FilterRef& f) {
    nlmsghdr* nlh = put_tc_header(buf, RTM_DELTFILTER, NLM_F_ACK | NLM_F_ECHO, f.ifindex, kIngressParent, f.handle,
                                  tcm_info(f.prio, f.protocol));
    mnl_attr_put_strz(nlh, TCA_KIND, "flower");
    mnl_attr_put_u32(nlh, TCA_CHAIN, f.chain);
    return nlh;
}

nlmsghdr* put_dump_filters(void* buf, int ifindex, bool terse) {
    // Without TCA_CHAIN the kernel dumps every chain of the block.
    nlmsghdr* nlh = put_tc_header(buf, RTM_GETTFILTER, NLM_F_DUMP, ifindex, kIngressParent, 0, 0);
    if (terse) {
        const nla_bitfield32 flags{TCA_DUMP_FLAGS_TERSE, TCA_DUMP_FLAGS_TERSE};
        mnl_attr_put(nlh, TCA_DUMP_FLAGS, sizeof flags, &flags);
    }
    return nlh;
}

nlmsghdr* put_new_clsact(void* buf, int ifindex) {
    nlmsghdr* nlh = put_tc_header(buf, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, ifindex, TC_H_CLSACT,
                                  TC_H_MAKE(TC_H_CLSACT, 0), 0);
    mnl_attr_put_strz(nlh, TCA_KIND, "clsact");
    return nlh;
}

// ---------------------------------------------------------------------------
// Decoding

namespace {

// What an attribute must be before it is read as a value (mnl_attr_validate2): its
// netlink type and, for a binary one, its exact length (0: any; a struct parameter is
// checked for its minimum length where it is read, see payload()). An attribute the
// decoder reads only for its presence, or not at all, needs no rule.
struct Rule {
    int type;
    mnl_attr_data_type as;
    std::size_t len = 0;
};
using Policy = std::span<const Rule>;

// The first attribute of a message that is not what its rule says; empty while all are.
// One is enough to skip the message: the kernel never sends one, so whoever did cannot
// be trusted for the rest of it either.
struct Bad {
    std::string what;
    explicit operator bool() const { return !what.empty(); }
};

template <std::size_t N>
struct Attrs {
    std::array<const nlattr*, N + 1> at{};
    bool unknown = false;  // an attribute beyond N
    const char* set = "";  // the attribute set, for the message
    Policy policy;
    Bad* bad = nullptr;

    const nlattr* operator[](int type) const { return at[static_cast<std::size_t>(type)]; }
};

template <std::size_t N>
int fill_cb(const nlattr* a, void* data) {
    auto* t = static_cast<Attrs<N>*>(data);
    const auto type = mnl_attr_get_type(a);
    if (type > N) {
        t->unknown = true;
        return MNL_CB_OK;
    }
    for (const Rule& r : t->policy) {
        if (r.type != type) continue;
        const int v = r.len ? mnl_attr_validate2(a, r.as, r.len) : mnl_attr_validate(a, r.as);
        if (v < 0) {
            if (t->bad && !*t->bad)
                t->bad->what = std::string(t->set) + " attribute " + std::to_string(type) + " of " +
                               std::to_string(mnl_attr_get_payload_len(a)) + " bytes is not a valid " +
                               (r.as == MNL_TYPE_NUL_STRING ? std::string("NUL-terminated string")
                                : r.as == MNL_TYPE_NESTED   ? std::string("nest")
                                : r.as == MNL_TYPE_U8       ? std::string("u8")
                                : r.as == MNL_TYPE_U16      ? std::string("u16")
                                : r.as == MNL_TYPE_U32      ? std::string("u32")
                                                            : std::to_string(r.len) + "-byte value");
            return MNL_CB_ERROR;
        }
        break;
    }
    t->at[type] = a;
    return MNL_CB_OK;
}

// The attributes of `a`'s nest, each checked against `policy`; on the first that fails
// `bad` says which and the rest are not read.
template <std::size_t N>
Attrs<N> nested(const nlattr* a, const char* set, Policy policy, Bad& bad) {
    Attrs<N> t;
    t.set = set;
    t.policy = policy;
    t.bad = &bad;
    if (mnl_attr_parse_nested(a, fill_cb<N>, &t) < 0 && !bad) bad.what = std::string(set) + ": a truncated attribute";
    return t;
}

// TCA_KIND is read as a C string: without its NUL it would be read past its end.
constexpr Rule kTcaPolicy[] = {{TCA_KIND, MNL_TYPE_NUL_STRING}, {TCA_CHAIN, MNL_TYPE_U32}, {TCA_OPTIONS, MNL_TYPE_NESTED}};

// The top-level attributes of a tc message.
Attrs<TCA_MAX> top_attrs(const nlmsghdr* nlh, Bad& bad) {
    Attrs<TCA_MAX> t;
    t.set = "TCA";
    t.policy = kTcaPolicy;
    t.bad = &bad;
    if (mnl_attr_parse(nlh, sizeof(tcmsg), fill_cb<TCA_MAX>, &t) < 0 && !bad) bad.what = "TCA: a truncated attribute";
    return t;
}

constexpr Rule kActPolicy[] = {{TCA_ACT_KIND, MNL_TYPE_NUL_STRING}, {TCA_ACT_OPTIONS, MNL_TYPE_NESTED},
                               {TCA_ACT_STATS, MNL_TYPE_NESTED}};
// struct gnet_stats_basic: u64 bytes, u32 packets (16 bytes with its padding; 12 read).
constexpr Rule kStatsPolicy[] = {{TCA_STATS_BASIC, MNL_TYPE_BINARY}};
// The actions' parameter structs are checked for their length where they are read.
constexpr Rule kGactPolicy[] = {{TCA_GACT_PARMS, MNL_TYPE_BINARY}};
constexpr Rule kVlanPolicy[] = {{TCA_VLAN_PUSH_VLAN_ID, MNL_TYPE_U16},
                                {TCA_VLAN_PUSH_VLAN_PROTOCOL, MNL_TYPE_U16},
                                {TCA_VLAN_PUSH_VLAN_PRIORITY, MNL_TYPE_U8}};
constexpr Rule kPeditPolicy[] = {{TCA_PEDIT_KEYS_EX, MNL_TYPE_NESTED}};
constexpr Rule kPeditKeyPolicy[] = {{TCA_PEDIT_KEY_EX_HTYPE, MNL_TYPE_U16}, {TCA_PEDIT_KEY_EX_CMD, MNL_TYPE_U16}};
constexpr Rule kCsumPolicy[] = {{TCA_CSUM_PARMS, MNL_TYPE_BINARY}};
constexpr Rule kCtPolicy[] = {{TCA_CT_ACTION, MNL_TYPE_U16},
                              {TCA_CT_ZONE, MNL_TYPE_U16},
                              {TCA_CT_NAT_IPV4_MIN, MNL_TYPE_BINARY, 4},
                              {TCA_CT_NAT_IPV4_MAX, MNL_TYPE_BINARY, 4},
                              {TCA_CT_NAT_PORT_MIN, MNL_TYPE_U16},
                              {TCA_CT_NAT_PORT_MAX, MNL_TYPE_U16}};
constexpr Rule kTunnelKeyPolicy[] = {{TCA_TUNNEL_KEY_ENC_KEY_ID, MNL_TYPE_U32},
                                     {TCA_TUNNEL_KEY_ENC_IPV4_SRC, MNL_TYPE_BINARY, 4},
                                     {TCA_TUNNEL_KEY_ENC_IPV4_DST, MNL_TYPE_BINARY, 4},
                                     {TCA_TUNNEL_KEY_ENC_IPV6_SRC, MNL_TYPE_BINARY, 16},
                                     {TCA_TUNNEL_KEY_ENC_IPV6_DST, MNL_TYPE_BINARY, 16},
                                     {TCA_TUNNEL_KEY_ENC_DST_PORT, MNL_TYPE_U16},
                                     {TCA_TUNNEL_KEY_NO_CSUM, MNL_TYPE_U8}};
constexpr Rule kMirredPolicy[] = {{TCA_MIRRED_PARMS, MNL_TYPE_BINARY}};
constexpr Rule kPolicePolicy[] = {{TCA_POLICE_TBF, MNL_TYPE_BINARY},
                                  {TCA_POLICE_RESULT, MNL_TYPE_U32},
                                  {TCA_POLICE_PKTRATE64, MNL_TYPE_U64},
                                  {TCA_POLICE_PKTBURST64, MNL_TYPE_U64}};

constexpr Rule kFlowerPolicy[] = {
    {TCA_FLOWER_FLAGS, MNL_TYPE_U32},
    {TCA_FLOWER_IN_HW_COUNT, MNL_TYPE_U32},
    {TCA_FLOWER_ACT, MNL_TYPE_NESTED},
    {TCA_FLOWER_KEY_ETH_TYPE, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_ETH_DST, MNL_TYPE_BINARY, 6},
    {TCA_FLOWER_KEY_ETH_DST_MASK, MNL_TYPE_BINARY, 6},
    {TCA_FLOWER_KEY_VLAN_ID, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_VLAN_ETH_TYPE, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_IPV4_DST, MNL_TYPE_BINARY, 4},
    {TCA_FLOWER_KEY_IPV4_DST_MASK, MNL_TYPE_BINARY, 4},
    {TCA_FLOWER_KEY_IPV4_SRC, MNL_TYPE_BINARY, 4},
    {TCA_FLOWER_KEY_IPV4_SRC_MASK, MNL_TYPE_BINARY, 4},
    {TCA_FLOWER_KEY_IPV6_DST, MNL_TYPE_BINARY, 16},
    {TCA_FLOWER_KEY_IPV6_DST_MASK, MNL_TYPE_BINARY, 16},
    {TCA_FLOWER_KEY_IPV6_SRC, MNL_TYPE_BINARY, 16},
    {TCA_FLOWER_KEY_IPV6_SRC_MASK, MNL_TYPE_BINARY, 16},
    {TCA_FLOWER_KEY_IP_TTL, MNL_TYPE_U8},
    {TCA_FLOWER_KEY_IP_TTL_MASK, MNL_TYPE_U8},
    {TCA_FLOWER_KEY_CT_STATE, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_CT_STATE_MASK, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_CT_ZONE, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_CT_ZONE_MASK, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_ENC_KEY_ID, MNL_TYPE_U32},
    {TCA_FLOWER_KEY_ENC_IPV4_DST, MNL_TYPE_BINARY, 4},
    {TCA_FLOWER_KEY_ENC_IPV4_DST_MASK, MNL_TYPE_BINARY, 4},
    {TCA_FLOWER_KEY_ENC_IPV6_DST, MNL_TYPE_BINARY, 16},
    {TCA_FLOWER_KEY_ENC_IPV6_DST_MASK, MNL_TYPE_BINARY, 16},
    {TCA_FLOWER_KEY_ENC_UDP_DST_PORT, MNL_TYPE_U16},
    {TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK, MNL_TYPE_U16},
};

// mnl_attr_for_each_nested() is a C macro with void* arithmetic; this is the same walk.
template <class Fn>
void for_each_nested(const nlattr* nest, Fn fn) {
    const auto* begin = static_cast<const char*>(mnl_attr_get_payload(nest));
    const char* end = begin + mnl_attr_get_payload_len(nest);
    for (auto* a = reinterpret_cast<const nlattr*>(begin); mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a)));
         a = mnl_attr_next(a))
        fn(a);
}

// The payload of `a` as T, if it is at least that long.
template <class T>
const T* payload(const nlattr* a) {
    if (!a || mnl_attr_get_payload_len(a) < sizeof(T)) return nullptr;
    return static_cast<const T*>(mnl_attr_get_payload(a));
}

std::optional<Mac> to_mac(const nlattr* a) {
    if (!a || mnl_attr_get_payload_len(a) != 6) return std::nullopt;
    Mac m;
    std::memcpy(m.data(), mnl_attr_get_payload(a), 6);
    return m;
}

std::optional<std::uint8_t> prefix_length(const std::uint8_t* mask, std::size_t n) {
    unsigned len = 0;
    while (len < n * 8 && (mask[len / 8] & (0x80 >> (len % 8)))) ++len;
    for (unsigned bit = len; bit < n * 8; ++bit)
        if (mask[bit / 8] & (0x80 >> (bit % 8))) return std::nullopt;  // not contiguous: not ours
    return static_cast<std::uint8_t>(len);
}

bool take_prefix(const nlattr* key, const nlattr* mask, Family f, std::optional<IpPrefix>& out) {
    if (!key && !mask) return true;
    const std::size_t n = f == Family::V4 ? 4 : 16;
    if (!key || !mask || mnl_attr_get_payload_len(key) != n || mnl_attr_get_payload_len(mask) != n) return false;
    auto len = prefix_length(static_cast<const std::uint8_t*>(mnl_attr_get_payload(mask)), n);
    if (!len || out) return false;
    out = IpPrefix{IpAddress::from_bytes(f, mnl_attr_get_payload(key)), *len};
    return true;
}

std::optional<tc::Rewrite> parse_pedit(const nlattr* opts, Bad& bad) {
    auto t = nested<TCA_PEDIT_MAX>(opts, "TCA_PEDIT", kPeditPolicy, bad);
    const nlattr* parms = t[TCA_PEDIT_PARMS_EX];
    const auto* sel = payload<tc_pedit_sel>(parms);
    if (!sel || !t[TCA_PEDIT_KEYS_EX] || sel->action != TC_ACT_PIPE) return std::nullopt;
    if (mnl_attr_get_payload_len(parms) < sizeof(tc_pedit_sel) + sel->nkeys * sizeof(tc_pedit_key)) return std::nullopt;
    std::vector<std::pair<std::uint16_t, std::uint16_t>> ex;
    bool keys_ok = true;
    for_each_nested(t[TCA_PEDIT_KEYS_EX], [&](const nlattr* k) {
        auto kt = nested<TCA_PEDIT_KEY_EX_MAX>(k, "TCA_PEDIT_KEY_EX", kPeditKeyPolicy, bad);
        if (!kt[TCA_PEDIT_KEY_EX_HTYPE] || !kt[TCA_PEDIT_KEY_EX_CMD]) keys_ok = false;
        else ex.emplace_back(mnl_attr_get_u16(kt[TCA_PEDIT_KEY_EX_HTYPE]), mnl_attr_get_u16(kt[TCA_PEDIT_KEY_EX_CMD]));
    });
    if (bad || !keys_ok || ex.size() != sel->nkeys) return std::nullopt;

    tc::Rewrite rw;
    std::array<int, 12> eth_set{};
    Mac dst{}, src{};
    const auto* raw = reinterpret_cast<const std::uint8_t*>(sel) + sizeof(tc_pedit_sel);
    for (std::size_t i = 0; i < ex.size(); ++i) {
        tc_pedit_key key;
        std::memcpy(&key, raw + i * sizeof(tc_pedit_key), sizeof key);
        std::array<std::uint8_t, 4> keep, val;
        std::memcpy(keep.data(), &key.mask, 4);
        std::memcpy(val.data(), &key.val, 4);
        if (key.at || key.offmask || key.shift) return std::nullopt;
        const auto [htype, cmd] = ex[i];
        if (htype == TCA_PEDIT_KEY_EX_HDR_TYPE_ETH && cmd == TCA_PEDIT_KEY_EX_CMD_SET && key.off % 4 == 0 &&
            key.off <= 8) {
            for (unsigned j = 0; j < 4; ++j) {
                if (keep[j] == 0xff) continue;
                if (keep[j] != 0x00) return std::nullopt;
                const unsigned b = key.off + j;
                eth_set[b] = 1;
                (b < 6 ? dst[b] : src[b - 6]) = val[j];
            }
        } else if (htype == TCA_PEDIT_KEY_EX_HDR_TYPE_IP4 && cmd == TCA_PEDIT_KEY_EX_CMD_ADD && key.off == 8 &&
                   keep == std::array<std::uint8_t, 4>{0x00, 0xff, 0xff, 0xff} &&
                   val == std::array<std::uint8_t, 4>{0xff, 0, 0, 0}) {
            rw.dec_ttl = true;
        } else if (htype == TCA_PEDIT_KEY_EX_HDR_TYPE_IP6 && cmd == TCA_PEDIT_KEY_EX_CMD_ADD && key.off == 4 &&
                   keep == std::array<std::uint8_t, 4>{0xff, 0xff, 0xff, 0x00} &&
                   val == std::array<std::uint8_t, 4>{0, 0, 0, 0xff}) {
            rw.dec_hoplimit = true;
        } else {
            return std::nullopt;
        }
    }
    const int dst_bytes = eth_set[0] + eth_set[1] + eth_set[2] + eth_set[3] + eth_set[4] + eth_set[5];
    const int src_bytes = eth_set[6] + eth_set[7] + eth_set[8] + eth_set[9] + eth_set[10] + eth_set[11];
    if ((dst_bytes != 0 && dst_bytes != 6) || (src_bytes != 0 && src_bytes != 6)) return std::nullopt;
    if (dst_bytes) rw.eth_dst = dst;
    if (src_bytes) rw.eth_src = src;
    return rw;
}

// One action of a dump; nothing when it is not one we would have written.
std::optional<tc::Action> parse_action(const std::string& kind, const nlattr* opts, Bad& bad) {
    if (!opts) return std::nullopt;
    if (kind == "gact") {
        auto t = nested<TCA_GACT_MAX>(opts, "TCA_GACT", kGactPolicy, bad);
        const auto* p = payload<tc_gact>(t[TCA_GACT_PARMS]);
        if (!p || t[TCA_GACT_PROB]) return std::nullopt;
        if (p->action == TC_ACT_OK) return tc::Pass{};
        // Only a shared drop has an index we chose; others got one from the kernel.
        if (p->action == TC_ACT_SHOT) return tc::Drop{p->index >= kSharedIndexFloor ? p->index : 0};
        if (TC_ACT_EXT_CMP(p->action, TC_ACT_GOTO_CHAIN))
            return tc::Goto{static_cast<std::uint32_t>(p->action) & TC_ACT_EXT_VAL_MASK};
        return std::nullopt;
    }
    if (kind == "vlan") {
        auto t = nested<TCA_VLAN_MAX>(opts, "TCA_VLAN", kVlanPolicy, bad);
        const auto* p = payload<tc_vlan>(t[TCA_VLAN_PARMS]);
        if (!p || p->action != TC_ACT_PIPE) return std::nullopt;
        if (p->v_action == TCA_VLAN_ACT_POP) return tc::VlanPop{};
        if (p->v_action != TCA_VLAN_ACT_PUSH || !t[TCA_VLAN_PUSH_VLAN_ID]) return std::nullopt;
        if (t[TCA_VLAN_PUSH_VLAN_PROTOCOL] && mnl_attr_get_u16(t[TCA_VLAN_PUSH_VLAN_PROTOCOL]) != htons(ETH_P_8021Q))
            return std::nullopt;
        if (t[TCA_VLAN_PUSH_VLAN_PRIORITY] && mnl_attr_get_u8(t[TCA_VLAN_PUSH_VLAN_PRIORITY]) != 0) return std::nullopt;
        return tc::VlanPush{mnl_attr_get_u16(t[TCA_VLAN_PUSH_VLAN_ID])};
    }
    if (kind == "pedit") {
        if (auto rw = parse_pedit(opts, bad)) return *rw;
        return std::nullopt;
    }
    if (kind == "csum") {
        auto t = nested<TCA_CSUM_MAX>(opts, "TCA_CSUM", kCsumPolicy, bad);
        const auto* p = payload<tc_csum>(t[TCA_CSUM_PARMS]);
        if (!p || p->action != TC_ACT_PIPE || p->update_flags != TCA_CSUM_UPDATE_FLAG_IPV4HDR) return std::nullopt;
        return tc::CsumIp4h{};
    }
    if (kind == "ct") {
        auto t = nested<TCA_CT_MAX>(opts, "TCA_CT", kCtPolicy, bad);
        const auto* p = payload<tc_ct>(t[TCA_CT_PARMS]);
        if (!p || p->action != TC_ACT_PIPE || t[TCA_CT_MARK] || t[TCA_CT_LABELS]) return std::nullopt;
        const std::uint16_t flags = t[TCA_CT_ACTION] ? mnl_attr_get_u16(t[TCA_CT_ACTION]) : 0;
        tc::Ct c;
        c.clear = flags & TCA_CT_ACT_CLEAR;
        c.commit = flags & TCA_CT_ACT_COMMIT;
        const bool nat = flags & TCA_CT_ACT_NAT;
        if (flags & (TCA_CT_ACT_FORCE | TCA_CT_ACT_NAT_DST)) return std::nullopt;
        if (c.clear) return c;
        if (t[TCA_CT_ZONE]) c.zone = mnl_attr_get_u16(t[TCA_CT_ZONE]);
        if (flags & TCA_CT_ACT_NAT_SRC) {
            const nlattr* lo = t[TCA_CT_NAT_IPV4_MIN];
            const nlattr* hi = t[TCA_CT_NAT_IPV4_MAX];
            if (!lo || !hi || mnl_attr_get_payload_len(lo) != 4 || mnl_attr_get_payload_len(hi) != 4) return std::nullopt;
            tc::SnatRange r;
            r.min = IpAddress::from_bytes(Family::V4, mnl_attr_get_payload(lo));
            r.max = IpAddress::from_bytes(Family::V4, mnl_attr_get_payload(hi));
            if (t[TCA_CT_NAT_PORT_MIN]) r.port_min = ntohs(mnl_attr_get_u16(t[TCA_CT_NAT_PORT_MIN]));
            if (t[TCA_CT_NAT_PORT_MAX]) r.port_max = ntohs(mnl_attr_get_u16(t[TCA_CT_NAT_PORT_MAX]));
            c.snat = r;
        } else {
            c.nat = nat;
        }
        return c;
    }
    if (kind == "tunnel_key") {
        auto t = nested<TCA_TUNNEL_KEY_MAX>(opts, "TCA_TUNNEL_KEY", kTunnelKeyPolicy, bad);
        const auto* p = payload<tc_tunnel_key>(t[TCA_TUNNEL_KEY_PARMS]);
        if (!p || p->action != TC_ACT_PIPE) return std::nullopt;
        if (p->t_action == TCA_TUNNEL_KEY_ACT_RELEASE) return tc::TunnelUnset{};
        if (p->t_action != TCA_TUNNEL_KEY_ACT_SET || !t[TCA_TUNNEL_KEY_ENC_KEY_ID] || t[TCA_TUNNEL_KEY_ENC_OPTS] ||
            t[TCA_TUNNEL_KEY_ENC_TOS] || t[TCA_TUNNEL_KEY_ENC_TTL])
            return std::nullopt;
        tc::TunnelSet s;
        s.vni = ntohl(mnl_attr_get_u32(t[TCA_TUNNEL_KEY_ENC_KEY_ID]));
        const nlattr* src = t[TCA_TUNNEL_KEY_ENC_IPV4_SRC] ? t[TCA_TUNNEL_KEY_ENC_IPV4_SRC] : t[TCA_TUNNEL_KEY_ENC_IPV6_SRC];
        const nlattr* dst = t[TCA_TUNNEL_KEY_ENC_IPV4_DST] ? t[TCA_TUNNEL_KEY_ENC_IPV4_DST] : t[TCA_TUNNEL_KEY_ENC_IPV6_DST];
        if (!src || !dst) return std::nullopt;
        const Family f = t[TCA_TUNNEL_KEY_ENC_IPV4_SRC] ? Family::V4 : Family::V6;
        if (mnl_attr_get_payload_len(src) != (f == Family::V4 ? 4u : 16u) ||
            mnl_attr_get_payload_len(dst) != mnl_attr_get_payload_len(src))
            return std::nullopt;
        s.src = IpAddress::from_bytes(f, mnl_attr_get_payload(src));
        s.dst = IpAddress::from_bytes(f, mnl_attr_get_payload(dst));
        // The kernel leaves a zero port out of its dump.
        s.dst_port = t[TCA_TUNNEL_KEY_ENC_DST_PORT] ? ntohs(mnl_attr_get_u16(t[TCA_TUNNEL_KEY_ENC_DST_PORT])) : 0;
        s.csum = !(t[TCA_TUNNEL_KEY_NO_CSUM] && mnl_attr_get_u8(t[TCA_TUNNEL_KEY_NO_CSUM]));
        return s;
    }
    if (kind == "police") {
        auto t = nested<TCA_POLICE_MAX>(opts, "TCA_POLICE", kPolicePolicy, bad);
        const auto* p = payload<tc_police>(t[TCA_POLICE_TBF]);
        // Ours: a packet rate only (no byte rate, peak rate or estimator), exceeding
        // packets dropped, conforming ones piped on.
        if (!p || p->action != TC_ACT_SHOT || p->rate.rate || p->peakrate.rate || t[TCA_POLICE_RATE] ||
            t[TCA_POLICE_PEAKRATE] || t[TCA_POLICE_AVRATE] || t[TCA_POLICE_RATE64] || t[TCA_POLICE_PEAKRATE64] ||
            !t[TCA_POLICE_RESULT] || mnl_attr_get_u32(t[TCA_POLICE_RESULT]) != TC_ACT_PIPE ||
            !t[TCA_POLICE_PKTRATE64] || !t[TCA_POLICE_PKTBURST64])
            return std::nullopt;
        tc::Police police;
        police.packets_per_second = mnl_attr_get_u64(t[TCA_POLICE_PKTRATE64]);
        police.burst = police_burst_packets(police.packets_per_second, mnl_attr_get_u64(t[TCA_POLICE_PKTBURST64]));
        return police;
    }
    if (kind == "mirred") {
        auto t = nested<TCA_MIRRED_MAX>(opts, "TCA_MIRRED", kMirredPolicy, bad);
        const auto* p = payload<tc_mirred>(t[TCA_MIRRED_PARMS]);
        if (!p || p->action != TC_ACT_STOLEN || (p->eaction != TCA_EGRESS_REDIR && p->eaction != TCA_INGRESS_REDIR))
            return std::nullopt;
        return tc::Redirect{static_cast<int>(p->ifindex), "", p->index, p->eaction == TCA_INGRESS_REDIR};
    }
    return std::nullopt;
}

}  // namespace

bool is_ingress_parent(std::uint32_t parent) { return parent == kIngressParent; }
bool is_clsact_parent(std::uint32_t parent) { return parent == TC_H_CLSACT; }

Result<TcHeader> parse_tc_header(const nlmsghdr* nlh) {
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(tcmsg)) return fail(std::string("tc message shorter than its header"));
    const auto* t = static_cast<const tcmsg*>(mnl_nlmsg_get_payload(nlh));
    TcHeader h;
    h.type = nlh->nlmsg_type;
    h.pid = nlh->nlmsg_pid;
    h.seq = nlh->nlmsg_seq;
    h.ifindex = t->tcm_ifindex;
    h.parent = t->tcm_parent;
    h.handle = t->tcm_handle;
    h.prio = static_cast<std::uint16_t>(TC_H_MAJ(t->tcm_info) >> 16);
    h.protocol = ntohs(static_cast<std::uint16_t>(TC_H_MIN(t->tcm_info)));
    Bad bad;
    const auto top = top_attrs(nlh, bad);
    if (bad) return fail("malformed tc message: " + bad.what);
    if (top[TCA_CHAIN]) h.chain = mnl_attr_get_u32(top[TCA_CHAIN]);
    if (top[TCA_KIND]) h.kind = mnl_attr_get_str(top[TCA_KIND]);
    return h;
}

HwFlags filter_hw_flags(const nlmsghdr* nlh) {
    HwFlags out;
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(tcmsg)) return out;
    Bad bad;
    const auto top = top_attrs(nlh, bad);
    if (bad || !top[TCA_OPTIONS]) return out;
    auto f = nested<TCA_FLOWER_MAX>(top[TCA_OPTIONS], "TCA_FLOWER", kFlowerPolicy, bad);
    if (f[TCA_FLOWER_FLAGS]) {
        const std::uint32_t flags = mnl_attr_get_u32(f[TCA_FLOWER_FLAGS]);
        out.in_hw = flags & TCA_CLS_FLAGS_IN_HW;
        out.not_in_hw = flags & TCA_CLS_FLAGS_NOT_IN_HW;
    }
    return out;
}

Result<tc::Installed> parse_filter(const nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWTFILTER || mnl_nlmsg_get_payload_len(nlh) < sizeof(tcmsg))
        return fail(std::string("not a filter message"));
    const auto* t = static_cast<const tcmsg*>(mnl_nlmsg_get_payload(nlh));
    Bad bad;
    const auto top = top_attrs(nlh, bad);
    if (bad) return fail("malformed filter: " + bad.what);
    if (!top[TCA_KIND]) return fail(std::string("malformed filter: no TCA_KIND"));

    tc::Installed out;
    out.handle = t->tcm_handle;
    out.rule.prio = static_cast<std::uint16_t>(TC_H_MAJ(t->tcm_info) >> 16);
    out.rule.protocol = ntohs(static_cast<std::uint16_t>(TC_H_MIN(t->tcm_info)));
    out.rule.chain = top[TCA_CHAIN] ? mnl_attr_get_u32(top[TCA_CHAIN]) : 0;
    const std::string kind = mnl_attr_get_str(top[TCA_KIND]);
    // A dump also lists each (chain, prio) itself with no handle and no options.
    if (kind != "flower" || t->tcm_parent != kIngressParent || !top[TCA_OPTIONS] || !out.handle) return out;

    auto f = nested<TCA_FLOWER_MAX>(top[TCA_OPTIONS], "TCA_FLOWER", kFlowerPolicy, bad);
    if (bad) return fail("malformed filter: " + bad.what);
    bool ok = !f.unknown;
    if (f[TCA_FLOWER_FLAGS]) {
        const std::uint32_t flags = mnl_attr_get_u32(f[TCA_FLOWER_FLAGS]);
        out.in_hw = flags & TCA_CLS_FLAGS_IN_HW;
        out.not_in_hw = flags & TCA_CLS_FLAGS_NOT_IN_HW;
        if (flags & (TCA_CLS_FLAGS_SKIP_HW | TCA_CLS_FLAGS_SKIP_SW)) ok = false;
    }
    if (f[TCA_FLOWER_IN_HW_COUNT]) out.in_hw_count = mnl_attr_get_u32(f[TCA_FLOWER_IN_HW_COUNT]);

    // Attributes the decoder understands; any other key means a rule we did not write.
    static const int kKnown[] = {
        TCA_FLOWER_FLAGS, TCA_FLOWER_IN_HW_COUNT, TCA_FLOWER_ACT, TCA_FLOWER_KEY_ETH_TYPE,
        TCA_FLOWER_KEY_ETH_DST, TCA_FLOWER_KEY_ETH_DST_MASK,
        TCA_FLOWER_KEY_VLAN_ID, TCA_FLOWER_KEY_VLAN_ETH_TYPE, TCA_FLOWER_KEY_IPV4_DST,
        TCA_FLOWER_KEY_IPV4_DST_MASK, TCA_FLOWER_KEY_IPV4_SRC, TCA_FLOWER_KEY_IPV4_SRC_MASK,
        TCA_FLOWER_KEY_IPV6_DST, TCA_FLOWER_KEY_IPV6_DST_MASK, TCA_FLOWER_KEY_IPV6_SRC,
        TCA_FLOWER_KEY_IPV6_SRC_MASK, TCA_FLOWER_KEY_IP_TTL, TCA_FLOWER_KEY_IP_TTL_MASK,
        TCA_FLOWER_KEY_CT_STATE, TCA_FLOWER_KEY_CT_STATE_MASK, TCA_FLOWER_KEY_CT_ZONE,
        TCA_FLOWER_KEY_CT_ZONE_MASK, TCA_FLOWER_KEY_ENC_KEY_ID, TCA_FLOWER_KEY_ENC_IPV4_DST,
        TCA_FLOWER_KEY_ENC_IPV4_DST_MASK, TCA_FLOWER_KEY_ENC_IPV6_DST, TCA_FLOWER_KEY_ENC_IPV6_DST_MASK,
        TCA_FLOWER_KEY_ENC_UDP_DST_PORT, TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK,
    };
    for (std::size_t type = 1; type < f.at.size(); ++type)
        if (f.at[type] && std::find(std::begin(kKnown), std::end(kKnown), static_cast<int>(type)) == std::end(kKnown))
            ok = false;

    auto& m = out.rule.match;
    // The kernel reports the innermost ethertype as KEY_ETH_TYPE; the filter's
    // protocol (tcm_info) is what was asked for, so the key itself is not kept.
    const bool vlan_proto = out.rule.protocol == tc::kEth8021Q;
    if (f[TCA_FLOWER_KEY_ETH_DST] || f[TCA_FLOWER_KEY_ETH_DST_MASK]) {
        auto mac = to_mac(f[TCA_FLOWER_KEY_ETH_DST]);
        auto mask = to_mac(f[TCA_FLOWER_KEY_ETH_DST_MASK]);
        if (mac && mask && *mask == Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) m.dst_mac = *mac;
        else ok = false;  // a partial MAC match is not one we write
    }
    if (f[TCA_FLOWER_KEY_VLAN_ID]) m.vlan_id = mnl_attr_get_u16(f[TCA_FLOWER_KEY_VLAN_ID]);
    if (f[TCA_FLOWER_KEY_VLAN_ETH_TYPE]) {
        if (vlan_proto) m.vlan_ethtype = ntohs(mnl_attr_get_u16(f[TCA_FLOWER_KEY_VLAN_ETH_TYPE]));
        else ok = false;
    }
    ok = ok && take_prefix(f[TCA_FLOWER_KEY_IPV4_DST], f[TCA_FLOWER_KEY_IPV4_DST_MASK], Family::V4, m.dst_ip);
    ok = ok && take_prefix(f[TCA_FLOWER_KEY_IPV6_DST], f[TCA_FLOWER_KEY_IPV6_DST_MASK], Family::V6, m.dst_ip);
    ok = ok && take_prefix(f[TCA_FLOWER_KEY_IPV4_SRC], f[TCA_FLOWER_KEY_IPV4_SRC_MASK], Family::V4, m.src_ip);
    ok = ok && take_prefix(f[TCA_FLOWER_KEY_IPV6_SRC], f[TCA_FLOWER_KEY_IPV6_SRC_MASK], Family::V6, m.src_ip);
    if (f[TCA_FLOWER_KEY_IP_TTL] || f[TCA_FLOWER_KEY_IP_TTL_MASK]) {
        if (f[TCA_FLOWER_KEY_IP_TTL] && f[TCA_FLOWER_KEY_IP_TTL_MASK])
            m.ip_ttl = tc::Masked<std::uint8_t>{mnl_attr_get_u8(f[TCA_FLOWER_KEY_IP_TTL]),
                                                mnl_attr_get_u8(f[TCA_FLOWER_KEY_IP_TTL_MASK])};
        else ok = false;
    }

    if (f[TCA_FLOWER_KEY_CT_STATE] && f[TCA_FLOWER_KEY_CT_STATE_MASK])
        m.ct_state = tc::Masked<std::uint16_t>{mnl_attr_get_u16(f[TCA_FLOWER_KEY_CT_STATE]),
                                               mnl_attr_get_u16(f[TCA_FLOWER_KEY_CT_STATE_MASK])};
    else if (f[TCA_FLOWER_KEY_CT_STATE] || f[TCA_FLOWER_KEY_CT_STATE_MASK]) ok = false;
    if (f[TCA_FLOWER_KEY_CT_ZONE]) {
        if (f[TCA_FLOWER_KEY_CT_ZONE_MASK] && mnl_attr_get_u16(f[TCA_FLOWER_KEY_CT_ZONE_MASK]) != 0xffff) ok = false;
        m.ct_zone = mnl_attr_get_u16(f[TCA_FLOWER_KEY_CT_ZONE]);
    }
    if (f[TCA_FLOWER_KEY_ENC_KEY_ID]) m.enc_key_id = ntohl(mnl_attr_get_u32(f[TCA_FLOWER_KEY_ENC_KEY_ID]));
    {
        std::optional<IpPrefix> enc;
        ok = ok && take_prefix(f[TCA_FLOWER_KEY_ENC_IPV4_DST], f[TCA_FLOWER_KEY_ENC_IPV4_DST_MASK], Family::V4, enc);
        ok = ok && take_prefix(f[TCA_FLOWER_KEY_ENC_IPV6_DST], f[TCA_FLOWER_KEY_ENC_IPV6_DST_MASK], Family::V6, enc);
        if (enc && enc->length != enc->address.size() * 8) ok = false;  // we match a VTEP exactly
        if (enc) m.enc_dst_ip = enc->address;
    }
    if (f[TCA_FLOWER_KEY_ENC_UDP_DST_PORT]) {
        if (f[TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK] && mnl_attr_get_u16(f[TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK]) != 0xffff)
            ok = false;
        m.enc_dst_port = ntohs(mnl_attr_get_u16(f[TCA_FLOWER_KEY_ENC_UDP_DST_PORT]));
    }

    if (f[TCA_FLOWER_ACT]) {
        bool first = true;
        for_each_nested(f[TCA_FLOWER_ACT], [&](const nlattr* a) {
            if (bad) return;
            auto at = nested<TCA_ACT_MAX>(a, "TCA_ACT", kActPolicy, bad);
            if (first && at[TCA_ACT_COOKIE] && mnl_attr_get_payload_len(at[TCA_ACT_COOKIE]) == kOwnerCookie.size() &&
                std::memcmp(mnl_attr_get_payload(at[TCA_ACT_COOKIE]), kOwnerCookie.data(), kOwnerCookie.size()) == 0)
                out.owned = true;
            // Every packet the filter takes meets its first action: its counters are
            // the rule's.
            if (first && at[TCA_ACT_STATS] && !bad) {
                auto st = nested<TCA_STATS_MAX>(at[TCA_ACT_STATS], "TCA_STATS", kStatsPolicy, bad);
                if (st[TCA_STATS_BASIC] && mnl_attr_get_payload_len(st[TCA_STATS_BASIC]) >= 12) {
                    const auto* b = static_cast<const std::uint8_t*>(mnl_attr_get_payload(st[TCA_STATS_BASIC]));
                    std::uint64_t bytes = 0;
                    std::uint32_t packets = 0;
                    std::memcpy(&bytes, b, sizeof bytes);
                    std::memcpy(&packets, b + 8, sizeof packets);
                    out.bytes = bytes;
                    out.packets = packets;
                }
            }
            first = false;
            auto action = at[TCA_ACT_KIND] && !bad
                              ? parse_action(mnl_attr_get_str(at[TCA_ACT_KIND]), at[TCA_ACT_OPTIONS], bad)
                              : std::nullopt;
            if (action) out.rule.actions.push_back(*action);
            else ok = false;
        });
    }
    if (bad) return fail("malformed filter: " + bad.what);
    out.decoded = ok;
    return out;
}

nlmsghdr* put_dump_actions(void* buf, const std::string& kind) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_GETACTION;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    auto* t = static_cast<tcamsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(tcamsg)));
    t->tca_family = AF_UNSPEC;
    nlattr* tab = mnl_attr_nest_start(nlh, TCA_ACT_TAB);
    nlattr* one = mnl_attr_nest_start(nlh, 1);
    mnl_attr_put_strz(nlh, TCA_ACT_KIND, kind.c_str());
    mnl_attr_nest_end(nlh, one);
    mnl_attr_nest_end(nlh, tab);
    // Terse: the kernel skips every action's options (a per-rule goto's among them),
    // which a counter has no use for; large: more than 32 actions a message.
    const nla_bitfield32 flags{TCA_ACT_FLAG_LARGE_DUMP_ON | TCA_ACT_FLAG_TERSE_DUMP,
                               TCA_ACT_FLAG_LARGE_DUMP_ON | TCA_ACT_FLAG_TERSE_DUMP};
    mnl_attr_put(nlh, TCA_ROOT_FLAGS, sizeof flags, &flags);
    return nlh;
}

namespace {

constexpr Rule kActionRootPolicy[] = {{TCA_ROOT_TAB, MNL_TYPE_NESTED}, {TCA_ROOT_COUNT, MNL_TYPE_U32}};
constexpr Rule kActionStatsPolicy[] = {{TCA_ACT_KIND, MNL_TYPE_NUL_STRING},
                                       {TCA_ACT_INDEX, MNL_TYPE_U32},
                                       {TCA_ACT_STATS, MNL_TYPE_NESTED},
                                       {TCA_ACT_OPTIONS, MNL_TYPE_NESTED}};
// gnet_stats_basic is 12 bytes of data (16 with the padding the kernel sends); the
// 64-bit packet count replaces its 32-bit one when present.
constexpr Rule kGnetStatsPolicy[] = {{TCA_STATS_PKT64, MNL_TYPE_U64}};
// Every action's parameters begin with tc_gen: the index, where the dump is not terse.
constexpr Rule kGenParmsPolicy[] = {{1, MNL_TYPE_BINARY}};
struct Gen {
    tc_gen;
};

constexpr std::size_t kBasicLen = sizeof(std::uint64_t) + sizeof(std::uint32_t);

struct Basic {
    std::uint64_t bytes = 0, packets = 0;
};
std::optional<Basic> basic(const nlattr* a) {
    if (!a || mnl_attr_get_payload_len(a) < kBasicLen) return std::nullopt;
    Basic b;
    std::uint32_t packets = 0;
    std::memcpy(&b.bytes, mnl_attr_get_payload(a), sizeof b.bytes);
    std::memcpy(&packets, static_cast<const char*>(mnl_attr_get_payload(a)) + sizeof b.bytes, sizeof packets);
    b.packets = packets;
    return b;
}

}  // namespace

Result<std::vector<ActionStats>> parse_actions(const nlmsghdr* nlh) {
    // A dump's answers carry the request's type (tc_dump_action), a notification RTM_NEWACTION.
    if (nlh->nlmsg_type != RTM_GETACTION && nlh->nlmsg_type != RTM_NEWACTION)
        return fail(std::string("not an action message"));
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(tcamsg)) return fail(std::string("malformed action: short header"));
    Bad bad;
    Attrs<TCA_ROOT_MAX> root;
    root.set = "TCA_ROOT";
    root.policy = kActionRootPolicy;
    root.bad = &bad;
    if (mnl_attr_parse(nlh, sizeof(tcamsg), fill_cb<TCA_ROOT_MAX>, &root) < 0 && !bad)
        bad.what = "TCA_ROOT: a truncated attribute";
    std::vector<ActionStats> out;
    if (!bad && root[TCA_ROOT_TAB]) {
        for_each_nested(root[TCA_ROOT_TAB], [&](const nlattr* a) {
            if (bad) return;
            auto at = nested<TCA_ACT_MAX>(a, "TCA_ACT", kActionStatsPolicy, bad);
            if (bad) return;
            if (!at[TCA_ACT_KIND] || !at[TCA_ACT_STATS]) {
                bad.what = "TCA_ACT: an action without its kind or statistics";
                return;
            }
            ActionStats s;
            s.kind = mnl_attr_get_str(at[TCA_ACT_KIND]);
            if (at[TCA_ACT_INDEX]) {
                s.index = mnl_attr_get_u32(at[TCA_ACT_INDEX]);
            } else if (at[TCA_ACT_OPTIONS]) {  // a kernel without terse dumps: the parameters have it
                // Attribute 1 is the parameters (TCA_GACT_PARMS, TCA_MIRRED_PARMS, ...) in
                // every action kind this reads.
                auto o = nested<1>(at[TCA_ACT_OPTIONS], "TCA_ACT_OPTIONS", kGenParmsPolicy, bad);
                const auto* g = payload<Gen>(o[1]);
                if (!g) {
                    if (!bad) bad.what = "TCA_ACT: an action without its index";
                    return;
                }
                s.index = g->index;
            } else {
                bad.what = "TCA_ACT: an action without its index";
                return;
            }
            auto st = nested<TCA_STATS_MAX>(at[TCA_ACT_STATS], "TCA_STATS", kGnetStatsPolicy, bad);
            if (bad) return;
            const auto all = basic(st[TCA_STATS_BASIC]);
            if (!all) {
                bad.what = "TCA_STATS: no basic statistics of " + std::to_string(kBasicLen) + " bytes";
                return;
            }
            s.bytes = all->bytes;
            s.packets = st[TCA_STATS_PKT64] ? mnl_attr_get_u64(st[TCA_STATS_PKT64]) : all->packets;
            if (st[TCA_STATS_BASIC_HW]) {
                const auto hw = basic(st[TCA_STATS_BASIC_HW]);
                if (!hw) {
                    bad.what = "TCA_STATS: hardware statistics shorter than " + std::to_string(kBasicLen) + " bytes";
                    return;
                }
                s.hw_bytes = hw->bytes;
                s.hw_packets = hw->packets;
            }
            out.push_back(std::move(s));
        });
    }
    if (bad) return fail("malformed action: " + bad.what);
    return out;
}

std::string extack_of(const nlmsghdr* nlh) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS) || mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) return "";
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    // The request comes back after the error code, whole or (NETLINK_CAP_ACK, and for
    // an ack without error) as its header only; the attributes follow it.
    std::size_t offset = sizeof(nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED) && err->error != 0) {
        if (err->msg.nlmsg_len < sizeof(nlmsghdr)) return "";
        offset += err->msg.nlmsg_len - sizeof(nlmsghdr);
    }
    if (mnl_nlmsg_size(offset) > nlh->nlmsg_len) return "";
    std::string msg;
    mnl_attr_parse(
        nlh, static_cast<unsigned>(offset),
        [](const nlattr* a, void* data) {
            if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                *static_cast<std::string*>(data) = mnl_attr_get_str(a);
            return MNL_CB_OK;
        },
        &msg);
    return msg;
}

}  // namespace dpo::kernel
