// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Load generator for the agent's soak (test/lab/load-scenario.ts): many
 * concurrent G.711 20 ms RTP streams, a relay that forwards each of them on
 * its own flow, a sink that counts, and the prediction of what the agent
 * must find in them.
 *
 *   udp-load send    --dest IP:PORT --streams N --sport-base P
 *                    [--packets K | --duration S] [--seed X] [--tick-us T]
 *   udp-load relay   --listen PORT --to IP:PORT --streams N --sport-base P
 *                    [--hold-ms H] [--queue Q] [--tick-us T]
 *   udp-load sink    --listen PORT [--tick-us T]
 *   udp-load predict --streams N --packets K [--seed X] [--window W]
 *                    [--silence T] [--stream FIRST]
 *   udp-load dump    --stream I --packets K [--seed X]   (payload bytes)
 *   udp-load bulk-sink --listen PORT
 *   udp-load bulk-send --dest IP:PORT [--mbps R] [--duration S]
 *
 * send: stream i sends from its own UDP socket bound to sport-base + i, one
 * 172-byte packet every 20 ms (12-byte RTP header, PT 0, SSRC derived from
 * the seed and i, then 160 bytes of seeded noise: G.711 mu-law bytes from a
 * per-stream splitmix64 sequence, far above any silence threshold and
 * different on every stream, so no two windows of the run share a
 * signature). Streams are spread evenly over the 20 ms period; the thread
 * wakes every --tick-us (1000) with clock_nanosleep on absolute due times
 * and sends every packet due by then, so a late wake-up is caught up, never
 * skipped. sendmmsg does not help here: it batches datagrams of one socket,
 * and each stream has its own (as each call of a real media server has).
 *
 * relay: one listening socket drained with recvmmsg (64 per call), straight
 * into the slots of a FIFO hold queue (--queue slots, 65536); each new source
 * port is given the next of N output sockets (bound to sport-base + k,
 * connected to --to), so each inbound flow maps to exactly one outbound flow,
 * payload and RTP header unchanged. A packet leaves --hold-ms after its batch
 * was received (every packet has the same hold, so FIFO order is due order),
 * on the first tick at or after its due time.
 *
 * sink: recvmmsg on one socket; counts packets, and per source port the RTP
 * sequence gaps (packets that never came) and late arrivals.
 *
 * Receivers (relay, sink) wake every --tick-us (1000) and drain their socket
 * rather than sleep until a datagram arrives: see wait_tick(). --tick-us 0
 * wakes them on arrival (epoll; the relay then arms a timerfd at the head's
 * due time). Ticks cost the relay up to one tick of extra hold.
 *
 * Every listening socket asks for SO_RXQ_OVFL, so datagrams the kernel
 * dropped because the socket buffer was full are reported (rxOverflow), not
 * silently missing. Each mode prints {"event":"ready",...} once set up and
 * one {"event":"report",...} JSON line at exit (end of the run, SIGTERM or
 * SIGINT) with its counters and its own CPU time.
 *
 * predict: the signature windows of the streams `send` produces, counted as
 * docs/signatures.md specifies (Gear anchors, W-byte windows, at most 16
 * open, the G.711 silence gate): the hop samples a relay that forwards every
 * byte must yield. The TypeScript reference checks this count on dumped
 * streams (test/soak.test.ts); this C version exists because the reference
 * needs about 55 ns per byte, minutes for a 10-minute soak (this: ~6 ns).
 *
 * bulk-send / bulk-sink: a TCP stream at --mbps (0: as fast as it goes) for
 * the lab's non-audio traffic when iperf3 is not installed.
 *
 * CPU: the user-space side is small (about 0.2 us per datagram); the kernel's
 * path through veth, bridge and br_netfilter is not (8-10 us of system time
 * per datagram sent on the 2-core lab VM, charged to the sending process).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RTP_HEADER 12
