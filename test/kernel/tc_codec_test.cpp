// SPDX-License-Identifier: GPL-2.0-or-later
// The tc codec on the host: what it encodes, it decodes to the same rule; what it
// did not write, it does not claim. (The lab checks the kernel agrees.)
#include <catch2/catch.hpp>

#include <libmnl/libmnl.h>
#include <linux/gen_stats.h>
#include <linux/pkt_cls.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_ct.h>
#include <linux/tc_act/tc_tunnel_key.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "kernel/tc_codec.hpp"

using namespace dpo;

namespace {

tc::Rule forwarding_rule(Family f) {
    tc::Rule r;
    r.chain = 256;
    r.prio = f == Family::V4 ? 116 : 264;
    r.protocol = tc::kEth8021Q;
    r.match.vlan_ethtype = f == Family::V4 ? tc::kEthIpv4 : tc::kEthIpv6;
    r.match.dst_ip = *IpPrefix::parse(f == Family::V4 ? "10.50.0.0/16" : "fd00:50::/64");
    tc::Rewrite rw;
    rw.eth_dst = Mac{2, 0, 0, 0, 1, 2};
    rw.eth_src = Mac{2, 0, 0, 0, 0x10, 0};
    rw.dec_ttl = f == Family::V4;
    rw.dec_hoplimit = f == Family::V6;
    r.actions = {rw, tc::CsumIp4h{}, tc::VlanPop{}, tc::VlanPush{101}, tc::Redirect{2, "", 0xd9000065}};
    return r;
}

tc::Installed round_trip(const tc::Rule& r, std::uint32_t handle = 7) {
    std::vector<char> buf(kernel::kMessageRoom);
    nlmsghdr* nlh = kernel::put_new_filter(buf.data(), r, 2, handle, kernel::FilterOp::Replace);
    auto got = kernel::parse_filter(nlh);
    REQUIRE(got.ok());
    return *got;
}

}  // namespace

TEST_CASE("a forwarding rule survives encode and decode unchanged, and is ours") {
    for (Family f : {Family::V4, Family::V6}) {
        auto r = forwarding_rule(f);
        auto got = round_trip(r);
        CHECK(got.owned);
        CHECK(got.decoded);
        CHECK(got.handle == 7);
        CHECK(got.rule == r);
        CHECK(tc::to_tc_command(got.rule) == tc::to_tc_command(r));
    }
}

TEST_CASE("classification, goto, pass and TTL matches round-trip") {
    tc::Rule c;
    c.chain = 1;
    c.prio = 1;
    c.protocol = tc::kEth8021Q;
    c.match.vlan_id = 100;
    c.match.dst_mac = Mac{2, 0, 0, 0, 0x10, 0};
    c.actions = {tc::Goto{256}};
    CHECK(round_trip(c).rule == c);

    tc::Rule t;
    t.chain = 256;
    t.prio = 1;
    t.protocol = tc::kEth8021Q;
    t.match.vlan_ethtype = tc::kEthIpv4;
    t.match.ip_ttl = tc::Masked<std::uint8_t>{0, 0xfe};
    t.actions = {tc::Pass{}};
    CHECK(round_trip(t).rule == t);

    tc::Rule d = t;
    d.match.ip_ttl.reset();
    d.match.src_ip = *IpPrefix::parse("192.0.2.0/24");
    d.actions = {tc::Drop{}};
    CHECK(round_trip(d).rule == d);
    d.actions = {tc::Drop{0xd9300002}};  // a shared drop keeps its index
    CHECK(round_trip(d).rule == d);
}

