/*
 * stunload: a UDP load generator for STUN servers, used by `npm run bench:server` (bench/server.ts
 * compiles it with `cc -O2` at run time). Linux only: sendmmsg/recvmmsg, IP_PKTINFO.
 *
 * It talks to 127.0.0.1 only, from one socket, but spreads its requests over many loopback source
 * addresses (127.1.0.0 + i, chosen per datagram with IP_PKTINFO), the way a public server sees many
 * clients: a server that limits each source address (Burrow does) is measured with its limits on.
 *
 * Two modes, both closed-loop with at most --window requests outstanding, bounded by --duration-ms and
 * --max-requests, each unanswered request given up after --timeout-ms (counted as lost):
 *
 *   stun    sends a Binding request (so every server gets the same bytes): --request bare (the 20-byte
 *           header alone, what standard STUN clients send), --request fingerprint (bare + FINGERPRINT,
 *           28 bytes), or --request-hex HEX (any request, e.g. Burrow's padded one). Each request gets a
 *           fresh transaction id: bytes 0..7 the send time (CLOCK_MONOTONIC, ns), bytes 8..11 the window
 *           slot; a FINGERPRINT at the end of the request is recomputed for it (RFC 8489 section 14.7).
 *           An answer counts only if it is a Binding success whose transaction id matches an outstanding
 *           request exactly, whose XOR-MAPPED-ADDRESS names the source address and port the request came
 *           from, and, when the request carried FINGERPRINT, that ends with a correct FINGERPRINT.
 *           Latency = receive time - the send time carried in the transaction id. A warm-up of
 *           --warmup-ms is not counted.
 *
 *   script  sends pre-built datagrams (Burrow REGISTER requests, authenticated by the Node side) from
 *           --script FILE, in order, and matches REGISTER answers by transaction id. Each INTRODUCE
 *           indication is attributed to its pair by the recipient's SESSION-NONCE (first 4 bytes: pair
 *           number, 5th: side) and answered the way Burrow's client does, with the pre-built refresh
 *           REGISTER of that side (acknowledging the push).
 *
 * Script file: "BLS1", u32 count, then per record: u32 source index, u32 pair, u8 kind (1 initial,
 * 2 acknowledgement of side 0, 3 of side 1), u8 target (0: --port, 1: --port2, for two servers sharing a
 * store), u16 length, bytes (all integers big-endian).
 *
 * Output: one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_DGRAM 1500
#define LAT_BUCKETS 2000000 /* 1 µs buckets up to 2 s */

/* STUN message types (RFC 8489 section 5; Burrow's methods from src/codec/messages.ts). */
#define BINDING_SUCCESS 0x0101
#define REGISTER_SUCCESS 0x0361
#define REGISTER_ERROR 0x0371
#define INTRODUCE_INDICATION 0x0272
#define ATTR_XOR_MAPPED 0x0020
#define ATTR_SESSION_NONCE 0x4b04
#define ATTR_FINGERPRINT 0x8028

