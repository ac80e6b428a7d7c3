// moondream-load: a closed-loop load generator for a running moondream-server, over gRPC
// (async generic stub on one completion-queue thread), over HTTP (POST /v1/chat/completions
// with libcurl's multi interface on one thread), or both at once.
//
//   moondream-load --target HOST:PORT [--transport grpc|http|mixed] [--http-target HOST:PORT]
//       [--concurrency 1,8,64,256] [--duration 20] --image FILE[,FILE...]
//       [--task caption|query|encode] [--question TEXT] [--max-tokens N] [--model NAME]
//       [--deadline 60] [--channels auto|N] [--bad-every N] [--backoff-ms 100]
//       [--server-pid PID] [--metrics URL] [--series-interval 5] [--abort-rss-mib N]
//       [--warmup N] [--label TEXT] [--json FILE]
//
// Each level keeps `concurrency` requests in flight for --duration seconds (a finished
// request is replaced at once), then waits for the outstanding ones: nothing is cut off,
// so every request ends with the status the server (or the client's deadline) gave it.
// Images are used round-robin; every request body is built once per image and shared
// (gRPC: one refcounted slice; HTTP: one JSON body), so the client's own memory stays
// flat at any concurrency. --bad-every N makes every Nth request carry bytes that are
// not an image (expected: INVALID_ARGUMENT / 400); they are counted apart. A slot whose
// request was refused (RESOURCE_EXHAUSTED/429, UNAVAILABLE/503) waits --backoff-ms (100)
// before its next one, as a client that retries would; --backoff-ms 0 retries at once.
// gRPC calls spread over --channels connections (auto: one per 32 concurrent calls, the
// sidecar's --max-concurrent-streams), so the server, not the client, sees the concurrency.
// The run starts with --warmup (1) request per transport, which must succeed.
// --task encode sends EncodeImage (gRPC only), which fills the server's image cache.
//
// Per level one line on stdout: transport, concurrency, requests ok, refused by code
// (RESOURCE_EXHAUSTED/429, UNAVAILABLE/503, DEADLINE_EXCEEDED/504 or the client's own
// deadline, other), OK requests per second, OK latency p50/p90/p99/max, and with
// --server-pid the server's peak RSS during the level (VmHWM, reset at the level's start
// through /proc/PID/clear_refs when permitted, and the max of VmRSS sampled every 50 ms)
// or with --metrics the peak of moondream_process_resident_memory_bytes scraped every
// 250 ms, plus the largest moondream_queue_depth seen. --json writes the same and more (all
// status codes seen, RSS/threads/fds series every --series-interval seconds).
// --abort-rss-mib ends a level early (marked "aborted") once the server's RSS passes it:
// a guard for shared machines.
#include <curl/curl.h>
#include <grpcpp/alarm.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/common/bench_common.h"
#include "moondream/v1/moondream.grpc.pb.h"

namespace moondream::bench {
namespace {

using json = nlohmann::json;
namespace pb = ::moondream::v1;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "moondream-load: " << message << "\n";
  std::exit(2);
}

// ---------------------------------------------------------------------------------------
// Options

struct Options {
  std::string target;       // gRPC host:port (or HTTP host:port with --transport http)
  std::string http_target;  // HTTP host:port (mixed; http when --target is gRPC's)
  std::string transport = "grpc";
  std::vector<int> concurrency = {1, 8, 64, 256};
  double duration_s = 20;
  std::vector<std::string> images;
  std::string task = "caption";
  std::string question = "What is in this image?";
  int max_tokens = 16;
  std::string model;
  double deadline_s = 60;
  int channels = 0;  // 0 = auto: one per --max-concurrent-streams (32) calls
  int bad_every = 0;
  double backoff_ms = 100;  // a slot waits this long after a refusal before its next request
  int server_pid = 0;
  std::string metrics_url;
  double series_interval_s = 5;
  double abort_rss_mib = 0;
  int warmup = 1;
  std::string label;
  std::string json_path;
};

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

double ParseSeconds(const std::string& v) {
  std::string s = v;
  double scale = 1;
  if (!s.empty() && s.back() == 's') s.pop_back();
  if (!s.empty() && s.back() == 'm') s.pop_back(), scale = 60;  // "10m"
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !(x > 0)) Die("not a duration: " + v);
  return x * scale;
}

int ParseInt(const std::string& v, const std::string& name) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (end == v.c_str() || *end != '\0' || x < 0) Die("--" + name + ": not a count: " + v);
  return static_cast<int>(x);
}