#define PAYLOAD 160 /* G.711, 20 ms at 8 kHz */
#define PACKET (RTP_HEADER + PAYLOAD)
#define PTIME_NS 20000000ULL
#define SAMPLES_PER_PACKET 160
#define BATCH 64
#define SLOT_BYTES 512 /* the streams' datagrams are 172 bytes; longer ones are dropped */
#define MAX_STREAMS 30000
#define RCVBUF_BYTES (32 << 20)
#define GEAR_SEED 0x616c742d67656172ULL
#define GEAR_SPAN 64
#define MAX_OPEN_WINDOWS 16
#define DEFAULT_SEED 0x10adULL

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void install_signals(void)
{
	struct sigaction sa = { 0 };

	/* No SA_RESTART: a blocking call returns EINTR and the loop sees the flag. */
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void die(const char *mode, const char *what, int err)
{
	fprintf(stderr, "udp-load %s: %s: %s\n", mode, what, err ? strerror(err) : "invalid");
	exit(2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct timespec to_timespec(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };
	return ts;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z;

	*state += 0x9E3779B97F4A7C15ULL;
	z = *state;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* ---- options ---------------------------------------------------------- */

struct opts {
	const char *mode;
	char dest_ip[64];
	int dest_port;
	int listen_port;
	int streams;
	int sport_base;
	uint64_t packets; /* per stream; 0: until stopped */
	double duration_s;
	uint64_t seed;
	uint64_t tick_ns;
	double hold_ms;
	int queue;
	int window;
	int silence;
	int stream;
	double mbps;
};

static void parse_host_port(struct opts *o, const char *v)
{
	const char *colon = strrchr(v, ':');
	size_t n;

	if (!colon || colon == v || (size_t)(colon - v) >= sizeof(o->dest_ip))
		die(o->mode, "--dest/--to wants IPv4:port", 0);
	n = (size_t)(colon - v);
	memcpy(o->dest_ip, v, n);
	o->dest_ip[n] = 0;
	o->dest_port = atoi(colon + 1);
	if (o->dest_port < 1 || o->dest_port > 65535)
		die(o->mode, "port out of range", 0);
}

static void parse_opts(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dest", required_argument, NULL, 'd' },
		{ "to", required_argument, NULL, 'd' },
		{ "listen", required_argument, NULL, 'l' },
		{ "streams", required_argument, NULL, 'n' },
		{ "sport-base", required_argument, NULL, 'b' },
		{ "packets", required_argument, NULL, 'k' },
		{ "duration", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "tick-us", required_argument, NULL, 'T' },
		{ "hold-ms", required_argument, NULL, 'H' },
		{ "queue", required_argument, NULL, 'q' },
		{ "window", required_argument, NULL, 'w' },
		{ "silence", required_argument, NULL, 'S' },
		{ "stream", required_argument, NULL, 'i' },
		{ "mbps", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	o->streams = 1;
	o->seed = DEFAULT_SEED;
	o->tick_ns = 1000000;
	o->queue = 65536;
	o->window = 256;
	o->silence = 256;
	o->mbps = 200;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': parse_host_port(o, optarg); break;
		case 'l': o->listen_port = atoi(optarg); break;
		case 'n': o->streams = atoi(optarg); break;
		case 'b': o->sport_base = atoi(optarg); break;
		case 'k': o->packets = strtoull(optarg, NULL, 0); break;
		case 't': o->duration_s = strtod(optarg, NULL); break;
		case 's': o->seed = strtoull(optarg, NULL, 0); break;
		case 'T': o->tick_ns = strtoull(optarg, NULL, 0) * 1000; break;
		case 'H': o->hold_ms = strtod(optarg, NULL); break;
		case 'q': o->queue = atoi(optarg); break;
		case 'w': o->window = atoi(optarg); break;
		case 'S': o->silence = atoi(optarg); break;
		case 'i': o->stream = atoi(optarg); break;
		case 'r': o->mbps = strtod(optarg, NULL); break;
		default: die(o->mode, "unknown option", 0);
		}
	}
	if (o->streams < 1 || o->streams > MAX_STREAMS)
		die(o->mode, "--streams out of range (1..30000)", 0);
	if (o->sport_base < 0 || o->sport_base + o->streams - 1 > 65535)
		die(o->mode, "--sport-base + --streams exceeds port 65535", 0);
	if (o->hold_ms < 0 || o->queue < BATCH || (o->tick_ns == 0 && !strcmp(o->mode, "send")))
		die(o->mode, "--hold-ms, --queue or --tick-us out of range", 0);
	if (o->window < 32 || o->window > 4096)
		die(o->mode, "--window out of range (32..4096)", 0);
}

/* ---- shared helpers ----------------------------------------------------- */

static void raise_nofile(const char *mode, int needed)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		die(mode, "getrlimit(RLIMIT_NOFILE)", errno);
	if (rl.rlim_cur >= (rlim_t)needed)
		return;
	rl.rlim_cur = (rlim_t)needed;
	if (rl.rlim_max < (rlim_t)needed)
		rl.rlim_max = (rlim_t)needed;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die(mode, "setrlimit(RLIMIT_NOFILE) for one socket per stream", errno);
}

static struct sockaddr_in ipv4(const char *mode, const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	if (ip && inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		die(mode, "bad IPv4 address", 0);
	if (!ip)
		a.sin_addr.s_addr = htonl(INADDR_ANY);
	return a;
}

/* A UDP socket bound to `port` (0: any), connected to `to` when given. */
static int udp_socket(const char *mode, int port, const struct sockaddr_in *to)
{
	struct sockaddr_in local = ipv4(mode, NULL, port);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		die(mode, "socket", errno);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&local, sizeof(local))) {
		char what[64];

		snprintf(what, sizeof(what), "bind UDP port %d", port);
		die(mode, what, errno);
	}
	if (to && connect(fd, (const struct sockaddr *)to, sizeof(*to)))
		die(mode, "connect", errno);
	return fd;
}

