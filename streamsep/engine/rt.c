/* The engine's real-time core: rings addressed by absolute sample position, and the PortAudio
 * callback that moves audio between them and the device.
 *
 * Why C: a callback written in Python has to take the GIL, and the GIL is held for milliseconds
 * at a time by whatever else runs in the interpreter (the worker's Python code, the garbage
 * collector). On a 256-frame JACK period (5.3 ms) that is a missed deadline, i.e. a click. Here
 * the callback never touches the interpreter: it copies, counts and timestamps, and that is all.
 *
 * Every ring has one producer and one consumer. Each side publishes its position with a release
 * store after its copy and reads the other side's with an acquire load, so no lock is taken and
 * neither side ever waits. The worker calls the same functions from Python (through cffi, which
 * releases the GIL around each call), so there is one implementation of each ring operation.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rt.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

/* PortAudio's PaStreamCallbackFlags bits (portaudio.h, stable ABI). */
#define PA_INPUT_UNDERFLOW 0x1
#define PA_INPUT_OVERFLOW 0x2
#define PA_OUTPUT_UNDERFLOW 0x4
#define PA_OUTPUT_OVERFLOW 0x8

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t rt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rt_load(const int64_t *p) { return LOAD(p); }
void rt_store(int64_t *p, int64_t v) { STORE(p, v); }

/* Copy n samples from the ring starting at absolute position pos into dst (stride apart). */
static void ring_copy_out(const rt_ring *r, int64_t pos, float *dst, int64_t n, int64_t stride)
{
    int64_t i = pos % r->capacity;
    int64_t k = min64(n, r->capacity - i);
    if (stride == 1) {
        memcpy(dst, r->buf + i, (size_t)k * sizeof(float));
        memcpy(dst + k, r->buf, (size_t)(n - k) * sizeof(float));
        return;
    }
    for (int64_t j = 0; j < k; j++) dst[j * stride] = r->buf[i + j];
    for (int64_t j = k; j < n; j++) dst[j * stride] = r->buf[j - k];
}

static void ring_copy_in(rt_ring *r, int64_t pos, const float *src, int64_t n, int64_t stride)
{
    int64_t i = pos % r->capacity;
    int64_t k = min64(n, r->capacity - i);
    if (stride == 1) {
        memcpy(r->buf + i, src, (size_t)k * sizeof(float));
        memcpy(r->buf, src + k, (size_t)(n - k) * sizeof(float));
        return;
    }
    for (int64_t j = 0; j < k; j++) r->buf[i + j] = src[j * stride];
    for (int64_t j = k; j < n; j++) r->buf[j - k] = src[j * stride];
}

static void zero(float *dst, int64_t n, int64_t stride)
{
    if (n <= 0) return;
    if (stride == 1) { memset(dst, 0, (size_t)n * sizeof(float)); return; }
    for (int64_t j = 0; j < n; j++) dst[j * stride] = 0.0f;
}

/* -- history ring (input): the producer appends, the consumer copies any recent range ---------- */

void rt_hist_write(rt_ring *r, const float *x, int64_t n, int64_t stride)
{
    int64_t w = r->write_pos;  /* producer-owned */
    if (n >= r->capacity) {    /* only the newest capacity samples can be kept */
        ring_copy_in(r, w + n - r->capacity, x + (n - r->capacity) * stride, r->capacity,
                     stride);
    } else if (n > 0) {
        ring_copy_in(r, w, x, n, stride);
    }
    STORE(&r->write_pos, w + n);
}

