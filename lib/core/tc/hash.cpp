// SPDX-License-Identifier: GPL-2.0-or-later
#include "hash.hpp"

#include <cstring>
#include <vector>

namespace dpo::tc {

namespace {

// The rule's content as bytes, each field tagged, so that two different rules never
// serialise alike.
class Bytes {
public:
    void u8(std::uint8_t v) { raw(&v, 1); }
    void u16(std::uint16_t v) { raw(&v, sizeof v); }
    void u32(std::uint32_t v) { raw(&v, sizeof v); }
    void raw(const void* p, std::size_t n) {
        // On the stack while it fits (every rule we write does), on the heap after.
        if (heap_.empty() && size_ + n <= stack_.size()) {
            std::memcpy(stack_.data() + size_, p, n);
        } else {
            if (heap_.empty()) heap_.assign(stack_.begin(), stack_.begin() + static_cast<std::ptrdiff_t>(size_));
            const auto* c = static_cast<const std::uint8_t*>(p);
            heap_.insert(heap_.end(), c, c + n);
        }
        size_ += n;
    }
    void str(const std::string& s) {
        u32(static_cast<std::uint32_t>(s.size()));
        raw(s.data(), s.size());
    }
    void ip(const IpAddress& a) {
        u8(static_cast<std::uint8_t>(a.family));
        raw(a.bytes.data(), a.size());
    }
    void prefix(const IpPrefix& p) {
        ip(p.address);
        u8(p.length);
    }
    template <class T, class Fn>
    void opt(std::uint8_t tag, const std::optional<T>& o, Fn put) {
        if (!o) return;
        u8(tag);
        put(*o);
    }
    const std::uint8_t* data() const { return heap_.empty() ? stack_.data() : heap_.data(); }
    std::size_t size() const { return size_; }

private:
    std::array<std::uint8_t, 1024> stack_;
    std::vector<std::uint8_t> heap_;
    std::size_t size_ = 0;
};

struct ActionBytes {
    Bytes& b;
    void operator()(const Goto& g) { b.u32(g.chain); }
    void operator()(const Pass&) {}
    void operator()(const Drop& d) { b.u32(d.index); }
    void operator()(const VlanPop&) {}
    void operator()(const VlanPush& p) { b.u16(p.vid); }
    void operator()(const Rewrite& r) {
        b.opt(1, r.eth_dst, [&](const Mac& m) { b.raw(m.data(), m.size()); });
        b.opt(2, r.eth_src, [&](const Mac& m) { b.raw(m.data(), m.size()); });
        b.u8(static_cast<std::uint8_t>(r.dec_ttl | (r.dec_hoplimit << 1)));
    }
    void operator()(const CsumIp4h&) {}
    void operator()(const Police& p) {
        b.u32(static_cast<std::uint32_t>(p.packets_per_second));
        b.u32(static_cast<std::uint32_t>(p.packets_per_second >> 32));
        b.u32(static_cast<std::uint32_t>(p.burst));
        b.u32(static_cast<std::uint32_t>(p.burst >> 32));
    }
    void operator()(const Redirect& r) {
        b.u32(static_cast<std::uint32_t>(r.ifindex));
        b.u32(r.index);
        b.u8(r.ingress);
    }
    void operator()(const Ct& c) {
        b.u16(c.zone);
        b.u8(static_cast<std::uint8_t>(c.commit | (c.nat << 1) | (c.clear << 2)));
        b.opt(1, c.snat, [&](const SnatRange& s) {
            b.ip(s.min);
            b.ip(s.max);
            b.u16(s.port_min);
            b.u16(s.port_max);
        });
    }
    void operator()(const TunnelSet& t) {
        b.u32(t.vni);
        b.ip(t.src);
        b.ip(t.dst);
        b.u16(t.dst_port);
        b.u8(t.csum);
    }
    void operator()(const TunnelUnset&) {}
};

std::uint64_t rotl(std::uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

// SipHash-1-3 (one compression round, three finalisation rounds).
std::uint64_t siphash13(const std::uint8_t* in, std::size_t len, const HashKey& k) {
    std::uint64_t v0 = 0x736f6d6570736575ULL ^ k[0];
    std::uint64_t v1 = 0x646f72616e646f6dULL ^ k[1];
    std::uint64_t v2 = 0x6c7967656e657261ULL ^ k[0];
    std::uint64_t v3 = 0x7465646279746573ULL ^ k[1];
    auto round = [&] {
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
    };
    const std::size_t whole = len - len % 8;
    for (std::size_t i = 0; i < whole; i += 8) {
        std::uint64_t m;
        std::memcpy(&m, in + i, 8);
        v3 ^= m;
        round();
        v0 ^= m;
    }
    std::uint64_t last = static_cast<std::uint64_t>(len) << 56;
    for (std::size_t i = 0; i < len % 8; ++i) last |= static_cast<std::uint64_t>(in[whole + i]) << (8 * i);
    v3 ^= last;
    round();
    v0 ^= last;
    v2 ^= 0xff;
    round();
    round();
    round();
    return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace

std::uint64_t content_hash(const Rule& r, const HashKey& key) {
    Bytes b;
    b.str(r.dev);
    b.u32(r.chain);
    b.u16(r.prio);
    b.u16(r.protocol);
    const FlowerMatch& m = r.match;
    b.opt(1, m.dst_mac, [&](const Mac& x) { b.raw(x.data(), x.size()); });
    b.opt(2, m.vlan_id, [&](std::uint16_t x) { b.u16(x); });
    b.opt(3, m.vlan_ethtype, [&](std::uint16_t x) { b.u16(x); });
    b.opt(4, m.dst_ip, [&](const IpPrefix& x) { b.prefix(x); });
    b.opt(5, m.src_ip, [&](const IpPrefix& x) { b.prefix(x); });
    b.opt(6, m.ip_ttl, [&](const Masked<std::uint8_t>& x) {
        b.u8(x.value);
        b.u8(x.mask);
    });
    b.opt(7, m.ct_state, [&](const Masked<std::uint16_t>& x) {
        b.u16(x.value);
        b.u16(x.mask);
    });
    b.opt(8, m.ct_zone, [&](std::uint16_t x) { b.u16(x); });
    b.opt(9, m.enc_key_id, [&](std::uint32_t x) { b.u32(x); });
    b.opt(10, m.enc_dst_ip, [&](const IpAddress& x) { b.ip(x); });
    b.opt(11, m.enc_dst_port, [&](std::uint16_t x) { b.u16(x); });
    for (const auto& a : r.actions) {
        b.u8(static_cast<std::uint8_t>(0x80 | a.index()));
        std::visit(ActionBytes{b}, a);
    }
    return siphash13(b.data(), b.size(), key);
}

}  // namespace dpo::tc
