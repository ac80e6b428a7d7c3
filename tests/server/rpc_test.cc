// Every RPC of moondream.v1.Moondream against the real server binary (test model).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/server/server_process.h"

namespace moondream::testing {
namespace {

constexpr char kPng640x480[] = "images/img1_640x480.png";
constexpr char kJpeg512[] = "real/images/p1_astronaut_prog_512x512.jpg";

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || i + extra >= s.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += extra + 1;
  }
  return true;
}

class RpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServerProcess(); }
  static void TearDownTestSuite() { delete server_; }
  void SetUp() override {
    ASSERT_TRUE(server_->serving()) << server_->Logs();
    stub_ = server_->Stub();
  }

  v1::CaptionResponse Caption(const std::string& fixture, v1::CaptionLength length) {
    v1::CaptionRequest request;
    request.mutable_image()->set_data(ReadFixture(fixture));
    request.set_length(length);
    v1::CaptionResponse response;
    grpc::ClientContext ctx;
    const grpc::Status status = stub_->Caption(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Reads a whole text stream; checks every chunk and that only the last is final.
  std::vector<v1::TextChunk> ReadStream(grpc::ClientReader<v1::TextChunk>* reader) {
    std::vector<v1::TextChunk> chunks;
    v1::TextChunk chunk;
    while (reader->Read(&chunk)) {
      EXPECT_TRUE(IsValidUtf8(chunk.text())) << chunk.text();
      if (!chunks.empty()) {
        EXPECT_FALSE(chunks.back().final());
      }
      chunks.push_back(chunk);
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(chunks.empty());
    if (!chunks.empty()) {
      EXPECT_TRUE(chunks.back().final());
    }
    return chunks;
  }

  static std::string Concatenate(const std::vector<v1::TextChunk>& chunks) {
    std::string text;
    for (const v1::TextChunk& c : chunks) text += c.text();
    return text;
  }

  static ServerProcess* server_;
  std::unique_ptr<v1::Moondream::Stub> stub_;
};

ServerProcess* RpcTest::server_ = nullptr;

TEST_F(RpcTest, CaptionBothLengthsDescribeTheImage) {
  const v1::CaptionResponse brief = Caption(kPng640x480, v1::CAPTION_LENGTH_SHORT);
  const v1::CaptionResponse normal = Caption(kPng640x480, v1::CAPTION_LENGTH_NORMAL);
  EXPECT_NE(brief.caption().find("640×480"), std::string::npos) << brief.caption();
  EXPECT_NE(normal.caption().find("640×480"), std::string::npos) << normal.caption();
  EXPECT_GT(normal.caption().size(), brief.caption().size());
  EXPECT_EQ(brief.model(), "test");
  EXPECT_GT(brief.usage().generated_tokens(), 0u);
  EXPECT_GT(brief.timings().total_ms(), 0.0);
  EXPECT_GT(brief.timings().image_decode_ms(), 0.0);
  EXPECT_EQ(brief.finish_reason(), v1::FINISH_REASON_STOP);
  // Unspecified length means NORMAL.
  EXPECT_EQ(Caption(kPng640x480, v1::CAPTION_LENGTH_UNSPECIFIED).caption(), normal.caption());
}

TEST_F(RpcTest, CaptionReadsJpeg) {
  const v1::CaptionResponse response = Caption(kJpeg512, v1::CAPTION_LENGTH_SHORT);
  EXPECT_NE(response.caption().find("512×512"), std::string::npos) << response.caption();
}

TEST_F(RpcTest, MaxTokensLimitsGeneration) {
  v1::CaptionRequest request;
  request.mutable_image()->set_data(ReadFixture(kPng640x480));
  request.mutable_settings()->set_max_tokens(2);
  v1::CaptionResponse response;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Caption(&ctx, request, &response).ok());
  EXPECT_EQ(response.usage().generated_tokens(), 2u);
  EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(RpcTest, StreamCaptionMatchesUnaryCaption) {
  const v1::CaptionResponse unary = Caption(kPng640x480, v1::CAPTION_LENGTH_NORMAL);
  v1::CaptionRequest request;
  request.mutable_image()->set_data(ReadFixture(kPng640x480));
  grpc::ClientContext ctx;
  auto reader = stub_->StreamCaption(&ctx, request);
  const std::vector<v1::TextChunk> chunks = ReadStream(reader.get());
  ASSERT_GT(chunks.size(), 2u);
  EXPECT_EQ(Concatenate(chunks), unary.caption());
  const v1::TextChunk& last = chunks.back();
  EXPECT_EQ(last.model(), "test");
  EXPECT_EQ(last.usage().generated_tokens(), unary.usage().generated_tokens());
  EXPECT_GT(last.timings().total_ms(), 0.0);
  EXPECT_GT(last.timings().time_to_first_token_ms(), 0.0);
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_STOP);
}

TEST_F(RpcTest, QueryAndStreamQueryAnswerTheQuestion) {
  v1::QueryRequest request;
  request.mutable_image()->set_data(ReadFixture(kPng640x480));
  request.set_question("What colour is it?");
  v1::QueryResponse response;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Query(&ctx, request, &response).ok());
  EXPECT_NE(response.answer().find("What colour is it?"), std::string::npos) << response.answer();
  EXPECT_GT(response.usage().prompt_tokens(), 0u);

  grpc::ClientContext stream_ctx;
  auto reader = stub_->StreamQuery(&stream_ctx, request);
  const std::vector<v1::TextChunk> chunks = ReadStream(reader.get());
  EXPECT_EQ(Concatenate(chunks), response.answer());
  EXPECT_EQ(chunks.back().usage().prompt_tokens(), response.usage().prompt_tokens());
}

