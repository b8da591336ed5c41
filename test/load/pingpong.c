// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * UDP ping-pong for the overhead bench (test/bench/overhead.ts).
 *
 *   pingpong server PORT
 *   pingpong client IP PORT [--count N] [--warmup N] [--size B] [--rate R]
 *                           [--cport P] [--seed S] [--samples]
 *
 * The server echoes every datagram as it came. The client sends RTP-shaped
 * datagrams (version 2, PT 0, its own sequence and timestamp, then noise:
 * what the classifier takes for G.711 audio, an event per packet on an audio
 * port) and times each round trip with CLOCK_MONOTONIC around a blocking
 * send and a blocking receive. sockperf is not used for this: its payload is
 * its own header and zeros, which the classifier reads as silent raw PCM, so
 * it would measure less than audio costs.
 *
 * --rate R paces R round trips per second (absolute due times, so a slow
 * round does not shift the rest); 0 sends back to back. The same seed gives
 * the same bytes on every run: the phases with and without the agent see
 * identical traffic. Output: one JSON line (counts and percentiles in ns),
 * then with --samples every RTT in ns, one per line, in send order.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 1472
#define RTP_HEADER 12
#define RECV_TIMEOUT_MS 200

struct client_opts {
	const char *ip;
	int port;
	long count;
	long warmup;
	int size;
	long rate;
	int cport;
	uint32_t seed;
	int samples;
};

static void __attribute__((noreturn)) die(const char *what, const char *detail)
{
	fprintf(stderr, "pingpong: %s%s%s: %s\n", what, detail ? " " : "", detail ? detail : "",
		strerror(errno));
	exit(1);
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: pingpong server PORT\n"
			"       pingpong client IP PORT [--count N] [--warmup N] [--size B]"
			" [--rate R] [--cport P] [--seed S] [--samples]\n");
	exit(2);
}

static long parse_long(const char *s, long lo, long hi, const char *name)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "pingpong: %s: '%s' is not an integer in [%ld, %ld]\n", name, s, lo,
			hi);
		exit(2);
	}
	return v;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int udp_socket(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0)
		die("socket", NULL);
	if (port && bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind port", NULL);
	return fd;
}

static void __attribute__((noreturn)) run_server(int port)
{
	unsigned char buf[MAX_SIZE];
	struct sockaddr_in peer;
	socklen_t plen;
	ssize_t n;
	int fd = udp_socket(port);

	printf("{\"event\":\"ready\",\"port\":%d}\n", port);
	fflush(stdout);
	for (;;) {
		plen = sizeof(peer);
		n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("recvfrom", NULL);
		}
		if (sendto(fd, buf, n, 0, (struct sockaddr *)&peer, plen) < 0 && errno != ENOBUFS)
			die("sendto", NULL);
	}
}

