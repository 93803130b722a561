/*
 * burrow_udp: a UDP socket for the rendezvous server that moves datagrams in batches (Linux recvmmsg/sendmmsg).
 *
 * Node's dgram makes one system call and several allocations per datagram in each direction; for a STUN server
 * under load that is the ceiling (docs/protocol.md "Scaling out"). This addon owns one UDP socket and nothing
 * else: it knows no protocol. JavaScript sees every datagram, in batches:
 *
 *   const s = new BatchSocket({ address, port, ipv6, dualStack, recvBufferSize, reusePort })
 *   s.port                         the bound port
 *   s.rx, s.rxMeta                 ArrayBuffers: received datagrams (SLOT bytes each) and their metadata
 *   s.tx, s.txMeta                 ArrayBuffers the caller fills with datagrams to send
 *   s.start(onBatch)               onBatch(count) is called with count datagrams in rx/rxMeta, at most BATCH
 *   s.flush(count)                 sends the first count datagrams of tx/txMeta (sendmmsg); returns how many
 *                                  the kernel refused for good (they are dropped and counted)
 *   s.stats()                      { received, sent, dropped, truncated, batches }
 *   s.close()                      stops polling and closes the socket; idempotent
 *
 * Metadata, META bytes per datagram, little-endian: u32 length, u16 port, u8 family (4 or 6), u8 flags (bit 0:
 * truncated to SLOT bytes), then the address (4 or 16 bytes). IPv4-mapped IPv6 sources of a dual-stack socket are
 * reported as IPv4, and IPv4 destinations are mapped when the socket is IPv6.
 *
 * Back-pressure: datagrams the kernel cannot take at once (EAGAIN/ENOBUFS) wait in a bounded backlog that is
 * sent when the socket becomes writable; beyond BACKLOG they are dropped (counted), as a full socket buffer
 * drops them anyway. Errors for one destination (EPERM from a firewall, ICMP-induced ECONNREFUSED) drop that
 * datagram only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define BATCH 64
#define SLOT 2048
#define META 32
/* Datagrams waiting for the socket to become writable: at most this many, and this many bytes in all. */
#define BACKLOG 4096
#define BACKLOG_BYTES (4u << 20)
/* Receive batches handled per readiness callback before yielding to the event loop. */
#define MAX_BATCHES_PER_WAKEUP 16

typedef struct {
  uint32_t len;
  struct sockaddr_storage to;
  socklen_t tolen;
  uint8_t data[]; /* len bytes */
} pending_t;

typedef struct {
  napi_env env;
  napi_ref wrapper;    /* strong while started, so the object outlives its poll handle */
  napi_ref on_batch;
  napi_async_context actx;
  int fd;
  int ipv6;
  int started, closed, finalized, in_callback;
  enum { POLL_NONE, POLL_ACTIVE, POLL_CLOSING, POLL_CLOSED } poll_state;
  uv_poll_t poll;
  int poll_events;
  uint8_t *rx, *rx_meta, *tx, *tx_meta;
  struct mmsghdr rx_msgs[BATCH];
  struct iovec rx_iov[BATCH];
  struct sockaddr_storage rx_addr[BATCH];
  struct mmsghdr tx_msgs[BATCH];
  struct iovec tx_iov[BATCH];
  struct sockaddr_storage tx_addr[BATCH];
  pending_t **backlog; /* ring of BACKLOG entries, each allocated to its datagram's size */
  uint32_t backlog_head, backlog_n;
  size_t backlog_bytes;
  uint64_t received, sent, dropped, truncated, batches;
} batch_socket_t;

#define CHECK(env, call)                                                     \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      napi_throw_error((env), "BURROW_UDP_NAPI", "N-API call failed: " #call); \
      return NULL;                                                           \
    }                                                                        \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  const char *code = err == EADDRINUSE ? "EADDRINUSE" : err == EACCES ? "EACCES" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                     : err == EAFNOSUPPORT ? "EAFNOSUPPORT" : "EIO";
  napi_throw_error(env, code, msg);
  return NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Sending */

