#include "webhook/server.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "webhook/connection_server.h"
#include "webhook/logging.h"
#include "webhook/server_internal.h"

namespace sizeguard {
namespace {

bool body_expected_without_length(const httplib::Request& request) {
  static constexpr std::string_view kWithBody[] = {"POST", "PUT", "PATCH", "DELETE", "PRI"};
  if (std::find(std::begin(kWithBody), std::end(kWithBody), request.method) == std::end(kWithBody)) return false;
  if (request.has_header("Content-Length")) return false;
  return request.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Addresses and sizing.

ListenAddress parse_listen_address(std::string_view text) {
  ListenAddress address;
  std::string_view port_text;
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("bad listen address '" + std::string(text) + "': " + why +
                                 " (expected HOST:PORT, :PORT or [IPV6]:PORT)");
  };
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) throw bad("missing ']'");
    address.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') throw bad("missing ':PORT' after ']'");
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw bad("missing ':PORT'");
    address.host = std::string(text.substr(0, colon));
    if (address.host.find(':') != std::string::npos) throw bad("IPv6 addresses need brackets");
    port_text = text.substr(colon + 1);
  }
  if (address.host.empty()) address.host = "0.0.0.0";
  int port = -1;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port < 0 ||
      port > 65535) {
    throw bad("port must be a number from 0 to 65535");
  }
  address.port = port;
  return address;
}

std::size_t default_worker_count() {
  // Workers only run complete requests (idle and slow connections wait in the event
  // loop), but a handler may block on I/O and a slow reader may hold one for up to the
  // write timeout, so many per core: a small stack each.
  std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max<std::size_t>(128, 32 * cores);
}

// ---------------------------------------------------------------------------------------
// AdmissionServer.

struct AdmissionServer::Impl {
  Impl(ServerOptions opts, AdmissionHandlers h, Metrics& m, Readiness& r, std::shared_ptr<spdlog::logger> l)
      : options(std::move(opts)),
        handlers(std::move(h)),
        metrics(m),
        readiness(r),
        logger(l ? std::move(l) : spdlog::default_logger()),
        tls(options.tls_cert, options.tls_key) {}

  ServerOptions options;
  AdmissionHandlers handlers;
  Metrics& metrics;
  Readiness& readiness;
  std::shared_ptr<spdlog::logger> logger;
  TlsContext tls;
  DrainSignal drain;
  std::unique_ptr<ConnectionServer> webhook_server, metrics_server;
  std::thread webhook_thread, metrics_thread;
  std::future<void> webhook_done, metrics_done;
  std::vector<std::pair<std::string, GetRouteHandler>> extra_routes;
  int webhook_port = 0, metrics_port = 0;
  bool started = false, stopped = false;

  void count_error(const std::string& listener, const httplib::Request& request, int status,
                   std::initializer_list<std::string_view> known_paths) {
    metrics.increment(kHttpErrors, {{"listener", listener},
                                    {"path", error_path_label(request.path, known_paths)},
                                    {"code", std::to_string(status)}});
  }

  void observe(const DecisionRecord& record) {
    record_decision(metrics, record);
    log_decision(*logger, record);
  }

