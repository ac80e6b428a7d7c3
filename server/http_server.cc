#include "server/http_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/status/status.h"
#include "engine/log.h"
#include "server/tls.h"

namespace moondream::server::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;

// "host:port", "[v6]:port" or ":port" -> a passive endpoint.
absl::StatusOr<tcp::endpoint> Resolve(net::io_context& ioc, const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError("HTTP address \"" + listen + "\": expected host:port");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  const auto found = resolver.resolve(host.empty() ? "0.0.0.0" : host, listen.substr(colon + 1),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || found.empty()) {
    return absl::InvalidArgumentError("HTTP address \"" + listen + "\": cannot resolve");
  }
  return found.begin()->endpoint();
}

constexpr auto kLinger = std::chrono::seconds(2);

// The answer to a connection over the limit, written raw (no session is made for it).
std::string BusyResponse(const HttpServerOptions& options) {
  auto [content_type, body] =
      options.error_body(503, "too many open connections (--http-max-connections)");
  return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

class Session;

// Lets Responders outlive the server safely: they post only while the gate is open.
struct Gate {
  std::mutex mu;
  bool open = true;
};

struct HttpServer::Impl {
  HttpServerOptions options;
  Handler handler;
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> body_bytes{0};  // request bodies being received or parsed
  std::mutex mu;
  std::condition_variable sessions_cv;   // a session ended
  std::unordered_set<Session*> sessions;  // guarded by mu
  std::shared_ptr<ssl::context> tls;      // null: plain HTTP; guarded by mu (SIGHUP swaps it)
  int port = 0;
  std::string busy_response;  // BusyResponse(options)
  // Declared last: destroying the io_context destroys pending handlers, which may hold the
  // last reference to a session, whose destructor uses the members above.
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  void Accept();
  std::shared_ptr<ssl::context> CurrentTls() {
    std::lock_guard<std::mutex> lock(mu);
    return tls;
  }
};

// One answer in progress; the Responder the handler holds.
class Exchange final : public Responder {
 public:
  Exchange(std::shared_ptr<Session> session, std::shared_ptr<Gate> gate)
      : session_(std::move(session)), gate_(std::move(gate)) {}

  void Send(int status, const std::string& content_type, std::string body) override;
  void BeginStream(const std::string& content_type) override;
  void Write(std::string data) override;
  void End() override;
  void OnDisconnect(std::function<void()> callback) override;

 private:
  template <typename F>
  void Post(F f);

  std::shared_ptr<Session> session_;
  std::shared_ptr<Gate> gate_;
};

// One connection. Every member function runs on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  // `tls`: the listener's TLS context, or null for plain HTTP.
  Session(tcp::socket socket, HttpServer::Impl* server, std::shared_ptr<ssl::context> tls)
      : server_(server), tls_context_(std::move(tls)) {
    if (tls_context_) {
      tls_.emplace(std::move(socket), *tls_context_);
    } else {
      plain_.emplace(std::move(socket));
    }
    std::lock_guard<std::mutex> lock(server_->mu);
    server_->sessions.insert(this);
  }
  ~Session() {
    Release();
    std::lock_guard<std::mutex> lock(server_->mu);
    server_->sessions.erase(this);
    server_->sessions_cv.notify_all();
  }

  net::any_io_executor executor() { return Lowest().get_executor(); }
  void Start();
  void CloseIfIdle() {
    if (exchange_ == nullptr) Close();
  }

  void SendUnary(const Exchange* ex, int status, const std::string& content_type,
                 std::string body);
  void BeginStream(const Exchange* ex, const std::string& content_type);
  void WriteChunk(const Exchange* ex, std::string data);
  void EndStream(const Exchange* ex);
  void SetOnDisconnect(const Exchange* ex, std::function<void()> callback);

 private:
  const HttpServerOptions& options() const { return server_->options; }
  beast::tcp_stream& Lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }
  // Calls f with the stream HTTP is read from and written to: TLS or plain.
  template <typename F>
  void WithStream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(*plain_);
    }
  }
  bool Current(const Exchange* ex) const { return ex != nullptr && ex == exchange_.get(); }

  void ReadHeader();
  void OnHeader(beast::error_code ec);
  void OnBody(beast::error_code ec);
  void Dispatch();
  void Reject(int status, const std::string& message);
  void WatchDisconnect();
  void OnReadable(const Exchange* ex, beast::error_code ec);
  void StopWatching();
  void ClientGone();
  void Pump();
  void OnStreamWritten(beast::error_code ec);
  void OnAnswered(beast::error_code ec);
  void Close();
  void LingerClose();
  void Discard();
  bool KeepAlive() const { return keep_alive_ && !server_->stopping; }
  // Body bytes from the listener's budget (HttpServerOptions::max_body_bytes_in_flight).
  bool Reserve(uint64_t bytes) {
    Release();
    uint64_t used = server_->body_bytes.load();
    do {
      if (used + bytes > options().max_body_bytes_in_flight) return false;
    } while (!server_->body_bytes.compare_exchange_weak(used, used + bytes));
    reserved_ = bytes;
    return true;
  }
  void Release() {
    server_->body_bytes -= reserved_;
    reserved_ = 0;
  }
  std::string BodyLimitMessage() const {
    return "request body is over the limit of " + std::to_string(options().max_body_bytes) +
           " bytes";
  }

  HttpServer::Impl* server_;
  std::shared_ptr<ssl::context> tls_context_;  // outlives tls_
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  bool closed_ = false;

  std::shared_ptr<Exchange> exchange_;  // the request being answered
  std::function<void()> on_disconnect_;
  bool watching_ = false;

  // Output: a unary response, or a chunked stream.
  std::unique_ptr<bhttp::response<bhttp::string_body>> unary_;
  std::unique_ptr<bhttp::response<bhttp::empty_body>> stream_header_;
  std::unique_ptr<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::deque<std::string> chunks_;
  std::string chunk_in_flight_;
  bool writing_ = false;
  bool end_requested_ = false;
  bool ending_ = false;
  std::string continue_;  // "100 Continue" in flight
  bool rejected_ = false;  // answered by Reject: linger, then close
  uint64_t reserved_ = 0;  // body bytes held from the budget
  std::array<char, 16384> discard_;
};

