// SPDX-License-Identifier: GPL-2.0-or-later
// What one event costs the engine at scale, in operations and in time: a hypervisor with
// 100k routes through 1k next hops, and 100k NAT subscribers holding chunks. The kernel
// is a fake that answers every change and counts them (no rule is kept, so the memory is
// the engine's). Numbers, not pass/fail: `build/test/engine-bench [routes subscribers
// next_hops]`; the operation counts are asserted at smaller scale by the unit tests.
#include <malloc.h>
#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "core/compile/pipeline.hpp"
#include "core/engine/engine.hpp"
#include "core/mapping_loader.hpp"
#include "core/nat/nat_manager.hpp"

using namespace dpo;

namespace {

long max_rss_kib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

// Bytes the allocator has handed out now (RSS keeps what a transient peak took).
double heap_mib() { return static_cast<double>(mallinfo2().uordblks) / (1024.0 * 1024.0); }

double cpu_ms() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Answers every change (in software, as the lab's kernel does) and counts.
// It keeps where each filter is (device, place, handle), what a terse dump needs.
class CountingKernel final : public program::Backend {
public:
    std::size_t changes = 0, batches = 0, dumps = 0;
    struct Place {
        std::uint32_t chain;
        std::uint16_t prio, protocol;
    };
    std::map<std::pair<int, std::uint32_t>, Place> at;  // 64-byte nodes: counted apart below
    program::Applied apply(const std::vector<program::Change>& cs) override {
        ++batches;
        changes += cs.size();
        program::Applied out;
        out.results.resize(cs.size());
        for (std::size_t i = 0; i < cs.size(); ++i) {
            const auto& c = cs[i];
            out.results[i].not_in_hw = true;
            if (c.kind == program::Change::Kind::Delete) {
                at.erase({c.ifindex, c.handle});
            } else if (c.kind == program::Change::Kind::Add) {
                at[{c.ifindex, c.handle}] = Place{c.rule.chain, c.rule.prio, c.rule.protocol};
            }
        }
        return out;
    }
    program::Applied poll_events() override { return {}; }
    int event_fd() const override { return -1; }
    void set_observed(bool) override {}
    using program::Backend::dump;
    Result<Done> dump(const std::string& dev, bool terse, const Visitor& each) override {
        ++dumps;
        if (!terse) return Done{};  // a first start finds nothing
        const int ifindex = dev == "p0" ? 2 : dev == "dpo-inject" ? 42 : 43;
        for (const auto& [key, place] : at) {
            if (key.first != ifindex) continue;
            tc::Installed in;
            in.rule.dev = dev;
            in.rule.chain = place.chain;
            in.rule.prio = place.prio;
            in.rule.protocol = place.protocol;
            in.handle = key.second;
            in.owned = true;
            in.not_in_hw = true;
            each(std::move(in));
        }
        return Done{};
    }
    Result<Done> ensure_clsact(const std::string&) override { return Done{}; }
};

// The NAT stage as the daemon's runtime shows it to the engine.
class StageView final : public nat::NatView {
public:
    explicit StageView(const nat::NatManager& m) : m_(m) {}
    int punt_ifindex() const override { return 42; }
    std::string punt_dev() const override { return "dpo-inject"; }
    std::string punt_sink_dev() const override { return "dpo-punt"; }
    std::optional<nat::NatSubscriber> subscriber(const IpAddress& a) const override { return m_.subscriber(a); }
    std::vector<IpAddress> subscribers() const override { return m_.subscribers(); }

private:
    const nat::NatManager& m_;
};

Link link(int ifindex, const char* name, const char* kind, int parent, std::uint16_t vid, std::uint8_t m) {
    Link l;
    l.ifindex = ifindex;
    l.name = name;
    l.kind = kind;
    l.parent_ifindex = parent;
    if (vid) l.vlan_id = vid;
    l.mac = Mac{2, 0, 0, 0, 0, m};
    l.up = true;
    return l;
}

IpAddress v4(std::uint32_t a) { return IpAddress::v4(a); }

// Routes spread over the three interfaces through `next_hops` gateways; a third outer-bound.
KernelState hypervisor(std::size_t routes, std::size_t next_hops) {
    KernelState k;
    k.links[2] = link(2, "p0", "", 0, 0, 1);
    k.links[3] = link(3, "p0.100", "vlan", 2, 100, 0x10);
    k.links[4] = link(4, "p0.101", "vlan", 2, 101, 0x11);
    k.links[5] = link(5, "p0.200", "vlan", 2, 200, 0x20);
    k.links[42] = link(42, "dpo-inject", "veth", 43, 0, 0xd1);
    k.links[43] = link(43, "dpo-punt", "veth", 42, 0, 0xd2);
    for (int i = 3; i <= 5; ++i) {
        k.addresses.push_back({i, IpPrefix{v4(0x0a000001u | (static_cast<std::uint32_t>(i) << 16)), 16}});
        Route c;
        c.table = 254;
        c.type = 1;
        c.destination = IpPrefix{v4(0x0a000000u | (static_cast<std::uint32_t>(i) << 16)), 16};
        c.nexthops = {{std::nullopt, i}};
        k.routes.push_back(c);
    }
    for (std::size_t g = 0; g < next_hops; ++g) {
        Neighbour n;
        n.ifindex = 3 + static_cast<int>(g % 3);
        n.address = v4(0x0a000000u | (static_cast<std::uint32_t>(n.ifindex) << 16) | (10 + static_cast<std::uint32_t>(g / 3)));
        n.mac = Mac{2, 1, 0, 0, static_cast<std::uint8_t>(g >> 8), static_cast<std::uint8_t>(g)};
        n.state = NeighbourState::Resolved;
        k.neighbours.push_back(n);
    }
    for (std::size_t r = 0; r < routes; ++r) {
        const Neighbour& gw = k.neighbours[r % next_hops];
        Route x;
        x.table = 254;
        x.type = 1;
        x.destination = IpPrefix{v4(0x64000000u + (static_cast<std::uint32_t>(r) << 8)), 24};
        x.nexthops = {{gw.address, gw.ifindex}};
        k.routes.push_back(x);
    }
    return k;
}

struct Cost {
    double cpu = 0;
    std::size_t changes = 0, dumps = 0, keys = 0;
};

template <class Fn>
Cost measure(engine::Engine& e, CountingKernel& tc, engine::Time& now, Fn event) {
    const auto c0 = tc.changes;
    const auto d0 = tc.dumps;
    Cost c;
    const double t0 = cpu_ms();
    event();
    // As the daemon does: flush whenever the engine is due (debounce in virtual time).
    for (int i = 0; i < 1000; ++i) {
        const auto due = e.next_due(now);
        if (!due || *due > now + std::chrono::seconds(1)) break;
        now = std::max(now, *due);
        c.keys += e.flush(now).keys;
    }
    c.cpu = cpu_ms() - t0;
    c.changes = tc.changes - c0;
    c.dumps = tc.dumps - d0;
    return c;
}

void report(const char* what, const Cost& c, int n) {
    std::printf("%-52s %9.3f ms cpu  %5.2f changes  %4.2f keys  %zu dumps   (mean of %d)\n", what, c.cpu / n,
                static_cast<double>(c.changes) / n, static_cast<double>(c.keys) / n, c.dumps, n);
}

void add(Cost& a, const Cost& b) {
    a.cpu += b.cpu;
    a.changes += b.changes;
    a.dumps += b.dumps;
    a.keys += b.keys;
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t routes = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100000;
    const std::size_t subscribers = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 100000;
    const std::size_t next_hops = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 1000;
    auto m = parse_mapping(R"({"uplink": "p0", "interfaces": [
        {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
        {"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101},
        {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}],
        "nat": {"zone": 1, "pool": ["198.18.0.0/21"], "chunk_size": 512, "max_chunks_per_subscriber": 4}})",
                           "bench");
    if (!m) return 1;
    std::printf("engine-bench: %zu routes, %zu next hops, %zu NAT subscribers (VLAN mapping with NAT)\n", routes,
                next_hops, subscribers);

    const double heap0 = heap_mib();
    const KernelState k = hypervisor(routes, next_hops);
    const double heap_state = heap_mib();
    nat::NatManager nat(*m->nat);
    for (std::size_t s = 0; s < subscribers; ++s) (void)nat.first_packet(v4(0x0a640000u + static_cast<std::uint32_t>(s) + 256), 0);
    (void)nat.take_changed();
    (void)nat.take_events();
    StageView view(nat);
    const double heap_nat = heap_mib();
    std::printf("state built: max rss %.1f MiB (the kernel's snapshot %.1f MiB, the NAT chunk table %.1f MiB on the heap)\n",
                static_cast<double>(max_rss_kib()) / 1024.0, heap_state - heap0, heap_nat - heap_state);

    CountingKernel tc;
    engine::Options o;
    o.audit_every = std::chrono::seconds(0);
    engine::Engine e(*m, tc, o);
    engine::Time now{};
    const double t0 = cpu_ms();
    const auto w0 = std::chrono::steady_clock::now();
    e.nat_stage(&view, now);
    e.start(k, now);
    const auto start = e.flush(now);
    const double start_cpu = cpu_ms() - t0;
    const double start_wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count();
    const auto counts = e.counts();
    const double fake = static_cast<double>(tc.at.size()) * 64 / (1024.0 * 1024.0);
    const double engine_heap = heap_mib() - heap_nat - fake;
    std::printf("the engine holds %.1f MiB on the heap (model, keys, reverse index, rule table; the fake kernel's "
                "%.1f MiB left out): %.0f bytes per rule\n",
                engine_heap, fake, engine_heap * 1024 * 1024 / static_cast<double>(counts.rules));
    std::printf("cold start: %zu rules, %zu keys, %zu changes in %zu batches, %.0f ms cpu (%.0f ms wall), "
                "%zu reverse-index edges; max rss %.1f MiB\n",
                counts.rules, start.keys, tc.changes, tc.batches, start_cpu, start_wall, counts.watchers,
                static_cast<double>(max_rss_kib()) / 1024.0);

    // The rule count as a sum: each subscriber one rule, each next hop its chains, each
    // route its rules, never a product.
    const std::size_t outer_routes = (routes + 2) / 3;
    std::printf("rules = %zu; subscribers %zu + next hops %zu (x%zu) + outer-bound routes %zu (x3) + other routes %zu "
                "(x2) + fixed: %.2f rules per (subscriber + next hop + route)\n",
                counts.rules, subscribers, e.adjacencies().size(),
                e.adjacencies().size() ? (counts.rules - subscribers - 3 * outer_routes - 2 * (routes - outer_routes)) /
                                             e.adjacencies().size()
                                       : 0,
                outer_routes, routes - outer_routes,
                static_cast<double>(counts.rules) / static_cast<double>(subscribers + e.adjacencies().size() + routes));

    const int n = 200;
    // 172.16.i.0/24 via the i-th next hop: routes the kernel did not have.
    const auto route_at = [&](int i) {
        Route r;
        r.table = 254;
        r.type = 1;
        r.destination = IpPrefix{v4(0xac100000u + (static_cast<std::uint32_t>(i) << 8)), 24};
        const auto& via = k.neighbours[static_cast<std::size_t>(i) % next_hops];
        r.nexthops = {{via.address, via.ifindex}};
        return r;
    };
    Cost total;
    for (int i = 0; i < n; ++i) {
        const Route r = route_at(i);
        add(total, measure(e, tc, now, [&] { e.kernel(model::RouteEvent{r, false}, now); }));
    }
    report("one route added", total, n);
    total = {};
    for (int i = 0; i < n; ++i) {
        const Route r = route_at(i);
        add(total, measure(e, tc, now, [&] { e.kernel(model::RouteEvent{r, true}, now); }));
    }
    report("one route deleted", total, n);
    total = {};
    for (int i = 0; i < n; ++i) {
        Neighbour g = k.neighbours[static_cast<std::size_t>(i) % next_hops];
        g.mac = Mac{2, 9, 9, 0, static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)};
        add(total, measure(e, tc, now, [&] { e.kernel(model::NeighbourEvent{g, false}, now); }));
    }
    char what[96];
    std::snprintf(what, sizeof what, "a gateway's MAC changed (~%zu routes through it)", routes / next_hops);
    report(what, total, n);
    total = {};
    for (int i = 0; i < n; ++i) {
        const Neighbour& was = k.neighbours[static_cast<std::size_t>(i) % next_hops];
        Neighbour g = *e.model().neighbour(was.ifindex, was.address);
        g.nud = static_cast<std::uint16_t>(1 + i % 4);  // REACHABLE, STALE, ...: no change for rules
        add(total, measure(e, tc, now, [&] { e.kernel(model::NeighbourEvent{g, false}, now); }));
    }
    report("a gateway's NUD state moved", total, n);
    total = {};
    for (int i = 0; i < n; ++i) {
        // A first packet, as the daemon serves it: the frame's source, a chunk, the
        // subscriber's rule through the urgent lane.
        std::vector<std::uint8_t> frame(14 + 4 + 20, 0);
        frame[12] = 0x81;
        frame[16] = 0x08;
        frame[18] = 0x45;
        const std::uint32_t src = 0x0a640000u + static_cast<std::uint32_t>(subscribers + 512 + static_cast<std::size_t>(i));
        for (int b = 0; b < 4; ++b) frame[18 + 12 + b] = static_cast<std::uint8_t>(src >> (24 - 8 * b));
        add(total, measure(e, tc, now, [&] {
                const auto sub = nat::ipv4_source(frame);
                (void)nat.first_packet(*sub, 1);
                (void)nat.take_events();
                e.subscribers(nat.take_changed(), true, now);
            }));
    }
    report("a new NAT subscriber's first packet, to its rule sent", total, n);
    std::printf("after: %zu rules, %zu keys, max rss %.1f MiB\n", e.counts().rules, e.counts().keys,
                static_cast<double>(max_rss_kib()) / 1024.0);
    return 0;
}
