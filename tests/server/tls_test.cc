// TLS and mutual TLS on gRPC and on the HTTP API, with certificates made at test time by
// the openssl CLI; reload of replaced certificate files (SIGHUP for HTTP, gRPC's watcher);
// clear start-up errors for bad files.
#include <signal.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/server/server_process.h"

namespace moondream::testing {
namespace {

using std::chrono::seconds;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Run(const std::string& command) {
  std::string output;
  const int code = RunCommand(command, "", &output);
  EXPECT_EQ(code, 0) << command << "\n" << output;
  return output;
}

// A CA, and server and client certificates it signed, in a fresh directory.
class Pki {
 public:
  Pki() {
    char dir[] = "/tmp/moondream-tls-XXXXXX";
    dir_ = mkdtemp(dir);
    Run("cd " + dir_ + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca "
        "-keyout ca.key -out ca.pem");
    Issue("server", "/CN=server-one", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    Issue("client", "/CN=rails-app", "extendedKeyUsage=clientAuth");
    // A client certificate from another CA, which the server must refuse.
    Run("cd " + dir_ + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue "
        "-keyout rogue.key -out rogue.pem");
  }
  ~Pki() { Run("rm -rf " + dir_); }

  // name.key + name.pem signed by the CA.
  void Issue(const std::string& name, const std::string& subject, const std::string& ext) {
    Run("cd " + dir_ + " && openssl req -newkey rsa:2048 -nodes -subj " + subject + " -keyout " +
        name + ".key -out " + name + ".csr && printf '" + ext + "\\n' > " + name +
        ".ext && openssl x509 -req -in " + name + ".csr -CA ca.pem -CAkey ca.key "
        "-CAcreateserial -days 2 -extfile " + name + ".ext -out " + name + ".pem");
  }
  // Replaces the server's files atomically (rename), as a Secret rotation does.
  void RotateServer(const std::string& subject) {
    Issue("next", subject, "subjectAltName=IP:127.0.0.1,DNS:localhost");
    Run("cd " + dir_ + " && mv next.key server.key && mv next.pem server.pem");
  }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }
  std::vector<std::string> ServerFlags(bool mutual) const {
    std::vector<std::string> flags = {"--tls-cert=" + path("server.pem"),
                                      "--tls-key=" + path("server.key"),
                                      "--http-listen=127.0.0.1:0"};
    if (mutual) flags.push_back("--tls-client-ca=" + path("ca.pem"));
    return flags;
  }

