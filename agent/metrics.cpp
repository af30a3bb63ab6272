// SPDX-License-Identifier: GPL-2.0-or-later
// Prometheus-cpp (Debian's prometheus-cpp-dev) and not a hand-written HTTP server: the
// exporter faces whatever connects to its port, and HTTP parsing, keep-alive, slow or
// half-open clients, gzip and the exposition format's escaping rules are the part a
// small server gets wrong; prometheus-cpp brings a maintained server (civetweb), the
// text format and atomic counters and histograms the loop can update without a lock.
#include "metrics.hpp"

#include <arpa/inet.h>
#include <civetweb.h>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <initializer_list>
#include <iterator>
#include <map>
#include <mutex>
#include <variant>

#include "core/compile/counter_names.hpp"
#include "core/log.hpp"
#include "core/malformed.hpp"
#include "kernel/action_stats.hpp"
#include "nat_runtime.hpp"

namespace dpo::agent {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// What the loop computed at its last refresh, for the scrapes until the next.
struct Snapshot {
    std::map<std::string, engine::DeviceCounts> devices;
    bool nat = false;
    std::size_t subscribers = 0, chunks_held = 0;
    std::uint32_t per_address = 0;
    std::vector<std::pair<IpAddress, std::uint32_t>> held;  // by public address
};

ClientMetric metric(std::vector<ClientMetric::Label> labels, double value, MetricType type) {
    ClientMetric m;
    m.label = std::move(labels);
    (type == MetricType::Counter ? m.counter.value : m.gauge.value) = value;
    return m;
}

MetricFamily family(std::string name, std::string help, MetricType type) {
    return MetricFamily{std::move(name), std::move(help), type, {}};
}

// The part of a scrape that the registry's atomics cannot hold: the snapshot and the
// kernel's action statistics. Runs on the exposer's threads.
class Collector final : public prometheus::Collectable {
public:
    void set(Snapshot s) {
        std::lock_guard lock(mu_);
        snapshot_ = std::move(s);
    }
    void set_names(std::vector<compile::CounterName> n) {
        std::lock_guard lock(mu_);
        names_ = std::move(n);
    }

