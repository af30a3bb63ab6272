// SPDX-License-Identifier: GPL-2.0-or-later
#include "verdict.hpp"

#include <cerrno>

namespace dpo::program {

Verdict classify(Change::Kind kind, const ChangeResult& r) {
    if (r.lost) return Verdict::Lost;
    if (r.error == 0) return Verdict::Done;
    switch (r.error) {
        case ENOENT:
            // The filter (or its chain, prio or qdisc) is not there: gone is what a
            // delete wants; a replace must add it again.
            if (kind == Change::Kind::Delete) return Verdict::Done;
            if (kind == Change::Kind::Replace) return Verdict::Missing;
            return Verdict::Retry;  // an add whose qdisc vanished: it comes back
        case EEXIST:
            return kind == Change::Kind::Add ? Verdict::Taken : Verdict::Permanent;
        case ENODEV:
        case ENXIO:
            // The device went away under the change: its rules went with it, and the
            // link event that follows says whether it comes back.
            return kind == Change::Kind::Delete ? Verdict::Done : Verdict::Retry;
        case ENOMEM:
        case ENOBUFS:
        case EBUSY:
        case EAGAIN:
        case EINTR:
        case ETIMEDOUT:
        case ENOSPC:
            return Verdict::Retry;
        default:
            // EINVAL, EOPNOTSUPP, ERANGE, E2BIG, EPERM, ...: the content itself.
            return Verdict::Permanent;
    }
}

const char* to_string(Verdict v) {
    switch (v) {
        case Verdict::Done: return "done";
        case Verdict::Missing: return "missing";
        case Verdict::Taken: return "taken";
        case Verdict::Retry: return "retry";
        case Verdict::Permanent: return "permanent";
        case Verdict::Lost: return "lost";
    }
    return "?";
}

}  // namespace dpo::program