static uint32_t xorshift(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

/* RTP header for packet i, then noise: loud G.711 as far as any level check goes. */
static void fill_packet(unsigned char *p, int size, uint32_t i, uint32_t *rng)
{
	uint32_t ts = i * 160, ssrc = 0x5a5a1234;
	int k;

	p[0] = 0x80;
	p[1] = 0; /* PT 0: PCMU */
	p[2] = i >> 8;
	p[3] = i;
	memcpy(p + 4, &(uint32_t){ htonl(ts) }, 4);
	memcpy(p + 8, &(uint32_t){ htonl(ssrc) }, 4);
	for (k = RTP_HEADER; k < size; k++)
		p[k] = xorshift(rng) >> 24;
}

/* 1: the reply to packet seq arrived; 0: timed out (stale replies are skipped). */
static int await_reply(int fd, unsigned char *buf, const unsigned char *sent, int size)
{
	ssize_t n;

	for (;;) {
		n = recv(fd, buf, MAX_SIZE, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			die("recv", NULL);
		}
		if (n == size && !memcmp(buf, sent, n))
			return 1;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: an RTT that was measured, never an interpolation. */
static uint64_t rank(const uint64_t *sorted, long n, double q)
{
	long r = (long)((double)n * q + 0.999999999);

	if (r < 1)
		r = 1;
	return sorted[(r > n ? n : r) - 1];
}

static int run_client(const struct client_opts *o)
{
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(o->port) };
	struct timeval tv = { .tv_sec = 0, .tv_usec = RECV_TIMEOUT_MS * 1000 };
	unsigned char out[MAX_SIZE], in[MAX_SIZE];
	uint64_t *rtt, *sorted, interval, start, t0, t1;
	struct timespec due;
	long i, total = o->warmup + o->count, got = 0, lost = 0;
	uint32_t rng = o->seed ? o->seed : 1;
	int fd = udp_socket(o->cport);

	if (inet_pton(AF_INET, o->ip, &dst.sin_addr) != 1) {
		fprintf(stderr, "pingpong: '%s' is not an IPv4 address\n", o->ip);
		return 2;
	}
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)))
		die("connect", o->ip);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
		die("setsockopt SO_RCVTIMEO", NULL);
	rtt = calloc(o->count, sizeof(*rtt));
	sorted = calloc(o->count, sizeof(*sorted));
	if (!rtt || !sorted)
		die("calloc", NULL);
	interval = o->rate ? 1000000000ull / (uint64_t)o->rate : 0;
	start = now_ns();
	for (i = 0; i < total; i++) {
		fill_packet(out, o->size, (uint32_t)i, &rng);
		t0 = now_ns();
		if (send(fd, out, o->size, 0) != o->size)
			die("send", NULL);
		if (!await_reply(fd, in, out, o->size)) {
			if (i >= o->warmup)
				lost++;
		} else if (i >= o->warmup) {
			t1 = now_ns();
			rtt[got++] = t1 - t0;
		}
		if (interval) {
			uint64_t next = start + (uint64_t)(i + 1) * interval;

			due.tv_sec = next / 1000000000ull;
			due.tv_nsec = next % 1000000000ull;
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
				;
		}
	}
	memcpy(sorted, rtt, got * sizeof(*rtt));
	qsort(sorted, got, sizeof(*sorted), cmp_u64);
	if (!got) {
		printf("{\"event\":\"result\",\"count\":0,\"lost\":%ld}\n", lost);
		return 1;
	}
	printf("{\"event\":\"result\",\"count\":%ld,\"lost\":%ld,\"min_ns\":%llu,\"p50_ns\":%llu,"
	       "\"p90_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu,\"max_ns\":%llu,"
	       "\"elapsed_ns\":%llu}\n",
	       got, lost, (unsigned long long)sorted[0], (unsigned long long)rank(sorted, got, 0.5),
	       (unsigned long long)rank(sorted, got, 0.9), (unsigned long long)rank(sorted, got, 0.99),
	       (unsigned long long)rank(sorted, got, 0.999), (unsigned long long)sorted[got - 1],
	       (unsigned long long)(now_ns() - start));
	if (o->samples)
		for (i = 0; i < got; i++)
			printf("%llu\n", (unsigned long long)rtt[i]);
	return 0;
}

int main(int argc, char **argv)
{
	struct client_opts o = { .count = 10000, .warmup = 500, .size = 172, .seed = 1 };
	int i;

	if (argc == 3 && !strcmp(argv[1], "server"))
		run_server((int)parse_long(argv[2], 1, 65535, "PORT"));
	if (argc < 4 || strcmp(argv[1], "client"))
		usage();
	o.ip = argv[2];
	o.port = (int)parse_long(argv[3], 1, 65535, "PORT");
	for (i = 4; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--samples")) {
			o.samples = 1;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--count"))
			o.count = parse_long(v, 1, 100000000, a);
		else if (!strcmp(a, "--warmup"))
			o.warmup = parse_long(v, 0, 100000000, a);
		else if (!strcmp(a, "--size"))
			o.size = (int)parse_long(v, RTP_HEADER, MAX_SIZE, a);
		else if (!strcmp(a, "--rate"))
			o.rate = parse_long(v, 0, 1000000, a);
		else if (!strcmp(a, "--cport"))
			o.cport = (int)parse_long(v, 0, 65535, a);
		else if (!strcmp(a, "--seed"))
			o.seed = (uint32_t)parse_long(v, 0, 4294967295L, a);
		else
			usage();
	}
	return run_client(&o);
}