// --- Exchange: hops onto the session's strand -------------------------------------

template <typename F>
void Exchange::Post(F f) {
  std::lock_guard<std::mutex> lock(gate_->mu);
  if (!gate_->open) return;
  net::post(session_->executor(), [session = session_, f = std::move(f)]() mutable {
    f(session.get());
  });
}

void Exchange::Send(int status, const std::string& content_type, std::string body) {
  Post([this, status, content_type, body = std::move(body)](Session* s) mutable {
    s->SendUnary(this, status, content_type, std::move(body));
  });
}
void Exchange::BeginStream(const std::string& content_type) {
  Post([this, content_type](Session* s) { s->BeginStream(this, content_type); });
}
void Exchange::Write(std::string data) {
  Post([this, data = std::move(data)](Session* s) mutable { s->WriteChunk(this, std::move(data)); });
}
void Exchange::End() {
  Post([this](Session* s) { s->EndStream(this); });
}
void Exchange::OnDisconnect(std::function<void()> callback) {
  Post([this, callback = std::move(callback)](Session* s) mutable {
    s->SetOnDisconnect(this, std::move(callback));
  });
}

// --- Reading ----------------------------------------------------------------------

void Session::Start() {
  if (!tls_) return ReadHeader();
  Lowest().expires_after(options().read_timeout);
  tls_->async_handshake(ssl::stream_base::server,
                        [self = shared_from_this()](beast::error_code ec) {
                          if (ec) return self->Close();  // not TLS, or no valid client cert
                          self->ReadHeader();
                        });
}

void Session::ReadHeader() {
  if (server_->stopping) return Close();
  parser_.emplace();
  parser_->body_limit(options().max_body_bytes);
  parser_->header_limit(static_cast<uint32_t>(options().max_header_bytes));
  Lowest().expires_after(options().read_timeout);  // the whole request, body included
  WithStream([this](auto& stream) {
    bhttp::async_read_header(stream, buffer_, *parser_,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               self->OnHeader(ec);
                             });
  });
}