    std::vector<MetricFamily> Collect() const override {
        Snapshot s;
        std::vector<compile::CounterName> names;
        {
            std::lock_guard lock(mu_);
            s = snapshot_;
            names = names_;
        }
        std::vector<MetricFamily> out;
        auto rules = family("dpoffload_rules", "Rules by device and state (desired, installed, in_hw, not_in_hw, refused)",
                            MetricType::Gauge);
        for (const auto& [dev, c] : s.devices)
            for (const auto& [state, v] : std::initializer_list<std::pair<const char*, std::size_t>>{
                     {"desired", c.desired},
                     {"installed", c.installed},
                     {"in_hw", c.in_hw},
                     {"not_in_hw", c.not_in_hw},
                     {"refused", c.refused}})
                rules.metric.push_back(metric({{"device", dev}, {"state", state}}, static_cast<double>(v), MetricType::Gauge));
        out.push_back(std::move(rules));

        auto malformed = family("dpoffload_malformed_input_total",
                                "Kernel or wire input that did not decode and was skipped, by kind", MetricType::Counter);
        const auto counts = malformed_counts();
        for (auto k = static_cast<int>(Malformed::TcFilter); k <= static_cast<int>(Malformed::TcAction); ++k) {
            const auto it = counts.find(static_cast<Malformed>(k));
            malformed.metric.push_back(metric({{"kind", std::string(to_string(static_cast<Malformed>(k)))}},
                                              it == counts.end() ? 0.0 : static_cast<double>(it->second),
                                              MetricType::Counter));
        }
        out.push_back(std::move(malformed));

        if (s.nat) {
            auto gauge = [&](const char* name, const char* help, double v) {
                auto f = family(name, help, MetricType::Gauge);
                f.metric.push_back(metric({}, v, MetricType::Gauge));
                out.push_back(std::move(f));
            };
            gauge("dpoffload_nat_subscribers", "NAT subscribers holding at least one chunk",
                  static_cast<double>(s.subscribers));
            gauge("dpoffload_nat_chunks_held", "NAT port chunks held", static_cast<double>(s.chunks_held));
            auto held = family("dpoffload_nat_pool_chunks_held", "NAT port chunks held, by public address",
                               MetricType::Gauge);
            auto ratio = family("dpoffload_nat_pool_utilisation_ratio",
                                "NAT chunks held / chunks per public address, by public address", MetricType::Gauge);
            for (const auto& [address, n] : s.held) {
                held.metric.push_back(metric({{"address", address.str()}}, n, MetricType::Gauge));
                ratio.metric.push_back(
                    metric({{"address", address.str()}}, s.per_address ? double(n) / s.per_address : 0.0, MetricType::Gauge));
            }
            out.push_back(std::move(held));
            out.push_back(std::move(ratio));
        }
        counters(names, out);
        return out;
    }

private:
    void counters(const std::vector<compile::CounterName>& names, std::vector<MetricFamily>& out) const {
        std::lock_guard lock(reader_mu_);  // exposer threads may scrape at once; one socket
        auto up = family("dpoffload_counters_up", "1 when the tc action statistics were read at this scrape",
                         MetricType::Gauge);
        if (!reader_) {
            auto r = kernel::ActionStatsReader::open();
            if (r) reader_ = std::move(*r);
        }
        auto read = reader_ ? reader_->counters(names) : Result<std::vector<kernel::Counter>>(fail(std::string("no socket")));
        up.metric.push_back(metric({}, read ? 1 : 0, MetricType::Gauge));
        out.push_back(std::move(up));
        if (!read) {
            reader_.reset();  // a new socket next time
            return;
        }
        auto e_packets = family("dpoffload_egress_packets_total",
                                "Packets the fast path sent out through an interface (its shared mirred action)",
                                MetricType::Counter);
        auto e_bytes = family("dpoffload_egress_bytes_total", "Bytes of those packets", MetricType::Counter);
        auto e_hw = family("dpoffload_egress_hw_packets_total", "Of those packets, what the hardware counted",
                           MetricType::Counter);
        auto e_hw_bytes = family("dpoffload_egress_hw_bytes_total", "Of those bytes, what the hardware counted",
                                 MetricType::Counter);
        auto d_packets = family("dpoffload_dropped_packets_total",
                                "Packets the fast path dropped, by reason (its shared gact action)", MetricType::Counter);
        auto d_bytes = family("dpoffload_dropped_bytes_total", "Bytes of those packets", MetricType::Counter);
        auto d_hw = family("dpoffload_dropped_hw_packets_total", "Of those packets, what the hardware dropped",
                           MetricType::Counter);
        for (const auto& c : *read) {
            if (c.kind == "drop") {
                d_packets.metric.push_back(metric({{"reason", c.name}}, double(c.packets), MetricType::Counter));
                d_bytes.metric.push_back(metric({{"reason", c.name}}, double(c.bytes), MetricType::Counter));
                if (c.hw_packets)
                    d_hw.metric.push_back(metric({{"reason", c.name}}, double(*c.hw_packets), MetricType::Counter));
                continue;
            }
            std::vector<ClientMetric::Label> l{{"interface", c.name}, {"device", c.device}, {"via", c.detail}};
            e_packets.metric.push_back(metric(l, double(c.packets), MetricType::Counter));
            e_bytes.metric.push_back(metric(l, double(c.bytes), MetricType::Counter));
            if (c.hw_packets) e_hw.metric.push_back(metric(l, double(*c.hw_packets), MetricType::Counter));
            if (c.hw_bytes) e_hw_bytes.metric.push_back(metric(l, double(*c.hw_bytes), MetricType::Counter));
        }
        for (auto* f : {&e_packets, &e_bytes, &e_hw, &e_hw_bytes, &d_packets, &d_bytes, &d_hw})
            out.push_back(std::move(*f));
    }