TEST_CASE("a new rule is created exclusively at the daemon's handle and echoed; a replace only replaces") {
    auto r = forwarding_rule(Family::V4);
    std::vector<char> buf(kernel::kMessageRoom);
    nlmsghdr* nlh = kernel::put_new_filter(buf.data(), r, 2, 0x80000001u, kernel::FilterOp::Create);
    CHECK((nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) == (NLM_F_CREATE | NLM_F_EXCL));
    CHECK((nlh->nlmsg_flags & (NLM_F_ECHO | NLM_F_ACK)) == (NLM_F_ECHO | NLM_F_ACK));
    CHECK(nlh->nlmsg_type == RTM_NEWTFILTER);
    CHECK(static_cast<const tcmsg*>(mnl_nlmsg_get_payload(nlh))->tcm_handle == 0x80000001u);
    nlh = kernel::put_new_filter(buf.data(), r, 2, 0x80000001u, kernel::FilterOp::Replace);
    CHECK((nlh->nlmsg_flags & NLM_F_REPLACE) != 0);
    CHECK((nlh->nlmsg_flags & NLM_F_CREATE) == 0);  // a filter that vanished is ENOENT: the daemon adds it again
    auto got = round_trip(r);
    CHECK(std::get<tc::Rewrite>(got.rule.actions[0]).dec_ttl);
    CHECK(*std::get<tc::Rewrite>(got.rule.actions[0]).eth_dst == Mac{2, 0, 0, 0, 1, 2});
}

TEST_CASE("a filter dump's chain header (no handle) is reported but is not a rule") {
    std::vector<char> buf(kernel::kMessageRoom);
    nlmsghdr* nlh = kernel::put_new_filter(buf.data(), forwarding_rule(Family::V4), 2, 0, kernel::FilterOp::Create);
    auto got = kernel::parse_filter(nlh);
    REQUIRE(got.ok());
    CHECK_FALSE(got->decoded);
    CHECK_FALSE(got->owned);
}

TEST_CASE("not a filter message is an error, not a crash") {
    std::vector<char> buf(kernel::kMessageRoom);
    nlmsghdr* nlh = kernel::put_new_clsact(buf.data(), 2);
    CHECK_FALSE(kernel::parse_filter(nlh).ok());
    nlh->nlmsg_type = RTM_NEWTFILTER;
    nlh->nlmsg_len = sizeof(nlmsghdr) + 2;  // truncated
    CHECK_FALSE(kernel::parse_filter(nlh).ok());
}

TEST_CASE("conntrack: lookup with nat, commit with a source range, clear, and ct_state matches round-trip") {
    tc::Rule r;
    r.chain = 256;
    r.prio = 10;
    r.protocol = tc::kEth8021Q;
    r.match.vlan_ethtype = tc::kEthIpv4;
    r.match.ct_state = tc::Masked<std::uint16_t>{0, tc::kCtTracked};
    r.actions = {tc::Ct{1, false, true, false, std::nullopt}, tc::Goto{257}};
    CHECK(round_trip(r).rule == r);
    CHECK(tc::to_tc_command(r) ==
          "tc filter add dev  ingress chain 256 prio 10 protocol 802.1Q flower vlan_ethtype ip ct_state -trk "
          "action ct zone 1 nat pipe action gact goto chain 257");

    tc::Rule n = r;
    n.match.ct_state = tc::Masked<std::uint16_t>{tc::kCtTracked | tc::kCtNew, tc::kCtTracked | tc::kCtNew};
    n.match.ct_zone = 1;
    tc::SnatRange range{*IpAddress::parse("198.51.100.3"), *IpAddress::parse("198.51.100.3"), 4608, 5119};
    n.actions = {tc::Ct{1, true, false, false, range}, tc::Pass{}};
    CHECK(round_trip(n).rule == n);
    CHECK(tc::to_tc_command(n).find("ct_zone 1 ct_state +trk+new action ct commit zone 1 src addr "
                                    "198.51.100.3-198.51.100.3 port 4608-5119 pipe") != std::string::npos);

    tc::Rule c = r;
    c.actions = {tc::Ct{0, false, false, true, std::nullopt}, tc::Pass{}};
    CHECK(round_trip(c).rule == c);
}

