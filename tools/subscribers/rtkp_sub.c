/* A minimal rtkp subscriber in C (libzmq + msgpack-c), as in docs/PROTOCOL.md.
 *
 * Build: gcc -O2 -o rtkp_sub rtkp_sub.c -lzmq -lmsgpackc   (Debian: libzmq3-dev libmsgpack-dev)
 * Run:   ./rtkp_sub tcp://127.0.0.1:5555 100
 * Receives N keypoints messages and prints one line each, then one line per instance (animal):
 *   seq 12 frame 40 k 3 first (212.4, 301.1) instances 2
 *     track 4 score 0.9132 kp 212.41,301.07,0.9132,1,1 220.30,288.90,0.8874,1,1 ...   (x,y,score,visible,state)
 * A multi-instance stream (`.meta` has max_instances) sends `instances` in each keypoints message; a single-instance
 * stream does not, and its one animal is track 0 with the frame's `kp` (score: mean score of the visible keypoints).
 * Checks the schema version, that sequence numbers increase, that every message (and every instance) has as many
 * keypoints as the metadata names, that tracks increase within a message and that a message holds at most
 * max_instances of them. Exit 0 when all checks held.
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

static const msgpack_object *array(const msgpack_object *o) {
    return o && o->type == MSGPACK_OBJECT_ARRAY ? o : NULL;
}

/* One instance's line: its track, score and every keypoint as x,y,score,visible,state. */
static void print_instance(int64_t track, double score, const msgpack_object *kp) {
    printf("  track %lld score %.4f kp", (long long)track, score);
    for (uint32_t i = 0; kp && i < kp->via.array.size; i++) {
        const msgpack_object *p = &kp->via.array.ptr[i];
        if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size < 5) { printf(" ?"); continue; }
        const msgpack_object *v = p->via.array.ptr;
        int visible = v[3].type == MSGPACK_OBJECT_BOOLEAN ? v[3].via.boolean : (int)number(&v[3]);
        printf(" %.2f,%.2f,%.4f,%d,%d", number(&v[0]), number(&v[1]), number(&v[2]), visible, (int)number(&v[4]));
    }
    printf("\n");
}

/* The mean score of the visible keypoints, -1 when none is visible: a single-instance stream's one animal. */
static double mean_visible_score(const msgpack_object *kp) {
    double sum = 0;
    int n = 0;
    for (uint32_t i = 0; kp && i < kp->via.array.size; i++) {
        const msgpack_object *p = &kp->via.array.ptr[i];
        if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size < 5) continue;
        if (p->via.array.ptr[3].type == MSGPACK_OBJECT_BOOLEAN && p->via.array.ptr[3].via.boolean) {
            sum += number(&p->via.array.ptr[2]);
            n++;
        }
    }
    return n ? sum / n : -1.0;
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

    int got = 0, errors = 0, meta_k = -1, max_instances = -1; /* -1: no .meta yet / a single-instance stream */
    int64_t last_seq = -1, gaps = 0, instances_seen = 0;
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
            const msgpack_object *names = array(field(h, "keypoints"));
            if (names) meta_k = (int)names->via.array.size;
            const msgpack_object *most = field(h, "max_instances");
            max_instances = most ? (int)number(most) : -1;
        } else if (tlen >= 10 && memcmp(t + tlen - 10, ".keypoints", 10) == 0) {
            int64_t seq = (int64_t)number(field(h, "seq"));
            const msgpack_object *kp = array(field(h, "kp"));
            int k = kp ? (int)kp->via.array.size : -1;
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
            const msgpack_object *instances = field(h, "instances"); /* absent: a single-instance stream */
            if (instances && !array(instances)) { fprintf(stderr, "instances is not an array\n"); errors++; }
            int n = instances ? (array(instances) ? (int)instances->via.array.size : 0) : 1;
            printf("seq %lld frame %lld k %d first (%.1f, %.1f) instances %d\n", (long long)seq,
                   (long long)number(field(h, "frame")), k, x, y, n);
            if (max_instances >= 0 && n > max_instances) {
                fprintf(stderr, "%d instances > max_instances %d\n", n, max_instances);
                errors++;
            }
            if (!instances) print_instance(0, mean_visible_score(kp), kp);
            int64_t last_track = -1;
            for (int i = 0; array(instances) && i < n; i++) {
                const msgpack_object *one = &instances->via.array.ptr[i];
                const msgpack_object *ikp = array(field(one, "kp"));
                int64_t track = (int64_t)number(field(one, "track"));
                int ik = ikp ? (int)ikp->via.array.size : -1;
                if (!field(one, "track")) { fprintf(stderr, "an instance without a track\n"); errors++; }
                if (track <= last_track) { fprintf(stderr, "tracks not increasing\n"); errors++; }
                if (meta_k >= 0 && ik != meta_k) {
                    fprintf(stderr, "instance keypoint count %d != %d\n", ik, meta_k);
                    errors++;
                }
                last_track = track;
                print_instance(track, number(field(one, "score")), ikp);
            }
            instances_seen += n;
            got++;
        }
    next:
        msgpack_unpacked_destroy(&unpacked);
        zmq_msg_close(&topic);
        zmq_msg_close(&header);
    }
    printf("received %d keypoints messages, metadata k=%d, gaps %lld, errors %d, instances %lld, max_instances %d\n",
           got, meta_k, (long long)gaps, errors, (long long)instances_seen, max_instances);
    zmq_close(sub);
    zmq_ctx_destroy(ctx);
    return errors == 0 && meta_k > 0 ? 0 : 1;
}