/* CRC-32 (ISO HDLC, the one FINGERPRINT uses), bitwise with a table built at start. */
static uint32_t crc_table[256];
static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}
static uint32_t crc32(const uint8_t *b, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) c = crc_table[(c ^ b[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "stunload: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

struct slot {
  uint64_t sent_ns; /* 0 = free */
  uint32_t source;  /* source index */
  uint32_t record;  /* script mode: record index */
};

struct record {
  uint32_t source, pair;
  uint8_t kind, target;
  uint16_t len;
  uint8_t *bytes;
};

static struct {
  int fd;
  uint16_t local_port;
  struct sockaddr_in target;
  struct sockaddr_in target2; /* script mode: a second server (--port2) */
  uint32_t sources;
  /* counters */
  uint64_t sent, answered, lost, unmatched, errors, send_failures, intros, dup_intros;
  uint32_t *lat; /* histogram, µs */
  uint64_t lat_count;
} g;

static uint32_t source_addr(uint32_t index) { return (127u << 24 | 1u << 16) + index; } /* 127.1.0.0 + i */

static void lat_add(uint64_t ns) {
  uint64_t us = ns / 1000;
  if (us >= LAT_BUCKETS) us = LAT_BUCKETS - 1;
  g.lat[us]++;
  g.lat_count++;
}

static double lat_pct(double p) {
  if (g.lat_count == 0) return -1;
  uint64_t rank = (uint64_t)(p / 100.0 * (double)g.lat_count);
  if (rank < 1) rank = 1;
  uint64_t seen = 0;
  for (uint32_t i = 0; i < LAT_BUCKETS; i++) {
    seen += g.lat[i];
    if (seen >= rank) return (double)i + 0.5;
  }
  return LAT_BUCKETS;
}

/* Outgoing batch with one IP_PKTINFO control message per datagram (the source address). */
static struct mmsghdr out_msgs[BATCH];
static struct iovec out_iov[BATCH];
static uint8_t out_buf[BATCH][MAX_DGRAM];
static char out_ctl[BATCH][CMSG_SPACE(sizeof(struct in_pktinfo))];
static int out_n;

static uint8_t *batch_add_to(struct sockaddr_in *to, uint32_t source, const uint8_t *bytes, size_t len);
static uint8_t *batch_add(uint32_t source, const uint8_t *bytes, size_t len) {
  return batch_add_to(&g.target, source, bytes, len);
}
static uint8_t *batch_add_to(struct sockaddr_in *to, uint32_t source, const uint8_t *bytes, size_t len) {
  int i = out_n++;
  memcpy(out_buf[i], bytes, len);
  out_iov[i].iov_base = out_buf[i];
  out_iov[i].iov_len = len;
  struct msghdr *h = &out_msgs[i].msg_hdr;
  memset(h, 0, sizeof *h);
  h->msg_name = to;
  h->msg_namelen = sizeof *to;
  h->msg_iov = &out_iov[i];
  h->msg_iovlen = 1;
  h->msg_control = out_ctl[i];
  h->msg_controllen = sizeof out_ctl[i];
  struct cmsghdr *c = CMSG_FIRSTHDR(h);
  c->cmsg_level = IPPROTO_IP;
  c->cmsg_type = IP_PKTINFO;
  c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
  struct in_pktinfo pi;
  memset(&pi, 0, sizeof pi);
  pi.ipi_spec_dst.s_addr = htonl(source_addr(source));
  memcpy(CMSG_DATA(c), &pi, sizeof pi);
  return out_buf[i];
}

static void batch_flush(void) {
  int done = 0;
  int spins = 0;
  while (done < out_n && spins < 1000) {
    int r = sendmmsg(g.fd, out_msgs + done, (unsigned)(out_n - done), 0);
    if (r < 0) {
      if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR) {
        spins++;
        struct pollfd p = {g.fd, POLLOUT, 0};
        poll(&p, 1, 1);
        continue;
      }
      die("sendmmsg");
    }
    done += r;
  }
  g.send_failures += (uint64_t)(out_n - done);
  out_n = 0;
}

static struct mmsghdr in_msgs[BATCH];
static struct iovec in_iov[BATCH];
static uint8_t in_buf[BATCH][MAX_DGRAM];
static struct sockaddr_in in_from[BATCH];

/* Receives one batch (waiting at most wait_ms); returns the count. */
static int receive_batch(int wait_ms) {
  for (int i = 0; i < BATCH; i++) {
    in_iov[i].iov_base = in_buf[i];
    in_iov[i].iov_len = MAX_DGRAM;
    memset(&in_msgs[i].msg_hdr, 0, sizeof in_msgs[i].msg_hdr);
    in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
    in_msgs[i].msg_hdr.msg_iovlen = 1;
    in_msgs[i].msg_hdr.msg_name = &in_from[i];
    in_msgs[i].msg_hdr.msg_namelen = sizeof in_from[i];
  }
  int r = recvmmsg(g.fd, in_msgs, BATCH, MSG_DONTWAIT, NULL);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
    if (wait_ms <= 0) return 0;
    struct pollfd p = {g.fd, POLLIN, 0};
    if (poll(&p, 1, wait_ms) <= 0) return 0;
    r = recvmmsg(g.fd, in_msgs, BATCH, MSG_DONTWAIT, NULL);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  }
  if (r < 0) die("recvmmsg");
  return r;
}

/* A STUN header whose length field matches the datagram; returns the message type or -1. */
static int stun_type(const uint8_t *b, size_t n) {
  if (n < 20 || (b[0] & 0xc0) != 0 || rd32(b + 4) != 0x2112a442 || rd16(b + 2) + 20u != n) return -1;
  return rd16(b);
}

static const uint8_t *find_attr(const uint8_t *b, size_t n, uint16_t type, uint16_t *len) {
  size_t at = 20;
  while (at + 4 <= n) {
    uint16_t t = rd16(b + at), l = rd16(b + at + 2);
    if (at + 4 + l > n) return NULL;
    if (t == type) {
      *len = l;
      return b + at + 4;
    }
    at += 4 + (((size_t)l + 3) & ~(size_t)3);
  }
  return NULL;
}

/* Whether the message ends with a FINGERPRINT attribute (8 bytes). */
static int has_fingerprint(const uint8_t *b, size_t n) { return n >= 28 && rd16(b + n - 8) == ATTR_FINGERPRINT && rd16(b + n - 6) == 4; }

/* Writes the FINGERPRINT value of a message that ends with one: CRC-32 of what precedes it, XOR 0x5354554e. */
static void fix_fingerprint(uint8_t *b, size_t n) {
  uint32_t v = crc32(b, n - 8) ^ 0x5354554eu;
  b[n - 4] = (uint8_t)(v >> 24), b[n - 3] = (uint8_t)(v >> 16), b[n - 2] = (uint8_t)(v >> 8), b[n - 1] = (uint8_t)v;
}

static int fingerprint_valid(const uint8_t *b, size_t n) { return has_fingerprint(b, n) && rd32(b + n - 4) == (crc32(b, n - 8) ^ 0x5354554eu); }

static uint32_t parse_u32(const char *s, const char *name) {
  char *end;
  unsigned long v = strtoul(s, &end, 10);
  if (*s == 0 || *end != 0 || v > 0xffffffffu) {
    fprintf(stderr, "stunload: %s must be a number\n", name);
    exit(2);
  }
  return (uint32_t)v;
}

static void print_common(const char *mode, double seconds) {
  printf("{\"mode\":\"%s\",\"seconds\":%.4f,\"sent\":%llu,\"answered\":%llu,\"lost\":%llu,\"unmatched\":%llu,"
         "\"errors\":%llu,\"sendFailures\":%llu,\"p50us\":%.1f,\"p99us\":%.1f,\"maxus\":%.1f",
         mode, seconds, (unsigned long long)g.sent, (unsigned long long)g.answered, (unsigned long long)g.lost,
         (unsigned long long)g.unmatched, (unsigned long long)g.errors, (unsigned long long)g.send_failures,
         lat_pct(50), lat_pct(99), lat_pct(100));
}

/* ------------------------------------------------------------------------------------------------ */

static void run_stun(const uint8_t *req, size_t req_len, uint32_t window, uint64_t warmup_ns, uint64_t duration_ns,
                     uint64_t timeout_ns, uint64_t max_requests) {
  struct slot *slots = calloc(window, sizeof *slots);
  uint32_t *free_list = malloc(window * sizeof *free_list);
  if (!slots || !free_list) die("calloc");
  uint32_t free_n = window;
  for (uint32_t i = 0; i < window; i++) free_list[i] = window - 1 - i;
  uint64_t start = now_ns(), measure_from = start + warmup_ns, end = measure_from + duration_ns;
  uint64_t next_sweep = start, next_source = 0, total_sent = 0;
  uint64_t measured_start = 0, measured_end = 0;
  int measuring = 0;
  const int fingerprint = has_fingerprint(req, req_len);
  for (;;) {
    uint64_t t = now_ns();
    if (!measuring && t >= measure_from) {
      measuring = 1;
      measured_start = t;
      g.sent = g.answered = g.lost = g.unmatched = g.errors = 0;
      memset(g.lat, 0, LAT_BUCKETS * sizeof *g.lat);
      g.lat_count = 0;
    }
    if (t >= end) {
      measured_end = t;
      break;
    }
    if (t >= next_sweep) { /* give up on requests older than the timeout */
      for (uint32_t i = 0; i < window; i++) {
        if (slots[i].sent_ns != 0 && t - slots[i].sent_ns > timeout_ns) {
          slots[i].sent_ns = 0;
          free_list[free_n++] = i;
          g.lost++;
        }
      }
      next_sweep = t + 1000000;
    }
    while (free_n > 0 && total_sent < max_requests) {
      uint32_t s = free_list[--free_n];
      uint32_t source = (uint32_t)(next_source++ % g.sources);
      uint64_t ts = now_ns();
      uint8_t *b = batch_add(source, req, req_len);
      for (int k = 0; k < 8; k++) b[8 + k] = (uint8_t)(ts >> (56 - 8 * k));
      b[16] = (uint8_t)(s >> 24), b[17] = (uint8_t)(s >> 16), b[18] = (uint8_t)(s >> 8), b[19] = (uint8_t)s;
      if (fingerprint) fix_fingerprint(b, req_len);
      slots[s].sent_ns = ts;
      slots[s].source = source;
      g.sent++;
      total_sent++;
      if (out_n == BATCH) batch_flush();
    }
    if (out_n > 0) batch_flush();
    int n = receive_batch(free_n == 0 || total_sent >= max_requests ? 1 : 0);
    uint64_t rt = now_ns();
    for (int i = 0; i < n; i++) {
      const uint8_t *b = in_buf[i];
      size_t len = in_msgs[i].msg_len;
      int type = stun_type(b, len);
      if (type != BINDING_SUCCESS) {
        if (type >= 0 && (type & 0x0110) == 0x0110) g.errors++;
        else g.unmatched++;
        continue;
      }
      uint64_t ts = 0;
      for (int k = 0; k < 8; k++) ts = ts << 8 | b[8 + k];
      uint32_t s = rd32(b + 16);
      if (s >= window || slots[s].sent_ns != ts || ts == 0) {
        g.unmatched++;
        continue;
      }
      /* XOR-MAPPED-ADDRESS must name where the request came from (RFC 8489 section 14.2). */
      uint16_t alen = 0;
      const uint8_t *a = find_attr(b, len, ATTR_XOR_MAPPED, &alen);
      uint32_t want = source_addr(slots[s].source);
      if (!a || alen != 8 || a[1] != 1 || (rd16(a + 2) ^ 0x2112) != g.local_port || (rd32(a + 4) ^ 0x2112a442) != want) {
        g.unmatched++;
        continue;
      }
      /* RFC 8489 section 14.7: a request with FINGERPRINT gets an answer with one. */
      if (fingerprint && !fingerprint_valid(b, len)) {
        g.unmatched++;
        continue;
      }
      slots[s].sent_ns = 0;
      free_list[free_n++] = s;
      g.answered++;
      lat_add(rt - ts);
    }
  }
  /* Drain: answers still in flight are not counted in the rate, but they are not losses either. */
  uint64_t drain_end = now_ns() + timeout_ns;
  uint64_t late = 0;
  while (now_ns() < drain_end) {
    int n = receive_batch(5);
    late += (uint64_t)n;
    uint32_t outstanding = window - free_n;
    if (n == 0 && late >= outstanding) break;
  }
  double seconds = (double)(measured_end - measured_start) / 1e9;
  print_common("stun", seconds);
  printf(",\"rate\":%.1f,\"window\":%u,\"sources\":%u,\"requestBytes\":%zu,\"fingerprint\":%s}\n", (double)g.answered / seconds,
         window, g.sources, req_len, fingerprint ? "true" : "false");
  free(slots);
  free(free_list);
}

/* ------------------------------------------------------------------------------------------------ */

static struct record *load_script(const char *path, uint32_t *count) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  uint8_t head[8];
  if (fread(head, 1, 8, f) != 8 || memcmp(head, "BLS1", 4) != 0) {
    fprintf(stderr, "stunload: %s is not a script\n", path);
    exit(2);
  }
  uint32_t n = rd32(head + 4);
  if (n > 10000000u) {
    fprintf(stderr, "stunload: too many records\n");
    exit(2);
  }
  struct record *r = calloc(n ? n : 1, sizeof *r);
  if (!r) die("calloc");
  for (uint32_t i = 0; i < n; i++) {
    uint8_t h[12];
    if (fread(h, 1, 12, f) != 12) die("short script");
    r[i].source = rd32(h);
    r[i].pair = rd32(h + 4);
    r[i].kind = h[8];
    r[i].target = h[9];
    r[i].len = rd16(h + 10);
    if (r[i].len < 20 || r[i].len > MAX_DGRAM) die("bad record length");
    r[i].bytes = malloc(r[i].len);
    if (!r[i].bytes || fread(r[i].bytes, 1, r[i].len, f) != r[i].len) die("short script");
  }
  fclose(f);
  *count = n;
  return r;
}