TEST_CASE("VXLAN: decap matches and encap metadata round-trip, IPv4 and IPv6") {
    tc::Rule d;
    d.chain = 0;
    d.prio = 1;
    d.protocol = tc::kEthAll;
    d.match.enc_key_id = 5001;
    d.match.enc_dst_ip = *IpAddress::parse("10.0.1.1");
    d.match.enc_dst_port = 4789;
    d.actions = {tc::Goto{0x100}};
    CHECK(round_trip(d).rule == d);
    d.match.enc_dst_ip = *IpAddress::parse("fd00:1::1");
    CHECK(round_trip(d).rule == d);

    tc::Rule e;
    e.chain = 256;
    e.prio = 116;
    e.protocol = tc::kEth8021Q;
    e.match.vlan_ethtype = tc::kEthIpv4;
    e.actions = {tc::VlanPop{},
                 tc::TunnelSet{6001, *IpAddress::parse("10.0.2.1"), *IpAddress::parse("10.0.2.10"), 4789, false},
                 tc::Redirect{9, "", 0}};
    CHECK(round_trip(e).rule == e);
    e.actions[1] = tc::TunnelSet{6001, *IpAddress::parse("fd00:2::1"), *IpAddress::parse("fd00:2::a"), 4789, true};
    CHECK(round_trip(e).rule == e);
    tc::Rule u = e;
    u.actions = {tc::TunnelUnset{}, tc::Pass{}};
    CHECK(round_trip(u).rule == u);
}

TEST_CASE("police by packet rate (the punt rule's limit) round-trips, its burst kept as the kernel's ticks") {
    auto r = forwarding_rule(Family::V4);
    for (const tc::Police p : {tc::Police{1000, 100}, tc::Police{777, 77}, tc::Police{1000000, 100000}, tc::Police{10, 1}}) {
        r.actions = {p, tc::Redirect{3, "", 0xd9200000}};
        auto got = round_trip(r);
        CHECK(got.decoded);
        CHECK(got.rule == r);
    }
    CHECK(tc::to_tc_command(r).find("action police pkts_rate 10 pkts_burst 1 conform-exceed drop/pipe action mirred") !=
          std::string::npos);
}

TEST_CASE("mirred ingress redirect (the punt path's way back) round-trips and differs from egress") {
    tc::Rule r;
    r.chain = 0;
    r.prio = 1;
    r.protocol = tc::kEthAll;
    r.actions = {tc::Redirect{2, "p0", 0xd9200001, true}};
    auto got = round_trip(r);
    CHECK(got.decoded);
    CHECK(got.rule == r);
    CHECK(std::get<tc::Redirect>(got.rule.actions[0]).ingress);
    tc::Rule shown = r;
    shown.dev = "dpo-inject";
    CHECK(tc::to_tc_command(shown) ==
          "tc filter add dev dpo-inject ingress chain 0 prio 1 protocol all flower "
          "action mirred ingress redirect dev p0 index 3642753025");
    tc::Rule egress = r;
    egress.actions = {tc::Redirect{2, "p0", 0xd9200001, false}};
    CHECK_FALSE(egress == r);
    CHECK_FALSE(std::get<tc::Redirect>(round_trip(egress).rule.actions[0]).ingress);
}

TEST_CASE("a notification's place is read without decoding the filter") {
    auto r = forwarding_rule(Family::V4);
    r.chain = 0x9000;
    r.prio = 7;
    std::vector<char> buf(kernel::kMessageRoom);
    nlmsghdr* nlh = kernel::put_new_filter(buf.data(), r, 5, 0x80000002u, kernel::FilterOp::Create);
    nlh->nlmsg_pid = 4242;
    auto h = kernel::parse_tc_header(nlh);
    REQUIRE(h.ok());
    CHECK(h->type == RTM_NEWTFILTER);
    CHECK(h->pid == 4242);
    CHECK(h->ifindex == 5);
    CHECK(h->handle == 0x80000002u);
    CHECK(h->chain == 0x9000);
    CHECK(h->prio == 7);
    CHECK(h->protocol == r.protocol);
    CHECK(h->kind == "flower");
    CHECK(kernel::is_ingress_parent(h->parent));
    const auto hw = kernel::filter_hw_flags(nlh);
    CHECK_FALSE(hw.in_hw);  // what the daemon sends asks for nothing: the kernel's echo says
    CHECK_FALSE(hw.not_in_hw);
}

// ---------------------------------------------------------------------------
// Malformed messages: what the kernel never sends must not be read past.

