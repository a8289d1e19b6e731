// Force-included into transformer/quant_dot.cpp in the fuzz build only (tests/fuzz/CMakeLists.txt):
// clang 14's __builtin_cpu_supports does not know "f16c" (GCC does), so that one feature is read from
// CPUID leaf 1 (ECX bit 29); the other names quant_dot.cpp asks for go to the builtin.
#pragma once
#include <cpuid.h>

#include <cstring>

static inline bool nammkit_fuzz_cpu_supports(const char* feature) {
  if (std::strcmp(feature, "f16c") == 0) {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  }
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma");
  if (std::strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(feature, "avx512bw") == 0) return __builtin_cpu_supports("avx512bw");
  if (std::strcmp(feature, "avx512vl") == 0) return __builtin_cpu_supports("avx512vl");
  if (std::strcmp(feature, "avx512vnni") == 0) return __builtin_cpu_supports("avx512vnni");
  return false;
}
#define __builtin_cpu_supports(feature) nammkit_fuzz_cpu_supports(feature)
