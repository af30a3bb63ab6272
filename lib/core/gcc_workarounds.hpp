// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Silencing a GCC false positive around the one function it fires in, nowhere else:
//
//   // GCC PR 105329: ...why this is a false positive...
//   DPO_GCC_WARNING_OFF("-Wrestrict")
//   std::string f(...) { ... }
//   DPO_GCC_WARNING_ON
//
// Every use names the GCC bug (grep 'GCC PR'). Other compilers see nothing. The build
// makes warnings errors in CI only (meson.build), and holds the release
// (--buildtype=release) and sanitizer (-Db_sanitize=address,undefined) builds to it.

#if defined(__GNUC__) && !defined(__clang__)
#define DPO_GCC_PRAGMA(x) _Pragma(#x)
#define DPO_GCC_WARNING_OFF(w) _Pragma("GCC diagnostic push") DPO_GCC_PRAGMA(GCC diagnostic ignored w)
#define DPO_GCC_WARNING_ON _Pragma("GCC diagnostic pop")
#else
#define DPO_GCC_WARNING_OFF(w)
#define DPO_GCC_WARNING_ON
#endif