namespace {

// A filter message as a buffer of exactly its length, so that a read past its end is
// past the allocation (AddressSanitizer in the sanitizer build sees it).
std::vector<char> encoded(const tc::Rule& r, std::uint32_t handle = 7) {
    std::vector<char> room(kernel::kMessageRoom);
    nlmsghdr* nlh = kernel::put_new_filter(room.data(), r, 2, handle, kernel::FilterOp::Replace);
    return {room.data(), room.data() + nlh->nlmsg_len};
}

const nlmsghdr* header(const std::vector<char>& m) { return reinterpret_cast<const nlmsghdr*>(m.data()); }

// The attribute header in front of the first `value` (a NUL-terminated string) in `m`.
nlattr* attr_holding(std::vector<char>& m, std::string_view value) {
    const std::string needle(value.data(), value.size() + 1);
    auto it = std::search(m.begin(), m.end(), needle.begin(), needle.end());
    REQUIRE(it != m.end());
    return reinterpret_cast<nlattr*>(&*it - sizeof(nlattr));
}

tc::Rule every_action_rule() {
    auto r = forwarding_rule(Family::V4);
    r.match.ip_ttl = tc::Masked<std::uint8_t>{0, 0xfe};
    r.actions.insert(r.actions.begin(), tc::Ct{1, true, false, false,
                                               tc::SnatRange{*IpAddress::parse("198.51.100.3"),
                                                             *IpAddress::parse("198.51.100.3"), 4608, 5119}});
    tc::TunnelSet t;
    t.vni = 5000;
    t.src = *IpAddress::parse("192.0.2.1");
    t.dst = *IpAddress::parse("192.0.2.2");
    t.dst_port = 4789;
    r.actions.insert(r.actions.end() - 1, t);
    return r;
}

}  // namespace

TEST_CASE("a TCA_KIND or TCA_ACT_KIND without its NUL is refused, not read past its end") {
    auto m = encoded(every_action_rule());
    REQUIRE(kernel::parse_filter(header(m)).ok());

    auto kind = m;
    // "flower\0" fills its 8 bytes: with the NUL overwritten the string runs into the next attribute
    std::memcpy(reinterpret_cast<char*>(attr_holding(kind, "flower")) + sizeof(nlattr) + 6, "!", 1);
    auto f = kernel::parse_filter(header(kind));
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().find("malformed filter: TCA attribute 1") != std::string::npos);
    CHECK(f.error().find("NUL-terminated string") != std::string::npos);
    CHECK_FALSE(kernel::parse_tc_header(header(kind)).ok());

    auto act = m;
    nlattr* a = attr_holding(act, "vlan");
    a->nla_len = sizeof(nlattr) + 4;  // "vlan" without the NUL (the padding keeps the walk aligned)
    auto g = kernel::parse_filter(header(act));
    REQUIRE_FALSE(g.ok());
    CHECK(g.error().find("TCA_ACT attribute 1") != std::string::npos);
}

TEST_CASE("an attribute shorter than its type is refused: u16, u32, an address, a MAC") {
    auto r = every_action_rule();
    r.match.vlan_id = 100;
    r.match.dst_mac = Mac{2, 0, 0, 0, 0x10, 0};
    auto m = encoded(r);
    REQUIRE(kernel::parse_filter(header(m)).ok());
    // Each attribute of the message whose payload is the given bytes, made one byte
    // shorter (a u16 read from 1 byte, an address from 3...), must fail the decode.
    auto shorten = [&](std::uint16_t type, std::size_t len) {
        for (std::size_t off = sizeof(nlmsghdr) + sizeof(tcmsg); off + sizeof(nlattr) <= m.size(); off += 4) {
            auto copy = m;
            auto* a = reinterpret_cast<nlattr*>(copy.data() + off);
            if ((a->nla_type & NLA_TYPE_MASK) != type || a->nla_len != sizeof(nlattr) + len) continue;
            a->nla_len = static_cast<std::uint16_t>(a->nla_len - 1);
            if (!kernel::parse_filter(header(copy)).ok()) return true;
        }
        return false;
    };
    CHECK(shorten(TCA_FLOWER_KEY_VLAN_ID, 2));
    CHECK(shorten(TCA_FLOWER_KEY_ETH_DST, 6));
    CHECK(shorten(TCA_FLOWER_KEY_IPV4_DST, 4));
    CHECK(shorten(TCA_FLOWER_FLAGS, 4));
    CHECK(shorten(TCA_CT_ZONE, 2));
    CHECK(shorten(TCA_TUNNEL_KEY_ENC_KEY_ID, 4));
}

