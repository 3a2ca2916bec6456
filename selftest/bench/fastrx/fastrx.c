// SPDX-License-Identifier: MIT
//
// fastrx: the receiver a careful C programmer writes against the devmem TCP
// UAPI, as the reference that our Go receiver is measured against (and, with
// -m tcp, the plain TCP receiver that devmem has to beat). Written for this
// repository from include/uapi/linux/uio.h, net/core/sock.c and
// Documentation/networking/devmem.rst; no code taken from elsewhere.
//
// What makes it "optimized", compared with the kernel's selftest ncdevmem:
//   * one recvmsg(MSG_SOCK_DEVMEM) per call with an 819200-byte iovec and a
//     control buffer with room for 2048 frags, so the iovec is what ends a call;
//   * tokens returned with SO_DEVMEM_DONTNEED in batches of -b tokens (128:
//     the kernel's MAX_DONTNEED_TOKENS entries), consecutive tokens merged
//     into one range, never one call per frag and never one per recvmsg;
//   * validation (-v) in place in the mmap of the dma-buf, with memcmp
//     against a pattern table, bracketed by one DMA_BUF_IOCTL_SYNC start/end
//     pair per recvmsg; no copy, no per-byte output, no logging.
//
// The NIC setup (header split, RSS, ntuple rules) and bind-rx are done by the
// caller (selftest/bench), which passes the dma-buf as an inherited fd (-d)
// and the binding id (-i): what is measured is the receive loop.
//
// Modes (-m):
//   devmem     recvmsg(MSG_SOCK_DEVMEM) into the dma-buf, as above
//   tcp        plain recv() into a user buffer, bytes discarded
//   tcp-touch  plain recv() and every byte read once (validated with -v 7,
//              or summed otherwise): what a copy receive really costs
//
// It accepts -n connections on -a ADDR -p PORT and receives each in its own
// thread until EOF. With -r K the last K flows (by peer port: flow index =
// peer port - -P BASE) are request/response: after each -q bytes received it
// writes a -R byte response. At exit it prints one line:
//   bytes=N recvmsg=N frags=N linear=N readable=N dontneed=N tokens=N
//   max_outstanding=N responses=N mismatches=N sum=N cpu_us=N cpu_sys_us=N
//   csw_vol=N csw_invol=N
// (cpu_us: user+sys of all threads from the last accept to the end; csw:
// their voluntary and involuntary context switches then) and
// exits 0, or 1 with a message on stderr (validation failure, steering
// error, a token the kernel did not free).
//
// gcc -O2 -pthread -o fastrx fastrx.c (selftest/bench/run.sh builds it)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The UAPI, as in include/uapi/linux/uio.h, asm-generic/socket.h and
 * linux/socket.h (MSG_SOCK_DEVMEM is not in the UAPI headers). */
#ifndef MSG_SOCK_DEVMEM
#define MSG_SOCK_DEVMEM 0x2000000
#endif
#ifndef SO_DEVMEM_LINEAR
#define SO_DEVMEM_LINEAR 78
#endif
#ifndef SO_DEVMEM_DMABUF
#define SO_DEVMEM_DMABUF 79
#endif
#ifndef SO_DEVMEM_DONTNEED
#define SO_DEVMEM_DONTNEED 80
#endif
#define SCM_DEVMEM_LINEAR_ SO_DEVMEM_LINEAR
#define SCM_DEVMEM_DMABUF_ SO_DEVMEM_DMABUF

struct devmem_frag { /* struct dmabuf_cmsg */
	uint64_t frag_offset;
	uint32_t frag_size;
	uint32_t frag_token;
	uint32_t dmabuf_id;
	uint32_t flags;
};

struct devmem_token { /* struct dmabuf_token */
	uint32_t token_start;
	uint32_t token_count;
};

/* linux/dma-buf.h */
struct dmabuf_sync {
	uint64_t flags;
};
#define DMABUF_SYNC_READ 1ULL
#define DMABUF_SYNC_START 0ULL
#define DMABUF_SYNC_END 4ULL
#define DMABUF_IOCTL_SYNC _IOW('b', 0, struct dmabuf_sync)

