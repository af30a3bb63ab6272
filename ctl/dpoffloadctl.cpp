// SPDX-License-Identifier: GPL-2.0-or-later
// dpoffloadctl: asks a running dpoffloadd over its control socket
// (agent/control_server.hpp has the protocol) and prints the answer as tables, or as
// JSON with --json. No netlink here: what it shows is what the daemon holds.

#include <getopt.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

using nlohmann::json;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitNo = 1;       // the daemon refused, or answered "no"
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr int kProtocol = 1;
constexpr std::size_t kMaxAnswer = std::size_t{1} << 30;

const char* const kDefaultSocket = "/run/dpoffload/control.sock";

void usage(FILE* to) {
    std::fprintf(to,
                 "usage: dpoffloadctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n"
                 "\n"
                 "  status                      version, uptime, mapping, rules per device and state,\n"
                 "                              last reconcile and audit, NAT stage\n"
                 "  rules [--dev D] [--chain C] [--not-in-hw] [--refused] [--limit N]\n"
                 "                              the rules, each with its key, why, state and counters\n"
                 "                              (at most N, default 1000; 0: all)\n"
                 "  explain PREFIX|ADDRESS|SUBSCRIBER|INTERFACE\n"
                 "                              which rules carry it, or why the kernel keeps it\n"
                 "  counters                    packets and bytes per egress interface and drop reason\n"
                 "  nat subscribers|chunks|pool [--limit N]\n"
                 "                              chunks per subscriber, chunks held, pool use per address\n"
                 "  nat who PUBLIC_ADDR:PORT [--at TIME]\n"
                 "                              the subscriber that held it at TIME (ISO 8601, e.g.\n"
                 "                              2026-11-23T14:02:00Z; default now): exit 0 held, 1 not\n"
                 "  audit                       compare the rules with a full dump now; print the drift\n"
                 "  reload                      reload the mapping file; exit 1 and the problems if refused\n"
                 "\n"
                 "  -s, --socket PATH  the daemon's control socket (default %s)\n"
                 "  -j, --json         print the daemon's answer as JSON\n"
                 "  -t, --timeout SECONDS  how long to wait for the answer (default 60)\n"
                 "  -h, --help         this text\n"
                 "      --version      print the version\n"
                 "\n"
                 "Exit status: 0 done, 1 the daemon refused or answered no, 2 usage, 3 the daemon\n"
                 "cannot be reached. audit and reload need root (or the daemon's own user).\n",
                 kDefaultSocket);
}

struct Failure {
    int code;
    std::string text;
};

json ask(const std::string& path, const json& request, int timeout_s) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Failure{kExitUnreachable, std::string("socket: ") + std::strerror(errno)};
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) throw Failure{kExitUsage, "socket path too long: " + path};
    std::memcpy(a.sun_path, path.data(), path.size());
    if (connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
        const int e = errno;
        close(fd);
        std::string hint = e == ENOENT || e == ECONNREFUSED ? " (is dpoffloadd running?)"
                           : e == EACCES                    ? " (operators need the group dpoffload)"
                                                            : "";
        throw Failure{kExitUnreachable, "cannot reach dpoffloadd at " + path + ": " + std::strerror(e) + hint};
    }
    const std::string line = request.dump() + "\n";
    for (std::size_t done = 0; done < line.size();) {
        const ssize_t n = send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int e = errno;
            close(fd);
            throw Failure{kExitUnreachable, std::string("sending the request: ") + std::strerror(e)};
        }
        done += static_cast<std::size_t>(n);
    }
    std::string in;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    char buf[65536];
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            close(fd);
            throw Failure{kExitUnreachable, "no answer from dpoffloadd within " + std::to_string(timeout_s) + " s"};
        }
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
        if (!p.revents) continue;
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int e = errno;
            close(fd);
            throw Failure{kExitUnreachable, std::string("reading the answer: ") + std::strerror(e)};
        }
        if (n == 0) break;
        in.append(buf, static_cast<std::size_t>(n));
        if (in.size() > kMaxAnswer) {
            close(fd);
            throw Failure{kExitUnreachable, "answer larger than 1 GiB"};
        }
    }
    close(fd);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        throw Failure{kExitUnreachable, "the daemon's answer is not JSON (" + std::to_string(in.size()) + " bytes)"};
    if (j.value("version", 0) != kProtocol)
        throw Failure{kExitUnreachable, "the daemon speaks protocol " + j.value("version", json()).dump() +
                                            ", this dpoffloadctl " + std::to_string(kProtocol)};
    return j;
}