/* Fills tx_msgs[i] from slot i of tx/tx_meta; returns 0 if the metadata is unusable. */
static int prepare_tx(batch_socket_t *s, uint32_t i) {
  const uint8_t *m = s->tx_meta + (size_t)i * META;
  uint32_t len;
  uint16_t port;
  memcpy(&len, m, 4);
  memcpy(&port, m + 4, 2);
  uint8_t family = m[6];
  if (len > SLOT) return 0;
  struct sockaddr_storage *a = &s->tx_addr[i];
  memset(a, 0, sizeof *a);
  socklen_t alen;
  if (family == 4 && !s->ipv6) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)a;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    memcpy(&v4->sin_addr, m + 8, 4);
    alen = sizeof *v4;
  } else if (s->ipv6 && (family == 4 || family == 6)) {
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)a;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    if (family == 4) {
      v6->sin6_addr.s6_addr[10] = 0xff;
      v6->sin6_addr.s6_addr[11] = 0xff;
      memcpy(&v6->sin6_addr.s6_addr[12], m + 8, 4);
    } else {
      memcpy(&v6->sin6_addr, m + 8, 16);
    }
    alen = sizeof *v6;
  } else {
    return 0;
  }
  s->tx_iov[i].iov_base = s->tx + (size_t)i * SLOT;
  s->tx_iov[i].iov_len = len;
  memset(&s->tx_msgs[i].msg_hdr, 0, sizeof s->tx_msgs[i].msg_hdr);
  s->tx_msgs[i].msg_hdr.msg_name = a;
  s->tx_msgs[i].msg_hdr.msg_namelen = alen;
  s->tx_msgs[i].msg_hdr.msg_iov = &s->tx_iov[i];
  s->tx_msgs[i].msg_hdr.msg_iovlen = 1;
  return 1;
}

static int transient(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR; }

static void update_poll(batch_socket_t *s);

static void backlog_push(batch_socket_t *s, const struct mmsghdr *msg) {
  size_t len = msg->msg_hdr.msg_iov->iov_len;
  if (s->backlog_n >= BACKLOG || s->backlog_bytes + len > BACKLOG_BYTES) {
    s->dropped++;
    return;
  }
  pending_t *p = malloc(sizeof *p + len);
  if (!p) {
    s->dropped++;
    return;
  }
  p->len = (uint32_t)len;
  memcpy(p->data, msg->msg_hdr.msg_iov->iov_base, len);
  memcpy(&p->to, msg->msg_hdr.msg_name, msg->msg_hdr.msg_namelen);
  p->tolen = msg->msg_hdr.msg_namelen;
  s->backlog[(s->backlog_head + s->backlog_n) % BACKLOG] = p;
  s->backlog_n++;
  s->backlog_bytes += len;
}

/* Frees the first n backlog entries. */
static void backlog_pop(batch_socket_t *s, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    pending_t *p = s->backlog[s->backlog_head];
    s->backlog_bytes -= p->len;
    free(p);
    s->backlog[s->backlog_head] = NULL;
    s->backlog_head = (s->backlog_head + 1) % BACKLOG;
  }
  s->backlog_n -= n;
}

