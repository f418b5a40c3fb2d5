/* A minimal rtkp subscriber in C (libzmq + msgpack-c), as in docs/PROTOCOL.md.
 *
 * Build: gcc -O2 -o rtkp_sub rtkp_sub.c -lzmq -lmsgpackc   (Debian: libzmq3-dev libmsgpack-dev)
 * Run:   ./rtkp_sub tcp://127.0.0.1:5555 100
 * Receives N keypoints messages, prints one line each, checks the schema version, that sequence numbers increase,
 * and that every message has as many keypoints as the metadata names. Exit 0 when all checks held.
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static const msgpack_object *field(const msgpack_object *map, const char *name) {
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(name) &&
            memcmp(k->via.str.ptr, name, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static double number(const msgpack_object *o) {
    if (!o) return 0;
    switch (o->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
        default: return 0;
    }
}

int main(int argc, char **argv) {
    const char *endpoint = argc > 1 ? argv[1] : "tcp://127.0.0.1:5555";
    int wanted = argc > 2 ? atoi(argv[2]) : 100;
    int timeout_ms = 10000;
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "rtkp.", 5);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    if (zmq_connect(sub, endpoint) != 0) { fprintf(stderr, "connect failed\n"); return 2; }

    int got = 0, errors = 0, meta_k = -1;
    int64_t last_seq = -1, gaps = 0;
    while (got < wanted) {
        zmq_msg_t topic, header;
        zmq_msg_init(&topic);
        zmq_msg_init(&header);
        if (zmq_msg_recv(&topic, sub, 0) < 0) { fprintf(stderr, "timeout after %d messages\n", got); return 3; }
        int more = zmq_msg_more(&topic);
        if (!more || zmq_msg_recv(&header, sub, 0) < 0) { errors++; continue; }
        const char *t = zmq_msg_data(&topic);
        size_t tlen = zmq_msg_size(&topic);
        msgpack_unpacked unpacked;
        msgpack_unpacked_init(&unpacked);
        size_t off = 0;
        if (msgpack_unpack_next(&unpacked, zmq_msg_data(&header), zmq_msg_size(&header), &off) !=
            MSGPACK_UNPACK_SUCCESS) { errors++; goto next; }
        const msgpack_object *h = &unpacked.data;
        if ((int)number(field(h, "v")) != 1) { fprintf(stderr, "unknown schema version\n"); return 4; }
        if (tlen >= 5 && memcmp(t + tlen - 5, ".meta", 5) == 0) {
            const msgpack_object *names = field(h, "keypoints");
            if (names && names->type == MSGPACK_OBJECT_ARRAY) meta_k = (int)names->via.array.size;
        } else if (tlen >= 10 && memcmp(t + tlen - 10, ".keypoints", 10) == 0) {
            int64_t seq = (int64_t)number(field(h, "seq"));
            const msgpack_object *kp = field(h, "kp");
            int k = kp && kp->type == MSGPACK_OBJECT_ARRAY ? (int)kp->via.array.size : -1;
            if (last_seq >= 0 && seq <= last_seq) { fprintf(stderr, "sequence went back\n"); errors++; }
            if (last_seq >= 0 && seq > last_seq + 1) gaps += seq - last_seq - 1;
            if (meta_k >= 0 && k != meta_k) { fprintf(stderr, "keypoint count %d != %d\n", k, meta_k); errors++; }
            last_seq = seq;
            double x = 0, y = 0;
            if (k > 0) {
                const msgpack_object *p = &kp->via.array.ptr[0];
                x = number(&p->via.array.ptr[0]);
                y = number(&p->via.array.ptr[1]);
            }
            printf("seq %lld frame %lld k %d first (%.1f, %.1f)\n", (long long)seq,
                   (long long)number(field(h, "frame")), k, x, y);
            got++;
        }
    next:
        msgpack_unpacked_destroy(&unpacked);
        zmq_msg_close(&topic);
        zmq_msg_close(&header);
    }
    printf("received %d keypoints messages, metadata k=%d, gaps %lld, errors %d\n", got, meta_k, (long long)gaps,
           errors);
    zmq_close(sub);
    zmq_ctx_destroy(ctx);
    return errors == 0 && meta_k > 0 ? 0 : 1;
}
