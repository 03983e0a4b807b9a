// STREAM triad antagonist: a[i] = b[i] + s * c[i] over arrays far larger than the last-level cache,
// for a given number of seconds, on one thread; prints the bandwidth it sustained (bytes read and
// written, write-allocate fills not counted, as STREAM counts them).
//
//   triad SECONDS [MIB_PER_ARRAY]      e.g. taskset -c 1 triad 60 &
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: triad SECONDS [MIB_PER_ARRAY]\n");
    return 1;
  }
  const double seconds = std::atof(argv[1]);
  const size_t n = (argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 128) * (1 << 20) / sizeof(double);
  std::vector<double> a(n, 0.0), b(n, 1.0), c(n, 2.0);
  const double s = 3.0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  long passes = 0;
  while (elapsed < seconds) {
    for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    ++passes;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  std::printf("triad: %.1f GB/s over %.1f s (check %g)\n", 3.0 * sizeof(double) * static_cast<double>(n) * static_cast<double>(passes) / elapsed / 1e9,
              elapsed, a[n / 2]);
  return 0;
}