    mutable std::mutex mu_;
    Snapshot snapshot_;
    std::vector<compile::CounterName> names_;
    mutable std::mutex reader_mu_;
    mutable std::unique_ptr<kernel::ActionStatsReader> reader_;
};

const prometheus::Histogram::BucketBoundaries kPassBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                              0.1,    0.25,  0.5,    1,     2.5,  5,    10,   30};
const prometheus::Histogram::BucketBoundaries kPuntBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                              0.025,  0.05,    0.1,    0.25,  0.5,    1};

// mg_check_feature(): 8 is "IPv6" (civetweb.h).
constexpr unsigned kCivetwebIpv6 = 8;

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

class PrometheusMetrics final : public Metrics {
public:
    explicit PrometheusMetrics(std::unique_ptr<prometheus::Exposer> exposer)
        : exposer_(std::move(exposer)),
          registry_(std::make_shared<prometheus::Registry>()),
          collector_(std::make_shared<Collector>()),
          passes_(prometheus::BuildCounter()
                      .Name("dpoffload_reconcile_passes_total")
                      .Help("Reconcile passes that did work, by lane (start, urgent, bulk)")
                      .Register(*registry_)),
          pass_seconds_(prometheus::BuildHistogram()
                            .Name("dpoffload_reconcile_duration_seconds")
                            .Help("Time of one reconcile pass (compile and kernel round trips), by lane")
                            .Register(*registry_)),
          audits_(prometheus::BuildCounter().Name("dpoffload_audits_total").Help("Audits (full dumps compared with the installed set)").Register(*registry_).Add({})),
          audit_seconds_(prometheus::BuildHistogram()
                             .Name("dpoffload_audit_duration_seconds")
                             .Help("Time of a pass that audited (dumps and the repairs of that pass)")
                             .Register(*registry_)
                             .Add({}, kPassBuckets)),
          drift_(prometheus::BuildCounter().Name("dpoffload_audit_drift_total").Help("Rules an audit found different from what the daemon had installed").Register(*registry_).Add({})),
          refused_(prometheus::BuildCounter().Name("dpoffload_rules_refused_total").Help("Permanent refusals of a rule by the kernel (each reported once)").Register(*registry_).Add({})),
          events_(prometheus::BuildCounter()
                      .Name("dpoffload_events_total")
                      .Help("Events read, by kind (link, address, route, neighbour, tc-foreign, conntrack, first-packet)")
                      .Register(*registry_)),
          overruns_(prometheus::BuildCounter()
                        .Name("dpoffload_netlink_overruns_total")
                        .Help("Notifications lost (ENOBUFS), by socket: rtnetlink and conntrack are dumped again, tc audited")
                        .Register(*registry_)),
          punts_(prometheus::BuildCounter().Name("dpoffload_nat_first_packets_punted_total").Help("NAT first packets read from the punt port").Register(*registry_).Add({})),
          punt_seconds_(prometheus::BuildHistogram()
                            .Name("dpoffload_nat_first_packet_latency_seconds")
                            .Help("NAT first packet: read from the punt port -> reinjected, its subscriber's rule in")
                            .Register(*registry_)
                            .Add({}, kPuntBuckets)),
          dropped_(prometheus::BuildCounter()
                       .Name("dpoffload_nat_first_packets_dropped_total")
                       .Help("NAT first packets the daemon did not put back, by reason (queue_full, refused, rule_not_in)")
                       .Register(*registry_)),
          allocations_(prometheus::BuildCounter().Name("dpoffload_nat_chunk_allocations_total").Help("NAT port chunks allocated").Register(*registry_).Add({})),
          releases_(prometheus::BuildCounter().Name("dpoffload_nat_chunk_releases_total").Help("NAT port chunks released (idle)").Register(*registry_).Add({})),
          refusals_(prometheus::BuildCounter()
                        .Name("dpoffload_nat_chunk_refusals_total")
                        .Help("NAT chunk requests refused, by reason (chunk_limit, pool_empty)")
                        .Register(*registry_)) {
        prometheus::BuildGauge()
            .Name("dpoffload_build_info")
            .Help("The daemon's version, as a label")
            .Register(*registry_)
            .Add({{"version", DPO_VERSION}})
            .Set(1);
        for (const char* lane : {"start", "urgent", "bulk"}) {
            passes_.Add({{"lane", lane}});
            pass_seconds_.Add({{"lane", lane}}, kPassBuckets);
        }
        for (const char* kind : {"link", "address", "route", "neighbour", "tc-foreign", "conntrack", "first-packet"})
            events_.Add({{"kind", kind}});
        for (const char* s : {"rtnetlink", "conntrack", "tc"}) overruns_.Add({{"socket", s}});
        for (const char* r : {"queue_full", "refused", "rule_not_in"}) dropped_.Add({{"reason", r}});
        for (const char* r : {"chunk_limit", "pool_empty"}) refusals_.Add({{"reason", r}});
        exposer_->RegisterCollectable(registry_);
        exposer_->RegisterCollectable(collector_);
    }
    // The exposer's threads stop before the families they read go.
    ~PrometheusMetrics() override { exposer_.reset(); }