TEST_CASE("every attribute cut short or lengthened anywhere: a value or a refusal, never a read past the message") {
    // A sweep over every 4-byte position that could hold an attribute header: its
    // length made shorter, longer (past the message) and zero, the byte before it
    // overwritten. Under AddressSanitizer a read past the buffer fails the test; here
    // it asserts that every outcome is a value or an error (nothing throws, nothing hangs)
    // and that damage is noticed (most positions hold payload, not a header, so a share).
    std::size_t refused = 0, tries = 0;
    for (const auto& r : {every_action_rule(), forwarding_rule(Family::V6)}) {
        const auto m = encoded(r);
        for (std::size_t off = sizeof(nlmsghdr); off + sizeof(nlattr) <= m.size(); off += 4)
            for (int delta : {-1, -2, -3, -4, 1, 4, 4096, -65536}) {
                auto copy = m;
                auto* a = reinterpret_cast<nlattr*>(copy.data() + off);
                const int len = delta == -65536 ? 0 : a->nla_len + delta;
                if (len < 0 || len > 0xffff) continue;
                a->nla_len = static_cast<std::uint16_t>(len);
                ++tries;
                auto f = kernel::parse_filter(header(copy));
                auto h = kernel::parse_tc_header(header(copy));
                (void)kernel::filter_hw_flags(header(copy));
                if (!f.ok()) ++refused;
                if (f.ok() && f->decoded) CHECK(f->rule.actions.size() <= r.actions.size());
                (void)h;
            }
    }
    CHECK(tries > 500);
    CHECK(refused > tries / 10);
}

TEST_CASE("an error's extack is read within the message, whatever the length it claims for the request") {
    std::vector<char> buf(256, 0);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = NLMSG_ERROR;
    nlh->nlmsg_flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
    auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    err->error = -EINVAL;
    err->msg.nlmsg_len = sizeof(nlmsghdr);
    mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, "Unknown action kind");
    CHECK(kernel::extack_of(nlh) == "Unknown action kind");
    // Not capped: the request is said to follow whole, and to be far longer than the message.
    nlh->nlmsg_flags = NLM_F_ACK_TLVS;
    err->msg.nlmsg_len = 0xfffffff0u;
    CHECK(kernel::extack_of(nlh).empty());
    err->msg.nlmsg_len = 4;  // shorter than a header
    CHECK(kernel::extack_of(nlh).empty());
    // A message too short for its error header.
    nlh->nlmsg_len = sizeof(nlmsghdr) + 2;
    CHECK(kernel::extack_of(nlh).empty());
}

TEST_CASE("a message that claims 2 GiB or more does not fit what was read (libmnl's check would pass it)") {
    std::vector<char> buf(64, 0);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    CHECK(kernel::message_fits(nlh, 64));
    nlh->nlmsg_len = 0x80000010u;
    CHECK_FALSE(kernel::message_fits(nlh, 64));
    nlh->nlmsg_len = 65;
    CHECK_FALSE(kernel::message_fits(nlh, 64));
    nlh->nlmsg_len = 8;  // shorter than its header
    CHECK_FALSE(kernel::message_fits(nlh, 64));
}