/* A listening UDP socket with a large buffer and the drop counter enabled. */
static int listen_socket(const char *mode, int port)
{
	int fd = udp_socket(mode, port, NULL);
	int size = RCVBUF_BYTES, one = 1;

	/* FORCE needs CAP_NET_ADMIN; without it the plain one is capped by rmem_max. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)))
		die(mode, "setsockopt(SO_RXQ_OVFL)", errno);
	return fd;
}

/* SO_RXQ_OVFL: the socket's cumulative drop count, carried by each datagram. */
static uint32_t rx_overflow(struct msghdr *m, uint32_t prev)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
			uint32_t v;

			memcpy(&v, CMSG_DATA(c), sizeof(v));
			return v;
		}
	}
	return prev;
}

static void cpu_times(double *user_s, double *sys_s)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	*sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void emit_ready(const char *role, int port)
{
	printf("{\"event\":\"ready\",\"role\":\"%s\",\"port\":%d}\n", role, port);
	fflush(stdout);
}

static int epoll_add(const char *mode, int ep, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		die(mode, "epoll_ctl", errno);
	return fd;
}

/*
 * Receivers wake on a clock, not on each datagram: a socket with a sleeping
 * reader makes every arriving datagram wake it (an IPI under a hypervisor,
 * 15% of the sender's CPU in perf), while a reader that drains the socket
 * every tick is never waited on. --tick-us 0: wake on arrival (epoll).
 */
static void wait_tick(uint64_t tick_ns, uint64_t *next)
{
	uint64_t now = now_ns();
	struct timespec ts;

	if (*next <= now)
		*next = now + tick_ns; /* overslept: no burst of catch-up ticks */
	ts = to_timespec(*next);
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	*next += tick_ns;
}

/* ---- the streams' content --------------------------------------------- */

struct stream_src {
	uint64_t rng;
	uint32_t ssrc;
	uint32_t ts;
	uint16_t seq;
};

static void stream_init(struct stream_src *s, uint64_t seed, int index)
{
	uint64_t mix = seed ^ (0xA0761D6478BD642FULL * (uint64_t)(index + 1));

	s->rng = mix;
	s->ssrc = (uint32_t)splitmix64(&mix) | 1;
	s->seq = (uint16_t)splitmix64(&mix);
	s->ts = (uint32_t)splitmix64(&mix);
}

/* The next 160 payload bytes of stream `s`: seeded noise, 8 bytes a step. */
static void stream_payload(struct stream_src *s, uint8_t *out)
{
	for (int i = 0; i < PAYLOAD; i += 8) {
		uint64_t r = splitmix64(&s->rng);

		memcpy(out + i, &r, 8);
	}
}

static void stream_packet(struct stream_src *s, uint8_t *pkt, int first)
{
	pkt[0] = 0x80;			  /* V=2, no padding, extension or CSRC */
	pkt[1] = (uint8_t)(first ? 0x80 : 0x00); /* marker on the first packet, PT 0 */
	pkt[2] = (uint8_t)(s->seq >> 8);
	pkt[3] = (uint8_t)s->seq;
	pkt[4] = (uint8_t)(s->ts >> 24);
	pkt[5] = (uint8_t)(s->ts >> 16);
	pkt[6] = (uint8_t)(s->ts >> 8);
	pkt[7] = (uint8_t)s->ts;
	pkt[8] = (uint8_t)(s->ssrc >> 24);
	pkt[9] = (uint8_t)(s->ssrc >> 16);
	pkt[10] = (uint8_t)(s->ssrc >> 8);
	pkt[11] = (uint8_t)s->ssrc;
	stream_payload(s, pkt + RTP_HEADER);
	s->seq++;
	s->ts += SAMPLES_PER_PACKET;
}

/* ---- send --------------------------------------------------------------- */

struct send_counts {
	uint64_t sent, dropped, eagain, refused, other;
	uint64_t late_max_ns, late_over_5ms;
};

static void send_one(int fd, const uint8_t *pkt, struct send_counts *c)
{
	if (send(fd, pkt, PACKET, 0) == PACKET) {
		c->sent++;
		return;
	}
	c->dropped++;
	if (errno == EAGAIN || errno == ENOBUFS)
		c->eagain++;
	else if (errno == ECONNREFUSED)
		c->refused++; /* an ICMP error from an earlier packet: this one is lost */
	else
		c->other++;
}