    void mapping(const Mapping& m) override {
        collector_->set_names(compile::counter_names(m));
        dirty_ = true;
    }

    void pass(const engine::Pass& p, std::chrono::nanoseconds took) override {
        if (!p.did_work()) return;
        const char* lane = p.start ? "start" : p.urgent ? "urgent" : "bulk";
        passes_.Add({{"lane", lane}}).Increment();
        pass_seconds_.Add({{"lane", lane}}, kPassBuckets).Observe(seconds(took));
        if (p.audit) {
            audits_.Increment();
            audit_seconds_.Observe(seconds(took));
            drift_.Increment(double(p.drift));
        }
        refused_.Increment(double(p.refused.size()));
        dirty_ = true;
    }

    void kernel_event(const model::Event& e) override {
        static constexpr const char* kKinds[] = {"link", "address", "route", "neighbour"};
        static_assert(std::variant_size_v<model::Event> == std::size(kKinds));
        events_.Add({{"kind", kKinds[e.index()]}}).Increment();
        dirty_ = true;
    }

    void tc_events(const program::Applied& a) override {
        if (!a.events.empty()) events_.Add({{"kind", "tc-foreign"}}).Increment(double(a.events.size()));
        if (a.overrun) overrun("tc");
        dirty_ = dirty_ || !a.events.empty();
    }

    void overrun(std::string_view socket) override {
        overruns_.Add({{"socket", std::string(socket)}}).Increment();
        dirty_ = true;
    }

    void refresh(const engine::Engine& e, const NatRuntime* nat, Clock::time_point now) override {
        if (!dirty_ || now < next_) return;
        dirty_ = false;
        next_ = now + std::chrono::seconds(1);
        Snapshot s;
        s.devices = e.device_counts();
        if (nat) {
            const auto& t = nat->manager().table();
            s.nat = true;
            s.subscribers = t.subscribers();
            s.chunks_held = t.chunks_held();
            s.per_address = t.chunks_per_address();
            for (const auto& u : t.pool_use()) s.held.emplace_back(u.address, u.held);
            // The stage counts for its lifetime; a new stage (restart, reload) counts from 0.
            const auto& c = nat->manager().counters();
            const auto& d = nat->dropped();
            // A new stage at the old one's address is told by its counts going down.
            if (nat != last_nat_ || c.chunk_limit < last_.chunk_limit || c.pool_empty < last_.pool_empty ||
                d.queue_full < last_.queue_full || d.refused < last_.refused)
                last_ = {};
            last_nat_ = nat;
            refusals_.Add({{"reason", "chunk_limit"}}).Increment(double(c.chunk_limit - last_.chunk_limit));
            refusals_.Add({{"reason", "pool_empty"}}).Increment(double(c.pool_empty - last_.pool_empty));
            dropped_.Add({{"reason", "queue_full"}}).Increment(double(d.queue_full - last_.queue_full));
            dropped_.Add({{"reason", "refused"}}).Increment(double(d.refused - last_.refused));
            last_ = {c.chunk_limit, c.pool_empty, d.queue_full, d.refused};
        } else {
            last_nat_ = nullptr;
        }
        collector_->set(std::move(s));
    }

