// SPDX-License-Identifier: GPL-2.0-or-later
// Run by the lab (scenario tc_codec): installs one sample of every rule shape the
// compiler writes or will write (ct, NAT, tunnel_key, VXLAN decap keys) on a device
// through TcNetlink, dumps it back and checks the kernel kept exactly that rule.
// Prints one "PASS|FAIL <what>: <detail>" line per sample; exit 1 if any failed.
//   tc-probe vlan DEV       rules for an uplink
//   tc-probe vxlan DEV      decap rules for a metadata-mode VXLAN device
#include <net/if.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/gcc_workarounds.hpp"
#include "kernel/tc_netlink.hpp"

using namespace dpo;

namespace {

tc::Rule base(const std::string& dev, std::uint32_t chain, std::uint16_t prio, std::uint16_t proto) {
    tc::Rule r;
    r.dev = dev;
    r.chain = chain;
    r.prio = prio;
    r.protocol = proto;
    return r;
}

std::vector<std::pair<std::string, tc::Rule>> uplink_samples(const std::string& dev, int ifindex) {
    std::vector<std::pair<std::string, tc::Rule>> out;
    auto ct = base(dev, 256, 150, tc::kEth8021Q);
    ct.match.vlan_ethtype = tc::kEthIpv4;
    ct.match.dst_ip = *IpPrefix::parse("0.0.0.0/1");
    ct.actions = {tc::Ct{1, false, true, false, std::nullopt}, tc::Goto{0x1000}};
    out.emplace_back("ct zone 1 nat + goto (the NAT lookup)", ct);

    auto est = base(dev, 0x1000, 1, tc::kEth8021Q);
    est.match.vlan_ethtype = tc::kEthIpv4;
    est.match.ct_state = tc::Masked<std::uint16_t>{tc::kCtTracked | tc::kCtEstablished,
                                                   tc::kCtTracked | tc::kCtEstablished};
    tc::Rewrite rw;
    rw.eth_dst = Mac{2, 0, 0, 0, 0xc8, 0xfe};
    rw.eth_src = Mac{2, 0, 0, 0, 0x20, 0};
    rw.dec_ttl = true;
    est.actions = {rw, tc::CsumIp4h{}, tc::VlanPop{}, tc::VlanPush{200}, tc::Redirect{ifindex, dev, 0xd90000c8}};
    out.emplace_back("ct_state +trk+est forward", est);

    auto commit = base(dev, 0x1000, 2, tc::kEth8021Q);
    commit.match.vlan_ethtype = tc::kEthIpv4;
    commit.match.src_ip = *IpPrefix::parse("10.100.0.2/32");
    commit.match.ct_state = tc::Masked<std::uint16_t>{tc::kCtTracked | tc::kCtNew, tc::kCtTracked | tc::kCtNew};
    commit.match.ct_zone = 1;
    commit.actions = {tc::Ct{1, true, false, false,
                             tc::SnatRange{*IpAddress::parse("198.51.100.3"), *IpAddress::parse("198.51.100.3"), 4608,
                                           5119}},
                      tc::Pass{}};
    out.emplace_back("ct commit nat src addr/port range (a subscriber's chunk)", commit);

    auto inv = base(dev, 0x1000, 3, tc::kEth8021Q);
    inv.match.vlan_ethtype = tc::kEthIpv4;
    inv.match.ct_state = tc::Masked<std::uint16_t>{tc::kCtTracked | tc::kCtInvalid, tc::kCtTracked | tc::kCtInvalid};
    inv.actions = {tc::Drop{}};
    out.emplace_back("ct_state +trk+inv drop", inv);

    auto v6 = base(dev, 0x1000, 4, tc::kEth8021Q);
    v6.match.vlan_ethtype = tc::kEthIpv6;
    v6.match.ct_state = tc::Masked<std::uint16_t>{tc::kCtTracked | tc::kCtNew, tc::kCtTracked | tc::kCtNew};
    v6.actions = {tc::Ct{1, true, false, false, std::nullopt}, tc::Pass{}};
    out.emplace_back("ct commit without nat (IPv6)", v6);

    auto clear = base(dev, 0x1000, 5, tc::kEth8021Q);
    clear.match.vlan_ethtype = tc::kEthIpv4;
    clear.match.dst_mac = Mac{2, 0, 0, 0, 0x10, 0};
    clear.actions = {tc::Ct{0, false, false, true, std::nullopt}, tc::Pass{}};
    out.emplace_back("ct clear, dst_mac", clear);

    // The punt rule: first packets rate-limited by a police action before the redirect.
    auto punt = base(dev, 0x8000, 2, tc::kEth8021Q);
    punt.match.vlan_ethtype = tc::kEthIpv4;
    punt.match.ct_state = tc::Masked<std::uint16_t>{tc::kCtTracked | tc::kCtNew, tc::kCtTracked | tc::kCtNew};
    punt.actions = {tc::Police{1000, 100}, tc::Redirect{ifindex, dev, 0xd9200000}};
    out.emplace_back("police pkts_rate + redirect (the punt rule)", punt);
    auto odd = punt;
    odd.prio = 3;
    odd.actions = {tc::Police{777, 77}, tc::Drop{}};
    out.emplace_back("police at a rate whose burst is not a whole number of ticks", odd);
    return out;
}

std::vector<std::pair<std::string, tc::Rule>> vxlan_samples(const std::string& dev, int uplink) {
    std::vector<std::pair<std::string, tc::Rule>> out;
    auto decap = base(dev, 0, 1, tc::kEthAll);
    decap.match.enc_key_id = 5001;
    decap.match.enc_dst_ip = *IpAddress::parse("10.0.1.1");
    decap.match.enc_dst_port = 4789;
    decap.actions = {tc::Goto{0x100}};
    out.emplace_back("vxlan decap keys (enc_key_id, enc_dst_ip, enc_dst_port)", decap);

    auto classify = base(dev, 0, 1, tc::kEthAll);
    classify.match.dst_mac = Mac{2, 0xdd, 0, 0, 0x13, 0x89};
    classify.match.enc_key_id = 6001;
    classify.match.enc_dst_ip = *IpAddress::parse("10.0.2.1");
    classify.match.enc_dst_port = 4789;
    classify.actions = {tc::Goto{0x10100}};
    out.emplace_back("iface = f(vni), decap keys and inner dst_mac", classify);

    // The NAT punt path's re-entry (pipeline.hpp): marked with VNI 0 and UDP port 0.
    auto reentry = base(dev, 0, 2, tc::kEthIpv4);
    reentry.match.enc_key_id = 0;
    reentry.match.enc_dst_port = 0;
    reentry.actions = {tc::Goto{0x10100}};
    out.emplace_back("re-entry mark match (enc_key_id 0, enc_dst_port 0)", reentry);

    auto back = base(dev, 0x10100, 99, tc::kEthIpv4);
    back.match.dst_ip = *IpPrefix::parse("10.40.0.0/16");
    back.actions = {tc::TunnelSet{0, *IpAddress::parse("0.0.0.0"), *IpAddress::parse("0.0.0.0"), 0, false},
                    tc::Redirect{uplink, "", 0xd9200002u, true}};
    out.emplace_back("re-entry mark, tunnel_key set id 0 port 0 + mirred ingress", back);

    auto encap = base(dev, 0x100, 100, tc::kEthIpv4);
    encap.match.dst_ip = *IpPrefix::parse("10.50.0.0/16");
    encap.actions = {tc::TunnelSet{6001, *IpAddress::parse("10.0.2.1"), *IpAddress::parse("10.0.2.10"), 4789, false},
                     tc::Redirect{uplink, "", 0xda000000u + 6001}};
    out.emplace_back("tunnel_key set (VXLAN encap metadata)", encap);

    auto unset = base(dev, 0x100, 101, tc::kEthIpv4);
    unset.match.dst_ip = *IpPrefix::parse("10.60.0.0/16");
    unset.actions = {tc::TunnelUnset{}, tc::Pass{}};
    out.emplace_back("tunnel_key unset", unset);
    return out;
}

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
// A batch of changes where one is refused: every change gets its own answer, observed
// (each acked, with its echo) and unobserved (one ack per batch, errors only for the rest).
DPO_GCC_WARNING_OFF("-Wrestrict")
int batch_answers(program::Backend& backend, const std::string& dev, int ifindex, std::uint32_t& handle) {
    int failed = 0;
    for (const bool observed : {false, true}) {
        backend.set_observed(observed);
        const char* mode = observed ? "observed" : "unobserved";
        for (const std::size_t refused : {std::size_t{2}, std::size_t{4}}) {  // in the middle; the last
            std::vector<program::Change> batch;
            const std::uint16_t prio = static_cast<std::uint16_t>(observed ? 20 + refused : 10 + refused);
            for (std::size_t i = 0; i < 5; ++i) {
                program::Change c;
                c.kind = program::Change::Kind::Add;
                c.ifindex = ifindex;
                c.rule = base(dev, 7, prio, tc::kEth8021Q);
                c.rule.match.vlan_id = static_cast<std::uint16_t>(1000 + i);
                c.rule.actions = {tc::Drop{}};
                c.handle = i == refused ? batch.front().handle : handle++;  // taken: EEXIST
                batch.push_back(std::move(c));
            }
            const auto applied = backend.apply(batch);
            std::string got;
            bool ok = applied.results.size() == batch.size();
            for (std::size_t i = 0; ok && i < batch.size(); ++i) {
                const auto& r = applied.results[i];
                got += (i ? " " : "") + std::string(r.lost ? "lost" : r.error ? std::strerror(r.error) : "ok");
                ok = !r.lost && (i == refused ? r.error == EEXIST : r.error == 0) &&
                     (!observed || i == refused || r.in_hw || r.not_in_hw);
            }
            std::size_t installed = 0;
            if (auto dump = backend.dump(dev))
                for (const auto& f : *dump)
                    if (f.rule.chain == 7 && f.rule.prio == prio) ++installed;
            ok = ok && installed == batch.size() - 1;
            std::printf("%s %s batch of 5 adds, #%zu refused (a taken handle): answers [%s], %zu installed\n",
                        ok ? "PASS" : "FAIL", mode, refused + 1, got.c_str(), installed);
            failed += ok ? 0 : 1;
        }
    }
    return failed;
}
DPO_GCC_WARNING_ON

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3 || (std::strcmp(argv[1], "vlan") && std::strcmp(argv[1], "vxlan"))) {
        std::fprintf(stderr, "usage: tc-probe vlan|vxlan DEV\n");
        return 2;
    }
    const std::string dev = argv[2];
    const int ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
    auto tcnl = kernel::TcNetlink::open();
    if (!tcnl || !ifindex) {
        std::printf("FAIL open: %s\n", tcnl ? ("no device " + dev).c_str() : tcnl.error().c_str());
        return 1;
    }
    auto& backend = **tcnl;
    const auto samples = std::strcmp(argv[1], "vlan") == 0 ? uplink_samples(dev, ifindex) : vxlan_samples(dev, ifindex);
    if (auto q = backend.ensure_clsact(dev); !q) {
        std::printf("FAIL clsact: %s\n", q.error().c_str());
        return 1;
    }
    int failed = 0;
    std::uint32_t handle = 0x80000000u;
    for (const auto& [what, rule] : samples) {
        program::Change add;
        add.kind = program::Change::Kind::Add;
        add.ifindex = ifindex;
        add.rule = rule;
        add.handle = handle++;
        const auto applied = backend.apply({add});
        const auto& result = applied.results.at(0);
        if (result.error || result.lost) {
            std::printf("FAIL %s: refused: %s (%s)\n", what.c_str(), std::strerror(result.error), result.extack.c_str());
            ++failed;
            continue;
        }
        if (!result.in_hw && !result.not_in_hw) {
            std::printf("FAIL %s: the echo said nothing of hardware\n", what.c_str());
            ++failed;
        }
        auto dump = backend.dump(dev);
        const tc::Installed* found = nullptr;
        if (dump)
            for (const auto& i : *dump)
                if (i.rule.identity() == rule.identity()) found = &i;
        if (!found) {
            std::printf("FAIL %s: not found in the dump\n", what.c_str());
            ++failed;
        } else if (!found->owned || !found->decoded || !(found->rule == rule)) {
            std::printf("FAIL %s: dumped back as %s (owned %d, decoded %d); sent %s\n", what.c_str(),
                        tc::to_tc_command(found->rule).c_str(), found->owned, found->decoded,
                        tc::to_tc_command(rule).c_str());
            ++failed;
        } else {
            std::printf("PASS %s: accepted and dumped back identical (%s)\n", what.c_str(),
                        found->not_in_hw ? "not_in_hw" : (found->in_hw ? "in_hw" : "no hw flag"));
        }
    }
    if (std::strcmp(argv[1], "vlan") == 0) failed += batch_answers(backend, dev, ifindex, handle);
    return failed ? 1 : 0;
}
