#include "tests/engine/engine_test_util.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <utility>

#include "gtest/gtest.h"

namespace moondream::testing {

std::string FixtureImage(const std::string& name) {
  std::ifstream in(std::string(MOONDREAM_FIXTURES_DIR) + "/images/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::vector<std::string> Pending::pieces() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pieces_;
}

absl::StatusOr<Result> Pending::Wait() { return future_.get(); }

bool Pending::DoneWithin(int ms) {
  return future_.wait_for(std::chrono::milliseconds(ms)) == std::future_status::ready;
}

std::shared_ptr<Pending> Submit(Engine& engine, Request request,
                                std::function<void(Pending&)> on_piece) {
  auto pending = std::make_shared<Pending>();
  pending->cancel = request.cancel;
  Callbacks callbacks;
  callbacks.on_text = [pending, on_piece](std::string_view piece) {
    {
      std::lock_guard<std::mutex> lock(pending->mu_);
      pending->pieces_.emplace_back(piece);
    }
    if (on_piece) on_piece(*pending);
  };
  callbacks.on_done = [pending](absl::StatusOr<Result> result) {
    pending->promise_.set_value(std::move(result));
  };
  pending->submit_status = engine.Submit(std::move(request), std::move(callbacks));
  return pending;
}

absl::StatusOr<Result> RunSync(Engine& engine, Request request) {
  std::shared_ptr<Pending> pending = Submit(engine, std::move(request));
  if (!pending->submit_status.ok()) return pending->submit_status;
  return pending->Wait();
}

Request CaptionRequest(const std::string& image_bytes, CaptionLength length) {
  Request request;
  request.task = Task::kCaption;
  request.image_bytes = image_bytes;
  request.caption_length = length;
  return request;
}

std::unique_ptr<Engine> MakeTestEngine(int token_delay_ms, int max_queue, int max_concurrency) {
  EngineOptions options;
  options.model = "test";
  options.threads = 1;
  options.test_model_token_delay_ms = token_delay_ms;
  options.max_queue = max_queue;
  options.max_concurrency = max_concurrency;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

bool IsValidUtf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = text[i];
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      extra = 0, cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const unsigned char d = text[i + k];
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

}  // namespace moondream::testing