// ---- tables

std::string str(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "-";
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    if (v.is_number_float()) {
        char b[32];
        std::snprintf(b, sizeof b, "%.1f", v.get<double>());
        return b;
    }
    return v.dump();
}

void table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> w(head.size());
    for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
    auto line = [&](const std::vector<std::string>& r) {
        std::string s;
        for (std::size_t i = 0; i < r.size(); ++i) {
            if (i + 1 == r.size()) s += r[i];
            else s += r[i] + std::string(w[i] - r[i].size() + 2, ' ');
        }
        std::printf("%s\n", s.c_str());
    };
    line(head);
    for (const auto& r : rows) line(r);
}

std::string duration(std::int64_t s) {
    char b[64];
    if (s >= 86400) std::snprintf(b, sizeof b, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s % 86400 / 3600));
    else if (s >= 3600) std::snprintf(b, sizeof b, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
    else if (s >= 60) std::snprintf(b, sizeof b, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
    else std::snprintf(b, sizeof b, "%llds", static_cast<long long>(s));
    return b;
}

std::vector<std::string> state_row(const std::string& name, const json& d) {
    return {name, str(d["desired"]), str(d["installed"]), str(d["in_hw"]), str(d["not_in_hw"]), str(d["refused"])};
}

int print_status(const json& r) {
    std::printf("dpoffloadd %s, pid %s, up %s (since %s), %s\n", str(r["version"]).c_str(), str(r["pid"]).c_str(),
                duration(r.value("uptime_seconds", 0)).c_str(), str(r["started"]).c_str(),
                r.value("ready", false) ? "ready" : "starting (first reconcile not done)");
    const auto& m = r["mapping"];
    std::printf("mapping    %s: %s interfaces, uplink %s, loaded %s (reloads %s, refused %s)\n", str(m["file"]).c_str(),
                str(m["interfaces"]).c_str(), str(m["uplink"]).c_str(), str(m["loaded"]).c_str(),
                str(m["reloads"]).c_str(), str(m["reloads_refused"]).c_str());
    const auto& k = r["kernel"];
    std::printf("kernel     %s routes (table %s), %s neighbours, %s links, %s overruns\n", str(k["routes"]).c_str(),
                str(k["route_table"]).c_str(), str(k["neighbours"]).c_str(), str(k["links"]).c_str(),
                str(k["overruns"]).c_str());
    if (r.contains("last_reconcile")) {
        const auto& p = r["last_reconcile"];
        std::printf("reconcile  %s, %s lane: %s keys, %s messages (+%s ~%s -%s), %s ms; %s passes\n", str(p["at"]).c_str(),
                    str(p["lane"]).c_str(), str(p["keys"]).c_str(), str(p["messages"]).c_str(), str(p["added"]).c_str(),
                    str(p["replaced"]).c_str(), str(p["deleted"]).c_str(), str(p["ms"]).c_str(),
                    str(r["reconciles"]).c_str());
    } else {
        std::printf("reconcile  none yet\n");
    }
    if (r.contains("last_audit")) {
        const auto& a = r["last_audit"];
        std::printf("audit      %s (%s): %s dumps, drift %s, %s ms; %s audits\n", str(a["at"]).c_str(),
                    str(a["reason"]).c_str(), str(a["dumps"]).c_str(), str(a["drift"]).c_str(), str(a["ms"]).c_str(),
                    str(r["audits"]).c_str());
    }
    const auto& n = r["nat"];
    std::string nat = str(n["state"]);
    if (n.contains("subscribers"))
        nat += ": " + str(n["subscribers"]) + " subscribers, " + str(n["chunks_held"]) + " chunks held, " +
               str(n["chunks_free"]) + " free; refused " + str(n["refused"]["chunk_limit"]) + " at their limit, " +
               str(n["refused"]["pool_empty"]) + " pool empty";
    std::printf("nat        %s\n", nat.c_str());
    if (n.contains("record"))
        std::printf("nat record %s: %s events appended, %s bytes, %s write errors\n", str(n["record"]["file"]).c_str(),
                    str(n["record"]["appended"]).c_str(), str(n["record"]["bytes"]).c_str(),
                    str(n["record"]["write_errors"]).c_str());
    std::printf("notes      %s (what the fast path leaves to the kernel: dpoffloadctl explain)\n\n",
                str(r["notes"]).c_str());
    std::vector<std::vector<std::string>> rows;
    for (const auto& [dev, d] : r["rules"]["by_device"].items()) rows.push_back(state_row(dev, d));
    rows.push_back(state_row("total", r["rules"]["total"]));
    table({"DEVICE", "DESIRED", "INSTALLED", "IN_HW", "NOT_IN_HW", "REFUSED"}, rows);
    std::printf("(%s keys, %s waiting)\n", str(r["rules"]["keys"]).c_str(), str(r["rules"]["queued_keys"]).c_str());
    return kExitOk;
}

std::string hw(const json& x) {
    if (x.value("in_hw", false)) return "in_hw";
    if (x.value("not_in_hw", false)) return "not_in_hw";
    return "-";
}

void print_rule(const json& x, const char* indent) {
    std::printf("%s%-9s %-9s %10s %12s  %s\n", indent, str(x["state"]).c_str(), hw(x).c_str(),
                x.contains("packets") ? str(x["packets"]).c_str() : "-",
                x.contains("bytes") ? str(x["bytes"]).c_str() : "-", str(x["rule"]).c_str());
    if (x.contains("key")) std::printf("%s    key: %s\n", indent, str(x["key"]).c_str());
    if (x.contains("why") && !x["why"].get<std::string>().empty()) std::printf("%s    why: %s\n", indent, str(x["why"]).c_str());
    if (x.contains("extack")) std::printf("%s    refused: %s: %s\n", indent, str(x["error"]).c_str(), str(x["extack"]).c_str());
}

int print_rules(const json& r) {
    std::printf("%-9s %-9s %10s %12s  %s\n", "STATE", "HW", "PACKETS", "BYTES", "RULE");
    for (const auto& x : r["rules"]) print_rule(x, "");
    std::printf("(%s of %s matching rules shown)\n", str(r["shown"]).c_str(), str(r["matched"]).c_str());
    if (r.contains("problems"))
        for (const auto& p : r["problems"]) std::printf("counters not read: %s\n", str(p).c_str());
    return kExitOk;
}

int print_explain(const json& r) {
    std::printf("%s (%s)\n", str(r["query"]).c_str(), str(r["kind"]).c_str());
    for (const auto& s : r["says"]) std::printf("  %s\n", str(s).c_str());
    if (r.contains("nat"))
        for (const auto& c : r["nat"]["chunks"])
            std::printf("  chunk %s ports %s, %s connections\n", str(c["public"]).c_str(), str(c["ports"]).c_str(),
                        str(c["connections"]).c_str());
    for (const auto& k : r["keys"]) {
        const std::size_t n = k["rules"].size();
        std::string verdict = k.value("in_fast_path", false)    ? "in the fast path"
                              : k.value("left_to_kernel", true) ? "left to the kernel"
                                                                : "on its way into the fast path";
        std::printf("\n%s: %s (%zu rule%s)%s\n", str(k["key"]).c_str(), verdict.c_str(), n, n == 1 ? "" : "s",
                    k.value("queued", false) ? ", changes queued" : "");
        for (const auto& x : k["rules"]) print_rule(x, "  ");
        for (const auto& note : k["notes"]) std::printf("  note: %s\n", str(note).c_str());
    }
    return kExitOk;
}

int print_counters(const json& r) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& c : r["counters"])
        rows.push_back({str(c["kind"]), str(c["name"]), str(c["packets"]), str(c["bytes"])});
    table({"KIND", "NAME", "PACKETS", "BYTES"}, rows);
    return kExitOk;
}

