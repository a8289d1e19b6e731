// NAMMKIT_UNDER_ASAN is 1 when this translation unit is compiled with AddressSanitizer, else 0. GCC says so
// with __SANITIZE_ADDRESS__, clang (before 16) only through __has_feature(address_sanitizer); the tests that
// shorten or skip their slowest cases under the sanitizers (build-asan, -O1) ask this one macro.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define NAMMKIT_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NAMMKIT_UNDER_ASAN 1
#endif
#endif

#ifndef NAMMKIT_UNDER_ASAN
#define NAMMKIT_UNDER_ASAN 0
#endif