/* Sends what waits in the backlog; returns 1 when it is empty. */
static int drain_backlog(batch_socket_t *s) {
  while (s->backlog_n > 0) {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint32_t n = s->backlog_n < BATCH ? s->backlog_n : BATCH;
    for (uint32_t i = 0; i < n; i++) {
      pending_t *p = s->backlog[(s->backlog_head + i) % BACKLOG];
      iov[i].iov_base = p->data;
      iov[i].iov_len = p->len;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_name = &p->to;
      msgs[i].msg_hdr.msg_namelen = p->tolen;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(s->fd, msgs, n, MSG_DONTWAIT);
    if (r < 0) {
      if (transient(errno)) return 0;
      r = 1; /* this destination failed for good: drop it */
      s->dropped++;
    } else {
      s->sent += (uint64_t)r;
    }
    backlog_pop(s, (uint32_t)r);
  }
  return 1;
}

/* Sends tx slots [0, count); what the kernel cannot take now goes to the backlog. */
static void send_slots(batch_socket_t *s, uint32_t count) {
  uint32_t ready = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (!prepare_tx(s, i)) {
      s->dropped++;
      continue;
    }
    if (ready != i) {
      s->tx_msgs[ready] = s->tx_msgs[i];
    }
    ready++;
  }
  /* Order matters little for UDP, but older datagrams go first when a backlog exists. */
  if (s->backlog_n > 0 && !drain_backlog(s)) {
    for (uint32_t i = 0; i < ready; i++) backlog_push(s, &s->tx_msgs[i]);
    update_poll(s);
    return;
  }
  uint32_t done = 0;
  while (done < ready) {
    int r = sendmmsg(s->fd, s->tx_msgs + done, ready - done, MSG_DONTWAIT);
    if (r < 0) {
      if (transient(errno)) {
        for (uint32_t i = done; i < ready; i++) backlog_push(s, &s->tx_msgs[i]);
        update_poll(s);
        return;
      }
      s->dropped++; /* the first datagram's destination refused it; skip it */
      done++;
      continue;
    }
    s->sent += (uint64_t)r;
    done += (uint32_t)r;
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Receiving */

static uint32_t receive_batch(batch_socket_t *s) {
  for (int i = 0; i < BATCH; i++) {
    s->rx_iov[i].iov_base = s->rx + (size_t)i * SLOT;
    s->rx_iov[i].iov_len = SLOT;
    memset(&s->rx_msgs[i].msg_hdr, 0, sizeof s->rx_msgs[i].msg_hdr);
    s->rx_msgs[i].msg_hdr.msg_iov = &s->rx_iov[i];
    s->rx_msgs[i].msg_hdr.msg_iovlen = 1;
    s->rx_msgs[i].msg_hdr.msg_name = &s->rx_addr[i];
    s->rx_msgs[i].msg_hdr.msg_namelen = sizeof s->rx_addr[i];
  }
  int r = recvmmsg(s->fd, s->rx_msgs, BATCH, MSG_DONTWAIT, NULL);
  if (r <= 0) return 0;
  uint32_t n = 0;
  for (int i = 0; i < r; i++) {
    uint8_t *m = s->rx_meta + (size_t)n * META;
    const struct sockaddr_storage *a = &s->rx_addr[i];
    uint16_t port;
    memset(m, 0, META);
    if (a->ss_family == AF_INET) {
      const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
      port = ntohs(v4->sin_port);
      m[6] = 4;
      memcpy(m + 8, &v4->sin_addr, 4);
    } else if (a->ss_family == AF_INET6) {
      const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
      port = ntohs(v6->sin6_port);
      if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        m[6] = 4;
        memcpy(m + 8, &v6->sin6_addr.s6_addr[12], 4);
      } else {
        m[6] = 6;
        memcpy(m + 8, &v6->sin6_addr, 16);
      }
    } else {
      continue;
    }
    uint32_t len = s->rx_msgs[i].msg_len;
    if (s->rx_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      m[7] = 1;
      s->truncated++;
    }
    if (len > SLOT) len = SLOT;
    memcpy(m, &len, 4);
    memcpy(m + 4, &port, 2);
    if (n != (uint32_t)i) memmove(s->rx + (size_t)n * SLOT, s->rx + (size_t)i * SLOT, len);
    n++;
  }
  s->received += (uint64_t)r;
  return n;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  batch_socket_t *s = (batch_socket_t *)handle->data;
  if (s->closed) return;
  if (events & UV_WRITABLE) {
    drain_backlog(s);
    update_poll(s);
  }
  if (status < 0 || !(events & UV_READABLE)) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, self, argv[1];
  if (napi_get_reference_value(env, s->on_batch, &cb) == napi_ok && napi_get_reference_value(env, s->wrapper, &self) == napi_ok) {
    for (int b = 0; b < MAX_BATCHES_PER_WAKEUP && !s->closed; b++) {
      uint32_t n = receive_batch(s);
      if (n == 0) break;
      s->batches++;
      napi_create_uint32(env, n, &argv[0]);
      s->in_callback = 1;
      napi_value result;
      /* make_callback: microtasks queued by the handler (async store calls) run when it returns. */
      napi_status st = napi_make_callback(env, s->actx, self, cb, 1, argv, &result);
      s->in_callback = 0;
      if (st != napi_ok) {
        /* The handler threw: surface it as an uncaught exception, as an event emitter would. */
        bool pending = false;
        napi_is_exception_pending(env, &pending);
        if (pending) {
          napi_value err;
          napi_get_and_clear_last_exception(env, &err);
          napi_fatal_exception(env, err);
        }
        break;
      }
      if (n < BATCH) break;
    }
  }
  napi_close_handle_scope(env, scope);
}

static void update_poll(batch_socket_t *s) {
  if (s->closed || s->poll_state != POLL_ACTIVE) return;
  int events = UV_READABLE | (s->backlog_n > 0 ? UV_WRITABLE : 0);
  if (events == s->poll_events) return;
  s->poll_events = events;
  uv_poll_start(&s->poll, events, on_poll);
}

/* ---------------------------------------------------------------------------------------------- */
/* JavaScript interface */

static batch_socket_t *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  void *data;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, &data) != napi_ok) return NULL;
  return (batch_socket_t *)data;
}

