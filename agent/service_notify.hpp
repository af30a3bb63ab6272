// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the daemon tells systemd (sd_notify(3)) under Type=notify: READY=1 once the start
// pass has installed the rules, STATUS= a one-line summary, WATCHDOG=1 from the event
// loop, RELOADING=1 then READY=1 around a reload, STOPPING=1. Without NOTIFY_SOCKET (run
// by hand, in a test) every call does nothing; without WATCHDOG_USEC (or WATCHDOG_PID
// naming another process) there are no pings.

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace dpo::agent {

class ServiceNotify {
public:
    using Clock = std::chrono::steady_clock;

    // Reads the environment systemd gives (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID).
    explicit ServiceNotify(Clock::time_point now);

    bool active() const { return active_; }
    // How often WATCHDOG=1 goes out: a quarter of WATCHDOG_USEC (sd_watchdog_enabled(3)
    // asks for at least every half; the rest is slack for a loop turn that runs long).
    std::optional<std::chrono::microseconds> watchdog_interval() const { return ping_every_; }

    // The start pass is in: READY=1, with the first summary.
    void ready(const std::string& status, Clock::time_point now);
    // Something the summary shows changed; tick() sends a new one when its turn comes.
    void changed() { status_stale_ = true; }
    // Each turn of the loop: WATCHDOG=1 when due, and the summary (`status()` asked only
    // then) at most once a second.
    void tick(Clock::time_point now, const std::function<std::string()>& status);
    // When tick() has something to do: the loop's poll must wake by then.
    std::optional<Clock::time_point> next_due() const;

    // A reload began: RELOADING=1 with MONOTONIC_USEC (systemd >= 253 checks it belongs
    // to this reload).
    void reloading(const std::string& status);
    // Its verdict: READY=1 and a status that says it (refused: the file kept).
    void reload_done(const std::string& status, Clock::time_point now);
    void stopping(const std::string& status);

    static constexpr std::chrono::seconds kStatusEvery{1};

private:
    void send(const std::string& message);

    bool active_ = false;
    bool ready_ = false;
    std::optional<std::chrono::microseconds> ping_every_;
    Clock::time_point next_ping_;
    Clock::time_point last_status_;
    bool status_stale_ = false;
};

}  // namespace dpo::agent