constexpr char kUsage[] =
    "usage: moondream-load --target HOST:PORT --image FILE[,FILE...]\n"
    "  [--transport grpc|http|mixed] [--http-target HOST:PORT] [--concurrency 1,8,64,256]\n"
    "  [--duration SECONDS] [--task caption|query|encode] [--question TEXT] [--max-tokens N]\n"
    "  [--model NAME] [--deadline SECONDS] [--channels auto|N] [--bad-every N] [--backoff-ms 100]\n"
    "  [--server-pid PID] [--metrics URL] [--series-interval SECONDS] [--abort-rss-mib N]\n"
    "  [--warmup N] [--label TEXT] [--json FILE]\n";

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) Die("unexpected argument " + arg + "\n" + kUsage);
    arg = arg.substr(2);
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else {
      if (i + 1 >= argc) Die("--" + arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "target") o.target = value;
    else if (arg == "http-target") o.http_target = value;
    else if (arg == "transport") o.transport = value;
    else if (arg == "concurrency") {
      o.concurrency.clear();
      for (const std::string& c : Split(value, ',')) o.concurrency.push_back(ParseInt(c, arg));
    } else if (arg == "duration") o.duration_s = ParseSeconds(value);
    else if (arg == "image") {
      for (const std::string& f : Split(value, ',')) o.images.push_back(f);
    } else if (arg == "task") o.task = value;
    else if (arg == "question") o.question = value;
    else if (arg == "max-tokens") o.max_tokens = ParseInt(value, arg);
    else if (arg == "model") o.model = value;
    else if (arg == "deadline") o.deadline_s = ParseSeconds(value);
    else if (arg == "channels") o.channels = value == "auto" ? 0 : ParseInt(value, arg);
    else if (arg == "bad-every") o.bad_every = ParseInt(value, arg);
    else if (arg == "backoff-ms") o.backoff_ms = ParseInt(value, arg);
    else if (arg == "server-pid") o.server_pid = ParseInt(value, arg);
    else if (arg == "metrics") o.metrics_url = value;
    else if (arg == "series-interval") o.series_interval_s = ParseSeconds(value);
    else if (arg == "abort-rss-mib") o.abort_rss_mib = ParseInt(value, arg);
    else if (arg == "warmup") o.warmup = ParseInt(value, arg);
    else if (arg == "label") o.label = value;
    else if (arg == "json") o.json_path = value;
    else Die("unknown flag --" + arg + "\n" + kUsage);
  }
  if (o.target.empty()) Die("--target is required\n" + std::string(kUsage));
  if (o.images.empty()) Die("--image is required\n" + std::string(kUsage));
  if (o.transport != "grpc" && o.transport != "http" && o.transport != "mixed") {
    Die("--transport must be grpc, http or mixed");
  }
  if (o.transport == "http" && o.http_target.empty()) o.http_target = o.target;
  if (o.transport == "mixed" && o.http_target.empty()) Die("--transport mixed needs --http-target");
  if (o.task != "caption" && o.task != "query" && o.task != "encode") {
    Die("--task must be caption, query or encode");
  }
  if (o.task == "encode" && o.transport != "grpc") Die("--task encode is gRPC only");
  for (int c : o.concurrency) {
    if (c < 1 || c > 4096) Die("--concurrency levels must be 1..4096");
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// Outcomes

// The columns of the summary line; `code` keeps the exact status for the JSON.
enum class Kind { kOk, kExhausted, kUnavailable, kDeadline, kOther };

struct Outcome {
  double latency_ms;
  Kind kind;
  std::string code;  // gRPC code name, "HTTP_429", "CLIENT_TIMEOUT", "CURL_…", "BAD_RESPONSE"
  bool bad;          // a deliberately bad request (--bad-every)
  bool http;
  std::string message;  // the error's text (gRPC message, HTTP body), cut to 200 bytes
};

class Recorder {
 public:
  void Add(Outcome o) {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_.push_back(std::move(o));
  }
  std::vector<Outcome> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(outcomes_);
  }

 private:
  std::mutex mu_;
  std::vector<Outcome> outcomes_;
};

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    default: return "UNKNOWN_CODE";
  }
}

Kind GrpcKind(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return Kind::kOk;
    case grpc::RESOURCE_EXHAUSTED: return Kind::kExhausted;
    case grpc::UNAVAILABLE: return Kind::kUnavailable;
    case grpc::DEADLINE_EXCEEDED: return Kind::kDeadline;
    default: return Kind::kOther;
  }
}

Kind HttpKind(long status) {
  switch (status) {
    case 200: return Kind::kOk;
    case 429: return Kind::kExhausted;
    case 503: return Kind::kUnavailable;
    case 504: return Kind::kDeadline;
    default: return Kind::kOther;
  }
}

