# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of :mod:`media.rtpio`: ``recvmmsg(2)``/``sendmmsg(2)`` over
many sockets per call, without the GIL.  Docstrings and the contract live in
``media/rtpio.py``."""
from libc.errno cimport errno, EINTR
from libc.string cimport memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    int AF_INET

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int MSG_DONTWAIT
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)

cdef enum:
    BATCH = 64  # datagrams per recvmmsg/sendmmsg call


def recv_batch(int32_t[::1] fds, uint8_t[:, ::1] data, int32_t[::1] lengths, int32_t[::1] owners,
               uint32_t[::1] ips, int32_t[::1] ports, int max_per_fd):
    cdef Py_ssize_t cap = data.shape[0]
    cdef Py_ssize_t slot = data.shape[1]
    cdef Py_ssize_t nfds = fds.shape[0]
    cdef Py_ssize_t n = 0, j, i
    cdef int got, k, r
    # per call (on the C stack), so threads may call concurrently without the GIL
    cdef mmsghdr _hdrs[BATCH]
    cdef iovec _iovs[BATCH]
    cdef sockaddr_in _addrs[BATCH]
    if lengths.shape[0] < cap or owners.shape[0] < cap or ips.shape[0] < cap or ports.shape[0] < cap:
        raise ValueError("recv_batch: lengths, owners, ips and ports need as many rows as data")
    with nogil:
        for j in range(nfds):
            got = 0
            while got < max_per_fd and n < cap:
                k = BATCH
                if k > max_per_fd - got:
                    k = max_per_fd - got
                if k > cap - n:
                    k = <int>(cap - n)
                memset(_hdrs, 0, sizeof(mmsghdr) * k)
                for i in range(k):
                    _iovs[i].iov_base = &data[n + i, 0]
                    _iovs[i].iov_len = slot
                    _hdrs[i].msg_hdr.msg_iov = &_iovs[i]
                    _hdrs[i].msg_hdr.msg_iovlen = 1
                    _hdrs[i].msg_hdr.msg_name = &_addrs[i]
                    _hdrs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
                r = recvmmsg(fds[j], _hdrs, k, MSG_DONTWAIT, NULL)
                if r <= 0:
                    if r < 0 and errno == EINTR:
                        continue
                    break  # EAGAIN: drained; other errors (ICMP-reported): skip this socket now
                for i in range(r):
                    lengths[n + i] = <int32_t>_hdrs[i].msg_len
                    owners[n + i] = <int32_t>j
                    ips[n + i] = ntohl(_addrs[i].sin_addr.s_addr)
                    ports[n + i] = ntohs(_addrs[i].sin_port)
                n += r
                got += r
                if r < k:
                    break
    return n


def send_batch(int32_t[::1] fds, uint8_t[:, ::1] data, int32_t[::1] lengths, uint32_t[::1] ips, int32_t[::1] ports):
    cdef Py_ssize_t total = fds.shape[0]
    cdef Py_ssize_t start = 0, end, i
    cdef int k, r, done, sent = 0
    cdef int fd
    cdef mmsghdr _hdrs[BATCH]
    cdef iovec _iovs[BATCH]
    cdef sockaddr_in _addrs[BATCH]
    if data.shape[0] < total or lengths.shape[0] < total or ips.shape[0] < total or ports.shape[0] < total:
        raise ValueError("send_batch: data, lengths, ips and ports need a row for every fd")
    with nogil:
        while start < total:
            fd = fds[start]
            end = start + 1
            while end < total and end - start < BATCH and fds[end] == fd:
                end += 1
            k = <int>(end - start)
            memset(_hdrs, 0, sizeof(mmsghdr) * k)
            memset(_addrs, 0, sizeof(sockaddr_in) * k)
            for i in range(k):
                _addrs[i].sin_family = AF_INET
                _addrs[i].sin_port = htons(<uint16_t>ports[start + i])
                _addrs[i].sin_addr.s_addr = htonl(ips[start + i])
                _iovs[i].iov_base = &data[start + i, 0]
                _iovs[i].iov_len = lengths[start + i]
                _hdrs[i].msg_hdr.msg_iov = &_iovs[i]
                _hdrs[i].msg_hdr.msg_iovlen = 1
                _hdrs[i].msg_hdr.msg_name = &_addrs[i]
                _hdrs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            done = 0
            while done < k:
                r = sendmmsg(fd, &_hdrs[done], k - done, MSG_DONTWAIT)
                if r < 0:
                    if errno == EINTR:
                        continue
                    done += 1  # this datagram was refused: skip it, go on with the rest
                    continue
                sent += r
                done += r
            start = end
    return sent