static int run_send(struct opts *o)
{
	struct sockaddr_in dest = ipv4(o->mode, o->dest_ip, o->dest_port);
	int n = o->streams;
	int *fds = calloc((size_t)n, sizeof(int));
	struct stream_src *src = calloc((size_t)n, sizeof(*src));
	struct send_counts c = { 0 };
	uint8_t pkt[PACKET];
	uint64_t per_stream = o->packets;
	uint64_t k = 0, t0, next_wake, end_ns;
	double user_s, sys_s;
	int i = 0;

	if (!fds || !src)
		die(o->mode, "calloc", ENOMEM);
	if (!o->dest_port || !o->sport_base)
		die(o->mode, "--dest and --sport-base are required", 0);
	if (!per_stream && o->duration_s > 0)
		per_stream = (uint64_t)(o->duration_s * 1e9 / (double)PTIME_NS + 0.5);
	raise_nofile(o->mode, n + 64);
	for (int s = 0; s < n; s++) {
		fds[s] = udp_socket(o->mode, o->sport_base + s, &dest);
		stream_init(&src[s], o->seed, s);
	}
	emit_ready("send", o->sport_base);
	t0 = now_ns() + 1000000; /* 1 ms to settle after printing */
	next_wake = t0;
	/* Due time of stream i's k-th packet: t0 + k * ptime + i * ptime / n. */
	while (!stop_requested && (!per_stream || k < per_stream)) {
		struct timespec ts = to_timespec(next_wake);
		uint64_t now;

		if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			continue;
		now = now_ns();
		/* A sender far behind has a long backlog: the stop flag is checked per packet. */
		while (!stop_requested) {
			uint64_t due = t0 + k * PTIME_NS + (uint64_t)i * PTIME_NS / (uint64_t)n;

			if (due > now) {
				/* Sleep to the next due packet, but at least a tick. */
				next_wake = due > now + o->tick_ns ? due : now + o->tick_ns;
				break;
			}
			if (now - due > c.late_max_ns)
				c.late_max_ns = now - due;
			if (now - due > 5000000)
				c.late_over_5ms++;
			stream_packet(&src[i], pkt, k == 0);
			send_one(fds[i], pkt, &c);
			if (++i == n) {
				i = 0;
				if (++k == per_stream)
					break;
			}
		}
	}
	end_ns = now_ns();
	cpu_times(&user_s, &sys_s);
	/* Stopped mid-round: streams 0 .. i-1 sent one packet more than the rest. */
	printf("{\"event\":\"report\",\"role\":\"send\",\"streams\":%d,\"packetsPerStream\":%" PRIu64
	       ",\"streamsWithOneMore\":%d,\"complete\":%s,\"sent\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"eagain\":%" PRIu64
	       ",\"refused\":%" PRIu64 ",\"otherErrors\":%" PRIu64 ",\"lateMaxUs\":%.0f"
	       ",\"lateOver5ms\":%" PRIu64 ",\"elapsedS\":%.3f,\"cpuUserS\":%.3f,\"cpuSysS\":%.3f}\n",
	       n, k, i, per_stream && k == per_stream ? "true" : "false", c.sent, c.dropped, c.eagain,
	       c.refused, c.other, (double)c.late_max_ns / 1e3, c.late_over_5ms,
	       (double)(end_ns - t0) / 1e9, user_s, sys_s);
	fflush(stdout);
	return 0;
}

/* ---- relay -------------------------------------------------------------- */

struct relay {
	int n, in_fd, timer_fd, sport_base;
	int *out_fds;
	int32_t *stream_of_port; /* 65536 entries, -1: not seen */
	int streams_seen;
	/* FIFO hold queue: every packet is held the same time, so FIFO is due order. */
	uint8_t *data;
	uint16_t *len;
	int32_t *stream;
	uint64_t *due;
	uint32_t cap, head, count, max_count;
	uint64_t hold_ns, timer_armed_for;
	uint64_t received, forwarded, dropped, unknown, send_errors, late_max_ns;
	uint32_t rx_overflow;
};

static void relay_forward_due(struct relay *r, uint64_t now)
{
	while (r->count) {
		uint32_t h = r->head;

		if (r->due[h] > now)
			break;
		if (now - r->due[h] > r->late_max_ns)
			r->late_max_ns = now - r->due[h];
		if (send(r->out_fds[r->stream[h]], r->data + (size_t)h * SLOT_BYTES, r->len[h], 0) ==
		    r->len[h])
			r->forwarded++;
		else {
			r->dropped++;
			r->send_errors++;
		}
		r->head = (h + 1) % r->cap;
		r->count--;
	}
}

static void relay_arm(struct relay *r, const char *mode)
{
	struct itimerspec its = { 0 };
	uint64_t due;

	if (!r->count)
		return;
	due = r->due[r->head];
	if (due == r->timer_armed_for)
		return;
	its.it_value = to_timespec(due);
	if (timerfd_settime(r->timer_fd, TFD_TIMER_ABSTIME, &its, NULL))
		die(mode, "timerfd_settime", errno);
	r->timer_armed_for = due;
}