  void configure_webhook_server() {
    ConnectionLimits limits{options.read_timeout,    options.write_timeout,   options.idle_timeout,
                            options.workers,         options.max_connections, options.max_body_bytes,
                            options.max_buffered_bytes};
    limits.large_request_bytes = options.large_review_bytes;
    limits.large_request_queue = options.large_review_queue;
    limits.json_errors = true;
    webhook_server = std::make_unique<ConnectionServer>("webhook", &tls, limits, drain, metrics, *logger);
    auto& server = *webhook_server;
    // Answers stay plain: an AdmissionReview response is small, so gzip would cost more
    // CPU than it saves, and plain is always acceptable to the apiserver.
    server.setup_request = [](httplib::Request& request) { request.headers.erase("Accept-Encoding"); };
    server.set_payload_max_length(options.max_body_bytes);

    for (Webhook webhook : {Webhook::Mutate, Webhook::Validate}) {
      const std::string path = "/" + std::string(to_string(webhook));
      const AdmissionHandler& handler = webhook == Webhook::Mutate ? handlers.mutate : handlers.validate;
      server.Post(path, [this, webhook, &handler](const httplib::Request& request, httplib::Response& response,
                                                  const httplib::ContentReader& read_content) {
        std::string body;
        bool too_large = false;
        // A compressed body could inflate without bound, so reading stops at the limit
        // (and the connection then closes); a plain one is read through and discarded so
        // the connection stays in step, bounded by the per-request read deadline.
        const bool compressed = !request.get_header_value("Content-Encoding").empty() &&
                                request.get_header_value("Content-Encoding") != "identity";
        bool complete = read_content([&](const char* data, size_t length) {
          if (too_large || body.size() + length > options.max_body_bytes) {
            too_large = true;
            std::string().swap(body);
            return !compressed;
          }
          body.append(data, length);
          return true;
        });
        if (too_large || response.status == 413) {
          if (compressed) response.set_header("Connection", "close");
          response.status = 413;
          response.set_content(status_body(413, "request body is larger than the limit of " +
                                                    std::to_string(options.max_body_bytes) +
                                                    " bytes (--max-body-bytes)"),
                               kJsonType);
          return;
        }
        if (!complete) {
          response.status = 400;
          response.set_content(status_body(400, "could not read the request body (malformed chunked or "
                                                "compressed content, or the client stopped sending)"),
                               kJsonType);
          return;
        }
        HttpAnswer answer =
            handle_admission(webhook, body, handler, [this](const DecisionRecord& record) { observe(record); });
        response.status = answer.status;
        response.set_content(std::move(answer.body), answer.content_type);
        // Shutdown began while deciding: tell the client this connection ends here.
        if (drain.triggered()) response.set_header("Connection", "close");
      });
      auto not_allowed = [path](const httplib::Request& request, httplib::Response& response) {
        response.status = 405;
        response.set_header("Allow", "POST");
        response.set_content(
            status_body(405, "method " + request.method + " is not allowed on " + path + ": the webhook accepts POST only"),
            kJsonType);
      };
      server.Get(path, not_allowed).Put(path, not_allowed).Patch(path, not_allowed);
      server.Delete(path, not_allowed).Options(path, not_allowed);
    }

    server.set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
      if (!body_expected_without_length(request)) return httplib::Server::HandlerResponse::Unhandled;
      // httplib would read such a body until EOF; answer before reading anything instead.
      bool webhook_path = request.path == "/mutate" || request.path == "/validate";
      int status = request.method == "POST" ? 411 : webhook_path ? 405 : 404;
      response.status = status;
      if (status == 405) response.set_header("Allow", "POST");
      response.set_content(status_body(status, status == 411 ? "Content-Length or chunked Transfer-Encoding is required"
                                                             : "no " + request.method + " endpoint at " + request.path),
                           kJsonType);
      return httplib::Server::HandlerResponse::Handled;
    });

    server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& request, httplib::Response& response) {
      count_error("webhook", request, response.status, {"/mutate", "/validate"});
      if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message;
      switch (response.status) {
        case 404:
          message = "no endpoint at " + request.path + ": this listener serves POST /mutate and POST /validate";
          break;
        case 413:
          message = "request body is larger than the limit of " + std::to_string(options.max_body_bytes) +
                    " bytes (--max-body-bytes)";
          break;
        case 414: message = "request URI is too long"; break;
        default: message = "malformed HTTP request (status " + std::to_string(response.status) + ")";
      }
      response.set_content(status_body(response.status, message), kJsonType);
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  void configure_metrics_server() {
    // Probes and scrapes: few, short, bodyless.
    ConnectionLimits limits{options.read_timeout, options.write_timeout, options.idle_timeout,
                            std::size_t{8},       options.max_connections, std::size_t{64 * 1024},
                            options.max_buffered_bytes};
    metrics_server = std::make_unique<ConnectionServer>("metrics", nullptr, limits, drain, metrics, *logger);
    auto& server = *metrics_server;
    server.set_payload_max_length(limits.max_body_bytes);
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
      response.set_content("ok\n", kTextType);
    });
    server.Get("/readyz", [this](const httplib::Request&, httplib::Response& response) {
      auto report = readiness.report();
      response.status = report.ready ? 200 : 503;
      response.set_content(report.text, kTextType);
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    for (const auto& [path, handler] : extra_routes) {
      // An init-capture: clang 14 cannot capture a structured binding directly.
      server.Get(path, [handler = handler](const httplib::Request& request, httplib::Response& response) {
        HttpAnswer answer = handler(request.params);
        response.status = answer.status;
        response.set_content(std::move(answer.body),
                             answer.content_type.empty() ? std::string(kTextType) : answer.content_type);
      });
    }
    server.set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
      if (!body_expected_without_length(request)) return httplib::Server::HandlerResponse::Unhandled;
      response.status = 405;
      response.set_content("this listener serves GET only\n", kTextType);
      return httplib::Server::HandlerResponse::Handled;
    });
    server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& request, httplib::Response& response) {
      count_error("metrics", request, response.status, {"/healthz", "/readyz", "/metrics"});
      if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      response.set_content(response.status == 404 ? "no endpoint at " + request.path + "\n"
                                                  : "HTTP " + std::to_string(response.status) + "\n",
                           kTextType);
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  static int bind(ConnectionServer& server, const std::string& text) {
    ListenAddress address = parse_listen_address(text);
    errno = 0;
    int port = address.port == 0 ? server.bind_to_any_port(address.host)
                                 : (server.bind_to_port(address.host, address.port) ? address.port : -1);
    if (port <= 0) {
      throw std::runtime_error("cannot listen on " + text + (errno ? std::string(": ") + std::strerror(errno) : ""));
    }
    server.raise_listen_backlog();
    return port;
  }

  static std::thread serve(ConnectionServer& server, std::future<void>& done) {
    std::packaged_task<void()> task([&server] { server.run(); });
    done = task.get_future();
    std::thread thread(std::move(task));
    for (int i = 0; i < 10'000 && !server.running(); ++i) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    return thread;
  }

  bool wait(std::future<void>& done, Clock::time_point deadline) {
    return !done.valid() || done.wait_until(deadline) == std::future_status::ready;
  }
};

AdmissionServer::AdmissionServer(ServerOptions options, AdmissionHandlers handlers, Metrics& metrics,
                                 Readiness& readiness, std::shared_ptr<spdlog::logger> logger)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handlers), metrics, readiness, std::move(logger))) {
  describe_server_metrics(metrics, SIZEGUARD_VERSION);
  readiness.set("webhook-listener", false, "not started");
  record_cert_expiry();
}