namespace {

using dpo::kernel::ActionStats;
using dpo::kernel::kMessageRoom;
using dpo::kernel::parse_actions;
using dpo::kernel::put_dump_actions;

// One message as a terse action dump sends it (the request's type): kind, statistics, index.
struct ActionMsg {
    std::vector<char> buf = std::vector<char>(4096);
    nlmsghdr* nlh;
    nlattr* tab;
    ActionMsg() {
        nlh = mnl_nlmsg_put_header(buf.data());
        nlh->nlmsg_type = RTM_GETACTION;
        mnl_nlmsg_put_extra_header(nlh, sizeof(tcamsg));
        mnl_attr_put_u32(nlh, TCA_ROOT_COUNT, 1);
        tab = mnl_attr_nest_start(nlh, TCA_ACT_TAB);
    }
    // `basic_len`: what TCA_STATS_BASIC claims (16 as the kernel sends it).
    void add(std::uint16_t slot, const char* kind, std::uint32_t index, std::uint64_t bytes, std::uint32_t packets,
             std::optional<std::uint32_t> hw_packets = {}, std::size_t basic_len = 16) {
        nlattr* a = mnl_attr_nest_start(nlh, slot);
        mnl_attr_put_strz(nlh, TCA_ACT_KIND, kind);
        nlattr* st = mnl_attr_nest_start(nlh, TCA_ACT_STATS);
        char basic[16] = {};
        std::memcpy(basic, &bytes, 8);
        std::memcpy(basic + 8, &packets, 4);
        mnl_attr_put(nlh, TCA_STATS_BASIC, basic_len, basic);
        if (hw_packets) {
            char hw[16] = {};
            const std::uint64_t hw_bytes = std::uint64_t{*hw_packets} * 100;
            std::memcpy(hw, &hw_bytes, 8);
            std::memcpy(hw + 8, &*hw_packets, 4);
            mnl_attr_put(nlh, TCA_STATS_BASIC_HW, sizeof hw, hw);
        }
        mnl_attr_nest_end(nlh, st);
        mnl_attr_put_u32(nlh, TCA_ACT_INDEX, index);
        mnl_attr_nest_end(nlh, a);
    }
    const nlmsghdr* done() {
        mnl_attr_nest_end(nlh, tab);
        return nlh;
    }
};

}  // namespace

TEST_CASE("an action dump request asks for one kind, terse and in large messages") {
    std::vector<char> buf(kMessageRoom);
    const nlmsghdr* nlh = put_dump_actions(buf.data(), "mirred");
    CHECK(nlh->nlmsg_type == RTM_GETACTION);
    CHECK((nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP);
    struct Seen {
        bool flags = false, kind = false;
    } seen;
    mnl_attr_parse(
        nlh, sizeof(tcamsg),
        [](const nlattr* a, void* data) {
            auto* s = static_cast<Seen*>(data);
            if (mnl_attr_get_type(a) == TCA_ROOT_FLAGS) {
                const auto* f = static_cast<const nla_bitfield32*>(mnl_attr_get_payload(a));
                s->flags = (f->value & TCA_ACT_FLAG_TERSE_DUMP) && (f->value & TCA_ACT_FLAG_LARGE_DUMP_ON);
            }
            if (mnl_attr_get_type(a) == TCA_ACT_TAB)  // one action, its kind
                mnl_attr_parse_nested(
                    static_cast<const nlattr*>(mnl_attr_get_payload(a)),
                    [](const nlattr* k, void* d) {
                        if (mnl_attr_get_type(k) == TCA_ACT_KIND)
                            static_cast<Seen*>(d)->kind = std::string_view(mnl_attr_get_str(k)) == "mirred";
                        return MNL_CB_OK;
                    },
                    s);
            return MNL_CB_OK;
        },
        &seen);
    CHECK(seen.flags);
    CHECK(seen.kind);
}

TEST_CASE("an action dump message gives each action's kind, index and statistics, hardware's where given") {
    ActionMsg m;
    m.add(1, "gact", 0xd9300002, 4200, 42);
    m.add(2, "mirred", 0xd9000064, 150000, 1000, 600);
    auto got = parse_actions(m.done());
    REQUIRE(got.ok());
    REQUIRE(got->size() == 2);
    CHECK((*got)[0] == ActionStats{"gact", 0xd9300002, 42, 4200, std::nullopt, std::nullopt});
    CHECK((*got)[1] == ActionStats{"mirred", 0xd9000064, 1000, 150000, 600, 60000});
}

TEST_CASE("an action dump message with statistics cut short is refused, not read past") {
    ActionMsg m;
    m.add(1, "gact", 0xd9300002, 4200, 42, std::nullopt, 8);
    auto got = parse_actions(m.done());
    REQUIRE(!got.ok());
    CHECK(got.error().find("basic statistics") != std::string::npos);
    ActionMsg empty;
    auto none = parse_actions(empty.done());  // the last message of a dump may hold none
    REQUIRE(none.ok());
    CHECK(none->empty());
    std::vector<char> buf(kMessageRoom);
    CHECK(!parse_actions(put_dump_actions(buf.data(), "gact")).ok());  // a request: an action without statistics
}