// ---------------------------------------------------------------------------------------
// Payloads: built once per image, shared by every request.

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string Base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= uint8_t(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string MimeType(const std::string& path) {
  auto ends = [&](const char* ext) {
    const size_t n = std::strlen(ext);
    return path.size() >= n && strcasecmp(path.c_str() + path.size() - n, ext) == 0;
  };
  if (ends(".jpg") || ends(".jpeg")) return "image/jpeg";
  if (ends(".png")) return "image/png";
  if (ends(".webp")) return "image/webp";
  if (ends(".gif")) return "image/gif";
  return "application/octet-stream";
}

struct Payload {
  grpc::ByteBuffer grpc;  // serialized CaptionRequest / QueryRequest / EncodeImageRequest
  std::string http;       // chat-completions JSON body
};

Payload BuildPayload(const Options& o, const std::string& bytes, const std::string& mime) {
  Payload p;
  std::string serialized;
  if (o.task == "caption") {
    pb::CaptionRequest r;
    r.set_model(o.model);
    r.mutable_image()->set_data(bytes);
    r.set_length(pb::CAPTION_LENGTH_NORMAL);
    r.mutable_settings()->set_max_tokens(o.max_tokens);
    serialized = r.SerializeAsString();
  } else if (o.task == "query") {
    pb::QueryRequest r;
    r.set_model(o.model);
    r.mutable_image()->set_data(bytes);
    r.set_question(o.question);
    r.mutable_settings()->set_max_tokens(o.max_tokens);
    serialized = r.SerializeAsString();
  } else {
    pb::EncodeImageRequest r;
    r.set_model(o.model);
    r.set_image(bytes);
    serialized = r.SerializeAsString();
  }
  grpc::Slice slice(serialized);
  p.grpc = grpc::ByteBuffer(&slice, 1);

  json content = json::array();
  if (o.task == "query") content.push_back({{"type", "text"}, {"text", o.question}});
  content.push_back({{"type", "image_url"},
                     {"image_url", {{"url", "data:" + mime + ";base64," + Base64(bytes)}}}});
  json body = {{"messages", json::array({{{"role", "user"}, {"content", content}}})}};
  if (!o.model.empty()) body["model"] = o.model;
  if (o.max_tokens > 0) body["max_tokens"] = o.max_tokens;
  p.http = body.dump();
  return p;
}

struct Workload {
  std::vector<Payload> good;
  Payload bad;
  int bad_every = 0;
  // Request `n` (0-based, per transport): the payload and whether it is a bad one.
  std::pair<const Payload*, bool> Pick(uint64_t n) const {
    if (bad_every > 0 && n % bad_every == static_cast<uint64_t>(bad_every - 1)) return {&bad, true};
    return {&good[n % good.size()], false};
  }
};

// ---------------------------------------------------------------------------------------
// One level's control: when to stop issuing requests.

struct LevelControl {
  Clock::time_point stop_at;
  std::atomic<bool> stop_now{false};
  bool Issuing() const { return !stop_now.load() && Clock::now() < stop_at; }
};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// ---------------------------------------------------------------------------------------
// gRPC: generic async unary calls on one completion queue.

class GrpcDriver {
 public:
  GrpcDriver(const Options& o, const Workload& w) : o_(o), w_(w) {
    method_ = o.task == "caption" ? "/moondream.v1.Moondream/Caption"
              : o.task == "query" ? "/moondream.v1.Moondream/Query"
                                  : "/moondream.v1.Moondream/EncodeImage";
  }

  // Runs `slots` concurrent calls until `control` stops issuing, then drains.
  void Run(int slots, LevelControl& control, Recorder& recorder) {
    const int wanted = o_.channels > 0 ? o_.channels : std::max(1, (slots + 31) / 32);
    // Distinct connections: each channel its own subchannel pool (else gRPC shares one).
    while (static_cast<int>(channels_.size()) < wanted) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt("moondream_load.channel", static_cast<int>(channels_.size()));
      args.SetMaxReceiveMessageSize(-1);
      args.SetMaxSendMessageSize(-1);
      auto channel =
          grpc::CreateCustomChannel(o_.target, grpc::InsecureChannelCredentials(), args);
      channels_.push_back(channel);
      stubs_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
    grpc::CompletionQueue cq;
    int outstanding = 0;  // calls in flight plus slots waiting out a backoff
    for (int i = 0; i < slots; ++i) {
      Start(cq, i % wanted);
      ++outstanding;
    }
    void* tag = nullptr;
    bool ok = false;
    while (outstanding > 0 && cq.Next(&tag, &ok)) {
      std::unique_ptr<Event> event(static_cast<Event*>(tag));
      const int channel = event->channel;
      bool refused = false;
      if (!event->is_alarm) {
        Outcome out = Finish(static_cast<Call&>(*event));
        refused = out.kind == Kind::kExhausted || out.kind == Kind::kUnavailable;
        recorder.Add(std::move(out));
      }
      if (!control.Issuing()) {
        --outstanding;
      } else if (refused && o_.backoff_ms > 0) {
        auto* backoff = new Backoff;  // the slot sleeps, then starts its next call
        backoff->channel = channel;
        backoff->alarm.Set(&cq,
                           std::chrono::system_clock::now() +
                               std::chrono::microseconds(static_cast<int64_t>(o_.backoff_ms * 1000)),
                           static_cast<Event*>(backoff));
      } else {
        Start(cq, channel);
      }
    }
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }

 private:
  struct Event {
    explicit Event(bool alarm) : is_alarm(alarm) {}
    virtual ~Event() = default;
    const bool is_alarm;
    int channel = 0;
  };
  struct Backoff : Event {
    Backoff() : Event(true) {}
    grpc::Alarm alarm;
  };
  struct Call : Event {
    Call() : Event(false) {}
    grpc::ClientContext ctx;
    grpc::ByteBuffer response;
    grpc::Status status;
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc;
    Clock::time_point start;
    bool bad = false;
  };

  void Start(grpc::CompletionQueue& cq, int channel) {
    auto [payload, bad] = w_.Pick(sent_++);
    auto* call = new Call;
    call->bad = bad;
    call->channel = channel;
    call->start = Clock::now();
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(static_cast<int64_t>(o_.deadline_s * 1000)));
    call->rpc = stubs_[channel]->PrepareUnaryCall(&call->ctx, method_, payload->grpc, &cq);
    call->rpc->StartCall();
    call->rpc->Finish(&call->response, &call->status, static_cast<Event*>(call));
  }

  Outcome Finish(Call& call) {
    Outcome out{Ms(Clock::now() - call.start), GrpcKind(call.status.error_code()),
                GrpcCodeName(call.status.error_code()), call.bad, false,
                call.status.error_message().substr(0, 200)};
    if (out.kind == Kind::kOk && !ValidResponse(call.response)) {
      out.kind = Kind::kOther;
      out.code = "BAD_RESPONSE";
    }
    return out;
  }

  bool ValidResponse(grpc::ByteBuffer& buffer) const {
    std::vector<grpc::Slice> slices;
    if (!buffer.Dump(&slices).ok()) return false;
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    if (o_.task == "caption") {
      pb::CaptionResponse r;
      return r.ParseFromString(bytes) && !r.caption().empty();
    }
    if (o_.task == "query") {
      pb::QueryResponse r;
      return r.ParseFromString(bytes) && !r.answer().empty();
    }
    pb::EncodeImageResponse r;
    return r.ParseFromString(bytes) && !r.handle().empty();
  }

  const Options& o_;
  const Workload& w_;
  std::string method_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  uint64_t sent_ = 0;
};