void Session::OnHeader(beast::error_code ec) {
  if (ec == bhttp::error::header_limit) return Reject(431, "request header fields too large");
  if (ec == bhttp::error::body_limit) return Reject(413, BodyLimitMessage());
  if (ec) {
    // A connection that ends or times out between requests is just closed; bytes that do
    // not parse as HTTP get a 400.
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
      return Reject(400, "malformed HTTP request");
    }
    return Close();
  }
  const auto& header = parser_->get();
  const auto length = parser_->content_length();
  if (length && *length > options().max_body_bytes) return Reject(413, BodyLimitMessage());
  // Bodies are held whole until parsed: they are paid from one budget, so they need a
  // length up front.
  if (parser_->chunked()) return Reject(411, "send the body with a Content-Length");
  if (length && !Reserve(*length)) {
    return Reject(429, "the server is receiving too many request bodies at once "
                       "(--http-memory-bytes); retry shortly");
  }
  auto read_body = [self = shared_from_this()] {
    self->WithStream([&self](auto& stream) {
      bhttp::async_read(stream, self->buffer_, *self->parser_,
                        [self](beast::error_code ec, size_t) { self->OnBody(ec); });
    });
  };
  if (beast::iequals(header[bhttp::field::expect], "100-continue")) {
    continue_ = "HTTP/1.1 100 Continue\r\n\r\n";
    WithStream([&](auto& stream) {
      net::async_write(stream, net::buffer(continue_),
                       [self = shared_from_this(), read_body](beast::error_code ec, size_t) {
                         if (ec) return self->Close();
                         read_body();
                       });
    });
    return;
  }
  read_body();
}

void Session::OnBody(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) return Reject(413, BodyLimitMessage());
  if (ec) return Close();  // timed out, reset, or truncated: nobody to answer
  Dispatch();
}

void Session::Dispatch() {
  auto& message = parser_->get();
  HttpRequest request;
  request.method = std::string(message.method_string());
  const beast::string_view target = message.target();
  request.path = std::string(target.substr(0, target.find('?')));
  request.authorization = std::string(message[bhttp::field::authorization]);
  request.body = std::move(message.body());
  keep_alive_ = message.keep_alive();
  version_ = message.version();
  parser_.reset();
  // The body is parsed (and dropped) by the handler before it returns: what it keeps, the
  // engine counts (--max-queued-bytes).
  struct ReleaseBody {
    Session* session;
    ~ReleaseBody() { session->Release(); }
  } release{this};
  Lowest().expires_never();
  exchange_ = std::make_shared<Exchange>(shared_from_this(), server_->gate);
  WatchDisconnect();
  try {
    server_->handler(request, exchange_);
  } catch (const std::exception& e) {
    Log(LogLevel::kError, "http_handler_exception", {{"what", e.what()}});
    SendUnary(exchange_.get(), 500, "text/plain", "internal error\n");
  }
}

// A transport-level refusal: the error body the server was configured with, then close.
void Session::Reject(int status, const std::string& message) {
  keep_alive_ = false;
  rejected_ = true;
  exchange_ = std::make_shared<Exchange>(shared_from_this(), server_->gate);
  auto [content_type, body] = server_->options.error_body(status, message);
  SendUnary(exchange_.get(), status, content_type, std::move(body));
}

// --- Watching for a hang-up while the request runs ---------------------------------

void Session::WatchDisconnect() {
  watching_ = true;
  Lowest().socket().async_wait(tcp::socket::wait_read,
                              [self = shared_from_this(), ex = exchange_.get()](
                                  beast::error_code ec) { self->OnReadable(ex, ec); });
}

