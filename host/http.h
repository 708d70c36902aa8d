/*
 * http.h - the host's HTTP interface (libmicrohttpd): /healthz, /metrics,
 * the REST API under /v1, the Server-Sent Events streams
 * (/events/background-task in Backend.AI's format, /v1/events for
 * dashboards) and the dashboard's files under /ui/ (http_ui.h). Only http*.c
 * include <microhttpd.h>; every Redis access goes through store.h, and the
 * SSE fan-out through sse.h.
 *
 * Threads: a small pool of libmicrohttpd threads (epoll) serves every
 * connection; idle SSE streams are suspended, not polled, so a stream costs a
 * socket and a queue, never a thread.
 */
#ifndef BGT_HTTP_H
#define BGT_HTTP_H

#include <stddef.h>

#include "config.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"

typedef struct http_server http_server;

/*
 * Listen on exactly `listen` ("host:port", "[v6addr]:port"; port 0 picks a
 * free one) and serve with cfg's http settings (token, metrics_auth,
 * max_body, max_connections, ui_dir) and Redis at addr with cfg's password,
 * prefix and limits. The dashboard's files are read here; a folder that
 * cannot be read leaves the dashboard off, with a warning, and the API
 * serves. cfg, met and reg are borrowed and must outlive the server;
 * addr and listen are copied. Returns NULL with err saying why (bad address,
 * bind failure). Redis need not be up: requests answer 503 until it is.
 */
http_server *http_start(const bgt_config *cfg, const char *listen, const redis_addr *addr,
                        metrics *met, registry *reg, char *err, size_t errlen);

/* The address actually bound ("127.0.0.1:9464"), for logs; owned by s. */
const char *http_address(const http_server *s);

/* End every stream, stop serving and free s (NULL is fine). */
void http_stop(http_server *s);

#endif