static void free_socket(batch_socket_t *s) {
  if (s->backlog) backlog_pop(s, s->backlog_n);
  free(s->rx);
  free(s->rx_meta);
  free(s->tx);
  free(s->tx_meta);
  free(s->backlog);
  free(s);
}

/* The poll handle is closed: free everything once JavaScript has let go of the object too. */
static void on_poll_closed(uv_handle_t *handle) {
  batch_socket_t *s = (batch_socket_t *)handle->data;
  s->poll_state = POLL_CLOSED;
  if (s->finalized) free_socket(s);
}

static void stop(batch_socket_t *s) {
  if (s->poll_state == POLL_ACTIVE) {
    uv_poll_stop(&s->poll);
    s->poll_state = POLL_CLOSING;
    uv_close((uv_handle_t *)&s->poll, on_poll_closed);
  }
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  s->closed = 1;
}

static void release_refs(batch_socket_t *s) {
  if (s->on_batch) napi_delete_reference(s->env, s->on_batch);
  s->on_batch = NULL;
  if (s->actx) napi_async_destroy(s->env, s->actx);
  s->actx = NULL;
  if (s->started) napi_reference_unref(s->env, s->wrapper, NULL);
  s->started = 0;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  batch_socket_t *s = unwrap(env, info, &argc, NULL);
  if (!s || s->closed) return NULL;
  stop(s);
  release_refs(s);
  return NULL;
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  batch_socket_t *s = (batch_socket_t *)data;
  if (!s->closed) stop(s);
  if (s->wrapper) napi_delete_reference(env, s->wrapper);
  s->wrapper = NULL;
  s->finalized = 1;
  if (s->poll_state != POLL_CLOSING) free_socket(s); /* never started, or its handle closed already */
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  batch_socket_t *s = unwrap(env, info, &argc, argv);
  if (!s) return NULL;
  if (s->closed || s->started) {
    napi_throw_error(env, "ERR_SOCKET_STATE", "the socket is closed or already started");
    return NULL;
  }
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[0], &t));
  if (argc < 1 || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "start(onBatch) needs a function");
    return NULL;
  }
  CHECK(env, napi_create_reference(env, argv[0], 1, &s->on_batch));
  napi_value name;
  CHECK(env, napi_create_string_utf8(env, "burrow:udp-batch", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_async_init(env, NULL, name, &s->actx));
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  if (uv_poll_init(loop, &s->poll, s->fd) != 0) {
    napi_throw_error(env, "EIO", "uv_poll_init failed");
    return NULL;
  }
  s->poll.data = s;
  s->poll_state = POLL_ACTIVE;
  s->started = 1;
  napi_reference_ref(env, s->wrapper, NULL);
  s->poll_events = 0;
  update_poll(s);
  return NULL;
}

static napi_value js_flush(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  batch_socket_t *s = unwrap(env, info, &argc, argv);
  if (!s) return NULL;
  uint32_t count = 0;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &count) != napi_ok || count > BATCH) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "flush(count) needs 0..BATCH");
    return NULL;
  }
  uint64_t before = s->dropped;
  if (!s->closed && count > 0) send_slots(s, count);
  napi_value out;
  CHECK(env, napi_create_uint32(env, (uint32_t)(s->dropped - before), &out));
  return out;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  batch_socket_t *s = unwrap(env, info, &argc, NULL);
  if (!s) return NULL;
  napi_value o, v;
  CHECK(env, napi_create_object(env, &o));
#define FIELD(name)                                               \
  CHECK(env, napi_create_double(env, (double)s->name, &v));      \
  CHECK(env, napi_set_named_property(env, o, #name, v));
  FIELD(received)
  FIELD(sent)
  FIELD(dropped)
  FIELD(truncated)
  FIELD(batches)
#undef FIELD
  CHECK(env, napi_create_uint32(env, s->backlog_n, &v));
  CHECK(env, napi_set_named_property(env, o, "backlog", v));
  return o;
}

static int get_prop(napi_env env, napi_value obj, const char *name, napi_value *out) {
  bool has = false;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, obj, name, out) != napi_ok) return 0;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  return t != napi_undefined;
}

static napi_value buffer_of(napi_env env, void *data, size_t len) {
  napi_value ab;
  /* Externally owned: freed with the socket, after JavaScript can no longer reach the wrapper. */
  if (napi_create_external_arraybuffer(env, data, len, NULL, NULL, &ab) != napi_ok) return NULL;
  return ab;
}

