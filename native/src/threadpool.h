// A small fork-join thread pool. The calling thread is worker 0; the others wait on a
// generation counter (spinning briefly, then sleeping), so the many short parallel regions of
// a training step cost microseconds, not a thread wake-up each.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace et {

class ThreadPool {
 public:
  static ThreadPool& global();

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  void resize(int threads);

  // Runs task(thread_index, thread_count) once on each of the pool's threads and waits for
  // all of them. Not callable from inside a parallel region.
  void run_all(const std::function<void(int thread_index, int thread_count)>& task);

  // Calls body(begin, end, thread_index) on disjoint ranges covering [0, count), in chunks of
  // `grain` (the last may be shorter), handed out dynamically. Nested calls run inline.
  void parallel_for(long count, long grain, const std::function<void(long begin, long end, int thread_index)>& body);

  static bool in_parallel_region();

 private:
  void start(int threads);
  void stop();
  void worker_loop(int index, uint64_t seen);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel region at a time (several models may share the pool)
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> remaining_{0};
  const std::function<void(int, int)>* task_ = nullptr;
  std::atomic<bool> stopping_{false};
};

}  // namespace et
