// SPDX-License-Identifier: MIT
//
// countsys.so: an LD_PRELOAD shim that counts, from inside a dynamically
// linked program (the kernel's C ncdevmem), its recvmsg calls, the devmem
// frags those returned, and its SO_DEVMEM_DONTNEED setsockopt calls, and
// writes them at exit to the file named by $COUNTSYS_OUT as
// "recvmsg=N frags=N dontneed=N tokens=N max_outstanding=N" (tokens
// received and not yet freed, at most). Each wrapper adds one counter
// increment (and a walk over the cmsgs) to the real call.
//
// gcc -shared -fPIC -O2 -o countsys.so countsys.c -ldl (see selftest/bench/run.sh)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#ifndef SO_DEVMEM_DONTNEED
#define SO_DEVMEM_DONTNEED 80
#endif
#ifndef SCM_DEVMEM_DMABUF
#define SCM_DEVMEM_DMABUF 79
#endif

struct dmabuf_token_range {
	unsigned int token_start;
	unsigned int token_count;
};

static unsigned long long n_recvmsg, n_frags, n_dontneed, n_tokens;
static long long outstanding, max_outstanding;

static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	if (!real_recvmsg)
		real_recvmsg = dlsym(RTLD_NEXT, "recvmsg");
	ssize_t ret = real_recvmsg(fd, msg, flags);
	n_recvmsg++;
	if (ret > 0 && msg->msg_control) {
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_DEVMEM_DMABUF)
				n_frags++, outstanding++;
		if (outstanding > max_outstanding)
			max_outstanding = outstanding;
	}
	return ret;
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	if (!real_setsockopt)
		real_setsockopt = dlsym(RTLD_NEXT, "setsockopt");
	if (level == SOL_SOCKET && name == SO_DEVMEM_DONTNEED) {
		const struct dmabuf_token_range *r = val;
		n_dontneed++;
		for (socklen_t i = 0; i < len / sizeof(*r); i++)
			n_tokens += r[i].token_count;
	}
	int ret = real_setsockopt(fd, level, name, val, len);

	if (level == SOL_SOCKET && name == SO_DEVMEM_DONTNEED && ret > 0)
		outstanding -= ret;
	return ret;
}

__attribute__((destructor)) static void countsys_write(void)
{
	const char *path = getenv("COUNTSYS_OUT");
	/* Only the receiver writes: a wrapper that inherits the environment
	 * (perf record, a shell) made no recvmsg and must not clobber it. */
	if (!path || !n_recvmsg)
		return;
	FILE *f = fopen(path, "w");
	if (!f)
		return;
	fprintf(f, "recvmsg=%llu frags=%llu dontneed=%llu tokens=%llu max_outstanding=%lld\n",
		n_recvmsg, n_frags, n_dontneed, n_tokens, max_outstanding);
	fclose(f);
}