static int32_t relay_stream_of(struct relay *r, uint16_t port)
{
	int32_t s = r->stream_of_port[port];

	if (s >= 0)
		return s;
	if (r->streams_seen >= r->n)
		return -1;
	s = r->streams_seen++;
	r->stream_of_port[port] = s;
	return s;
}

/* Drains the listening socket into the queue; returns false when it is empty. */
static int relay_receive(struct relay *r)
{
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in from[BATCH];
	char ctrl[BATCH][CMSG_SPACE(sizeof(uint32_t))];
	uint32_t free_slots = r->cap - r->count;
	uint32_t want = free_slots < BATCH ? free_slots : BATCH;
	uint32_t base;
	uint64_t now;
	int got;

	if (!want)
		return 0; /* queue full: leave the rest in the socket buffer */
	memset(msgs, 0, sizeof(msgs));
	for (uint32_t j = 0; j < want; j++) {
		uint32_t slot = (r->head + r->count + j) % r->cap;

		iov[j].iov_base = r->data + (size_t)slot * SLOT_BYTES;
		iov[j].iov_len = SLOT_BYTES;
		msgs[j].msg_hdr.msg_iov = &iov[j];
		msgs[j].msg_hdr.msg_iovlen = 1;
		msgs[j].msg_hdr.msg_name = &from[j];
		msgs[j].msg_hdr.msg_namelen = sizeof(from[j]);
		msgs[j].msg_hdr.msg_control = ctrl[j];
		msgs[j].msg_hdr.msg_controllen = sizeof(ctrl[j]);
	}
	got = recvmmsg(r->in_fd, msgs, want, MSG_DONTWAIT, NULL);
	if (got <= 0)
		return 0;
	now = now_ns();
	base = r->head + r->count;
	for (int j = 0; j < got; j++) {
		uint32_t slot = (r->head + r->count) % r->cap;
		uint32_t landed = (base + (uint32_t)j) % r->cap;
		int32_t s = relay_stream_of(r, ntohs(from[j].sin_port));

		r->received++;
		r->rx_overflow = rx_overflow(&msgs[j].msg_hdr, r->rx_overflow);
		if (s < 0 || (msgs[j].msg_hdr.msg_flags & MSG_TRUNC)) {
			/* More sources than output sockets (nowhere to send it), or too long. */
			r->unknown++;
			r->dropped++;
			continue;
		}
		/* A dropped datagram before this one left a hole: close it. */
		if (slot != landed)
			memcpy(r->data + (size_t)slot * SLOT_BYTES,
			       r->data + (size_t)landed * SLOT_BYTES, msgs[j].msg_len);
		r->len[slot] = (uint16_t)msgs[j].msg_len;
		r->stream[slot] = s;
		r->due[slot] = now + r->hold_ns;
		r->count++;
	}
	if (r->count > r->max_count)
		r->max_count = r->count;
	return got == (int)want;
}

static int run_relay(struct opts *o)
{
	struct sockaddr_in to = ipv4(o->mode, o->dest_ip, o->dest_port);
	struct relay r = { 0 };
	uint64_t next_tick = 0;
	int ep;
	double user_s, sys_s;
	uint64_t queued_at_exit;

	if (!o->listen_port || !o->dest_port || !o->sport_base)
		die(o->mode, "--listen, --to and --sport-base are required", 0);
	raise_nofile(o->mode, o->streams + 64);
	r.n = o->streams;
	r.cap = (uint32_t)o->queue;
	r.hold_ns = (uint64_t)(o->hold_ms * 1e6);
	r.out_fds = calloc((size_t)r.n, sizeof(int));
	r.stream_of_port = malloc(65536 * sizeof(int32_t));
	r.data = malloc((size_t)r.cap * SLOT_BYTES);
	r.len = calloc(r.cap, sizeof(uint16_t));
	r.stream = calloc(r.cap, sizeof(int32_t));
	r.due = calloc(r.cap, sizeof(uint64_t));
	if (!r.out_fds || !r.stream_of_port || !r.data || !r.len || !r.stream || !r.due)
		die(o->mode, "allocating the hold queue", ENOMEM);
	memset(r.stream_of_port, 0xff, 65536 * sizeof(int32_t));
	for (int s = 0; s < r.n; s++)
		r.out_fds[s] = udp_socket(o->mode, o->sport_base + s, &to);
	r.in_fd = listen_socket(o->mode, o->listen_port);
	r.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (r.timer_fd < 0)
		die(o->mode, "timerfd_create", errno);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die(o->mode, "epoll_create1", errno);
	epoll_add(o->mode, ep, r.in_fd);
	epoll_add(o->mode, ep, r.timer_fd);
	emit_ready("relay", o->listen_port);
	while (!stop_requested) {
		struct epoll_event evs[2];
		uint64_t expirations;
		int more = 1;

		if (o->tick_ns) {
			wait_tick(o->tick_ns, &next_tick);
		} else {
			if (epoll_wait(ep, evs, 2, -1) < 0 && errno != EINTR)
				die(o->mode, "epoll_wait", errno);
			if (read(r.timer_fd, &expirations, sizeof(expirations)) > 0)
				r.timer_armed_for = 0;
		}
		/* Receive and send in turns, so a flood on input never starves output. */
		while (more && !stop_requested) {
			more = relay_receive(&r);
			relay_forward_due(&r, now_ns());
		}
		if (!o->tick_ns)
			relay_arm(&r, o->mode);
	}
	queued_at_exit = r.count;
	r.dropped += queued_at_exit;
	cpu_times(&user_s, &sys_s);
	printf("{\"event\":\"report\",\"role\":\"relay\",\"streams\":%d,\"received\":%" PRIu64
	       ",\"forwarded\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"unknownSource\":%" PRIu64
	       ",\"sendErrors\":%" PRIu64 ",\"queuedAtExit\":%" PRIu64 ",\"maxQueued\":%u"
	       ",\"rxOverflow\":%u,\"lateMaxUs\":%.0f,\"cpuUserS\":%.3f,\"cpuSysS\":%.3f}\n",
	       r.streams_seen, r.received, r.forwarded, r.dropped, r.unknown, r.send_errors,
	       queued_at_exit, r.max_count, r.rx_overflow, (double)r.late_max_ns / 1e3, user_s,
	       sys_s);
	fflush(stdout);
	return 0;
}