static napi_value js_construct(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_object) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "new BatchSocket(options) needs an options object");
    return NULL;
  }
  napi_value v;
  char address[64] = "0.0.0.0";
  uint32_t port = 0, rcvbuf = 0;
  bool ipv6 = false, dual = false, reuse = false;
  size_t alen;
  if (get_prop(env, argv[0], "address", &v)) CHECK(env, napi_get_value_string_utf8(env, v, address, sizeof address, &alen));
  if (get_prop(env, argv[0], "port", &v)) CHECK(env, napi_get_value_uint32(env, v, &port));
  if (get_prop(env, argv[0], "ipv6", &v)) CHECK(env, napi_get_value_bool(env, v, &ipv6));
  if (get_prop(env, argv[0], "dualStack", &v)) CHECK(env, napi_get_value_bool(env, v, &dual));
  if (get_prop(env, argv[0], "reusePort", &v)) CHECK(env, napi_get_value_bool(env, v, &reuse));
  if (get_prop(env, argv[0], "recvBufferSize", &v)) CHECK(env, napi_get_value_uint32(env, v, &rcvbuf));
  if (port > 65535) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "port must be 0..65535");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  if (ipv6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, address, &a->sin6_addr) != 1) return throw_errno(env, "not an IPv6 address", EINVAL);
    sslen = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &a->sin_addr) != 1) return throw_errno(env, "not an IPv4 address", EINVAL);
    sslen = sizeof *a;
  }
  int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1, zero = 0;
  if (ipv6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual ? &zero : &one, sizeof one);
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "SO_REUSEPORT", e);
  }
  if (rcvbuf > 0) {
    int size = (int)rcvbuf;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size); /* capped by net.core.rmem_max, as in dgram */
  }
  if (bind(fd, (struct sockaddr *)&ss, sslen) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  struct sockaddr_storage bound;
  socklen_t blen = sizeof bound;
  getsockname(fd, (struct sockaddr *)&bound, &blen);
  uint16_t bound_port = ntohs(ipv6 ? ((struct sockaddr_in6 *)&bound)->sin6_port : ((struct sockaddr_in *)&bound)->sin_port);

  batch_socket_t *s = calloc(1, sizeof *s);
  if (s) {
    s->rx = malloc((size_t)BATCH * SLOT);
    s->rx_meta = calloc(BATCH, META);
    s->tx = malloc((size_t)BATCH * SLOT);
    s->tx_meta = calloc(BATCH, META);
    s->backlog = calloc(BACKLOG, sizeof(pending_t *));
  }
  if (!s || !s->rx || !s->rx_meta || !s->tx || !s->tx_meta || !s->backlog) {
    close(fd);
    if (s) {
      free(s->rx), free(s->rx_meta), free(s->tx), free(s->tx_meta), free(s->backlog);
      free(s);
    }
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  s->env = env;
  s->fd = fd;
  s->ipv6 = ipv6;
  if (napi_wrap(env, self, s, finalize, NULL, &s->wrapper) != napi_ok) {
    close(fd);
    free_socket(s);
    napi_throw_error(env, "BURROW_UDP_NAPI", "napi_wrap failed");
    return NULL;
  }
  napi_value n;
  CHECK(env, napi_create_uint32(env, bound_port, &n));
  CHECK(env, napi_set_named_property(env, self, "port", n));
  CHECK(env, napi_set_named_property(env, self, "rx", buffer_of(env, s->rx, (size_t)BATCH * SLOT)));
  CHECK(env, napi_set_named_property(env, self, "rxMeta", buffer_of(env, s->rx_meta, (size_t)BATCH * META)));
  CHECK(env, napi_set_named_property(env, self, "tx", buffer_of(env, s->tx, (size_t)BATCH * SLOT)));
  CHECK(env, napi_set_named_property(env, self, "txMeta", buffer_of(env, s->tx_meta, (size_t)BATCH * META)));
  return self;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"flush", NULL, js_flush, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls, v;
  CHECK(env, napi_define_class(env, "BatchSocket", NAPI_AUTO_LENGTH, js_construct, NULL, sizeof methods / sizeof methods[0], methods, &cls));
  CHECK(env, napi_set_named_property(env, exports, "BatchSocket", cls));
#define CONST(name, value)                           \
  CHECK(env, napi_create_uint32(env, (value), &v)); \
  CHECK(env, napi_set_named_property(env, exports, name, v));
  CONST("BATCH", BATCH)
  CONST("SLOT", SLOT)
  CONST("META", META)
  CONST("BACKLOG", BACKLOG)
#undef CONST
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
