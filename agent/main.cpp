// SPDX-License-Identifier: GPL-2.0-or-later
// dpoffloadd: keeps tc flower rules on an mlx5 switchdev uplink that implement the
// dataplane flow chart. This file is the thin top: options, signals, exit codes.

#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "core/compile/compiler.hpp"
#include "core/compile/pipeline.hpp"
#include "core/compile/inventory.hpp"
#include "core/mapping_loader.hpp"
#include "core/text.hpp"
#include "daemon.hpp"
#include "metrics.hpp"
#include "journal_sink.hpp"
#include "core/reconcile/plan.hpp"
#include "kernel/rtnl_snapshot.hpp"
#include "kernel/tc_netlink.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

const char* const kDefaultConfig = "/etc/dpoffload/mapping.json";
const char* const kDefaultControlSocket = "/run/dpoffload/control.sock";
const char* const kDefaultStateDir = "/var/lib/dpoffload";

void usage(FILE* to) {
    std::fprintf(to,
                 "usage: dpoffloadd [--config FILE] [--check | --show | --dry-run | --flush] [--netlink-rcvbuf BYTES]\n"
                 "                  [--audit-interval SECONDS] [--control-socket PATH] [--state-dir DIR]\n"
                 "                  [--metrics ADDRESS:PORT]\n"
                 "\n"
                 "  -c, --config FILE  interface-mapping file (default %s)\n"
                 "      --check        validate the mapping file and exit: 0 valid, 1 not\n"
                 "      --show         print the mapping and the kernel state it sees, and exit\n"
                 "      --dry-run      print the tc rules it would install, as tc commands, and exit\n"
                 "      --flush        remove every tc rule it owns, and exit\n"
                 "      --netlink-rcvbuf BYTES  rtnetlink receive buffer (default 32 MiB): a bigger\n"
                 "                     burst of route changes overruns it and forces a full resync\n"
                 "      --audit-interval SECONDS  compare the installed rules with a full dump about\n"
                 "                     this often (default 600, +-20 %%; 0: only at start, after\n"
                 "                     overruns, on reload and when a device is made again)\n"
                 "      --control-socket PATH  where dpoffloadctl asks (default %s;\n"
                 "                     \"\": none)\n"
                 "      --state-dir DIR  where the NAT chunk-event record is kept, which\n"
                 "                     dpoffloadctl nat who reads (default %s; \"\": none)\n"
                 "      --metrics ADDRESS:PORT  serve Prometheus metrics at http://ADDRESS:PORT/metrics\n"
                 "                     (e.g. 127.0.0.1:9641; [::1]:9641 where civetweb has IPv6; default: off)\n"
                 "  -h, --help         this text\n"
                 "      --version      print the version\n"
                 "\n"
                 "Otherwise it runs in the foreground, keeping the rules in step with the\n"
                 "kernel's links, addresses, routes and neighbours. SIGHUP reloads the mapping\n"
                 "file (an invalid file is refused and the running configuration stays);\n"
                 "SIGUSR1 compares the installed rules with a full dump now and repairs\n"
                 "any drift; SIGTERM stops it and leaves the rules in place, so a restart\n"
                 "is hitless.\n",
                 kDefaultConfig, kDefaultControlSocket, kDefaultStateDir);
}

void print_problems(const dpo::Problems& problems) {
    for (const auto& p : problems) std::fprintf(stderr, "%s\n", p.str().c_str());
    std::fprintf(stderr, "%zu problem%s found; nothing was changed\n", problems.size(),
                 problems.size() == 1 ? "" : "s");
}

int check(const std::string& file) {
    auto m = dpo::load_mapping(file);
    if (!m) {
        print_problems(m.error());
        return kExitFailure;
    }
    std::printf("%s: valid, %zu interface%s\n", dpo::printable(file).c_str(), m->interfaces.size(),
                m->interfaces.size() == 1 ? "" : "s");
    return kExitOk;
}