// ---------------------------------------------------------------------------------------
// HTTP: curl multi, one easy handle (and connection) per slot, fresh for each level.

size_t AppendBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

class HttpDriver {
 public:
  HttpDriver(const Options& o, const Workload& w) : o_(o), w_(w) {
    url_ = "http://" + o.http_target + "/v1/chat/completions";
    headers_ = curl_slist_append(nullptr, "Content-Type: application/json");
    headers_ = curl_slist_append(headers_, "Expect:");  // no 100-continue round trip
  }
  ~HttpDriver() { curl_slist_free_all(headers_); }
  HttpDriver(const HttpDriver&) = delete;
  HttpDriver& operator=(const HttpDriver&) = delete;

  void Run(int slots, LevelControl& control, Recorder& recorder) {
    CURLM* multi = curl_multi_init();
    std::vector<Slot> pool(slots);
    for (Slot& slot : pool) {
      slot.easy = curl_easy_init();
      curl_easy_setopt(slot.easy, CURLOPT_URL, url_.c_str());
      curl_easy_setopt(slot.easy, CURLOPT_HTTPHEADER, headers_);
      curl_easy_setopt(slot.easy, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(slot.easy, CURLOPT_TIMEOUT_MS, static_cast<long>(o_.deadline_s * 1000));
      curl_easy_setopt(slot.easy, CURLOPT_WRITEFUNCTION, AppendBody);
      curl_easy_setopt(slot.easy, CURLOPT_WRITEDATA, &slot.response);
      curl_easy_setopt(slot.easy, CURLOPT_PRIVATE, &slot);
      Start(multi, slot);
    }
    int outstanding = slots;  // requests in flight plus slots waiting out a backoff
    std::vector<std::pair<Clock::time_point, Slot*>> waiting;
    const auto backoff = std::chrono::microseconds(static_cast<int64_t>(o_.backoff_ms * 1000));
    while (outstanding > 0) {
      int running = 0;
      curl_multi_perform(multi, &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        Slot* slot = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&slot));
        const CURLcode result = msg->data.result;
        curl_multi_remove_handle(multi, slot->easy);
        Outcome out = Finish(*slot, result);
        const bool refused = out.kind == Kind::kExhausted || out.kind == Kind::kUnavailable;
        recorder.Add(std::move(out));
        if (!control.Issuing()) {
          --outstanding;
        } else if (refused && o_.backoff_ms > 0) {
          waiting.emplace_back(Clock::now() + backoff, slot);
        } else {
          Start(multi, *slot);
        }
      }
      const auto now = Clock::now();
      for (size_t i = 0; i < waiting.size();) {
        if (now < waiting[i].first) {
          ++i;
          continue;
        }
        if (control.Issuing()) {
          Start(multi, *waiting[i].second);
        } else {
          --outstanding;
        }
        waiting[i] = waiting.back();
        waiting.pop_back();
      }
      if (outstanding > 0) curl_multi_poll(multi, nullptr, 0, waiting.empty() ? 100 : 5, nullptr);
    }
    for (Slot& slot : pool) curl_easy_cleanup(slot.easy);
    curl_multi_cleanup(multi);
  }

 private:
  struct Slot {
    CURL* easy = nullptr;
    std::string response;
    Clock::time_point start;
    bool bad = false;
  };

  void Start(CURLM* multi, Slot& slot) {
    auto [payload, bad] = w_.Pick(sent_++);
    slot.bad = bad;
    slot.response.clear();
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDS, payload->http.data());
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(payload->http.size()));
    slot.start = Clock::now();
    curl_multi_add_handle(multi, slot.easy);
  }

  Outcome Finish(Slot& slot, CURLcode result) {
    Outcome out{Ms(Clock::now() - slot.start), Kind::kOther, "", slot.bad, true, ""};
    if (result == CURLE_OPERATION_TIMEDOUT) {
      out.kind = Kind::kDeadline;  // the client's --deadline: it hung up, the server cancels
      out.code = "CLIENT_TIMEOUT";
      return out;
    }
    if (result != CURLE_OK) {
      out.code = std::string("CURL_") + curl_easy_strerror(result);
      return out;
    }
    long status = 0;
    curl_easy_getinfo(slot.easy, CURLINFO_RESPONSE_CODE, &status);
    out.kind = HttpKind(status);
    out.code = "HTTP_" + std::to_string(status);
    if (status != 200) out.message = slot.response.substr(0, 200);
    if (out.kind == Kind::kOk) {
      const json body = json::parse(slot.response, nullptr, false);
      const bool valid = !body.is_discarded() && body.contains("choices") &&
                         body["choices"].is_array() && !body["choices"].empty() &&
                         body["choices"][0]["message"]["content"].is_string() &&
                         !body["choices"][0]["message"]["content"].get<std::string>().empty();
      if (!valid) {
        out.kind = Kind::kOther;
        out.code = "BAD_RESPONSE";
      }
    }
    return out;
  }

  const Options& o_;
  const Workload& w_;
  std::string url_;
  curl_slist* headers_ = nullptr;
  uint64_t sent_ = 0;
};

