#include "threadpool.h"

#include "common.h"

#include <algorithm>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define ET_PAUSE() _mm_pause()
#else
#define ET_PAUSE() std::this_thread::yield()
#endif

namespace et {

namespace {
thread_local bool tls_in_region = false;
thread_local int tls_thread_index = 0;
// About 20-50 microseconds of spinning before sleeping: longer than the gap between the
// parallel regions of one layer, far shorter than anything a sleeping core would miss.
constexpr int kSpinIterations = 20000;

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}
}  // namespace

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

ThreadPool::ThreadPool(int threads) { start(threads); }
ThreadPool::~ThreadPool() { stop(); }

bool ThreadPool::in_parallel_region() { return tls_in_region; }

void ThreadPool::start(int threads) {
  threads = std::max(1, threads);
  stopping_ = false;
  // Workers start from the current generation, read here: a worker that read it itself could
  // miss a region (or the stop) posted before it first ran, and everyone would wait forever.
  const uint64_t generation = generation_.load();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i, generation] { worker_loop(i, generation); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

void ThreadPool::resize(int threads) {
  std::lock_guard<std::mutex> guard(run_mutex_);
  if (threads == size()) return;
  stop();
  start(threads);
}

void ThreadPool::worker_loop(int index, uint64_t seen) {
  FlushDenormals flush;  // for the thread's whole life (see common.h)
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      ET_PAUSE();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load();
    if (stopping_.load()) return;
    tls_in_region = true;
    tls_thread_index = index;
    (*task_)(index, size());
    tls_in_region = false;
    remaining_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run_all(const std::function<void(int, int)>& task) {
  if (tls_in_region) fail("ThreadPool::run_all called inside a parallel region");
  if (workers_.empty()) {
    task(0, 1);
    return;
  }
  std::lock_guard<std::mutex> guard(run_mutex_);
  task_ = &task;
  remaining_.store(static_cast<int>(workers_.size()), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  tls_in_region = true;
  tls_thread_index = 0;
  task(0, size());
  tls_in_region = false;
  while (remaining_.load(std::memory_order_acquire) != 0) ET_PAUSE();
  task_ = nullptr;
}

void ThreadPool::parallel_for(long count, long grain,
                              const std::function<void(long, long, int)>& body) {
  if (count <= 0) return;
  grain = std::max(1L, grain);
  if (count <= grain || tls_in_region || workers_.empty()) {
    // Inline on this thread, under its own index so per-thread scratch stays private.
    body(0, count, tls_in_region ? tls_thread_index : 0);
    return;
  }
  std::atomic<long> next{0};
  run_all([&](int thread_index, int) {
    for (;;) {
      long begin = next.fetch_add(grain, std::memory_order_relaxed);
      if (begin >= count) break;
      body(begin, std::min(count, begin + grain), thread_index);
    }
  });
}

}  // namespace et