int print_nat(const std::string& what, const json& r) {
    std::vector<std::vector<std::string>> rows;
    if (what == "subscribers") {
        for (const auto& s : r["subscribers"]) {
            std::string ports;
            for (const auto& p : s["ports"]) ports += (ports.empty() ? "" : ",") + str(p);
            rows.push_back({str(s["subscriber"]), str(s["public"]), str(s["chunks"]), ports, str(s["connections"]),
                            s.value("at_limit", false) ? "at limit" : (str(s["refused"]) == "" ? "" : str(s["refused"]))});
        }
        table({"SUBSCRIBER", "PUBLIC", "CHUNKS", "PORTS", "CONNECTIONS", ""}, rows);
        std::printf("(%s subscribers, %s chunks held, %s at their limit of %s chunks; %s shown)\n",
                    str(r["subscriber_count"]).c_str(), str(r["chunks_held"]).c_str(), str(r["at_limit"]).c_str(),
                    str(r["max_chunks_per_subscriber"]).c_str(), str(r["shown"]).c_str());
    } else if (what == "chunks") {
        for (const auto& c : r["chunks"])
            rows.push_back({str(c["public"]), str(c["first"]) + "-" + str(c["last"]), str(c["subscriber"]),
                            str(c["connections"])});
        table({"PUBLIC", "PORTS", "SUBSCRIBER", "CONNECTIONS"}, rows);
        std::printf("(%s chunks held by %s subscribers; %s shown)\n", str(r["chunks_held"]).c_str(),
                    str(r["subscriber_count"]).c_str(), str(r["shown"]).c_str());
    } else if (what == "pool") {
        for (const auto& a : r["pool"]) {
            char use[16];
            std::snprintf(use, sizeof use, "%.1f%%", 100.0 * a.value("utilisation", 0.0));
            rows.push_back({str(a["address"]), str(a["chunks"]), str(a["held"]), str(a["free"]), str(a["quarantined"]), use});
        }
        table({"ADDRESS", "CHUNKS", "HELD", "FREE", "RESTING", "USE"}, rows);
        std::printf("(%s addresses, %s chunks of %s ports: %s held, %s free, %s resting; %.1f%% in use; refused %s at "
                    "their limit, %s pool empty)\n",
                    str(r["addresses"]).c_str(), str(r["chunks"]).c_str(), str(r["chunk_size"]).c_str(),
                    str(r["held"]).c_str(), str(r["free"]).c_str(), str(r["quarantined"]).c_str(),
                    100.0 * r.value("utilisation", 0.0), str(r["refused"]["chunk_limit"]).c_str(),
                    str(r["refused"]["pool_empty"]).c_str());
    } else if (what == "who") {
        const std::string q = str(r["public"]) + ":" + str(r["port"]) + " at " + str(r["at"]);
        const std::string a = str(r["answer"]);
        if (a == "held")
            std::printf("%s: %s (ports %s%s)\n", q.c_str(), str(r["subscriber"]).c_str(),
                        r.contains("ports") ? str(r["ports"]).c_str() : "?",
                        r.contains("since") ? (", since " + str(r["since"])).c_str() : (", " + str(r["says"])).c_str());
        else if (a == "free")
            std::printf("%s: nobody (ports %s free since %s; last held by %s)\n", q.c_str(), str(r["ports"]).c_str(),
                        str(r["released"]).c_str(), str(r["last_subscriber"]).c_str());
        else
            std::printf("%s: unknown: %s (the record holds %s events%s)\n", q.c_str(), str(r["says"]).c_str(),
                        str(r["records"]).c_str(),
                        r.contains("record_begins") ? (" from " + str(r["record_begins"])).c_str() : "");
        return a == "held" ? kExitOk : kExitNo;
    }
    return kExitOk;
}