#define MAX_RANGES 128 /* MAX_DONTNEED_TOKENS in net/core/sock.c */
#define CTRL_FRAGS 2048
#define PATTERN_CHUNK 65536

enum mode { MODE_DEVMEM, MODE_TCP, MODE_TCP_TOUCH };

static struct {
	enum mode mode;
	const char *addr;
	int port, flows, peer_base, rr_flows, req, resp;
	int dmabuf_fd;
	uint32_t dmabuf_id;
	int validate; /* the -v modulus: 7 for ncdevmem's pattern, 0 off */
	int batch;
	size_t bufsize;
	uint8_t *mem;
	size_t mem_size;
	uint8_t pattern[PATTERN_CHUNK + 256];
} cfg = {
	.mode = MODE_DEVMEM,
	.addr = "0.0.0.0",
	.port = 5201,
	.flows = 1,
	.dmabuf_fd = -1,
	.batch = 128,
	.bufsize = 819200,
	.req = 256,
	.resp = 64,
};

/* Outstanding tokens of all flows together, and the peak. */
static long g_outstanding, g_max_outstanding;

struct flow {
	pthread_t thread;
	int fd, index, rr;
	uint64_t pos; /* stream offset, for validation */
	uint64_t bytes, recvmsgs, frags, linear, readable, dontneed, tokens,
		responses, mismatches, sum;
	long held; /* tokens received and not yet returned */
	struct devmem_token ranges[MAX_RANGES];
	int nranges, npending;
	char err[256];
};