/* ---- sink --------------------------------------------------------------- */

struct sink_stream {
	uint64_t received;
	uint16_t next_seq;
	uint8_t seen;
};

static int run_sink(struct opts *o)
{
	struct sink_stream *per_port = calloc(65536, sizeof(*per_port));
	uint64_t received = 0, bytes = 0, gaps = 0, late = 0;
	uint32_t overflow = 0;
	uint64_t next_tick = 0;
	int streams = 0, fd, ep;
	double user_s, sys_s;

	if (!per_port)
		die(o->mode, "calloc", ENOMEM);
	if (!o->listen_port)
		die(o->mode, "--listen is required", 0);
	fd = listen_socket(o->mode, o->listen_port);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die(o->mode, "epoll_create1", errno);
	epoll_add(o->mode, ep, fd);
	emit_ready("sink", o->listen_port);
	while (!stop_requested) {
		static uint8_t bufs[BATCH][SLOT_BYTES];
		struct mmsghdr msgs[BATCH];
		struct iovec iov[BATCH];
		struct sockaddr_in from[BATCH];
		char ctrl[BATCH][CMSG_SPACE(sizeof(uint32_t))];
		struct epoll_event ev;
		int got;

		memset(msgs, 0, sizeof(msgs));
		for (int j = 0; j < BATCH; j++) {
			iov[j].iov_base = bufs[j];
			iov[j].iov_len = SLOT_BYTES;
			msgs[j].msg_hdr.msg_iov = &iov[j];
			msgs[j].msg_hdr.msg_iovlen = 1;
			msgs[j].msg_hdr.msg_name = &from[j];
			msgs[j].msg_hdr.msg_namelen = sizeof(from[j]);
			msgs[j].msg_hdr.msg_control = ctrl[j];
			msgs[j].msg_hdr.msg_controllen = sizeof(ctrl[j]);
		}
		got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (got <= 0) {
			if (o->tick_ns)
				wait_tick(o->tick_ns, &next_tick);
			else if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR)
				die(o->mode, "epoll_wait", errno);
			continue;
		}
		for (int j = 0; j < got; j++) {
			struct sink_stream *s = &per_port[ntohs(from[j].sin_port)];
			const uint8_t *p = bufs[j];

			received++;
			bytes += msgs[j].msg_len;
			overflow = rx_overflow(&msgs[j].msg_hdr, overflow);
			s->received++;
			if (msgs[j].msg_len < RTP_HEADER)
				continue;
			uint16_t seq = (uint16_t)(p[2] << 8 | p[3]);

			if (!s->seen) {
				s->seen = 1;
				streams++;
			} else {
				uint16_t d = (uint16_t)(seq - s->next_seq);

				if (d >= 0x8000) {
					late++; /* behind the newest one: it was counted as a gap */
					continue;
				}
				gaps += d;
			}
			s->next_seq = (uint16_t)(seq + 1);
		}
	}
	cpu_times(&user_s, &sys_s);
	printf("{\"event\":\"report\",\"role\":\"sink\",\"received\":%" PRIu64 ",\"bytes\":%" PRIu64
	       ",\"streams\":%d,\"seqGaps\":%" PRIu64 ",\"late\":%" PRIu64 ",\"rxOverflow\":%u"
	       ",\"cpuUserS\":%.3f,\"cpuSysS\":%.3f}\n",
	       received, bytes, streams, gaps, late, overflow, user_s, sys_s);
	fflush(stdout);
	return 0;
}