int64_t rt_hist_read(const rt_ring *r, int64_t start, float *out, int64_t n, int64_t stride)
{
    int64_t end = start + n;
    int64_t w0 = LOAD(&r->write_pos);
    int64_t lo = max64(start, 0), hi = min64(end, w0);
    /* Positions before 0 and at or after write_pos read as zeros (left padding at start-up,
     * right padding after a finite source's end). */
    if (hi <= lo) { zero(out, n, stride); return 0; }
    zero(out, lo - start, stride);
    zero(out + (hi - start) * stride, end - hi, stride);
    /* Anything older than write_pos - capacity may be overwritten while we copy: skip what is
     * already gone, re-check afterwards (seqlock style), zero and report what was lost. */
    int64_t first = max64(lo, w0 - r->capacity);
    zero(out + (lo - start) * stride, first - lo, stride);
    if (hi > first) ring_copy_out(r, first, out + (first - start) * stride, hi - first, stride);
    int64_t oldest = LOAD(&r->write_pos) - r->capacity;
    int64_t lost_hi = min64(hi, oldest);
    if (lost_hi > first) zero(out + (first - start) * stride, lost_hi - first, stride);
    return max64(0, min64(hi, max64(oldest, first)) - lo);
}

/* -- playback ring (output): the producer writes at scheduled positions, the consumer plays in
 * order and advances one block per call whether or not the producer delivered ---------------- */

void rt_play_start(rt_ring *r, int64_t pos)
{
    STORE(&r->read_pos, pos);
    STORE(&r->started, 1);
}

void rt_play_write_at(rt_ring *r, int64_t pos, const float *x, int64_t n)
{
    int64_t started = LOAD(&r->started);
    int64_t rd = started ? LOAD(&r->read_pos) : 0;
    int64_t skip = started ? max64(0, min64(n, rd - pos)) : 0; /* already played: too late */
    r->late_samples += skip;
    int64_t room = max64(0, min64(n, rd + r->capacity - pos)); /* never overwrite unplayed */
    if (room < n) r->overflow_samples += n - room;
    if (room > skip) ring_copy_in(r, pos + skip, x + skip, room - skip, 1);
    if (pos + n > r->write_pos) STORE(&r->write_pos, pos + n);
}

int64_t rt_play_read(rt_ring *r, float *out, int64_t n, int64_t stride, int64_t *start)
{
    int64_t rd = r->read_pos; /* consumer-owned */
    int64_t w = LOAD(&r->write_pos);
    int64_t lo = max64(rd, 0), hi = min64(rd + n, w);
    zero(out, min64(n, lo - rd), stride);
    if (hi > lo) {
        ring_copy_out(r, lo, out + (lo - rd) * stride, hi - lo, stride);
        zero(out + (hi - rd) * stride, rd + n - hi, stride);
    } else {
        zero(out + max64(0, lo - rd) * stride, rd + n - max64(lo, rd), stride);
    }
    STORE(&r->read_pos, rd + n); /* advance even on underrun: latency stays constant */
    *start = rd;
    /* Positions >= 0 that were not written yet are missing (left as zeros). */
    return max64(0, (rd + n) - max64(lo, min64(rd + n, w)));
}

/* -- snapshots: (position, time) pairs published by a callback, read by anyone -------------- */

static void snap_write(rt_snap *s, int64_t pos, int64_t ns)
{
    int64_t q = s->seq;
    STORE(&s->seq, q + 1); /* odd: being written */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&s->pos, pos, __ATOMIC_RELAXED);
    __atomic_store_n(&s->ns, ns, __ATOMIC_RELAXED);
    STORE(&s->seq, q + 2);
}

