// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The control socket (dpoffloadctl talks to it): a unix stream socket, by default
// /run/dpoffload/control.sock, mode 0660. Whoever may connect may ask (the group
// `dpoffload` is for operators); what changes something (audit, reload) is for root
// and for the daemon's own user (the unit's ExecReload runs as it), checked by the
// peer's credentials (SO_PEERCRED), not by the file's mode.
//
// Protocol, version 1: the client sends one JSON object on one line
//   {"version": 1, "command": "status", "args": {...}}
// and reads one JSON object back until the daemon closes the connection:
//   {"version": 1, "ok": true, "result": ...}   or   {"version": 1, "ok": false, "error": "..."}
// A request is at most 64 KiB and must arrive within 5 s; an answer not read within
// 30 s is dropped; at most 16 connections at once. All of it non-blocking, from the
// daemon's one loop: a slow or hostile client costs a slot, never a stall.

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace dpo::agent {

inline constexpr int kControlVersion = 1;

class ControlServer {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr std::size_t kMaxRequest = 64 * 1024;
    static constexpr std::size_t kMaxConnections = 16;

    struct Request {
        std::uint64_t id = 0;  // to answer it
        std::string command;
        nlohmann::json args = nlohmann::json::object();
        bool privileged = false;  // root or the daemon's own user
        unsigned uid = 0;
    };

    // Refuses when another process answers on `path` (two daemons must not both own
    // the rules); a socket file nobody answers on is stale and replaced.
    static Result<std::unique_ptr<ControlServer>> open(const std::string& path);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // The descriptors to poll, appended to `fds`; give the same slice back to ready().
    void poll_fds(std::vector<pollfd>& fds) const;
    // Accepts, reads and writes what is ready; returns the requests now complete
    // (malformed ones are answered here and not returned).
    std::vector<Request> ready(const pollfd* fds, std::size_t count, Clock::time_point now);
    // The answer to a request (once); an id that is gone (the client left) is ignored.
    void answer(std::uint64_t id, const nlohmann::json& result);
    void refuse(std::uint64_t id, const std::string& error, const nlohmann::json& detail = nullptr);
    // When the next connection times out, if any.
    std::optional<Clock::time_point> next_deadline() const;

    const std::string& path() const { return path_; }
    std::size_t connections() const { return conns_.size(); }

private:
    struct Conn {
        int fd = -1;
        std::uint64_t id = 0;
        std::string in, out;
        std::size_t written = 0;
        bool answered = false;  // the request was handed out and is being answered
        bool draining = false;  // answered in full: our side shut, reading the client's rest
                                // (closing with unread input would reset the connection
                                // before the client read the answer)
        bool privileged = false;
        unsigned uid = 0;
        Clock::time_point deadline;
    };
    ControlServer(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
    void accept_all(Clock::time_point now);
    // false: the connection is done (closed or failed)
    bool read_from(Conn& c, std::vector<Request>& out);
    bool write_to(Conn& c);
    void send(Conn& c, const nlohmann::json& response);
    void drain(Conn& c);

    std::string path_;
    int fd_ = -1;
    std::vector<Conn> conns_;
    std::uint64_t next_id_ = 1;
};

}  // namespace dpo::agent