void AdmissionServer::record_cert_expiry() {
  auto not_after = impl_->tls.not_after();
  impl_->metrics.set(kCertExpiry, {}, static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                           not_after.time_since_epoch()).count()));
}

void AdmissionServer::reload_tls() {
  impl_->tls.reload();
  record_cert_expiry();
}

AdmissionServer::~AdmissionServer() {
  try {
    shutdown();
  } catch (...) {
  }
  if (impl_->webhook_thread.joinable()) impl_->webhook_thread.join();
  if (impl_->metrics_thread.joinable()) impl_->metrics_thread.join();
}

void AdmissionServer::add_get_route(const std::string& path, GetRouteHandler handler) {
  if (impl_->started) throw std::logic_error("add_get_route(" + path + ") called after start()");
  impl_->extra_routes.emplace_back(path, std::move(handler));
}

void AdmissionServer::start() {
  Impl& impl = *impl_;
  if (impl.started) return;
  impl.configure_webhook_server();
  impl.configure_metrics_server();
  impl.webhook_port = Impl::bind(*impl.webhook_server, impl.options.listen);
  impl.metrics_port = Impl::bind(*impl.metrics_server, impl.options.metrics_listen);
  impl.started = true;
  impl.webhook_thread = Impl::serve(*impl.webhook_server, impl.webhook_done);
  impl.metrics_thread = Impl::serve(*impl.metrics_server, impl.metrics_done);
  impl.readiness.set("webhook-listener", true);
  log_event(*impl.logger, spdlog::level::info, "listening",
            {{"webhook", impl.options.listen},
             {"webhook_port", std::to_string(impl.webhook_port), true},
             {"metrics", impl.options.metrics_listen},
             {"metrics_port", std::to_string(impl.metrics_port), true},
             {"workers", std::to_string(impl.options.workers), true},
             {"max_connections", std::to_string(impl.options.max_connections), true}});
}

int AdmissionServer::webhook_port() const { return impl_->webhook_port; }
int AdmissionServer::metrics_port() const { return impl_->metrics_port; }

bool AdmissionServer::shutdown() {
  Impl& impl = *impl_;
  if (!impl.started || impl.stopped) return true;
  impl.stopped = true;
  const auto deadline = Clock::now() + impl.options.drain_timeout;
  impl.drain.trigger();
  impl.readiness.set("webhook-listener", false, "shutting down");
  impl.webhook_server->stop();  // stop accepting; open connections are still served
  bool drained = impl.wait(impl.webhook_done, deadline);
  impl.metrics_server->stop();
  drained = impl.wait(impl.metrics_done, std::max(deadline, Clock::now() + milliseconds(1000))) && drained;
  if (drained) {
    impl.webhook_thread.join();
    impl.metrics_thread.join();
  }
  log_event(*impl.logger, drained ? spdlog::level::info : spdlog::level::warn,
            drained ? "drained" : "drain timeout: connections still busy", {});
  return drained;
}

TlsContext& AdmissionServer::tls() { return impl_->tls; }

}  // namespace sizeguard