int rt_snap_read(const rt_snap *s, int64_t *pos, int64_t *ns)
{
    for (int tries = 0; tries < 64; tries++) {
        int64_t q = LOAD(&s->seq);
        if (q == 0) return 0; /* never written */
        if (q & 1) continue;
        int64_t p = __atomic_load_n(&s->pos, __ATOMIC_RELAXED);
        int64_t t = __atomic_load_n(&s->ns, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (LOAD(&s->seq) == q) { *pos = p; *ns = t; return 1; }
    }
    return 0;
}

/* -- one output: playback ring, overload fill, drift offset --------------------------------- */

void rt_in_feed(rt_in *in, const float *x, int64_t n, int64_t stride, int64_t now_ns)
{
    rt_hist_write(in->ring, x, n, stride);
    snap_write(&in->snap, LOAD(&in->ring->write_pos), now_ns);
}

/* The input position that matches "now" on the input's clock (for an output on its own clock
 * starting up): the last input block's end, extrapolated by the time since it arrived. */
int64_t rt_in_position_at(const rt_in *in, int64_t now_ns, int64_t sample_rate)
{
    int64_t pos, ns;
    if (!rt_snap_read(&in->snap, &pos, &ns)) return LOAD(&in->ring->write_pos);
    return pos + (now_ns - ns) * sample_rate / 1000000000;
}

void rt_out_play(rt_out *o, float *out, int64_t n, int64_t stride, int64_t origin,
                 int64_t now_ns)
{
    rt_ring *r = o->ring;
    if (!LOAD(&r->started)) rt_play_start(r, origin - LOAD(&o->latency));
    int64_t start;
    int64_t missing = rt_play_read(r, out, n, stride, &start);
    if (missing) {
        int64_t end = LOAD(&o->end); /* after a player's end, an empty ring is the drain */
        int64_t counted = min64(missing, max64(0, end - (start + n - missing)));
        if (counted) ADD(&o->underrun, counted);
        if (o->dry && o->input != NULL) {
            /* Overload policy "dry": the unprocessed input, at exactly the planned latency, so
             * a late or stalled worker is heard as unseparated audio, never as a gap or click. */
            rt_hist_read(o->input->ring, start + n - missing - LOAD(&o->delta),
                         out + (n - missing) * stride, missing, stride);
        }
    }
    snap_write(&o->snap, start, now_ns);
}

/* -- the PortAudio callback ----------------------------------------------------------------- */

typedef struct { double input_adc, current, output_dac; } pa_time_info; /* PaStreamCallbackTimeInfo */

static const float ZEROS[1024];

/* Frames the device clock advanced beyond what the callbacks delivered: cycles the server ran
 * without us (an xrun). Without filling them in, every later position would be one period off
 * the device's timeline and the output misaligned for a whole latency.
 *
 * The clock, where there is one, is JACK's frame counter (jack_last_frame_time: the first frame
 * of the current cycle, exact, the count every other client of the graph sees). PortAudio's
 * stream time is not that: it is jack_frame_time, the frame counter interpolated through JACK's
 * time filter, which jumps whenever the server itself is late (its timer woke late, the host
 * stole its CPU): such a cycle reaches every client, nothing is missing, yet the interpolated
 * time is ahead by the delay, and a gap of that size was filled in: a period or more of input
 * lost and the output out of line for a latency, several times a minute on a busy machine.
 * Without the frame counter (JACK1, PipeWire's libjack: their jack_last_frame_time needs the
 * client handle, which PortAudio keeps to itself) the stream time is the clock.
 *
 * Either way a callback that merely ran late can look ahead, and a missed cycle is a lasting
 * step, so the smallest deviation of 8 callbacks decides. The step is measured from the floor
 * of the callbacks just before the xrun, not from the first callback's time: that one is often
 * late (a stream tends to start in a busy cycle, and an xrun just before it leaves its stream
 * time hundreds of frames ahead). Measured against a baseline that was set late, a missed cycle
 * looked too small to count and was never filled, for the rest of the stream. The baseline
 * follows the floor both ways between xruns. */
typedef uint32_t (*frame_clock_fn)(const void *client);

void *rt_jack_frame_clock(void)
{
#ifdef __APPLE__
    const char *name = "libjack.0.dylib";
#else
    const char *name = "libjack.so.0";
#endif
    void *lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD); /* the one PortAudio loaded, if any */
    if (lib == NULL) return NULL;
    const char *(*version)(void) = (const char *(*)(void))dlsym(lib, "jack_get_version_string");
    void *clock = dlsym(lib, "jack_last_frame_time");
    /* jack2 (1.9.x) reads the counter from the server's shared memory whatever the client
     * argument; the others dereference it. */
    const char *v = version != NULL ? version() : NULL;
    int jack2 = v != NULL && strncmp(v, "1.9.", 4) == 0;
    dlclose(lib); /* PortAudio's reference keeps it loaded */
    return jack2 ? clock : NULL;
}