[[noreturn]] void bad_usage(const std::string& why) {
    std::fprintf(stderr, "dpoffloadctl: %s\n", why.c_str());
    usage(stderr);
    std::exit(kExitUsage);
}

std::uint64_t number(const char* what, const char* text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (errno || !end || *end || !*text || text[0] == '-') bad_usage(std::string(what) + ": not a number: " + text);
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    enum { kVersion = 256, kDev, kChain, kNotInHw, kRefused, kLimit, kAt };
    const option options[] = {
        {"socket", required_argument, nullptr, 's'}, {"json", no_argument, nullptr, 'j'},
        {"timeout", required_argument, nullptr, 't'}, {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, kVersion}, {"dev", required_argument, nullptr, kDev},
        {"chain", required_argument, nullptr, kChain}, {"not-in-hw", no_argument, nullptr, kNotInHw},
        {"refused", no_argument, nullptr, kRefused}, {"limit", required_argument, nullptr, kLimit},
        {"at", required_argument, nullptr, kAt},     {nullptr, 0, nullptr, 0},
    };
    std::string path = kDefaultSocket;
    bool as_json = false;
    int timeout = 60;
    json args = json::object();
    // Options may come before or after the command (getopt permutes).
    for (int c; (c = getopt_long(argc, argv, "s:jt:h", options, nullptr)) != -1;) {
        switch (c) {
            case 's': path = optarg; break;
            case 'j': as_json = true; break;
            case 't': timeout = static_cast<int>(std::min<std::uint64_t>(number("--timeout", optarg), 86400)); break;
            case 'h': usage(stdout); return kExitOk;
            case kVersion: std::printf("dpoffloadctl %s\n", DPO_VERSION); return kExitOk;
            case kDev: args["dev"] = optarg; break;
            case kChain: args["chain"] = number("--chain", optarg); break;
            case kNotInHw: args["not_in_hw"] = true; break;
            case kRefused: args["refused"] = true; break;
            case kLimit: args["limit"] = number("--limit", optarg); break;
            case kAt: args["at"] = optarg; break;
            default: usage(stderr); return kExitUsage;
        }
    }
    std::vector<std::string> words(argv + optind, argv + argc);
    if (words.empty()) bad_usage("which command?");
    const std::string command = words[0];
    std::string sub;
    auto want_words = [&](std::size_t n) {
        if (words.size() != n) bad_usage(command + ": " + (words.size() < n ? "missing" : "too many") + " arguments");
    };
    auto only = [&](std::initializer_list<const char*> allowed) {
        for (const auto& [k, _] : args.items()) {
            bool ok = false;
            for (const char* a : allowed) ok = ok || k == a;
            if (!ok) bad_usage(command + " takes no --" + (k == "not_in_hw" ? std::string("not-in-hw") : k));
        }
    };
    if (command == "status" || command == "counters" || command == "audit" || command == "reload") {
        want_words(1);
        only({});
    } else if (command == "rules") {
        want_words(1);
        only({"dev", "chain", "not_in_hw", "refused", "limit"});
    } else if (command == "explain") {
        want_words(2);
        only({});
        args["what"] = words[1];
    } else if (command == "nat") {
        if (words.size() < 2) bad_usage("nat: subscribers, chunks, pool or who?");
        sub = words[1];
        args["what"] = sub;
        if (sub == "who") {
            want_words(3);
            only({"at", "what"});
            const std::string& ap = words[2];
            const auto colon = ap.rfind(':');
            if (colon == std::string::npos || colon == 0) bad_usage("nat who PUBLIC_ADDR:PORT, not " + ap);
            const auto port = number("port", ap.c_str() + colon + 1);
            if (port > 65535) bad_usage("port out of range: " + ap);
            args["address"] = ap.substr(0, colon);
            args["port"] = port;
        } else if (sub == "subscribers" || sub == "chunks" || sub == "pool") {
            want_words(2);
            only({"limit", "what"});
        } else {
            bad_usage("nat: subscribers, chunks, pool or who, not " + sub);
        }
    } else {
        bad_usage("unknown command " + command);
    }

    json answer;
    try {
        answer = ask(path, {{"version", kProtocol}, {"command", command}, {"args", args}}, timeout);
    } catch (const Failure& f) {
        std::fprintf(stderr, "dpoffloadctl: %s\n", f.text.c_str());
        return f.code;
    }
    if (as_json) {
        std::printf("%s\n", (answer.value("ok", false) ? answer["result"] : answer).dump(2).c_str());
        if (!answer.value("ok", false)) return kExitNo;
        if (command == "nat" && sub == "who") return answer["result"].value("answer", "") == "held" ? kExitOk : kExitNo;
        return kExitOk;
    }
    if (!answer.value("ok", false)) {
        std::fprintf(stderr, "dpoffloadctl: %s: %s\n", command.c_str(), str(answer["error"]).c_str());
        if (answer.contains("detail") && answer["detail"].is_array())
            for (const auto& d : answer["detail"]) std::fprintf(stderr, "  %s\n", str(d).c_str());
        return kExitNo;
    }
    const json& r = answer["result"];
    if (command == "status") return print_status(r);
    if (command == "rules") return print_rules(r);
    if (command == "explain") return print_explain(r);
    if (command == "counters") return print_counters(r);
    if (command == "nat") return print_nat(sub, r);
    if (command == "audit") {
        std::printf("audit (%s): %s dumps, drift %s, %s restored, %s ms\n", str(r["reason"]).c_str(),
                    str(r["dumps"]).c_str(), str(r["drift"]).c_str(), str(r["restored"]).c_str(), str(r["ms"]).c_str());
        return kExitOk;
    }
    if (command == "reload") {
        std::printf("reloaded %s: %s interfaces\n", str(r["file"]).c_str(), str(r["interfaces"]).c_str());
        return kExitOk;
    }
    return kExitOk;
}