    std::optional<Clock::time_point> due() const override {
        if (!dirty_) return std::nullopt;
        return next_;
    }

    void conntrack_events(std::size_t n) override {
        events_.Add({{"kind", "conntrack"}}).Increment(double(n));
        dirty_ = true;
    }
    void punted(std::size_t n) override {
        punts_.Increment(double(n));
        events_.Add({{"kind", "first-packet"}}).Increment(double(n));
        dirty_ = true;
    }
    void reinjected(std::chrono::nanoseconds waited) override { punt_seconds_.Observe(seconds(waited)); }
    void first_packets_dropped(std::string_view reason, std::size_t n) override {
        dropped_.Add({{"reason", std::string(reason)}}).Increment(double(n));
    }
    void chunks(const std::vector<nat::ChunkEvent>& events) override {
        for (const auto& ev : events)
            (ev.kind == nat::ChunkEvent::Kind::Allocated ? allocations_ : releases_).Increment();
        if (!events.empty()) dirty_ = true;
    }

private:
    std::unique_ptr<prometheus::Exposer> exposer_;
    std::shared_ptr<prometheus::Registry> registry_;
    std::shared_ptr<Collector> collector_;
    prometheus::Family<prometheus::Counter>& passes_;
    prometheus::Family<prometheus::Histogram>& pass_seconds_;
    prometheus::Counter& audits_;
    prometheus::Histogram& audit_seconds_;
    prometheus::Counter& drift_;
    prometheus::Counter& refused_;
    prometheus::Family<prometheus::Counter>& events_;
    prometheus::Family<prometheus::Counter>& overruns_;
    prometheus::Counter& punts_;
    prometheus::Histogram& punt_seconds_;
    prometheus::Family<prometheus::Counter>& dropped_;
    prometheus::Counter& allocations_;
    prometheus::Counter& releases_;
    prometheus::Family<prometheus::Counter>& refusals_;

    bool dirty_ = true;
    Clock::time_point next_{};
    const NatRuntime* last_nat_ = nullptr;
    struct Last {
        std::uint64_t chunk_limit = 0, pool_empty = 0, queue_full = 0, refused = 0;
    } last_;
};

}  // namespace

Metrics& Metrics::none() {
    static Metrics off;
    return off;
}

std::optional<std::string> parse_metrics_address(std::string_view s) {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon + 1 >= s.size()) return std::nullopt;
    const std::string_view host = s.substr(0, colon), port = s.substr(colon + 1);
    unsigned long p = 0;
    for (const char c : port) {
        if (c < '0' || c > '9' || port.size() > 5) return std::nullopt;
        p = p * 10 + static_cast<unsigned long>(c - '0');
    }
    if (p < 1 || p > 65535) return std::nullopt;
    unsigned char buf[16];
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        if (inet_pton(AF_INET6, std::string(host.substr(1, host.size() - 2)).c_str(), buf) != 1) return std::nullopt;
    } else if (inet_pton(AF_INET, std::string(host).c_str(), buf) != 1) {
        return std::nullopt;
    }
    return std::string(s);
}

Result<std::unique_ptr<Metrics>> serve_metrics(const std::string& address) {
    // Debian 12's civetweb (libcivetweb1 1.15) is built without USE_IPV6: it cannot bind
    // [::1]. Said here rather than as civetweb's "null context" at the bind.
    if (address.front() == '[' && !mg_check_feature(kCivetwebIpv6))
        return fail("metrics: cannot listen on " + address +
                    ": the HTTP library (civetweb) was built without IPv6; use an IPv4 address such as 127.0.0.1:9641");
    std::unique_ptr<prometheus::Exposer> exposer;
    try {
        // Two threads: a scrape waiting on the kernel's action dump does not hold up
        // a second client.
        exposer = std::make_unique<prometheus::Exposer>(address, 2);
    } catch (const std::exception& e) {
        return fail("metrics: cannot listen on " + address + ": " + e.what());
    }
    return std::unique_ptr<Metrics>(new PrometheusMetrics(std::move(exposer)));
}

}  // namespace dpo::agent