#define DEVS 8
static int64_t devs_floor(const rt_stream *s, int64_t count)
{
    /* the smallest of the deviations of the last `count` (1..DEVS) callbacks; the slot of the
     * first callback (never written) holds 0, its own deviation by definition */
    int64_t lo = INT64_MAX;
    for (int64_t k = 1; k <= count; k++) lo = min64(lo, s->devs[(s->blocks - k) % DEVS]);
    return lo;
}

static int64_t missed_frames(rt_stream *s, const void *time_info, int64_t n, int xrun)
{
    const pa_time_info *ti = (const pa_time_info *)time_info;
    frame_clock_fn clock = (frame_clock_fn)s->frame_clock;
    if (!s->fill_gaps || (clock == NULL && (ti == NULL || ti->current <= 0.0))) return 0;
    int64_t gap = 0;
    uint32_t now = clock != NULL ? clock(NULL) : 0;
    if (s->blocks == 0) {
        /* An xrun flagged on the first callback happened before this stream's timeline began:
         * nothing of it can be missing. */
        if (clock != NULL) s->clock_last = now;
        else s->base_time = ti->current;
    } else {
        int64_t dev;
        if (clock != NULL) {
            s->clock_frames += (uint32_t)(now - (uint32_t)s->clock_last); /* wraps at 2^32 */
            s->clock_last = now;
            dev = s->clock_frames - s->frames_seen;
        } else {
            double d = (ti->current - s->base_time) * (double)s->sample_rate
                       - (double)s->frames_seen;
            dev = (int64_t)(d + (d >= 0 ? 0.5 : -0.5));
        }
        /* A cycle can only be skipped by an xrun: judge the deviations DEVS callbacks after
         * one, so that a drifting or jumping stream time alone never counts. A second xrun
         * before the judgement extends it and keeps the floor. PortAudio flags the callback
         * after JACK's xrun notification arrived, which comes from another thread and may be
         * callbacks late, by when the step is already in the floor "before" it and the cycle
         * was never filled; the frame counter itself shows a skipped cycle at once, so with it
         * the jump opens the judgement, and a flag during one no longer extends it (a second
         * skipped cycle is a second jump once the first is judged). */
        int judging = s->check_in > 0;
        /* the floor before this callback: only needed where a judgement may open here */
        int64_t prior = !judging && (clock != NULL || xrun)
                            ? devs_floor(s, min64(s->blocks, DEVS)) : 0;
        if (clock != NULL ? !judging && (xrun || 4 * (dev - prior) >= 3 * n) : xrun) {
            if (!judging) {
                s->floor_before = prior;
                /* this callback's block and the ones until the judgement are written before
                 * the gap is known: where a gap is found, they are moved to where they belong */
                s->judge_from = s->source != NULL && s->feeds_input
                                    ? LOAD(&s->source->ring->write_pos) : 0;
            }
            s->check_in = DEVS;
        }
        s->devs[s->blocks % DEVS] = dev;
        if (s->check_in > 0 && --s->check_in == 0) {
            int64_t step = devs_floor(s, DEVS) - s->floor_before;
            /* More than 2 s is a clock jump (or a stream restart), not a missed cycle. */
            if (4 * step >= 3 * n && step <= 2 * s->sample_rate) {
                gap = ((step + n / 2) / n) * n;
                for (int i = 0; i < DEVS; i++) s->devs[i] -= gap;
            }
        }
        /* Between xruns the deviation only jitters and drifts: let the baseline follow its
         * floor (down, and up by less than a missed cycle) so that a later judgement measures
         * the step, not a late first callback or hours of accumulated clock error. */
        if (s->check_in == 0 && s->blocks % DEVS == 0) {
            int64_t lo = devs_floor(s, DEVS);
            if (lo != 0 && 4 * lo < 3 * n) {
                s->frames_seen += lo;
                for (int i = 0; i < DEVS; i++) s->devs[i] -= lo;
            }
        }
    }
    s->frames_seen += n + gap;
    return gap;
}

/* The input blocks written since the judgement opened came after the missed frames: move them
 * on by the gap and put silence where the missed frames were, so that the input, too, stays on
 * the device's timeline for all but the frames that never arrived. Only the newest few blocks
 * move (DEVS callbacks at most), and the worker reads them, if at all, as a window's lookahead,
 * which the next window reads again. */
