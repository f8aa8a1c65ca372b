// sizeguard-floor: the cheapest admission webhook the same libraries allow, as the floor for
// sizeguard's end-to-end numbers (tests/bench/load.sh). cpp-httplib's SSLServer with OpenSSL,
// keep-alive on, as many worker threads as sizeguard's default; POST /mutate and /validate parse
// the body with nlohmann::json and answer "allowed" with the request's uid and apiVersion.
// Nothing else: no policies, no model, no logs, no metrics. With --patch, /mutate also answers
// a Pod with one fixed JSONPatch operation (requests on its first container), so that what the
// apiserver pays for applying any patch can be told apart from sizeguard's own cost.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:18444", cert, key;
  // sizeguard's default_worker_count(): max(128, 32 x cores).
  size_t workers = std::max<size_t>(128, 32 * std::max(1u, std::thread::hardware_concurrency()));
  CLI::App app{"sizeguard-floor: minimal TLS admission webhook (the load test's floor)"};
  app.add_option("--listen", listen, "HOST:PORT")->capture_default_str();
  app.add_option("--cert", cert, "PEM certificate chain")->required();
  app.add_option("--key", key, "PEM private key")->required();
  app.add_option("--workers", workers, "worker threads")->capture_default_str();
  bool patch = false;
  app.add_flag("--patch", patch, "/mutate sets requests cpu 100m, memory 128Mi on a Pod's first container");
  CLI11_PARSE(app, argc, argv);

  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "sizeguard-floor: --listen must be HOST:PORT\n";
    return 2;
  }
  const std::string host = listen.substr(0, colon);
  const int port = std::stoi(listen.substr(colon + 1));

  // Signals are taken by one thread below; workers must not get SIGPIPE from a closed peer.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  httplib::SSLServer server(cert.c_str(), key.c_str());
  if (!server.is_valid()) {
    std::cerr << "sizeguard-floor: cannot load " << cert << " / " << key << "\n";
    return 2;
  }
  server.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  // As sizeguard: 1000 requests per connection, 120 s idle (httplib's defaults are 5 and 5 s,
  // which would make the floor pay a handshake every 5 requests).
  server.set_keep_alive_max_count(1000);
  server.set_keep_alive_timeout(120);
  // httplib writes headers and body separately; without TCP_NODELAY (which sizeguard sets)
  // Nagle and the client's delayed ACK add 40 ms to every answer.
  server.set_tcp_nodelay(true);
  // base64 of [{"op":"add","path":"/spec/containers/0/resources/requests","value":{"cpu":"100m","memory":"128Mi"}}]
  const std::string kRequestsPatch =
      "W3sib3AiOiJhZGQiLCJwYXRoIjoiL3NwZWMvY29udGFpbmVycy8wL3Jlc291cmNlcy9yZXF1ZXN0cyIsInZhbHVlIjp7ImNwdSI6IjEwMG0i"
      "LCJtZW1vcnkiOiIxMjhNaSJ9fV0=";
  auto review = [patch, &kRequestsPatch](const httplib::Request& request, httplib::Response& response) {
    // sizeguard never compresses answers; httplib would gzip JSON for the apiserver's
    // "Accept-Encoding: gzip", so drop the header to compare like with like.
    const_cast<httplib::Request&>(request).headers.erase("Accept-Encoding");
    auto body = nlohmann::json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("request") || !body["request"].is_object() ||
        !body["request"].contains("uid") || !body["request"]["uid"].is_string()) {
      response.status = 400;
      response.set_content(R"({"kind":"Status","apiVersion":"v1","status":"Failure","code":400})", "application/json");
      return;
    }
    nlohmann::json answer = {{"apiVersion", body.value("apiVersion", "admission.k8s.io/v1")},
                             {"kind", "AdmissionReview"},
                             {"response", {{"uid", body["request"]["uid"]}, {"allowed", true}}}};
    // "add" of a member needs its parent: a Pod whose first container has a resources map.
    const auto first = nlohmann::json::json_pointer("/request/object/spec/containers/0/resources");
    if (patch && request.path == "/mutate" && body.contains(first) && body[first].is_object() &&
        body["request"].value("kind", nlohmann::json::object()).value("kind", "") == "Pod") {
      answer["response"]["patchType"] = "JSONPatch";
      answer["response"]["patch"] = kRequestsPatch;
    }
    response.set_content(answer.dump(), "application/json");
  };
  server.Post("/mutate", review);
  server.Post("/validate", review);

  if (!server.bind_to_port(host.c_str(), port)) {
    std::cerr << "sizeguard-floor: cannot listen on " << listen << "\n";
    return 1;
  }
  std::thread waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    while (signal == SIGPIPE) sigwait(&signals, &signal);
    server.stop();
  });
  std::cerr << "sizeguard-floor: listening on " << listen << " workers=" << workers << std::endl;
  server.listen_after_bind();
  if (waiter.joinable()) {
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
  }
  return 0;
}
