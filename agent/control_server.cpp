// SPDX-License-Identifier: GPL-2.0-or-later
#include "control_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.hpp"
#include "core/text.hpp"

namespace dpo::agent {

namespace {

constexpr auto kReadTime = std::chrono::seconds(5);
constexpr auto kWriteTime = std::chrono::seconds(30);
constexpr auto kDrainTime = std::chrono::seconds(2);
const char* const kOperatorGroup = "dpoffload";

Result<sockaddr_un> address_of(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof a.sun_path) return fail("control socket path too long: " + path);
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

// Someone answers on the socket file: another daemon runs.
bool answered(const sockaddr_un& a) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    const bool yes = connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    return yes;
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::open(const std::string& path) {
    auto addr = address_of(path);
    if (!addr) return fail(addr.error());
    // The directory: the unit's RuntimeDirectory= makes it; by hand, here.
    if (const auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
        const std::string dir = path.substr(0, slash);
        if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return fail(dir + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return fail(path + ": exists and is not a socket");
        if (answered(*addr)) return fail(path + ": another dpoffloadd answers on it");
        unlink(path.c_str());  // stale: left by a daemon that did not stop cleanly
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(std::string("control socket: ") + std::strerror(errno));
    // 0660 from the start (no window in which others may connect): read and write for
    // the owner and the group, which is `dpoffload` under the unit (Group=).
    const mode_t old = umask(0117);
    const int bound = bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
    const int bind_errno = errno;
    umask(old);
    if (bound != 0 || listen(fd, 16) != 0) {
        const int e = bound != 0 ? bind_errno : errno;
        close(fd);
        return fail(path + ": " + std::strerror(e));
    }
    // Run by hand as root: give the socket to the operators' group if there is one.
    // (Not under the unit: there the group is the service's own, and chown is outside
    // its system call filter.)
    if (geteuid() == 0)
        if (const group* g = getgrnam(kOperatorGroup)) (void)!chown(path.c_str(), 0, g->gr_gid);
    return std::unique_ptr<ControlServer>(new ControlServer(path, fd));
}

ControlServer::~ControlServer() {
    for (auto& c : conns_) close(c.fd);
    if (fd_ >= 0) {
        close(fd_);
        unlink(path_.c_str());
    }
}

void ControlServer::poll_fds(std::vector<pollfd>& fds) const {
    fds.push_back({conns_.size() < kMaxConnections ? fd_ : -1, POLLIN, 0});
    for (const auto& c : conns_) {
        short events = 0;
        if (!c.answered || c.draining) events = POLLIN;
        else if (c.written < c.out.size()) events = POLLOUT;
        fds.push_back({c.fd, events, 0});
    }
}

void ControlServer::accept_all(Clock::time_point now) {
    while (conns_.size() < kMaxConnections) {
        const int fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or the peer left already
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            close(fd);
            continue;
        }
        Conn c;
        c.fd = fd;
        c.id = next_id_++;
        c.uid = cred.uid;
        c.privileged = cred.uid == 0 || cred.uid == geteuid();
        c.deadline = now + kReadTime;
        conns_.push_back(std::move(c));
    }
}

void ControlServer::send(Conn& c, const nlohmann::json& response) {
    c.answered = true;
    // Strings from the kernel or a file may hold bytes that are not UTF-8: replace
    // them rather than fail the answer.
    c.out = response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    c.written = 0;
    c.deadline = Clock::now() + kWriteTime;
    if (!write_to(c)) {
        c.written = c.out.size();  // written, or the client is gone: done either way
        drain(c);
    }
}

void ControlServer::drain(Conn& c) {
    if (c.draining) return;
    c.draining = true;
    ::shutdown(c.fd, SHUT_WR);  // the client reads the answer to its end
    c.deadline = Clock::now() + kDrainTime;
}

bool ControlServer::read_from(Conn& c, std::vector<Request>& out) {
    char buf[4096];
    for (;;) {
        const ssize_t n = recv(c.fd, buf, sizeof buf, 0);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (n == 0) return false;  // the client left before asking
        c.in.append(buf, static_cast<std::size_t>(n));
        const auto nl = c.in.find('\n');
        if (nl == std::string::npos) {
            if (c.in.size() > kMaxRequest) {
                send(c, {{"version", kControlVersion}, {"ok", false},
                         {"error", "request longer than " + std::to_string(kMaxRequest) + " bytes"}});
                return true;
            }
            continue;
        }
        nlohmann::json j = nlohmann::json::parse(c.in.substr(0, nl), nullptr, false);
        c.in.clear();
        auto refuse_now = [&](const std::string& why) {
            send(c, {{"version", kControlVersion}, {"ok", false}, {"error", why}});
            return true;
        };
        if (j.is_discarded() || !j.is_object()) return refuse_now("request is not a JSON object");
        if (!j.contains("version") || !j["version"].is_number_integer())
            return refuse_now("request without a protocol version");
        if (j["version"] != kControlVersion)
            return refuse_now("protocol version " + printable(j["version"].dump()) + " not spoken (this daemon speaks " +
                              std::to_string(kControlVersion) + ")");
        if (!j.contains("command") || !j["command"].is_string()) return refuse_now("request without a command");
        Request r;
        r.id = c.id;
        r.command = j["command"].get<std::string>();
        if (j.contains("args")) {
            if (!j["args"].is_object()) return refuse_now("args must be an object");
            r.args = std::move(j["args"]);
        }
        r.privileged = c.privileged;
        r.uid = c.uid;
        c.answered = true;  // until the answer comes, nothing more is read
        c.deadline = Clock::now() + kWriteTime + std::chrono::minutes(5);  // an audit may take a while
        out.push_back(std::move(r));
        return true;
    }
}

bool ControlServer::write_to(Conn& c) {
    while (c.written < c.out.size()) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c.written += static_cast<std::size_t>(n);
    }
    return false;  // all of it written: done
}

std::vector<ControlServer::Request> ControlServer::ready(const pollfd* fds, std::size_t count,
                                                         Clock::time_point now) {
    std::vector<Request> out;
    if (count == 0) return out;
    // The slice is [listener, conns_ in order] as poll_fds() made it.
    std::vector<std::uint64_t> done;
    for (std::size_t i = 1; i < count && i - 1 < conns_.size(); ++i) {
        Conn& c = conns_[i - 1];
        const short ev = fds[i].revents;
        if (!ev) continue;
        bool keep = true;
        if (c.draining) {
            char scratch[4096];
            ssize_t n;
            while ((n = recv(c.fd, scratch, sizeof scratch, 0)) > 0) {
            }
            keep = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        } else if (!c.answered && (ev & (POLLIN | POLLHUP | POLLERR))) {
            keep = read_from(c, out);
        } else if (c.answered && c.written < c.out.size() && (ev & POLLOUT)) {
            if (!write_to(c)) drain(c);
        } else if (ev & (POLLHUP | POLLERR)) {
            keep = false;
        }
        if (!keep) done.push_back(c.id);
    }
    for (auto& c : conns_)
        if (now > c.deadline) done.push_back(c.id);
    std::sort(done.begin(), done.end());
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                [&](Conn& c) {
                                    if (!std::binary_search(done.begin(), done.end(), c.id)) return false;
                                    close(c.fd);
                                    return true;
                                }),
                 conns_.end());
    out.erase(std::remove_if(out.begin(), out.end(),
                             [&](const Request& r) { return std::binary_search(done.begin(), done.end(), r.id); }),
              out.end());
    if (fds[0].revents & POLLIN) accept_all(now);
    return out;
}

void ControlServer::answer(std::uint64_t id, const nlohmann::json& result) {
    for (auto& c : conns_)
        if (c.id == id) {
            send(c, {{"version", kControlVersion}, {"ok", true}, {"result", result}});
            return;
        }
}

void ControlServer::refuse(std::uint64_t id, const std::string& error, const nlohmann::json& detail) {
    for (auto& c : conns_)
        if (c.id == id) {
            nlohmann::json r = {{"version", kControlVersion}, {"ok", false}, {"error", error}};
            if (!detail.is_null()) r["detail"] = detail;
            send(c, r);
            return;
        }
}

std::optional<ControlServer::Clock::time_point> ControlServer::next_deadline() const {
    std::optional<Clock::time_point> t;
    for (const auto& c : conns_)
        if (!t || c.deadline < *t) t = c.deadline;
    return t;
}

}  // namespace dpo::agent