static void fail(struct flow *f, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void fail(struct flow *f, const char *fmt, ...)
{
	va_list ap;

	if (f->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
}

static void outstanding_add(long n)
{
	long now = __atomic_add_fetch(&g_outstanding, n, __ATOMIC_RELAXED);
	long peak = __atomic_load_n(&g_max_outstanding, __ATOMIC_RELAXED);

	while (now > peak &&
	       !__atomic_compare_exchange_n(&g_max_outstanding, &peak, now, 1,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/* check compares p[0:n] with the pattern at stream offset f->pos. */
static void check(struct flow *f, const uint8_t *p, size_t n)
{
	while (n) {
		size_t chunk = n < PATTERN_CHUNK ? n : PATTERN_CHUNK;
		const uint8_t *want = cfg.pattern + f->pos % cfg.validate;

		if (memcmp(p, want, chunk)) {
			for (size_t i = 0; i < chunk; i++) {
				if (p[i] != want[i]) {
					if (!f->mismatches)
						fail(f, "flow %d: byte %llu is %u, want %u",
						     f->index,
						     (unsigned long long)(f->pos + i),
						     p[i], want[i]);
					f->mismatches++;
				}
			}
		}
		f->pos += chunk;
		p += chunk;
		n -= chunk;
	}
}

/* touch reads every byte once (a sum) when not validating. */
static void touch(struct flow *f, const uint8_t *p, size_t n)
{
	uint64_t s = 0;

	if (cfg.validate) {
		check(f, p, n);
		return;
	}
	for (size_t i = 0; i < n; i++)
		s += p[i];
	f->sum += s;
	f->pos += n;
}

static int dontneed(struct flow *f)
{
	int freed;

	if (!f->nranges)
		return 0;
	freed = setsockopt(f->fd, SOL_SOCKET, SO_DEVMEM_DONTNEED, f->ranges,
			   f->nranges * sizeof(f->ranges[0]));
	f->dontneed++;
	if (freed < 0) {
		fail(f, "flow %d: SO_DEVMEM_DONTNEED: %s", f->index,
		     strerror(errno));
		return -1;
	}
	if (freed != f->npending) {
		fail(f, "flow %d: SO_DEVMEM_DONTNEED freed %d of %d tokens",
		     f->index, freed, f->npending);
		return -1;
	}
	f->tokens += freed;
	f->held -= freed;
	outstanding_add(-freed);
	f->nranges = 0;
	f->npending = 0;
	return 0;
}

static int release(struct flow *f, uint32_t token)
{
	struct devmem_token *last = f->nranges ? &f->ranges[f->nranges - 1] : NULL;

	if (last && last->token_start + last->token_count == token) {
		last->token_count++;
	} else {
		f->ranges[f->nranges].token_start = token;
		f->ranges[f->nranges].token_count = 1;
		f->nranges++;
	}
	if (++f->npending >= cfg.batch || f->nranges == MAX_RANGES)
		return dontneed(f);
	return 0;
}

static int sync_dmabuf(uint64_t flags)
{
	struct dmabuf_sync s = { .flags = flags | DMABUF_SYNC_READ };

	return ioctl(cfg.dmabuf_fd, DMABUF_IOCTL_SYNC, &s);
}

/* respond writes a response for every -q bytes of requests received. */
static int respond(struct flow *f, uint64_t *inreq, size_t n)
{
	static const uint8_t zeros[65536];

	*inreq += n;
	while (*inreq >= (uint64_t)cfg.req) {
		*inreq -= cfg.req;
		for (int left = cfg.resp; left > 0;) {
			ssize_t w = write(f->fd, zeros, left);

			if (w < 0) {
				if (errno == EINTR)
					continue;
				fail(f, "flow %d: write: %s", f->index,
				     strerror(errno));
				return -1;
			}
			left -= w;
		}
		f->responses++;
	}
	return 0;
}

static void *rx_devmem(void *arg)
{
	struct flow *f = arg;
	uint8_t *buf = malloc(cfg.bufsize);
	size_t ctrl_len = CMSG_SPACE(sizeof(struct devmem_frag)) * CTRL_FRAGS;
	uint8_t *ctrl = malloc(ctrl_len);
	uint64_t inreq = 0;

	if (!buf || !ctrl) {
		fail(f, "out of memory");
		return NULL;
	}
	for (;;) {
		struct iovec iov = { .iov_base = buf, .iov_len = cfg.bufsize };
		struct msghdr msg = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctrl,
			.msg_controllen = ctrl_len,
		};
		size_t lin = 0, nfrags = 0;
		ssize_t n = recvmsg(f->fd, &msg, MSG_SOCK_DEVMEM);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail(f, "flow %d: recvmsg: %s", f->index,
			     strerror(errno));
			break;
		}
		if (n == 0)
			break;
		f->recvmsgs++;
		f->bytes += n;
		if (cfg.validate && sync_dmabuf(DMABUF_SYNC_START)) {
			fail(f, "DMA_BUF_IOCTL_SYNC: %s", strerror(errno));
			break;
		}
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm;
		     cm = CMSG_NXTHDR(&msg, cm)) {
			struct devmem_frag *d = (void *)CMSG_DATA(cm);

			if (cm->cmsg_level != SOL_SOCKET)
				continue;
			if (cm->cmsg_type == SCM_DEVMEM_LINEAR_) {
				if (lin + d->frag_size > (size_t)n) {
					fail(f, "linear frag past the data");
					goto out;
				}
				if (cfg.validate)
					check(f, buf + lin, d->frag_size);
				lin += d->frag_size;
				f->linear += d->frag_size;
				continue;
			}
			if (cm->cmsg_type != SCM_DEVMEM_DMABUF_)
				continue;
			nfrags++;
			if (d->dmabuf_id != cfg.dmabuf_id) {
				fail(f, "flow %d: frag of dma-buf %u, ours is %u (steering)",
				     f->index, d->dmabuf_id, cfg.dmabuf_id);
				goto out;
			}
			if (d->frag_offset + d->frag_size > cfg.mem_size) {
				fail(f, "frag [%llu,+%u) outside the dma-buf",
				     (unsigned long long)d->frag_offset,
				     d->frag_size);
				goto out;
			}
			if (cfg.validate)
				check(f, cfg.mem + d->frag_offset, d->frag_size);
			f->held++;
			outstanding_add(1);
			if (release(f, d->frag_token))
				goto out;
		}
		if (cfg.validate && sync_dmabuf(DMABUF_SYNC_END)) {
			fail(f, "DMA_BUF_IOCTL_SYNC: %s", strerror(errno));
			break;
		}
		f->frags += nfrags;
		if (!nfrags && !lin) {
			/* No devmem cmsg: the kernel copied readable data. */
			f->readable += n;
			if (cfg.validate)
				check(f, buf, n);
		}
		if (f->rr && respond(f, &inreq, n))
			break;
	}
out:
	dontneed(f);
	free(buf);
	free(ctrl);
	return NULL;
}

static void *rx_tcp(void *arg)
{
	struct flow *f = arg;
	uint8_t *buf = malloc(cfg.bufsize);
	uint64_t inreq = 0;

	if (!buf) {
		fail(f, "out of memory");
		return NULL;
	}
	for (;;) {
		ssize_t n = recv(f->fd, buf, cfg.bufsize, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail(f, "flow %d: recv: %s", f->index, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		f->recvmsgs++;
		f->bytes += n;
		if (cfg.mode == MODE_TCP_TOUCH)
			touch(f, buf, n);
		if (f->rr && respond(f, &inreq, n))
			break;
	}
	free(buf);
	return NULL;
}

static long long cpu_us(const struct rusage *ru)
{
	return (ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1000000LL +
	       ru->ru_utime.tv_usec + ru->ru_stime.tv_usec;
}

static long long sys_us(const struct rusage *ru)
{
	return ru->ru_stime.tv_sec * 1000000LL + ru->ru_stime.tv_usec;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: fastrx [-m devmem|tcp|tcp-touch] [-a ADDR] [-p PORT] [-n FLOWS]\n"
		"              [-d DMABUF_FD -i DMABUF_ID] [-v 7] [-b BATCH] [-B BUFSIZE]\n"
		"              [-P PEER_BASE_PORT -r RR_FLOWS -q REQ -R RESP]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct flow *flows;
	int opt, ln, one = 1, status = 0;
	uint64_t t[10] = { 0 };
	long outstanding;
	struct rusage ru0, ru1;

	while ((opt = getopt(argc, argv, "m:a:p:n:d:i:v:b:B:P:r:q:R:")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "devmem"))
				cfg.mode = MODE_DEVMEM;
			else if (!strcmp(optarg, "tcp"))
				cfg.mode = MODE_TCP;
			else if (!strcmp(optarg, "tcp-touch"))
				cfg.mode = MODE_TCP_TOUCH;
			else
				usage();
			break;
		case 'a': cfg.addr = optarg; break;
		case 'p': cfg.port = atoi(optarg); break;
		case 'n': cfg.flows = atoi(optarg); break;
		case 'd': cfg.dmabuf_fd = atoi(optarg); break;
		case 'i': cfg.dmabuf_id = strtoul(optarg, NULL, 0); break;
		case 'v': cfg.validate = atoi(optarg); break;
		case 'b': cfg.batch = atoi(optarg); break;
		case 'B': cfg.bufsize = strtoul(optarg, NULL, 0); break;
		case 'P': cfg.peer_base = atoi(optarg); break;
		case 'r': cfg.rr_flows = atoi(optarg); break;
		case 'q': cfg.req = atoi(optarg); break;
		case 'R': cfg.resp = atoi(optarg); break;
		default: usage();
		}
	}
	if (cfg.flows < 1 || cfg.batch < 1 || cfg.batch > 1024 ||
	    cfg.bufsize < 1 || cfg.validate < 0 || cfg.validate > 256 ||
	    cfg.req < 1 || cfg.resp < 1 || cfg.resp > 65536 ||
	    cfg.rr_flows < 0 || cfg.rr_flows > cfg.flows)
		usage();
	for (size_t i = 0; i < sizeof(cfg.pattern) && cfg.validate; i++)
		cfg.pattern[i] = (i % cfg.validate) + 1 == (size_t)cfg.validate ?
					 '\n' : (i % cfg.validate) + 1;
	if (cfg.mode == MODE_DEVMEM) {
		struct stat st;

		if (cfg.dmabuf_fd < 0 || fstat(cfg.dmabuf_fd, &st)) {
			fprintf(stderr, "fastrx: devmem mode needs -d DMABUF_FD\n");
			return 1;
		}
		cfg.mem_size = lseek(cfg.dmabuf_fd, 0, SEEK_END);
		if (cfg.validate) {
			cfg.mem = mmap(NULL, cfg.mem_size, PROT_READ, MAP_SHARED,
				       cfg.dmabuf_fd, 0);
			if (cfg.mem == MAP_FAILED) {
				perror("fastrx: mmap of the dma-buf");
				return 1;
			}
		}
	}

	if (inet_pton(AF_INET, cfg.addr, &sin.sin_addr) != 1)
		usage();
	sin.sin_port = htons(cfg.port);
	ln = socket(AF_INET, SOCK_STREAM, 0);
	if (ln < 0 || setsockopt(ln, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(ln, (void *)&sin, sizeof(sin)) || listen(ln, cfg.flows)) {
		perror("fastrx: listen");
		return 1;
	}
	flows = calloc(cfg.flows, sizeof(*flows));
	if (!flows)
		return 1;
	for (int i = 0; i < cfg.flows; i++) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		struct flow *f = &flows[i];

		f->fd = accept(ln, (void *)&peer, &plen);
		if (f->fd < 0) {
			perror("fastrx: accept");
			return 1;
		}
		f->index = cfg.peer_base ? ntohs(peer.sin_port) - cfg.peer_base : i;
		f->rr = cfg.rr_flows && f->index >= cfg.flows - cfg.rr_flows;
	}
	close(ln);
	/* CPU time from here on: the receive loop, not the setup. */
	getrusage(RUSAGE_SELF, &ru0);
	for (int i = 0; i < cfg.flows; i++) {
		if (pthread_create(&flows[i].thread, NULL,
				   cfg.mode == MODE_DEVMEM ? rx_devmem : rx_tcp,
				   &flows[i])) {
			perror("fastrx: pthread_create");
			return 1;
		}
	}
	for (int i = 0; i < cfg.flows; i++) {
		struct flow *f = &flows[i];

		pthread_join(f->thread, NULL);
		close(f->fd);
		if (f->err[0]) {
			fprintf(stderr, "fastrx: %s\n", f->err);
			status = 1;
		}
		t[0] += f->bytes;
		t[1] += f->recvmsgs;
		t[2] += f->frags;
		t[3] += f->linear;
		t[4] += f->readable;
		t[5] += f->dontneed;
		t[6] += f->tokens;
		t[7] += f->responses;
		t[8] += f->mismatches;
		t[9] += f->sum;
	}
	getrusage(RUSAGE_SELF, &ru1);
	outstanding = __atomic_load_n(&g_outstanding, __ATOMIC_RELAXED);
	if (outstanding) {
		fprintf(stderr, "fastrx: %ld tokens not returned\n", outstanding);
		status = 1;
	}
	printf("bytes=%llu recvmsg=%llu frags=%llu linear=%llu readable=%llu dontneed=%llu tokens=%llu max_outstanding=%ld responses=%llu mismatches=%llu sum=%llu cpu_us=%lld cpu_sys_us=%lld csw_vol=%ld csw_invol=%ld\n",
	       (unsigned long long)t[0], (unsigned long long)t[1],
	       (unsigned long long)t[2], (unsigned long long)t[3],
	       (unsigned long long)t[4], (unsigned long long)t[5],
	       (unsigned long long)t[6], g_max_outstanding,
	       (unsigned long long)t[7], (unsigned long long)t[8],
	       (unsigned long long)t[9], cpu_us(&ru1) - cpu_us(&ru0),
	       sys_us(&ru1) - sys_us(&ru0), ru1.ru_nvcsw - ru0.ru_nvcsw,
	       ru1.ru_nivcsw - ru0.ru_nivcsw);
	return status;
}