void Session::OnReadable(const Exchange* ex, beast::error_code ec) {
  if (!Current(ex) || !watching_ || ec == net::error::operation_aborted) return;
  watching_ = false;
  if (ec) return ClientGone();
  // POLLRDHUP: the peer closed its side (FIN), even with bytes still unread (a TLS
  // close_notify); POLLHUP/POLLERR: reset.
  pollfd fd{Lowest().socket().native_handle(), POLLIN | POLLRDHUP, 0};
  if (::poll(&fd, 1, 0) < 0) return WatchDisconnect();
  if (fd.revents & (POLLRDHUP | POLLHUP | POLLERR)) return ClientGone();
  if (!(fd.revents & POLLIN)) return WatchDisconnect();  // spurious wake-up
  // Readable and still open: a pipelined request, read after this answer, unwatched.
}

void Session::StopWatching() {
  if (!watching_) return;
  watching_ = false;
  beast::error_code ignored;
  Lowest().socket().cancel(ignored);
}

void Session::ClientGone() {
  if (on_disconnect_) {
    auto callback = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
    callback();
  }
  exchange_.reset();
  Close();
}

void Session::SetOnDisconnect(const Exchange* ex, std::function<void()> callback) {
  if (Current(ex)) {
    on_disconnect_ = std::move(callback);
  } else {
    callback();  // the answer was given up already: the client is gone
  }
}

// --- Writing ------------------------------------------------------------------------

void Session::SendUnary(const Exchange* ex, int status, const std::string& content_type,
                        std::string body) {
  if (!Current(ex) || closed_ || stream_header_ || unary_) return;  // one answer per request
  StopWatching();
  on_disconnect_ = nullptr;
  unary_ = std::make_unique<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(status), version_);
  unary_->set(bhttp::field::content_type, content_type);
  unary_->set(bhttp::field::cache_control, "no-store");
  unary_->keep_alive(KeepAlive());
  unary_->body() = std::move(body);
  unary_->prepare_payload();
  Lowest().expires_after(options().write_timeout);
  WithStream([this](auto& stream) {
    bhttp::async_write(stream, *unary_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnAnswered(ec);
    });
  });
}

void Session::BeginStream(const Exchange* ex, const std::string& content_type) {
  if (!Current(ex) || closed_ || stream_header_ || unary_) return;
  stream_header_ = std::make_unique<bhttp::response<bhttp::empty_body>>(bhttp::status::ok, version_);
  stream_header_->set(bhttp::field::content_type, content_type);
  stream_header_->set(bhttp::field::cache_control, "no-cache");
  stream_header_->keep_alive(KeepAlive());
  stream_header_->chunked(true);
  serializer_ = std::make_unique<bhttp::response_serializer<bhttp::empty_body>>(*stream_header_);
  writing_ = true;
  Lowest().expires_after(options().write_timeout);
  WithStream([this](auto& stream) {
    bhttp::async_write_header(stream, *serializer_,
                              [self = shared_from_this()](beast::error_code ec, size_t) {
                                self->OnStreamWritten(ec);
                              });
  });
}

void Session::WriteChunk(const Exchange* ex, std::string data) {
  if (!Current(ex) || closed_ || !stream_header_ || data.empty()) return;
  chunks_.push_back(std::move(data));
  Pump();
}

void Session::EndStream(const Exchange* ex) {
  if (!Current(ex) || closed_ || !stream_header_) return;
  end_requested_ = true;
  Pump();
}

void Session::Pump() {
  if (writing_ || closed_) return;
  auto done = [self = shared_from_this()](beast::error_code ec, size_t) {
    self->OnStreamWritten(ec);
  };
  if (!chunks_.empty()) {
    chunk_in_flight_ = std::move(chunks_.front());
    chunks_.pop_front();
    writing_ = true;
    Lowest().expires_after(options().write_timeout);
    WithStream([&](auto& stream) {
      net::async_write(stream, bhttp::make_chunk(net::buffer(chunk_in_flight_)), done);
    });
  } else if (end_requested_) {
    end_requested_ = false;
    ending_ = true;
    writing_ = true;
    StopWatching();
    on_disconnect_ = nullptr;
    Lowest().expires_after(options().write_timeout);
    WithStream([&](auto& stream) { net::async_write(stream, bhttp::make_chunk_last(), done); });
  }
}

