// The deterministic, weight-free `test` model: the whole stack runs and is tested in
// seconds. Images are decoded exactly like the real model's (bad bytes are rejected the
// same way) and reduced to their size and mean colour; answers are built from those:
//   caption (short):  "a test image of 640×480 pixels, mostly teal"
//   query:            echoes the question
//   detect / point:   3..5 boxes / points derived from the image and the object name
// Text is generated one word per token and streamed through RunContext::on_text; every
// token step checks RunContext::CheckAlive and sleeps `token_delay_ms` (tests of
// deadlines, cancellation, queue-full and drain). Same input, same output; sampling
// settings (temperature, top_p, seed) are accepted and ignored.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/model.h"

namespace moondream {

struct TestModelOptions {
  uint64_t max_image_pixels = 50'000'000;
  int token_delay_ms = 0;
  // Encode sleeps this long without checking its deadline: a stage that cannot be stopped
  // (tests of the liveness probe).
  int stall_ms = 0;
};

std::unique_ptr<Model> MakeTestModel(const TestModelOptions& options);

}  // namespace moondream
