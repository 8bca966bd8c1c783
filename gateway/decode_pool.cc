#include "gateway/decode_pool.h"

#include <utility>

namespace intgrads {

struct DecodePool::Budget {
  explicit Budget(uint64_t budget) : bytes(budget) {}
  const uint64_t bytes;
  std::mutex mutex;
  uint64_t reserved = 0;
};

DecodePool::Reservation::~Reservation() {
  std::lock_guard<std::mutex> lock(budget_->mutex);
  budget_->reserved -= bytes_;
}

DecodePool::DecodePool(int threads, uint64_t budget_bytes, size_t max_queued)
    : budget_(std::make_shared<Budget>(budget_bytes)), max_queued_(max_queued) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

DecodePool::~DecodePool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

std::shared_ptr<DecodePool::Reservation> DecodePool::Reserve(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(budget_->mutex);
  if (bytes > budget_->bytes - budget_->reserved) return nullptr;
  budget_->reserved += bytes;
  return std::make_shared<Reservation>(budget_, bytes);
}

uint64_t DecodePool::budget_bytes() const { return budget_->bytes; }

uint64_t DecodePool::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(budget_->mutex);
  return budget_->reserved;
}

bool DecodePool::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_ || tasks_.size() >= max_queued_) return false;
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
  return true;
}

void DecodePool::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, and nothing left
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    task = nullptr;  // what it captured goes before the lock is taken again
    lock.lock();
  }
}

}  // namespace intgrads
