// Where the gateway reads request bodies and decodes their images: threads
// of their own, so that Pistache's I/O threads only move bytes and answer
// /healthz, and a budget of memory shared by every request, so that many
// large uploads at once are refused (503) instead of exhausting the host.
//
//   DecodePool pool(2, 512 << 20, 64);
//   auto held = pool.Reserve(bytes);           // nullptr: the budget is spent
//   if (!pool.Post([held] { ... })) { ... }    // false: the queue is full
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace intgrads {

class DecodePool {
 public:
  struct Budget;
  // A share of the budget, given back when the last copy goes (it may
  // outlive the pool).
  class Reservation {
   public:
    Reservation(std::shared_ptr<Budget> budget, uint64_t bytes) : budget_(std::move(budget)), bytes_(bytes) {}
    ~Reservation();
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    uint64_t bytes() const { return bytes_; }

   private:
    std::shared_ptr<Budget> budget_;
    uint64_t bytes_;
  };

  DecodePool(int threads, uint64_t budget_bytes, size_t max_queued);
  // Runs what was posted, then stops the threads.
  ~DecodePool();
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // `bytes` of the budget; nullptr when fewer are left.
  std::shared_ptr<Reservation> Reserve(uint64_t bytes);
  // Runs `task` on one of the threads; false when max_queued tasks are waiting.
  bool Post(std::function<void()> task);

  uint64_t budget_bytes() const;
  uint64_t reserved_bytes() const;

 private:
  void Run();

  std::shared_ptr<Budget> budget_;
  const size_t max_queued_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
};

}  // namespace intgrads
