// SPDX-License-Identifier: GPL-2.0-or-later
// dpoffloadd: keeps tc flower rules on an mlx5 switchdev uplink that implement the
// dataplane flow chart. This file is the thin top: options, signals, exit codes.

#include <getopt.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "core/compile/compiler.hpp"
#include "core/inventory.hpp"
#include "core/log.hpp"
#include "core/mapping_loader.hpp"
#include "kernel/rtnl_snapshot.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

const char* const kDefaultConfig = "/etc/dpoffload/mapping.json";

void usage(FILE* to) {
    std::fprintf(to,
                 "usage: dpoffloadd [--config FILE] [--check | --show | --dry-run]\n"
                 "\n"
                 "  -c, --config FILE  interface-mapping file (default %s)\n"
                 "      --check        validate the mapping file and exit: 0 valid, 1 not\n"
                 "      --show         print the mapping and the kernel state it sees, and exit\n"
                 "      --dry-run      print the tc rules it would install, as tc commands, and exit\n"
                 "  -h, --help         this text\n"
                 "      --version      print the version\n"
                 "\n"
                 "Without --check or --show it runs in the foreground until SIGTERM;\n"
                 "SIGHUP reloads the mapping file (an invalid file is refused and the\n"
                 "running configuration stays).\n",
                 kDefaultConfig);
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
    std::printf("%s: valid, %zu interface%s\n", file.c_str(), m->interfaces.size(),
                m->interfaces.size() == 1 ? "" : "s");
    return kExitOk;
}

int show(const std::string& file) {
    auto m = dpo::load_mapping(file);
    if (!m) {
        print_problems(m.error());
        return kExitFailure;
    }
    std::printf("Mapping %s\n", file.c_str());
    for (const auto& line : dpo::describe_mapping(*m)) std::printf("  %s\n", line.c_str());
    auto k = dpo::kernel::read_kernel_state();
    if (!k) {
        std::fprintf(stderr, "cannot read the kernel state: %s\n", k.error().c_str());
        return kExitFailure;
    }
    std::printf("Kernel (%zu links, %zu addresses, %zu routes, %zu neighbours)\n", k->links.size(),
                k->addresses.size(), k->routes.size(), k->neighbours.size());
    for (const auto& f : dpo::inspect_kernel(*m, *k)) std::printf("  %s %s\n", f.ok ? "ok  " : "WARN", f.text.c_str());
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
    for (const auto& r : program.rules) std::printf("# %s\n%s\n", r.why.c_str(), dpo::tc::to_tc_command(r).c_str());
    for (const auto& n : program.notes) std::printf("# note: %s\n", n.c_str());
    return kExitOk;
}

void log_problems(const dpo::Problems& problems) {
    for (const auto& p : problems)
        dpo::log::error("config-problem", {{"file", p.file}, {"path", p.path}, {"reason", p.reason}});
}

void log_kernel_view(const dpo::Mapping& m) {
    auto k = dpo::kernel::read_kernel_state();
    if (!k) {
        dpo::log::error("kernel-read-failed", {{"reason", k.error()}});
        return;
    }
    for (const auto& f : dpo::inspect_kernel(m, *k))
        if (!f.ok) dpo::log::warning("kernel-mismatch", {{"what", f.text}});
}

int run(const std::string& file) {
    auto loaded = dpo::load_mapping(file);
    if (!loaded) {
        log_problems(loaded.error());
        dpo::log::error("config-refused", {{"file", file}, {"problems", std::to_string(loaded.error().size())}});
        return kExitFailure;
    }
    dpo::Mapping mapping = std::move(loaded).value();

    // Signals arrive as readable events, so handling them is ordinary code, not
    // async-signal-unsafe handler code.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) {
        dpo::log::error("startup-failed", {{"reason", std::string("sigprocmask: ") + std::strerror(errno)}});
        return kExitFailure;
    }
    const int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        dpo::log::error("startup-failed", {{"reason", std::string("signalfd: ") + std::strerror(errno)}});
        return kExitFailure;
    }
    dpo::log::notice("started", {{"file", file}, {"interfaces", std::to_string(mapping.interfaces.size())},
                                 {"uplink", mapping.uplink}});
    log_kernel_view(mapping);

    for (;;) {
        signalfd_siginfo si{};
        const ssize_t n = read(sfd, &si, sizeof si);
        if (n < 0 && errno == EINTR) continue;
        if (n != static_cast<ssize_t>(sizeof si)) {
            dpo::log::error("signal-read-failed", {{"reason", std::strerror(errno)}});
            close(sfd);
            return kExitFailure;
        }
        if (si.ssi_signo == SIGHUP) {
            auto next = dpo::load_mapping(file);
            if (!next) {
                log_problems(next.error());
                dpo::log::error("reload-refused", {{"file", file}, {"kept", "running configuration"}});
                continue;
            }
            mapping = std::move(next).value();
            dpo::log::notice("reloaded", {{"file", file}, {"interfaces", std::to_string(mapping.interfaces.size())}});
            log_kernel_view(mapping);
            continue;
        }
        // SIGTERM/SIGINT: leave whatever is installed in place so a restart is hitless.
        dpo::log::notice("stopping", {{"signal", strsignal(static_cast<int>(si.ssi_signo))}});
        close(sfd);
        return kExitOk;
    }
}

}  // namespace

int main(int argc, char** argv) {
    enum { kCheck = 256, kShow, kDryRun, kVersion };
    const option options[] = {
        {"config", required_argument, nullptr, 'c'}, {"check", no_argument, nullptr, kCheck},
        {"show", no_argument, nullptr, kShow},       {"dry-run", no_argument, nullptr, kDryRun},
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, kVersion}, {nullptr, 0, nullptr, 0},
    };
    std::string config = kDefaultConfig;
    int mode = 0;
    for (int c; (c = getopt_long(argc, argv, "c:h", options, nullptr)) != -1;) {
        switch (c) {
            case 'c': config = optarg; break;
            case kCheck:
            case kShow:
            case kDryRun:
                if (mode && mode != c) {
                    std::fprintf(stderr, "dpoffloadd: --check, --show and --dry-run exclude each other\n");
                    return kExitUsage;
                }
                mode = c;
                break;
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
    try {
        if (mode == kCheck) return check(config);
        if (mode == kShow) return show(config);
        if (mode == kDryRun) return dry_run(config);
        return run(config);
    } catch (const std::exception& e) {
        // Only broken invariants get here; say so rather than abort silently.
        std::fprintf(stderr, "dpoffloadd: internal error: %s\n", e.what());
        return kExitFailure;
    }
}