/* ---- predict: windows as docs/signatures.md counts them ----------------- */

static int16_t ulaw_to_linear(uint8_t byte)
{
	uint8_t u = (uint8_t)~byte;
	int t = ((u & 0x0f) << 3) + 0x84;

	t <<= (u & 0x70) >> 4;
	return (int16_t)((u & 0x80) ? 0x84 - t : t - 0x84);
}

struct signer {
	uint64_t gear[256];
	int16_t ulaw[256];
	int w, bits;
	uint64_t threshold_sq_n; /* SILENCE_THRESHOLD^2 * W samples */
	uint8_t *ring;
	uint32_t ring_mask;
	/* the stream */
	uint64_t h, pos;
	uint64_t open[MAX_OPEN_WINDOWS]; /* anchor positions, FIFO */
	int open_head, open_count;
	/* counts */
	uint64_t windows, silent, signatures, anchors_dropped;
};

static void signer_init(struct signer *g, int w, int silence)
{
	uint64_t state = GEAR_SEED;
	uint64_t thr = (uint64_t)(silence > 65535 ? 65535 : silence);
	uint32_t cap = 1;

	memset(g, 0, sizeof(*g));
	for (int i = 0; i < 256; i++) {
		g->gear[i] = splitmix64(&state);
		g->ulaw[i] = ulaw_to_linear((uint8_t)i);
	}
	g->w = w;
	while ((1 << (g->bits + 1)) <= w)
		g->bits++;
	while (cap < (uint32_t)w)
		cap <<= 1;
	g->ring = malloc(cap);
	if (!g->ring)
		die("predict", "malloc", ENOMEM);
	g->ring_mask = cap - 1;
	g->threshold_sq_n = thr * thr * (uint64_t)w;
}

static void signer_reset_stream(struct signer *g)
{
	g->h = 0;
	g->pos = 0;
	g->open_head = 0;
	g->open_count = 0;
}

/* The silence gate for a G.711 mu-law window ending at stream position `last`. */
static int window_silent(struct signer *g, uint64_t last)
{
	uint8_t seen[256] = { 0 };
	int distinct = 0;
	uint64_t sum = 0;

	for (int k = 0; k < g->w; k++) {
		uint8_t b = g->ring[(last - (uint64_t)g->w + 1 + (uint64_t)k) & g->ring_mask];
		int64_t x = g->ulaw[b];

		if (!seen[b]) {
			seen[b] = 1;
			distinct++;
		}
		sum += (uint64_t)(x * x);
	}
	return distinct < 8 || sum < g->threshold_sq_n;
}

static void signer_push(struct signer *g, const uint8_t *audio, int len)
{
	int shift = 64 - g->bits;

	for (int i = 0; i < len; i++) {
		uint64_t q = g->pos++;

		g->h = (g->h << 1) + g->gear[audio[i]];
		g->ring[q & g->ring_mask] = audio[i];
		/* The window byte q completes is settled before q's own anchor test. */
		if (g->open_count && g->open[g->open_head] + (uint64_t)g->w == q) {
			g->open_head = (g->open_head + 1) % MAX_OPEN_WINDOWS;
			g->open_count--;
			g->windows++;
			if (window_silent(g, q))
				g->silent++;
			else
				g->signatures++;
		}
		if ((g->h >> shift) == 0 && q + 1 >= GEAR_SPAN) {
			if (g->open_count >= MAX_OPEN_WINDOWS) {
				g->anchors_dropped++;
				continue;
			}
			g->open[(g->open_head + g->open_count) % MAX_OPEN_WINDOWS] = q;
			g->open_count++;
		}
	}
}

static int run_predict(struct opts *o)
{
	struct signer g;
	uint8_t pkt[PACKET];
	uint64_t total_before = 0;

	if (!o->packets)
		die(o->mode, "--packets is required", 0);
	signer_init(&g, o->window, o->silence);
	printf("{\"event\":\"prediction\",\"first\":%d,\"streams\":%d,\"packetsPerStream\":%" PRIu64
	       ",\"window\":%d,\"silence\":%d,\"perStream\":[",
	       o->stream, o->streams, o->packets, o->window, o->silence);
	/* --stream: the first stream index, so a long prediction can be split. */
	for (int s = o->stream; s < o->stream + o->streams; s++) {
		struct stream_src src;

		stream_init(&src, o->seed, s);
		signer_reset_stream(&g);
		for (uint64_t k = 0; k < o->packets; k++) {
			stream_packet(&src, pkt, k == 0);
			signer_push(&g, pkt + RTP_HEADER, PAYLOAD);
		}
		printf("%s%" PRIu64, s > o->stream ? "," : "", g.signatures - total_before);
		total_before = g.signatures;
	}
	printf("],\"windows\":%" PRIu64 ",\"silent\":%" PRIu64 ",\"signatures\":%" PRIu64
	       ",\"anchorsDropped\":%" PRIu64 "}\n",
	       g.windows, g.silent, g.signatures, g.anchors_dropped);
	fflush(stdout);
	free(g.ring);
	return 0;
}