TEST_F(RpcTest, DetectReturnsNormalizedBoxes) {
  v1::DetectRequest request;
  request.mutable_image()->set_data(ReadFixture(kPng640x480));
  request.set_object("face");
  v1::DetectResponse response;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Detect(&ctx, request, &response).ok());
  ASSERT_GE(response.objects_size(), 1);
  for (const v1::BoundingBox& box : response.objects()) {
    EXPECT_LT(box.x_min(), box.x_max());
    EXPECT_LT(box.y_min(), box.y_max());
    EXPECT_GT(box.x_max(), 0.0f);
    EXPECT_LT(box.x_min(), 1.0f);
  }
  EXPECT_EQ(response.model(), "test");
  request.set_max_objects(1);
  grpc::ClientContext limited_ctx;
  ASSERT_TRUE(stub_->Detect(&limited_ctx, request, &response).ok());
  EXPECT_EQ(response.objects_size(), 1);
}

TEST_F(RpcTest, PointReturnsNormalizedPoints) {
  v1::PointRequest request;
  request.mutable_image()->set_data(ReadFixture(kJpeg512));
  request.set_object("star");
  v1::PointResponse response;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Point(&ctx, request, &response).ok());
  ASSERT_GE(response.points_size(), 1);
  for (const v1::NormalizedPoint& p : response.points()) {
    EXPECT_GE(p.x(), 0.0f);
    EXPECT_LE(p.x(), 1.0f);
    EXPECT_GE(p.y(), 0.0f);
    EXPECT_LE(p.y(), 1.0f);
  }
}

TEST_F(RpcTest, EncodeImageHandleServesLaterRequests) {
  v1::EncodeImageRequest encode;
  encode.set_image(ReadFixture(kPng640x480));
  v1::EncodeImageResponse encoded;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->EncodeImage(&ctx, encode, &encoded).ok());
  ASSERT_FALSE(encoded.handle().empty());
  EXPECT_GT(encoded.cached_bytes(), 0u);
  EXPECT_EQ(encoded.model(), "test");

  v1::CaptionRequest request;
  request.mutable_image()->set_handle(encoded.handle());
  v1::CaptionResponse by_handle;
  grpc::ClientContext caption_ctx;
  ASSERT_TRUE(stub_->Caption(&caption_ctx, request, &by_handle).ok());
  EXPECT_EQ(by_handle.caption(), Caption(kPng640x480, v1::CAPTION_LENGTH_NORMAL).caption());
  EXPECT_EQ(by_handle.timings().image_decode_ms(), 0.0);
}

TEST_F(RpcTest, UnknownHandleIsNotFound) {
  v1::CaptionRequest request;
  request.mutable_image()->set_handle("no-such-handle");
  v1::CaptionResponse response;
  grpc::ClientContext ctx;
  const grpc::Status status = stub_->Caption(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
  EXPECT_NE(status.error_message().find("handle"), std::string::npos) << status.error_message();
}

TEST_F(RpcTest, ListModelsAndGetModelDescribeTheTestModel) {
  v1::ListModelsResponse list;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ListModels(&ctx, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 1);
  const v1::ModelInfo& listed = list.models(0);
  EXPECT_EQ(listed.name(), "test");
  EXPECT_EQ(listed.precision(), "none");
  EXPECT_EQ(listed.device(), "cpu");
  EXPECT_EQ(listed.source(), "builtin");
  EXPECT_TRUE(listed.is_default());

  for (const std::string& name : {std::string(), std::string("test")}) {
    v1::GetModelRequest request;
    request.set_name(name);
    v1::ModelInfo info;
    grpc::ClientContext get_ctx;
    ASSERT_TRUE(stub_->GetModel(&get_ctx, request, &info).ok()) << name;
    EXPECT_EQ(info.SerializeAsString(), listed.SerializeAsString()) << name;
  }
}

TEST_F(RpcTest, UnknownModelIsNotFound) {
  v1::GetModelRequest get;
  get.set_name("moondream9");
  v1::ModelInfo info;
  grpc::ClientContext get_ctx;
  grpc::Status status = stub_->GetModel(&get_ctx, get, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("moondream9"), std::string::npos) << status.error_message();

  v1::CaptionRequest caption;
  caption.set_model("moondream9");
  caption.mutable_image()->set_data(ReadFixture(kPng640x480));
  v1::CaptionResponse response;
  grpc::ClientContext ctx;
  status = stub_->Caption(&ctx, caption, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("moondream9"), std::string::npos) << status.error_message();
}

}  // namespace
}  // namespace moondream::testing