static void shift_in_gap(rt_ring *r, int64_t from, int64_t gap)
{
    int64_t w = r->write_pos; /* producer-owned */
    int64_t m = max64(0, min64(w - from, r->capacity - gap));
    float tmp[1024];
    for (int64_t k = m; k > 0;) { /* from the end: source and destination overlap */
        int64_t c = min64(1024, k);
        k -= c;
        ring_copy_out(r, w - m + k, tmp, c, 1);
        ring_copy_in(r, w - m + k + gap, tmp, c, 1);
    }
    for (int64_t k = 0; k < gap; k += 1024)
        ring_copy_in(r, w - m + k, ZEROS, min64(1024, gap - k), 1);
    STORE(&r->write_pos, w + gap);
}

static void fill_gap(rt_stream *s, int64_t gap)
{
    if (s->source != NULL && s->feeds_input) shift_in_gap(s->source->ring, s->judge_from, gap);
    if (s->sink != NULL && LOAD(&s->sink->ring->started)) {
        rt_ring *r = s->sink->ring;
        STORE(&r->read_pos, r->read_pos + gap); /* those slots went by unheard */
    }
    ADD(&s->gap_events, 1);
    ADD(&s->gap_frames, gap);
}

int rt_callback(const void *input, void *output, unsigned long frames, const void *time_info,
                unsigned long flags, void *userdata)
{
    rt_stream *s = (rt_stream *)userdata;
    int64_t t0 = rt_now_ns();
    int64_t n = (int64_t)frames;
    int xrun = (flags & (PA_INPUT_UNDERFLOW | PA_INPUT_OVERFLOW | PA_OUTPUT_UNDERFLOW |
                         PA_OUTPUT_OVERFLOW)) != 0;
    if (xrun) {
        ADD(&s->xrun_events, 1); /* one event, however many flags it carries */
        if (flags & PA_INPUT_UNDERFLOW) ADD(&s->input_underflow, 1);
        if (flags & PA_INPUT_OVERFLOW) ADD(&s->input_overflow, 1);
        if (flags & PA_OUTPUT_UNDERFLOW) ADD(&s->output_underflow, 1);
        if (flags & PA_OUTPUT_OVERFLOW) ADD(&s->output_overflow, 1);
    }
    int64_t gap = missed_frames(s, time_info, n, xrun);
    if (gap > 0) fill_gap(s, gap);
    if (s->source != NULL && s->feeds_input) STORE(&s->source->judging, s->check_in > 0);
    int64_t origin = 0;
    if (s->source != NULL) {
        if (s->feeds_input && input != NULL) {
            origin = LOAD(&s->source->ring->write_pos);
            rt_in_feed(s->source, (const float *)input, n, s->in_channels, t0);
        } else {
            origin = rt_in_position_at(s->source, t0, s->sample_rate);
        }
    }
    if (s->sink != NULL && output != NULL) {
        float *o = (float *)output;
        int64_t ch = s->out_channels;
        if (!s->feeds_input && s->source != NULL && !LOAD(&s->sink->ring->started) &&
            LOAD(&s->source->judging)) {
            /* An output on its own clock starts at the input position of now; while the input
             * may still fill in a cycle it missed (up to DEVS callbacks after an xrun), that
             * position is about to move: start once it is settled (until then, silence). */
            zero(o, n * ch, 1);
        } else {
            rt_out_play(s->sink, o, n, ch, origin, t0);
        }
        /* Mono target on the first two channels; any further channels silent. */
        for (int64_t j = 0; j < n; j++) {
            float v = o[j * ch];
            for (int64_t c = 1; c < ch; c++) o[j * ch + c] = c < 2 ? v : 0.0f;
        }
    }
    int64_t t1 = rt_now_ns();
    ADD(&s->blocks, 1);
    if (t1 - t0 > s->max_callback_ns) STORE(&s->max_callback_ns, t1 - t0);
    STORE(&s->heartbeat_ns, t1);
    return 0; /* paContinue */
}