static int run_dump(struct opts *o)
{
	struct stream_src src;
	uint8_t pkt[PACKET];

	if (!o->packets)
		die(o->mode, "--packets is required", 0);
	stream_init(&src, o->seed, o->stream);
	for (uint64_t k = 0; k < o->packets; k++) {
		stream_packet(&src, pkt, k == 0);
		if (fwrite(pkt + RTP_HEADER, 1, PAYLOAD, stdout) != PAYLOAD)
			die(o->mode, "write", errno);
	}
	fflush(stdout);
	return 0;
}

/* ---- bulk TCP (when iperf3 is not installed) ---------------------------- */

static int run_bulk_sink(struct opts *o)
{
	struct sockaddr_in local = ipv4(o->mode, NULL, o->listen_port);
	static uint8_t buf[1 << 18];
	uint64_t bytes = 0;
	int one = 1, lfd, fd;
	double user_s, sys_s;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die(o->mode, "socket", errno);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&local, sizeof(local)) || listen(lfd, 4))
		die(o->mode, "bind/listen TCP", errno);
	emit_ready("bulk-sink", o->listen_port);
	fd = accept(lfd, NULL, NULL);
	while (fd >= 0 && !stop_requested) {
		ssize_t got = read(fd, buf, sizeof(buf));

		if (got <= 0)
			break;
		bytes += (uint64_t)got;
	}
	cpu_times(&user_s, &sys_s);
	printf("{\"event\":\"report\",\"role\":\"bulk-sink\",\"bytes\":%" PRIu64
	       ",\"cpuUserS\":%.3f,\"cpuSysS\":%.3f}\n",
	       bytes, user_s, sys_s);
	fflush(stdout);
	return 0;
}

static int run_bulk_send(struct opts *o)
{
	struct sockaddr_in dest = ipv4(o->mode, o->dest_ip, o->dest_port);
	static uint8_t buf[1 << 16];
	uint64_t bytes = 0, t0, end, rate_bps = (uint64_t)(o->mbps * 1e6 / 8);
	uint64_t state = o->seed;
	int fd;
	double user_s, sys_s;

	for (size_t i = 0; i < sizeof(buf); i += 8) {
		uint64_t r = splitmix64(&state);

		memcpy(buf + i, &r, 8);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dest, sizeof(dest)))
		die(o->mode, "connect TCP", errno);
	emit_ready("bulk-send", o->dest_port);
	t0 = now_ns();
	end = o->duration_s > 0 ? t0 + (uint64_t)(o->duration_s * 1e9) : UINT64_MAX;
	while (!stop_requested && now_ns() < end) {
		uint64_t now = now_ns();
		/* --mbps 0: as fast as possible; else a budget that grows with time. */
		if (rate_bps && bytes > (now - t0) * rate_bps / 1000000000ULL) {
			struct timespec ts = { 0, 1000000 };

			nanosleep(&ts, NULL);
			continue;
		}
		ssize_t put = write(fd, buf, sizeof(buf));

		if (put <= 0)
			break;
		bytes += (uint64_t)put;
	}
	close(fd);
	cpu_times(&user_s, &sys_s);
	printf("{\"event\":\"report\",\"role\":\"bulk-send\",\"bytes\":%" PRIu64
	       ",\"elapsedS\":%.3f,\"cpuUserS\":%.3f,\"cpuSysS\":%.3f}\n",
	       bytes, (double)(now_ns() - t0) / 1e9, user_s, sys_s);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };

	if (argc < 2) {
		fprintf(stderr, "usage: udp-load send|relay|sink|predict|dump|bulk-send|bulk-sink "
				"[options] (see the comment at the top of udp-load.c)\n");
		return 2;
	}
	o.mode = argv[1];
	parse_opts(&o, argc, argv);
	install_signals();
	if (!strcmp(o.mode, "send"))
		return run_send(&o);
	if (!strcmp(o.mode, "relay"))
		return run_relay(&o);
	if (!strcmp(o.mode, "sink"))
		return run_sink(&o);
	if (!strcmp(o.mode, "predict"))
		return run_predict(&o);
	if (!strcmp(o.mode, "dump"))
		return run_dump(&o);
	if (!strcmp(o.mode, "bulk-sink"))
		return run_bulk_sink(&o);
	if (!strcmp(o.mode, "bulk-send"))
		return run_bulk_send(&o);
	die(o.mode, "unknown mode", 0);
	return 2;
}