// Our installed rules, each with its offload state, against what we would install now.
void show_rules(const dpo::Mapping& m, const dpo::KernelState& k) {
    auto tc = dpo::kernel::TcNetlink::open();
    if (!tc) {
        std::printf("Rules: cannot read them: %s\n", tc.error().c_str());
        return;
    }
    std::vector<std::string> devs = dpo::compile::rule_devices(m);
    std::vector<std::pair<std::string, std::vector<dpo::tc::Installed>>> dumps;
    std::vector<dpo::tc::Rule> ours;
    auto read = [&](const std::string& dev) {
        if (!k.link_by_name(dev)) {
            std::printf("Rules on %s: no such device\n", dpo::printable(dev).c_str());
            return;
        }
        auto installed = (*tc)->dump(dev);
        if (!installed) {
            std::printf("Rules on %s: cannot read them: %s\n", dev.c_str(), installed.error().c_str());
            return;
        }
        for (const auto& i : *installed)
            if (i.owned && i.decoded) ours.push_back(i.rule);
        dumps.emplace_back(dev, std::move(*installed));
    };
    for (const auto& dev : devs) read(dev);
    // The NAT stage's rules follow the running daemon's chunks: compare against the
    // chunks its installed rules hold, if it ran (its rules use conntrack).
    std::optional<dpo::compile::NatState> nat;
    const bool tracked = std::any_of(ours.begin(), ours.end(), [](const dpo::tc::Rule& r) {
        return std::any_of(r.actions.begin(), r.actions.end(),
                           [](const dpo::tc::Action& a) { return std::holds_alternative<dpo::tc::Ct>(a); });
    });
    if (m.nat && tracked) {
        nat = dpo::compile::nat_state_from(ours);
        if (nat->punt_ifindex) {
            nat->punt_dev = k.link_name(nat->punt_ifindex);
            read(nat->punt_dev);
        }
        std::printf("Rules: the NAT stage ran: compared with the %zu subscriber(s) its rules hold\n",
                    nat->subscribers.size());
    }
    // Next hops keep the ids the daemon gave them: compare with its chains, not new ones.
    dpo::compile::Adjacencies ids(dpo::compile::kMaxAdjacencies);
    dpo::compile::reserve_adjacencies(ids, ours);
    const auto desired = dpo::compile::compile(m, k, nat ? &*nat : nullptr, &ids).rules;
    for (const auto& [dev, installed] : dumps) {
        std::vector<dpo::tc::Rule> here;
        for (const auto& r : desired)
            if (r.dev == dev) here.push_back(r);
        const auto plan = dpo::reconcile::plan(here, installed);
        std::size_t owned = 0, in_hw = 0;
        for (const auto& i : installed) {
            owned += i.owned;
            in_hw += i.owned && i.in_hw;
        }
        std::printf("Rules on %s: %zu ours (%zu in_hw, %zu not_in_hw), %zu not ours; %s\n", dev.c_str(), owned, in_hw,
                    owned - in_hw, installed.size() - owned,
                    plan.empty() ? "in step with the kernel state"
                                 : ("out of step: " + std::to_string(plan.changes()) + " changes pending").c_str());
        for (const auto& i : installed)
            if (i.owned)
                std::printf("  %-10s %s\n", i.in_hw ? "in_hw" : (i.not_in_hw ? "not_in_hw" : "?"),
                            i.decoded ? i.rule.key().c_str() : "(not understood: will be replaced)");
    }
}

int show(const std::string& file) {
    auto m = dpo::load_mapping(file);
    if (!m) {
        print_problems(m.error());
        return kExitFailure;
    }
    std::printf("Mapping %s\n", dpo::printable(file).c_str());
    for (const auto& line : dpo::describe_mapping(*m)) std::printf("  %s\n", dpo::printable(line).c_str());
    auto k = dpo::kernel::read_kernel_state();
    if (!k) {
        std::fprintf(stderr, "cannot read the kernel state: %s\n", k.error().c_str());
        return kExitFailure;
    }
    std::printf("Kernel (%zu links, %zu addresses, %zu routes, %zu neighbours)\n", k->links.size(),
                k->addresses.size(), k->routes.size(), k->neighbours.size());
    for (const auto& f : dpo::inspect_kernel(*m, *k)) std::printf("  %s %s\n", f.ok ? "ok  " : "WARN", dpo::printable(f.text).c_str());
    show_rules(*m, *k);
    return kExitOk;
}

