// SPDX-License-Identifier: GPL-2.0-or-later
// Checked stand-ins for libmnl's attribute getters, linked into the netlink harnesses
// only (never into the daemon).
//
// Why: libmnl is a system library, not built with AddressSanitizer, so a
// mnl_attr_get_u32() of a 0-byte attribute at the end of a buffer reads past it
// unseen, and one in the middle of a message reads the next attribute's header, which
// no sanitizer can see. These definitions take precedence over libmnl's (an
// executable's symbol wins over a shared library's, for our code and for
// libnetfilter_conntrack's calls alike) and do what libmnl does, after checking what
// issue 11 item 2 asks of every caller: that the attribute is as long as the value
// read from it, and that a string attribute holds its NUL. A violation aborts with the
// attribute's type and length, which libFuzzer reports as a crash with its input.
//
// libmnl's own functions (attr.c of libmnl 1.0.4, LGPL-2.1-or-later) are one-liners:
// `return *((uint32_t *)mnl_attr_get_payload(attr));` and the like.
#include <libmnl/libmnl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

// DPO_FUZZ_MNL_LAX=1: no checks, only libmnl's behaviour (instrumented), to see what an
// unchecked read does at the end of a buffer (AddressSanitizer's report).
const bool lax = std::getenv("DPO_FUZZ_MNL_LAX") != nullptr;

[[noreturn]] void short_read(const nlattr* a, const char* as) {
    std::fprintf(stderr,
                 "mnl_checked: attribute type %u with a %u-byte payload read as %s without a length check "
                 "(mnl_attr_validate)\n",
                 static_cast<unsigned>(mnl_attr_get_type(a)), static_cast<unsigned>(mnl_attr_get_payload_len(a)), as);
    std::abort();
}

template <class T>
T read_as(const nlattr* a, const char* as) {
    if (!lax && mnl_attr_get_payload_len(a) < sizeof(T)) short_read(a, as);
    T v;
    std::memcpy(&v, mnl_attr_get_payload(a), sizeof v);
    return v;
}

}  // namespace

extern "C" {

uint8_t mnl_attr_get_u8(const nlattr* a) { return read_as<uint8_t>(a, "u8"); }
uint16_t mnl_attr_get_u16(const nlattr* a) { return read_as<uint16_t>(a, "u16"); }
uint32_t mnl_attr_get_u32(const nlattr* a) { return read_as<uint32_t>(a, "u32"); }
uint64_t mnl_attr_get_u64(const nlattr* a) { return read_as<uint64_t>(a, "u64"); }

const char* mnl_attr_get_str(const nlattr* a) {
    const auto* p = static_cast<const char*>(mnl_attr_get_payload(a));
    if (!lax && !std::memchr(p, '\0', mnl_attr_get_payload_len(a))) short_read(a, "a string (no NUL in it)");
    return p;
}

}  // extern "C"