static void run_script(const char *path, uint32_t window, uint64_t duration_ns, uint64_t timeout_ns) {
  uint32_t n;
  struct record *rec = load_script(path, &n);
  uint32_t pairs = 0;
  for (uint32_t i = 0; i < n; i++)
    if (rec[i].pair + 1 > pairs && rec[i].kind != 1) pairs = rec[i].pair + 1;
  /* Per pair and side: index of the acknowledgement record; per pair: introduced yet. */
  uint32_t *ack = malloc((size_t)(pairs ? pairs : 1) * 2 * sizeof *ack);
  uint8_t *introduced = calloc(pairs ? pairs : 1, 1);
  uint64_t *sent_at = calloc(n ? n : 1, sizeof *sent_at); /* 0: not outstanding */
  uint32_t *ack_queue = malloc((size_t)(pairs ? pairs : 1) * 2 * sizeof *ack_queue);
  if (!ack || !introduced || !sent_at || !ack_queue) die("calloc");
  for (uint32_t i = 0; i < pairs * 2; i++) ack[i] = UINT32_MAX;
  for (uint32_t i = 0; i < n; i++)
    if (rec[i].kind == 2 || rec[i].kind == 3) ack[rec[i].pair * 2 + (rec[i].kind - 2)] = i;
  uint32_t queued = 0, queue_head = 0, next = 0, outstanding = 0;
  uint64_t start = now_ns(), end = start + duration_ns, last_answer = start, last_intro = start, next_sweep = start;
  uint64_t registers = 0, acks_answered = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (t >= end) break;
    if (next >= n && queue_head >= queued && outstanding == 0) break;
    if (t >= next_sweep) {
      /* a linear sweep is fine: it runs once per 10 ms over at most a few hundred thousand records */
      for (uint32_t i = 0; i < n; i++) {
        if (sent_at[i] != 0 && t - sent_at[i] > timeout_ns) {
          sent_at[i] = 0;
          outstanding--;
          g.lost++;
        }
      }
      next_sweep = t + 10000000;
    }
    while (outstanding < window && (queue_head < queued || next < n)) {
      uint32_t i;
      if (queue_head < queued) i = ack_queue[queue_head++];
      else {
        i = next++;
        if (rec[i].kind != 1) continue; /* acknowledgements wait for their introduction */
      }
      batch_add_to(rec[i].target == 1 && g.target2.sin_port != 0 ? &g.target2 : &g.target, rec[i].source, rec[i].bytes, rec[i].len);
      sent_at[i] = now_ns();
      outstanding++;
      g.sent++;
      if (out_n == BATCH) batch_flush();
    }
    if (out_n > 0) batch_flush();
    int got = receive_batch(1);
    uint64_t rt = now_ns();
    for (int k = 0; k < got; k++) {
      const uint8_t *b = in_buf[k];
      size_t len = in_msgs[k].msg_len;
      int type = stun_type(b, len);
      if (type == INTRODUCE_INDICATION) {
        uint16_t alen = 0;
        const uint8_t *nonce = find_attr(b, len, ATTR_SESSION_NONCE, &alen);
        if (!nonce || alen != 16 || rd32(nonce) >= pairs || nonce[4] > 1) {
          g.unmatched++;
          continue;
        }
        uint32_t pair = rd32(nonce), side = nonce[4];
        if (introduced[pair]) {
          g.dup_intros++;
          continue;
        }
        introduced[pair] = 1;
        g.intros++;
        last_intro = rt;
        uint32_t a = ack[pair * 2 + side];
        if (a != UINT32_MAX) ack_queue[queued++] = a;
        continue;
      }
      if (type != REGISTER_SUCCESS && type != REGISTER_ERROR) {
        g.unmatched++;
        continue;
      }
      uint32_t i = rd32(b + 8);
      if (i >= n || sent_at[i] == 0 || memcmp(rec[i].bytes + 8, b + 8, 12) != 0) {
        g.unmatched++;
        continue;
      }
      lat_add(rt - sent_at[i]);
      sent_at[i] = 0;
      outstanding--;
      if (type == REGISTER_ERROR) {
        g.errors++;
        continue;
      }
      g.answered++;
      last_answer = rt;
      if (rec[i].kind == 1) registers++;
      else acks_answered++;
    }
  }
  double seconds = (double)(last_answer - start) / 1e9;
  double intro_seconds = (double)(last_intro - start) / 1e9;
  print_common("script", seconds);
  printf(",\"registers\":%llu,\"acks\":%llu,\"rate\":%.1f,\"introductions\":%llu,\"duplicateIntroductions\":%llu,"
         "\"introSeconds\":%.4f,\"introRate\":%.1f,\"pairs\":%u,\"window\":%u,\"sources\":%u}\n",
         (unsigned long long)registers, (unsigned long long)acks_answered, seconds > 0 ? (double)g.answered / seconds : 0,
         (unsigned long long)g.intros, (unsigned long long)g.dup_intros, intro_seconds,
         intro_seconds > 0 ? (double)g.intros / intro_seconds : 0, pairs, window, g.sources);
}