 private:
  std::string dir_;
};

std::unique_ptr<v1::Moondream::Stub> TlsStub(const ServerProcess& server, const Pki& pki,
                                             const std::string& client = "") {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = Slurp(pki.path("ca.pem"));
  if (!client.empty()) {
    options.pem_private_key = Slurp(pki.path(client + ".key"));
    options.pem_cert_chain = Slurp(pki.path(client + ".pem"));
  }
  return v1::Moondream::NewStub(OwnChannel(server.address(), grpc::SslCredentials(options)));
}

grpc::StatusCode ListModels(v1::Moondream::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  v1::ListModelsRequest request;
  v1::ListModelsResponse response;
  return stub->ListModels(&ctx, request, &response).error_code();
}

// curl over HTTPS; the HTTP status, 0 when the handshake failed.
int CurlStatus(const Pki& pki, const std::string& address, const std::string& client = "") {
  std::string output;
  std::string command = "curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert " +
                        pki.path("ca.pem");
  if (!client.empty()) {
    command += " --cert " + pki.path(client + ".pem") + " --key " + pki.path(client + ".key");
  }
  RunCommand(command + " https://" + address + "/v1/models", "", &output);
  return std::atoi(output.c_str());
}

// The subject of the certificate a listener presents.
std::string ServedSubject(const std::string& address) {
  std::string output;
  RunCommand("(openssl s_client -connect " + address + " -alpn h2,http/1.1 2>/dev/null "
             "| openssl x509 -noout -subject)", "", &output);
  return output;
}

TEST(TlsTest, GrpcAndHttpServeTlsAndRefusePlaintext) {
  Pki pki;
  ServerProcess server(pki.ServerFlags(/*mutual=*/false));
  ASSERT_TRUE(server.serving()) << server.Logs();
  EXPECT_EQ(ListModels(TlsStub(server, pki).get()), grpc::StatusCode::OK);
  EXPECT_NE(ListModels(server.Stub().get()), grpc::StatusCode::OK) << "plaintext gRPC must fail";
  EXPECT_EQ(CurlStatus(pki, server.http_address()), 200);
  std::string output;
  RunCommand("curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://" +
                 server.http_address() + "/v1/models", "", &output);
  EXPECT_NE(output, "200") << "plaintext HTTP must fail";
  // The probe/metrics listener stays plain HTTP.
  EXPECT_EQ(HttpGet(server.metrics_address(), "/readyz"), "ready\n");
}

TEST(TlsTest, ConnectionLimitHoldsOverTls) {
  Pki pki;
  std::vector<std::string> flags = pki.ServerFlags(/*mutual=*/false);
  flags.push_back("--grpc-max-connections=1");
  ServerProcess server(flags);
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto admitted = TlsStub(server, pki);
  EXPECT_EQ(ListModels(admitted.get()), grpc::StatusCode::OK);
  EXPECT_EQ(ListModels(TlsStub(server, pki).get()), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ListModels(admitted.get()), grpc::StatusCode::OK);
}

TEST(TlsTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  Pki pki;
  ServerProcess server(pki.ServerFlags(/*mutual=*/true));
  ASSERT_TRUE(server.serving()) << server.Logs();
  EXPECT_EQ(ListModels(TlsStub(server, pki, "client").get()), grpc::StatusCode::OK);
  EXPECT_NE(ListModels(TlsStub(server, pki).get()), grpc::StatusCode::OK);
  EXPECT_NE(ListModels(TlsStub(server, pki, "rogue").get()), grpc::StatusCode::OK);
  EXPECT_EQ(CurlStatus(pki, server.http_address(), "client"), 200);
  EXPECT_EQ(CurlStatus(pki, server.http_address()), 0);
  EXPECT_EQ(CurlStatus(pki, server.http_address(), "rogue"), 0);
}

TEST(TlsTest, ReplacedCertificatesAreServedAfterSighupAndByGrpcWithout) {
  Pki pki;
  ServerProcess server(pki.ServerFlags(/*mutual=*/false));
  ASSERT_TRUE(server.serving()) << server.Logs();
  EXPECT_NE(ServedSubject(server.http_address()).find("server-one"), std::string::npos);
  EXPECT_NE(ServedSubject(server.address()).find("server-one"), std::string::npos);
  pki.RotateServer("/CN=server-two");
  server.Signal(SIGHUP);
  ASSERT_TRUE(server.WaitForLog("event=tls_reloaded", seconds(5))) << server.Logs();
  EXPECT_NE(ServedSubject(server.http_address()).find("server-two"), std::string::npos);
  // gRPC's file watcher re-reads every second.
  std::string grpc_subject;
  for (int i = 0; i < 50 && grpc_subject.find("server-two") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    grpc_subject = ServedSubject(server.address());
  }
  EXPECT_NE(grpc_subject.find("server-two"), std::string::npos) << grpc_subject;
  EXPECT_EQ(ListModels(TlsStub(server, pki).get()), grpc::StatusCode::OK);
  EXPECT_EQ(CurlStatus(pki, server.http_address()), 200);
}

TEST(TlsTest, BadFilesFailTheStartNamingTheFlagAndFile) {
  Pki pki;
  struct Case {
    std::vector<std::string> flags;
    std::string expected;
  } cases[] = {
      {{"--tls-cert=" + pki.path("missing.pem"), "--tls-key=" + pki.path("server.key")},
       "--tls-cert=" + pki.path("missing.pem")},
      {{"--tls-cert=" + pki.path("server.pem"), "--tls-key=" + pki.path("client.key")},
       "--tls-key=" + pki.path("client.key") + ": not the private key of --tls-cert"},
      {{"--tls-cert=" + pki.path("server.pem")}, "--tls-cert and --tls-key go together"},
      {{"--tls-client-ca=" + pki.path("ca.pem")}, "--tls-client-ca needs --tls-cert"},
  };
  for (const Case& c : cases) {
    ServerProcess server(c.flags);
    EXPECT_FALSE(server.serving());
    EXPECT_EQ(server.WaitExit(seconds(10)), 1);
    EXPECT_NE(server.Logs().find(c.expected), std::string::npos) << server.Logs();
  }
}

}  // namespace
}  // namespace moondream::testing