// One call through a driver (GrpcDriver, HttpDriver), synchronously (the warm-up): its outcome.
template <class Driver>
Outcome OneCall(Driver& driver) {
  LevelControl control;
  control.stop_at = Clock::now();
  Recorder recorder;
  driver.Run(1, control, recorder);
  return recorder.Take().at(0);
}

// ---------------------------------------------------------------------------------------
// Server memory: /proc/PID (local server) and/or the /metrics endpoint.

struct ProcSample {
  bool alive = false;
  double rss_mib = 0, hwm_mib = 0;
  int threads = 0;
};

ProcSample ReadProc(int pid) {
  ProcSample s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    s.alive = true;
    auto kib = [&](size_t skip) { return std::strtod(line.c_str() + skip, nullptr) / 1024.0; };
    if (line.rfind("VmRSS:", 0) == 0) s.rss_mib = kib(6);
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_mib = kib(6);
    if (line.rfind("Threads:", 0) == 0) s.threads = std::atoi(line.c_str() + 8);
    if (line.rfind("State:", 0) == 0 && line.find("zombie") != std::string::npos) s.alive = false;
  }
  return s;
}

int CountFds(int pid) {
  DIR* dir = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

// Resets the server's VmHWM to its current RSS (Linux: write 5 to clear_refs; needs the
// same user). Returns false if not permitted.
bool ResetPeak(int pid) {
  std::ofstream f("/proc/" + std::to_string(pid) + "/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

struct MetricsSample {
  bool ok = false;
  double rss_mib = 0, queue_depth = 0, in_flight = 0;
};

MetricsSample Scrape(CURL* easy) {
  std::string text;
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &text);
  MetricsSample s;
  if (curl_easy_perform(easy) != CURLE_OK) return s;
  std::istringstream in(text);
  std::string line;
  auto value = [&](const char* name) -> std::optional<double> {
    const size_t n = std::strlen(name);
    if (line.compare(0, n, name) != 0 || line.size() <= n || line[n] != ' ') return std::nullopt;
    return std::strtod(line.c_str() + n + 1, nullptr);
  };
  while (std::getline(in, line)) {
    if (auto v = value("moondream_process_resident_memory_bytes")) s.rss_mib = *v / (1 << 20), s.ok = true;
    if (auto v = value("moondream_queue_depth")) s.queue_depth = *v;
    if (auto v = value("moondream_requests_in_flight")) s.in_flight = *v;
  }
  return s;
}

struct LevelMemory {
  bool have_proc = false, hwm_reset = false, have_metrics = false, server_exited = false;
  bool aborted = false;
  double rss_start_mib = 0, rss_end_mib = 0, rss_max_sampled_mib = 0, hwm_mib = 0;
  double metrics_rss_max_mib = 0, queue_depth_max = 0, in_flight_max = 0;
  int threads_start = 0, threads_end = 0, threads_max = 0, fds_start = -1, fds_end = -1, fds_max = -1;
  json series = json::array();  // [t_s, rss_mib, threads, fds]
  double PeakMib() const {
    if (have_proc) return std::max(hwm_reset ? hwm_mib : 0.0, rss_max_sampled_mib);
    return metrics_rss_max_mib;
  }
};

// Samples the server while a level runs (50 ms /proc, 250 ms /metrics).
class Sampler {
 public:
  Sampler(const Options& o, LevelControl& control) : o_(o), control_(control) {
    if (o.server_pid > 0) {
      mem_.have_proc = true;
      mem_.hwm_reset = ResetPeak(o.server_pid);
      const ProcSample s = ReadProc(o.server_pid);
      if (!s.alive) Die("--server-pid " + std::to_string(o.server_pid) + " is not running");
      mem_.rss_start_mib = mem_.rss_max_sampled_mib = s.rss_mib;
      mem_.threads_start = mem_.threads_max = s.threads;
      mem_.fds_start = mem_.fds_max = CountFds(o.server_pid);
    }
    if (!o.metrics_url.empty()) {
      easy_ = curl_easy_init();
      curl_easy_setopt(easy_, CURLOPT_URL, o.metrics_url.c_str());
      curl_easy_setopt(easy_, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(easy_, CURLOPT_TIMEOUT_MS, 2000L);
      curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, AppendBody);
    }
    start_ = Clock::now();
    thread_ = std::thread([this] { Loop(); });
  }
  ~Sampler() {
    if (thread_.joinable()) Stop();
    if (easy_ != nullptr) curl_easy_cleanup(easy_);
  }

  LevelMemory Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
    if (mem_.have_proc) {
      const ProcSample s = ReadProc(o_.server_pid);
      if (!s.alive) mem_.server_exited = true;
      Note(s, CountFds(o_.server_pid));
      mem_.rss_end_mib = s.rss_mib;
      mem_.threads_end = s.threads;
      mem_.fds_end = CountFds(o_.server_pid);
      mem_.series.push_back(SeriesPoint(s, mem_.fds_end));
    }
    if (easy_ != nullptr) NoteMetrics(Scrape(easy_));
    return mem_;
  }

 private:
  json SeriesPoint(const ProcSample& s, int fds) const {
    return json::array({std::round(Seconds(start_, Clock::now()) * 10) / 10, std::round(s.rss_mib * 10) / 10,
                        s.threads, fds});
  }

  void Note(const ProcSample& s, int fds) {
    if (!s.alive) {
      mem_.server_exited = true;
      control_.stop_now = true;
      return;
    }
    mem_.rss_max_sampled_mib = std::max(mem_.rss_max_sampled_mib, s.rss_mib);
    mem_.hwm_mib = std::max(mem_.hwm_mib, s.hwm_mib);
    mem_.threads_max = std::max(mem_.threads_max, s.threads);
    if (fds >= 0) mem_.fds_max = std::max(mem_.fds_max, fds);
    if (o_.abort_rss_mib > 0 && s.rss_mib > o_.abort_rss_mib) {
      mem_.aborted = true;
      control_.stop_now = true;
    }
  }

  void NoteMetrics(const MetricsSample& m) {
    if (!m.ok) return;
    mem_.have_metrics = true;
    mem_.metrics_rss_max_mib = std::max(mem_.metrics_rss_max_mib, m.rss_mib);
    mem_.queue_depth_max = std::max(mem_.queue_depth_max, m.queue_depth);
    mem_.in_flight_max = std::max(mem_.in_flight_max, m.in_flight);
    if (!mem_.have_proc && o_.abort_rss_mib > 0 && m.rss_mib > o_.abort_rss_mib) {
      mem_.aborted = true;
      control_.stop_now = true;
    }
  }

  void Loop() {
    auto next_series = start_;
    auto next_scrape = start_;
    std::unique_lock<std::mutex> lock(mu_);
    while (!done_) {
      lock.unlock();
      const auto now = Clock::now();
      if (mem_.have_proc) {
        const ProcSample s = ReadProc(o_.server_pid);
        int fds = -1;
        if (now >= next_series) {
          fds = CountFds(o_.server_pid);
          mem_.series.push_back(SeriesPoint(s, fds));
          next_series = now + std::chrono::milliseconds(static_cast<int64_t>(o_.series_interval_s * 1000));
        }
        Note(s, fds);
      }
      if (easy_ != nullptr && now >= next_scrape) {
        NoteMetrics(Scrape(easy_));
        next_scrape = now + std::chrono::milliseconds(250);
      }
      lock.lock();
      cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return done_; });
    }
  }

  const Options& o_;
  LevelControl& control_;
  LevelMemory mem_;
  CURL* easy_ = nullptr;
  Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------