/* ------------------------------------------------------------------------------------------------ */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(int argc, char **argv) {
  const char *mode = "stun", *hex = NULL, *script = NULL, *request = NULL;
  uint32_t port = 0, port2 = 0, window = 256, warmup_ms = 300, duration_ms = 3000, timeout_ms = 500, sources = 4096;
  uint64_t max_requests = 100000000ull;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--mode")) mode = v;
    else if (!strcmp(k, "--port")) port = parse_u32(v, k);
    else if (!strcmp(k, "--port2")) port2 = parse_u32(v, k);
    else if (!strcmp(k, "--request-hex")) hex = v;
    else if (!strcmp(k, "--request")) request = v;
    else if (!strcmp(k, "--script")) script = v;
    else if (!strcmp(k, "--window")) window = parse_u32(v, k);
    else if (!strcmp(k, "--warmup-ms")) warmup_ms = parse_u32(v, k);
    else if (!strcmp(k, "--duration-ms")) duration_ms = parse_u32(v, k);
    else if (!strcmp(k, "--timeout-ms")) timeout_ms = parse_u32(v, k);
    else if (!strcmp(k, "--sources")) sources = parse_u32(v, k);
    else if (!strcmp(k, "--max-requests")) max_requests = parse_u32(v, k);
    else {
      fprintf(stderr, "stunload: unknown option %s\n", k);
      return 2;
    }
  }
  if (port == 0 || port > 65535 || port2 > 65535 || window == 0 || window > 65536 || sources == 0 || sources > 65536 ||
      duration_ms == 0 || duration_ms > 600000 || timeout_ms == 0 || timeout_ms > 10000) {
    fprintf(stderr,
            "usage: stunload --port P [--port2 P] [--mode stun (--request bare|fingerprint | --request-hex HEX) | --mode script --script FILE]\n"
            "       [--window N] [--sources N] [--duration-ms MS] [--warmup-ms MS] [--timeout-ms MS] [--max-requests N]\n");
    return 2;
  }
  crc_init();
  g.sources = sources;
  g.lat = calloc(LAT_BUCKETS, sizeof *g.lat);
  if (!g.lat) die("calloc");
  g.fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (g.fd < 0) die("socket");
  int size = 4 << 20;
  setsockopt(g.fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  setsockopt(g.fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  /* Answers go to 127.1.x.y, so the socket listens on the wildcard address; it is tied to the loopback
     device where the kernel allows it (root), so nothing from other interfaces reaches it. */
  (void)setsockopt(g.fd, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3);
  struct sockaddr_in local;
  memset(&local, 0, sizeof local);
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(g.fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
  socklen_t ll = sizeof local;
  if (getsockname(g.fd, (struct sockaddr *)&local, &ll) < 0) die("getsockname");
  g.local_port = ntohs(local.sin_port);
  memset(&g.target, 0, sizeof g.target);
  g.target.sin_family = AF_INET;
  g.target.sin_port = htons((uint16_t)port);
  g.target.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
  g.target2 = g.target;
  g.target2.sin_port = htons((uint16_t)port2); /* 0: none */

  if (!strcmp(mode, "stun")) {
    uint8_t req[MAX_DGRAM];
    if (request) {
      /* A bare RFC 8489 Binding request: type 0x0001, length 0 (or 8 with FINGERPRINT), magic cookie; the
         transaction id is filled in per request. */
      int fp = !strcmp(request, "fingerprint");
      if (!fp && strcmp(request, "bare") != 0) {
        fprintf(stderr, "stunload: --request must be bare or fingerprint\n");
        return 2;
      }
      memset(req, 0, 28);
      req[1] = 0x01;
      req[3] = fp ? 8 : 0;
      req[4] = 0x21, req[5] = 0x12, req[6] = 0xa4, req[7] = 0x42;
      if (fp) req[20] = 0x80, req[21] = 0x28, req[23] = 4;
      run_stun(req, fp ? 28 : 20, window, (uint64_t)warmup_ms * 1000000ull, (uint64_t)duration_ms * 1000000ull,
               (uint64_t)timeout_ms * 1000000ull, max_requests);
      close(g.fd);
      return 0;
    }
    if (!hex) {
      fprintf(stderr, "stunload: --mode stun needs --request or --request-hex\n");
      return 2;
    }
    size_t hl = strlen(hex);
    if (hl % 2 != 0 || hl / 2 < 20 || hl / 2 > MAX_DGRAM) {
      fprintf(stderr, "stunload: --request-hex must be a STUN message\n");
      return 2;
    }
    for (size_t i = 0; i < hl / 2; i++) {
      int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        fprintf(stderr, "stunload: --request-hex is not hex\n");
        return 2;
      }
      req[i] = (uint8_t)(hi << 4 | lo);
    }
    run_stun(req, hl / 2, window, (uint64_t)warmup_ms * 1000000ull, (uint64_t)duration_ms * 1000000ull,
             (uint64_t)timeout_ms * 1000000ull, max_requests);
  } else if (!strcmp(mode, "script")) {
    if (!script) {
      fprintf(stderr, "stunload: --mode script needs --script\n");
      return 2;
    }
    run_script(script, window, (uint64_t)duration_ms * 1000000ull, (uint64_t)timeout_ms * 1000000ull);
  } else {
    fprintf(stderr, "stunload: unknown mode %s\n", mode);
    return 2;
  }
  close(g.fd);
  return 0;
}