void Session::OnStreamWritten(beast::error_code ec) {
  writing_ = false;
  Lowest().expires_never();
  if (ec) return ClientGone();  // reset, or stopped reading for write_timeout
  if (ending_) {
    ending_ = false;
    return OnAnswered(ec);
  }
  Pump();
}

void Session::OnAnswered(beast::error_code ec) {
  unary_.reset();
  serializer_.reset();
  stream_header_.reset();
  chunks_.clear();
  exchange_.reset();
  Lowest().expires_never();
  if (!ec && rejected_) return LingerClose();
  if (ec || !KeepAlive()) return Close();
  ReadHeader();
}

// After a refusal the client may still be sending its body; closing with unread bytes
// would reset the connection and could destroy the answer before the client reads it.
void Session::LingerClose() {
  beast::error_code ignored;
  Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
  Lowest().expires_after(kLinger);
  Discard();
}

void Session::Discard() {
  Lowest().async_read_some(net::buffer(discard_),
                           [self = shared_from_this()](beast::error_code ec, size_t) {
                             if (ec) return self->Close();
                             self->Discard();
                           });
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  if (on_disconnect_) {
    auto callback = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
    callback();
  }
  beast::error_code ignored;
  Lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
  Lowest().close();
}

// --- Server -----------------------------------------------------------------------

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      size_t open = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        open = sessions.size();
      }
      if (open >= static_cast<size_t>(options.max_connections)) {
        auto refused = std::make_shared<tcp::socket>(std::move(socket));
        net::async_write(*refused, net::buffer(busy_response),
                         [refused](beast::error_code, size_t) {
                           beast::error_code ignored;
                           refused->shutdown(tcp::socket::shutdown_both, ignored);
                           refused->close(ignored);
                         });
      } else {
        std::make_shared<Session>(std::move(socket), this, CurrentTls())->Start();
      }
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                               Handler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!impl->options.error_body) {
    impl->options.error_body = [](int, const std::string& message) {
      return std::make_pair(std::string("text/plain"), message + "\n");
    };
  }
  impl->handler = std::move(handler);
  impl->busy_response = BusyResponse(impl->options);
  if (options.tls.enabled()) {
    absl::StatusOr<std::shared_ptr<ssl::context>> tls = LoadTlsContext(options.tls);
    if (!tls.ok()) return tls.status();
    impl->tls = *std::move(tls);
  }
  absl::StatusOr<tcp::endpoint> endpoint = Resolve(impl->ioc, options.listen);
  if (!endpoint.ok()) return endpoint.status();
  beast::error_code ec;
  impl->acceptor.open(endpoint->protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(*endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError("HTTP: cannot listen on " + options.listen + ": " + ec.message());
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->work.emplace(impl->ioc.get_executor());
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([ioc = &impl->ioc] { ioc->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(std::chrono::steady_clock::now()); }

int HttpServer::port() const { return impl_->port; }

absl::Status HttpServer::ReloadTls() {
  if (!impl_->options.tls.enabled()) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<ssl::context>> tls = LoadTlsContext(impl_->options.tls);
  if (!tls.ok()) return tls.status();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->tls = *std::move(tls);  // new connections; open ones keep theirs
  return absl::OkStatus();
}

void HttpServer::Shutdown(std::chrono::steady_clock::time_point deadline) {
  if (impl_->stopping.exchange(true)) return;
  net::post(impl_->ioc, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (Session* session : impl_->sessions) {
      if (auto s = session->weak_from_this().lock()) live.push_back(std::move(s));
    }
  }
  for (auto& session : live) net::post(session->executor(), [session] { session->CloseIfIdle(); });
  live.clear();  // may run a session's destructor, which takes impl_->mu
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->sessions_cv.wait_until(lock, deadline, [&] { return impl_->sessions.empty(); });
  lock.unlock();
  {
    std::lock_guard<std::mutex> gate(impl_->gate->mu);
    impl_->gate->open = false;
  }
  impl_->work.reset();
  impl_->ioc.stop();
  for (std::thread& thread : impl_->threads) thread.join();
}

}  // namespace moondream::server::http
