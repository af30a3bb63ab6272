// SPDX-License-Identifier: GPL-2.0-or-later
#include "service_notify.hpp"

#include <time.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

// libsystemd's sd_notify and sd_watchdog_enabled: the reference implementation of the
// notify protocol (socket address forms, WATCHDOG_PID, credentials), not a copy of it.
#include <systemd/sd-daemon.h>

#include "core/log.hpp"

namespace dpo::agent {

ServiceNotify::ServiceNotify(Clock::time_point now) : next_ping_(now), last_status_(now) {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    active_ = socket && *socket;
    if (!active_) return;
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) ping_every_ = std::chrono::microseconds(usec / 4);
}

void ServiceNotify::send(const std::string& message) {
    if (!active_) return;
    const int r = sd_notify(0, message.c_str());
    if (r < 0) {
        // Once: a notify socket that went away stays away, and the loop must not log a
        // line for every ping.
        log::warning("notify-failed", {{"reason", std::string("sd_notify: ") + std::strerror(-r)},
                                       {"effect", "systemd no longer hears from the daemon"}});
        active_ = false;
    }
}

void ServiceNotify::ready(const std::string& status, Clock::time_point now) {
    ready_ = true;
    last_status_ = now;
    status_stale_ = false;
    send("READY=1\nSTATUS=" + status);
}

void ServiceNotify::tick(Clock::time_point now, const std::function<std::string()>& status) {
    if (!active_) return;
    if (ping_every_ && now >= next_ping_) {
        send("WATCHDOG=1");
        next_ping_ = now + *ping_every_;
    }
    if (ready_ && status_stale_ && now >= last_status_ + kStatusEvery) {
        status_stale_ = false;
        last_status_ = now;
        send("STATUS=" + status());
    }
}

std::optional<ServiceNotify::Clock::time_point> ServiceNotify::next_due() const {
    if (!active_) return std::nullopt;
    std::optional<Clock::time_point> due;
    if (ping_every_) due = next_ping_;
    if (ready_ && status_stale_) {
        const auto s = last_status_ + kStatusEvery;
        if (!due || s < *due) due = s;
    }
    return due;
}

void ServiceNotify::reloading(const std::string& status) {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const auto usec = static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=" + status);
}

void ServiceNotify::reload_done(const std::string& status, Clock::time_point now) {
    ready(status, now);
}

void ServiceNotify::stopping(const std::string& status) { send("STOPPING=1\nSTATUS=" + status); }

}  // namespace dpo::agent