int dry_run(const std::string& file) {
    auto m = dpo::load_mapping(file);
    if (!m) {
        print_problems(m.error());
        return kExitFailure;
    }
    auto k = dpo::kernel::read_kernel_state();
    if (!k) {
        std::fprintf(stderr, "cannot read the kernel state: %s\n", k.error().c_str());
        return kExitFailure;
    }
    const auto program = dpo::compile::compile(*m, *k);
    std::printf("# dpoffloadd --dry-run: %zu rules for %s; nothing was changed\n", program.rules.size(), file.c_str());
    for (const auto& r : program.rules)
        std::printf("# %s\n%s\n", dpo::printable(r.why).c_str(), dpo::printable(dpo::tc::to_tc_command(r)).c_str());
    for (const auto& n : program.notes) std::printf("# note: %s\n", dpo::printable(n).c_str());
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    enum { kCheck = 256, kShow, kDryRun, kFlush, kVersion, kRcvbuf, kAudit, kControl, kStateDir, kMetrics };
    const option options[] = {
        {"config", required_argument, nullptr, 'c'}, {"check", no_argument, nullptr, kCheck},
        {"show", no_argument, nullptr, kShow},       {"dry-run", no_argument, nullptr, kDryRun},
        {"flush", no_argument, nullptr, kFlush},
        {"netlink-rcvbuf", required_argument, nullptr, kRcvbuf},
        {"audit-interval", required_argument, nullptr, kAudit},
        {"control-socket", required_argument, nullptr, kControl},
        {"state-dir", required_argument, nullptr, kStateDir},
        {"metrics", required_argument, nullptr, kMetrics},
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, kVersion}, {nullptr, 0, nullptr, 0},
    };
    std::string config = kDefaultConfig;
    dpo::agent::Options daemon_options;
    daemon_options.control_socket = kDefaultControlSocket;
    daemon_options.state_dir = kDefaultStateDir;
    daemon_options.version = DPO_VERSION;
    int mode = 0;
    for (int c; (c = getopt_long(argc, argv, "c:h", options, nullptr)) != -1;) {
        switch (c) {
            case 'c': config = optarg; break;
            case kControl: daemon_options.control_socket = optarg; break;
            case kStateDir: daemon_options.state_dir = optarg; break;
            case kCheck:
            case kShow:
            case kDryRun:
            case kFlush:
                if (mode && mode != c) {
                    std::fprintf(stderr, "dpoffloadd: --check, --show, --dry-run and --flush exclude each other\n");
                    return kExitUsage;
                }
                mode = c;
                break;
            case kRcvbuf: {
                char* end = nullptr;
                const long v = std::strtol(optarg, &end, 10);
                if (!end || *end || v < 4096 || v > (1L << 30)) {
                    std::fprintf(stderr, "dpoffloadd: --netlink-rcvbuf takes a byte count from 4096 to 1 GiB\n");
                    return kExitUsage;
                }
                daemon_options.netlink_rcvbuf = static_cast<int>(v);
                break;
            }
            case kAudit: {
                char* end = nullptr;
                const long v = std::strtol(optarg, &end, 10);
                if (!end || *end || v < 0 || v > 7 * 24 * 3600) {
                    std::fprintf(stderr, "dpoffloadd: --audit-interval takes seconds from 0 to 604800\n");
                    return kExitUsage;
                }
                daemon_options.audit_interval = std::chrono::seconds(v);
                break;
            }
            case kMetrics: {
                const auto address = dpo::agent::parse_metrics_address(optarg);
                if (!address) {
                    std::fprintf(stderr,
                                 "dpoffloadd: --metrics takes ADDRESS:PORT, an IP address and a port 1-65535 "
                                 "(127.0.0.1:9641, [::1]:9641), not '%s'\n",
                                 dpo::printable(optarg).c_str());
                    return kExitUsage;
                }
                daemon_options.metrics = *address;
                break;
            }
            case 'h': usage(stdout); return kExitOk;
            case kVersion: std::printf("dpoffloadd %s\n", DPO_VERSION); return kExitOk;
            default: usage(stderr); return kExitUsage;
        }
    }
    if (optind != argc) {
        std::fprintf(stderr, "dpoffloadd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return kExitUsage;
    }
    // Under systemd, records go to the journal with their fields (journal_sink.hpp);
    // elsewhere, and for --check's own output, stderr as it is.
    dpo::agent::use_journal_when_connected();
    try {
        if (mode == kCheck) return check(config);
        if (mode == kShow) return show(config);
        if (mode == kDryRun) return dry_run(config);
        if (mode == kFlush) return dpo::agent::flush(config);
        return dpo::agent::run(config, daemon_options);
    } catch (const std::exception& e) {
        // Only broken invariants get here; say so rather than abort silently.
        std::fprintf(stderr, "dpoffloadd: internal error: %s\n", e.what());
        return kExitFailure;
    }
}