// Summaries

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = q * (sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(sorted.size() - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

json LatencyJson(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto r = [](double x) { return std::round(x * 10) / 10; };
  return {{"count", ms.size()},
          {"p50", r(Percentile(ms, 0.5))},
          {"p90", r(Percentile(ms, 0.9))},
          {"p99", r(Percentile(ms, 0.99))},
          {"max", ms.empty() ? 0.0 : r(ms.back())}};
}

struct Level {
  std::string transport;
  int concurrency;
  double wall_s;
  std::vector<Outcome> outcomes;
  LevelMemory memory;
};

json LevelJson(const Level& level) {
  std::map<std::string, int> codes, bad_codes;
  // Distinct error texts (digits folded to '#', so "queue is full (16 …" is one entry) and
  // their counts: tells the transport's refusals from the engine's.
  std::map<std::string, int> messages;
  int counts[5] = {0, 0, 0, 0, 0};
  int bad = 0;
  std::vector<double> ok_ms, refused_ms;
  for (const Outcome& o : level.outcomes) {
    if (!o.message.empty()) {
      std::string text = o.message.substr(0, 100);
      for (char& ch : text) {
        if (ch >= '0' && ch <= '9') ch = '#';
      }
      ++messages[(o.http ? "http:" : "grpc:") + o.code + " " + text];
    }
    if (o.bad) {
      ++bad;
      ++bad_codes[(o.http ? "http:" : "grpc:") + o.code];
      continue;
    }
    ++codes[(o.http ? "http:" : "grpc:") + o.code];
    ++counts[static_cast<int>(o.kind)];
    (o.kind == Kind::kOk ? ok_ms : refused_ms).push_back(o.latency_ms);
  }
  const LevelMemory& m = level.memory;
  auto r1 = [](double x) { return std::round(x * 10) / 10; };
  json j = {{"transport", level.transport},
            {"concurrency", level.concurrency},
            {"wall_s", r1(level.wall_s)},
            {"requests", level.outcomes.size() - bad},
            {"ok", counts[0]},
            {"resource_exhausted", counts[1]},
            {"unavailable", counts[2]},
            {"deadline_exceeded", counts[3]},
            {"other", counts[4]},
            {"codes", codes},
            {"messages", messages},
            {"ok_per_s", std::round(counts[0] / std::max(1e-9, level.wall_s) * 100) / 100},
            {"latency_ms", LatencyJson(ok_ms)},
            {"refused_latency_ms", LatencyJson(refused_ms)},
            {"aborted", m.aborted}};
  if (bad > 0) j["bad_requests"] = {{"sent", bad}, {"codes", bad_codes}};
  if (m.have_proc) {
    j["server"] = {{"peak_rss_mib", r1(m.PeakMib())},
                   {"vmhwm_reset_at_start", m.hwm_reset},
                   {"vmhwm_mib", r1(m.hwm_mib)},
                   {"rss_max_sampled_mib", r1(m.rss_max_sampled_mib)},
                   {"rss_start_mib", r1(m.rss_start_mib)},
                   {"rss_end_mib", r1(m.rss_end_mib)},
                   {"threads_start", m.threads_start},
                   {"threads_end", m.threads_end},
                   {"threads_max", m.threads_max},
                   {"fds_start", m.fds_start},
                   {"fds_end", m.fds_end},
                   {"fds_max", m.fds_max},
                   {"exited", m.server_exited},
                   {"series", m.series}};
  }
  if (m.have_metrics) {
    j["metrics"] = {{"rss_max_mib", r1(m.metrics_rss_max_mib)},
                    {"queue_depth_max", m.queue_depth_max},
                    {"in_flight_max", m.in_flight_max}};
  }
  return j;
}

void PrintHeader() {
  std::printf("%-9s %5s %7s %7s %7s %7s %6s %5s %8s %8s %8s %8s %8s %9s %6s\n", "transport", "conc",
              "ok", "RE/429", "UN/503", "DL/504", "other", "bad", "ok/s", "p50_ms", "p90_ms",
              "p99_ms", "max_ms", "rss_MiB", "qmax");
  std::fflush(stdout);
}

void PrintLine(const json& j) {
  char rss[32] = "-", qmax[16] = "-";
  if (j.contains("server")) {
    std::snprintf(rss, sizeof rss, "%.0f", j["server"]["peak_rss_mib"].get<double>());
  } else if (j.contains("metrics")) {
    std::snprintf(rss, sizeof rss, "%.0f", j["metrics"]["rss_max_mib"].get<double>());
  }
  if (j.contains("metrics")) std::snprintf(qmax, sizeof qmax, "%.0f", j["metrics"]["queue_depth_max"].get<double>());
  const json& l = j["latency_ms"];
  const int bad = j.contains("bad_requests") ? j["bad_requests"]["sent"].get<int>() : 0;
  std::printf("%-9s %5d %7d %7d %7d %7d %6d %5d %8.2f %8.0f %8.0f %8.0f %8.0f %9s %6s%s%s\n",
              j["transport"].get<std::string>().c_str(), j["concurrency"].get<int>(), j["ok"].get<int>(),
              j["resource_exhausted"].get<int>(), j["unavailable"].get<int>(),
              j["deadline_exceeded"].get<int>(), j["other"].get<int>(), bad, j["ok_per_s"].get<double>(),
              l["p50"].get<double>(), l["p90"].get<double>(), l["p99"].get<double>(),
              l["max"].get<double>(), rss, qmax, j["aborted"].get<bool>() ? "  ABORTED (rss guard)" : "",
              j.contains("server") && j["server"]["exited"].get<bool>() ? "  SERVER EXITED" : "");
  std::fflush(stdout);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "";
}

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  Workload workload;
  workload.bad_every = o.bad_every;
  json images = json::array();
  for (const std::string& path : o.images) {
    const std::string bytes = ReadFile(path);
    workload.good.push_back(BuildPayload(o, bytes, MimeType(path)));
    images.push_back({{"path", path}, {"bytes", bytes.size()}});
  }
  workload.bad = BuildPayload(o, std::string(64, 'x'), "image/jpeg");  // not an image

  const bool use_grpc = o.transport != "http";
  const bool use_http = o.transport != "grpc";
  GrpcDriver grpc_driver(o, workload);
  HttpDriver http_driver(o, workload);

  // Warm-up (also checks the target answers OK before anything is measured).
  for (int i = 0; i < o.warmup; ++i) {
    for (int t = 0; t < 2; ++t) {
      if ((t == 0 && !use_grpc) || (t == 1 && !use_http)) continue;
      const Outcome out = t == 0 ? OneCall(grpc_driver) : OneCall(http_driver);
      if (out.kind != Kind::kOk) Die(std::string("warm-up ") + (t == 0 ? "gRPC" : "HTTP") + " request failed: " + out.code);
    }
  }

  json report = {{"tool", "moondream-load"},
                 {"started_utc", UtcNow()},
                 {"cpu", CpuModel()},
                 {"cores", std::thread::hardware_concurrency()},
                 {"loadavg_start", LoadAvg()},
                 {"label", o.label},
                 {"options",
                  {{"target", o.target},
                   {"http_target", o.http_target},
                   {"transport", o.transport},
                   {"duration_s", o.duration_s},
                   {"task", o.task},
                   {"max_tokens", o.max_tokens},
                   {"model", o.model},
                   {"deadline_s", o.deadline_s},
                   {"channels", o.channels > 0 ? std::to_string(o.channels) : "auto"},
                   {"bad_every", o.bad_every},
                   {"backoff_ms", o.backoff_ms},
                   {"server_pid", o.server_pid},
                   {"metrics", o.metrics_url}}},
                 {"images", images},
                 {"levels", json::array()}};
  auto write_json = [&] {
    if (o.json_path.empty()) return;
    report["loadavg_end"] = LoadAvg();
    std::ofstream out(o.json_path);
    out << report.dump(1) << "\n";
    if (!out) Die("cannot write " + o.json_path);
  };

  if (!o.label.empty()) std::printf("# %s\n", o.label.c_str());
  PrintHeader();
  bool server_gone = false;
  for (int c : o.concurrency) {
    LevelControl control;
    Recorder recorder;
    control.stop_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.duration_s * 1000));
    Sampler sampler(o, control);
    const auto start = Clock::now();
    // mixed: half the slots gRPC (rounded up), the rest HTTP.
    const int grpc_slots = !use_http ? c : !use_grpc ? 0 : (c + 1) / 2;
    const int http_slots = c - grpc_slots;
    std::thread http_thread;
    if (http_slots > 0) http_thread = std::thread([&] { http_driver.Run(http_slots, control, recorder); });
    if (grpc_slots > 0) grpc_driver.Run(grpc_slots, control, recorder);
    if (http_thread.joinable()) http_thread.join();
    Level level{o.transport, c, Seconds(start, Clock::now()), recorder.Take(), sampler.Stop()};
    json j = LevelJson(level);
    PrintLine(j);
    report["levels"].push_back(std::move(j));
    write_json();
    if (level.memory.server_exited) {
      server_gone = true;
      break;
    }
  }
  write_json();
  curl_global_cleanup();
  return server_gone ? 1 : 0;
}

}  // namespace
}  // namespace moondream::bench

int main(int argc, char** argv) { return moondream::bench::Main(argc, argv); }
