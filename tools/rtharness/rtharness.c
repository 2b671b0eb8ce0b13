/* rtharness: a real-time-safe JACK test client for streamsep's live engine.
 *
 * Plays a mono signal (a WAV / raw float32 file, or a generated one) in a loop or once into its
 * output port, with a pseudo-random marker burst every --marker-period seconds added on top, and
 * records its input port(s) to a raw float32 file (interleaved when there are two inputs). It
 * connects itself to the ports named on the command line, runs for --duration seconds and writes
 * a JSON summary (frames, its own missed/late cycles, the server's xruns, the start frame time).
 *
 * Timeline: recording frame p is the input of the cycle whose first frame is start_frame + p
 * (p counts JACK frames, not callbacks), and sample p of the played signal goes out in it. A
 * cycle this client was not run in is written to the recording as zeros and counted
 * (gap_cycles, gap_frames), so the recording always stays sample-aligned with the device's
 * timeline: any shift of the markers in the recording is the device under test losing or
 * repeating samples.
 *
 * The frame a callback reads is not always its own cycle's: jack2's jack_get_cycle_times reads
 * the server's shared timer, and a callback that runs after the next cycle began (a late
 * upstream client, a preempted thread) reads that cycle's first frame, exactly as if a cycle had
 * been skipped; the callback after it then reads its own frame again, one period "back". Taken
 * at its word, such a read moved the whole timeline a period ahead for good, and every sample
 * already in flight through the device under test came back a period off: a stretch as long as
 * the device's latency that looked misaligned, then came back into line. The callback cannot
 * tell the two apart when it must play, so it plays by its best guess (pos: ahead after a jump,
 * back again when the next read shows it was a late one, counted as late_reads), and the writer
 * places each block by the frames read over the next LOOKAHEAD callbacks: a cycle's first frame
 * is at most what any later callback read, less the periods between them. Where the content
 * played differs from the timeline (a late read played a period ahead), content_offsets says
 * so: [p, d] means that from recording frame p on, sample p + d of the signal was played.
 *
 * Summary counters: gap_cycles are cycles the server did not run this client in (JACK skips a
 * whole cycle for every client when any client was late: an xrun, usually not ours);
 * late_cycles ended after the next cycle was due (for whatever reason, e.g. a late upstream
 * client); overrun_cycles are callbacks that themselves took longer than a period, and
 * ring_overflows blocks the disk writer could not take: own_xruns = the two, the harness's own
 * glitches. server_xruns counts the xrun callbacks JACK sent (server-wide, any client);
 * xrun_positions the timeline position at each (null before the start). --stall CYCLE:MS makes
 * the harness itself stall the graph at a chosen cycle (a deterministic xrun for every client);
 * stalls lists where each happened on the timeline, stall_reference_pos where counting began.
 *
 * The played signal, exactly: out[p] = src[p mod L] (0 past the end with --once, src scaled by
 * --gain in float32 when the gain is not 1) + marker[p mod P] for p mod P < M, added in float32.
 * --dump-source / --dump-marker write src (after gain) and the marker, so that a checker can
 * rebuild the played signal bit for bit.
 *
 * Real-time safety: the process callback allocates nothing, takes no lock and does no I/O. It
 * copies its inputs into a lock-free single-producer/single-consumer ring and posts a semaphore;
 * a writer thread drains the ring to disk. Counters are C11 atomics.
 *
 * Build: cc -O2 -std=c11 -pthread -o rtharness rtharness.c -ljack -lm   (see Makefile)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jack/jack.h>
#include <jack/statistics.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 16
#define MAX_XRUN_LOG 256
#define MAX_CH 3 /* in_1, in_2, played */
#define MAX_STALL 16

/* ---------------------------------------------------------------- options */
static const char *opt_name = "rtharness";
static const char *opt_server = NULL;
static const char *opt_play = NULL;
static const char *opt_gen = NULL;
static const char *opt_record = NULL;
static const char *opt_played = NULL;
static const char *opt_json = NULL;
static const char *opt_dump_source = NULL;
static const char *opt_dump_marker = NULL;
static double opt_duration = 10.0;
static double opt_gain = 1.0;
static int opt_once = 0;
static double opt_marker_period = 1.0;
static int opt_marker_len = 1024;
static double opt_marker_amp = 0.25;
static uint32_t opt_marker_seed = 0x5eed1234u;
static int opt_inputs = 1;
static int opt_exclusive = 0;
static double opt_wait_ports = 10.0;
static double opt_ring_s = 20.0;
static int opt_force_rate = 0;
static int opt_stall_from_connect = 0;
static const char *opt_replay = NULL;
static int opt_replay_period = 256;
static int n_stall = 0;
static int64_t stall_cycle[MAX_STALL];   /* cycles after the reference */
static double stall_ms[MAX_STALL];
static const char *conn_to[MAX_CONN];
static int n_to = 0;
static const char *conn_from[MAX_CONN];
static int n_from = 0;
static const char *conn_from2[MAX_CONN];
static int n_from2 = 0;

/* ---------------------------------------------------------------- state */
static jack_client_t *client;
static jack_port_t *out_port, *in_ports[2];
static float *src;             /* loop source (after gain) */
static uint64_t src_len;
static float *marker;          /* marker burst */
static uint64_t marker_period; /* frames; 0 = no marker */
static uint64_t marker_len;
static uint64_t total_frames;  /* frames to play and record */
static int nch;                /* channels in the ring: inputs (+1 played) */
static uint32_t sample_rate;

static atomic_int go = 0;            /* main -> callback: start playing/recording */
static atomic_int started = 0;       /* callback -> main */
static atomic_int done = 0;          /* callback -> main: total_frames reached */
static atomic_int shutdown_flag = 0; /* server went away */
static volatile sig_atomic_t stop_req = 0;

/* callback-owned (read by main only after deactivation, or as atomics) */
static uint64_t pos;              /* played timeline position of the current cycle */
static jack_nframes_t start_frame;
static jack_time_t start_usecs;
static jack_nframes_t prev_frame;
static int have_prev = 0;
static atomic_uint_fast64_t cycles = 0;
static atomic_uint_fast64_t late_reads = 0;   /* a read of the next cycle's frame, seen after */
static atomic_uint_fast64_t late_cycles = 0;  /* our callback ended after the cycle's deadline */
static atomic_uint_fast64_t overrun_cycles = 0; /* our callback itself took longer than a period */
static atomic_uint_fast64_t max_callback_ns = 0;
static atomic_uint_fast64_t ring_overflows = 0;
static atomic_uint_fast64_t frames_played = 0;
static atomic_uint_fast64_t pos_now = 0;      /* timeline position, for the xrun log */
/* xrun callback (JACK's notification thread) */
static atomic_uint_fast64_t server_xruns = 0;
static float xrun_delay_max_us = 0.f;
static uint64_t xrun_pos[MAX_XRUN_LOG];
static float xrun_delay_us[MAX_XRUN_LOG];
/* induced stalls (--stall): the reference cycle's frame, and each stall's timeline position */
static int have_ref = 0;
static jack_nframes_t ref_frame;
static uint64_t ref_pos = UINT64_MAX;
static uint64_t stall_pos[MAX_STALL];
static int stall_done[MAX_STALL];

/* ---------------------------------------------------------------- SPSC ring (bytes) */
typedef struct {
  uint64_t pos;   /* played-signal position of the block's first frame (the callback's guess) */
  uint32_t n;     /* frames */
  uint32_t frame; /* the first frame of the cycle as the callback read it */
} block_hdr;

static uint8_t *ring;
static size_t ring_cap; /* power of two */
static atomic_size_t ring_head = 0; /* written by the callback */
static atomic_size_t ring_tail = 0; /* written by the writer */
static sem_t ring_sem;

static void ring_put(size_t at, const void *p, size_t len) {
  size_t i = at & (ring_cap - 1), first = ring_cap - i;
  if (first >= len) {
    memcpy(ring + i, p, len);
  } else {
    memcpy(ring + i, p, first);
    memcpy(ring, (const uint8_t *)p + first, len - first);
  }
}

static void ring_get(size_t at, void *p, size_t len) {
  size_t i = at & (ring_cap - 1), first = ring_cap - i;
  if (first >= len) {
    memcpy(p, ring + i, len);
  } else {
    memcpy(p, ring + i, first);
    memcpy((uint8_t *)p + first, ring, len - first);
  }
}

/* ---------------------------------------------------------------- helpers */
static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void amax_u64(atomic_uint_fast64_t *a, uint64_t v) {
  uint64_t cur = atomic_load_explicit(a, memory_order_relaxed);
  while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed,
                                                            memory_order_relaxed)) {
  }
}

static inline float play_sample(uint64_t p) {
  float s = 0.f;
  if (src_len) {
    if (opt_once) {
      if (p < src_len) s = src[p];
    } else {
      s = src[p % src_len];
    }
  }
  if (marker_period) {
    uint64_t m = p % marker_period;
    if (m < marker_len) s = s + marker[m];
  }
  return s;
}

/* ---------------------------------------------------------------- induced stalls */
/* --stall CYCLE:MS: in the cycle CYCLE periods (of the device clock) after the reference, this
 * callback sleeps MS milliseconds, so the graph is not finished when the next cycle is due and
 * the server skips a cycle for every client: an xrun at a chosen moment. The reference is this
 * harness's start, or (--stall-from connect) the first cycle in which another client is
 * connected to our output port: PortAudio connects a stream's ports in Pa_StartStream, and the
 * stream's first callback follows within a cycle or two. Deliberately not real-time safe. */
static void stall_check(jack_nframes_t f0, jack_nframes_t n) {
  if (!have_ref) {
    if (opt_stall_from_connect && !jack_port_connected(out_port)) return;
    have_ref = 1;
    ref_frame = f0;
    ref_pos = pos;
  }
  int64_t cyc = (int64_t)(int32_t)(f0 - ref_frame) / (int64_t)n; /* wrap-safe */
  for (int i = 0; i < n_stall; i++) {
    if (stall_done[i] || cyc < stall_cycle[i]) continue;
    stall_done[i] = 1;
    stall_pos[i] = pos;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)(stall_ms[i] * 1e6);
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
  }
}

/* ---------------------------------------------------------------- JACK callbacks */
/* One cycle whose first frame read f0: play, and queue the inputs and what was played. */
static void cycle(jack_nframes_t f0, jack_time_t cur_us, jack_nframes_t n,
                  const float *const *in, float *out) {
  atomic_fetch_add_explicit(&cycles, 1, memory_order_relaxed);

  jack_nframes_t step = 0;
  if (have_prev) {
    jack_nframes_t expect = prev_frame;
    step = f0 - expect; /* uint32 arithmetic: wrap-safe */
    if (step >= 0x80000000u) { /* back: the reads before this one were ahead */
      uint64_t back = (uint64_t)(uint32_t)(0u - step);
      atomic_fetch_add_explicit(&late_reads, 1, memory_order_relaxed);
      pos = back < pos ? pos - back : 0;
      step = 0;
    }
  }
  have_prev = 1;
  prev_frame = f0 + n;

  if (!atomic_load_explicit(&started, memory_order_relaxed)) {
    if (!atomic_load_explicit(&go, memory_order_acquire)) {
      memset(out, 0, sizeof(float) * n);
      return;
    }
    start_frame = f0;
    start_usecs = cur_us;
    pos = 0;
    atomic_store_explicit(&started, 1, memory_order_release);
  } else {
    pos += step; /* the clock moved on while we were not called */
  }
  if (pos >= total_frames) {
    memset(out, 0, sizeof(float) * n);
    atomic_store_explicit(&done, 1, memory_order_release);
    return;
  }
  for (jack_nframes_t i = 0; i < n; i++) out[i] = play_sample(pos + i);

  /* record: header + interleaved frames */
  size_t need = sizeof(block_hdr) + sizeof(float) * (size_t)n * (size_t)nch;
  size_t head = atomic_load_explicit(&ring_head, memory_order_relaxed);
  size_t tail = atomic_load_explicit(&ring_tail, memory_order_acquire);
  if (ring_cap - (head - tail) < need) {
    atomic_fetch_add_explicit(&ring_overflows, 1, memory_order_relaxed);
  } else {
    block_hdr h = {pos, n, f0};
    ring_put(head, &h, sizeof h);
    size_t at = head + sizeof h;
    float frame[MAX_CH];
    for (jack_nframes_t i = 0; i < n; i++) {
      int c = 0;
      for (; c < opt_inputs; c++) frame[c] = in[c][i];
      if (opt_played) frame[c++] = out[i];
      ring_put(at, frame, sizeof(float) * (size_t)c);
      at += sizeof(float) * (size_t)c;
    }
    atomic_store_explicit(&ring_head, head + need, memory_order_release);
    sem_post(&ring_sem);
  }
  if (n_stall) stall_check(f0, n);
  pos += n;
  atomic_fetch_add_explicit(&frames_played, n, memory_order_relaxed);
  atomic_store_explicit(&pos_now, pos, memory_order_relaxed);
  if (pos >= total_frames) atomic_store_explicit(&done, 1, memory_order_release);
}

static int process(jack_nframes_t n, void *arg) {
  (void)arg;
  uint64_t t0 = now_ns();
  jack_nframes_t f0;
  jack_time_t cur_us, next_us;
  float period_us;
  if (jack_get_cycle_times(client, &f0, &cur_us, &next_us, &period_us) != 0) {
    f0 = jack_last_frame_time(client);
    cur_us = jack_get_time();
    next_us = cur_us + (jack_time_t)(1e6 * n / sample_rate);
  }
  float *out = jack_port_get_buffer(out_port, n);
  const float *in[2] = {NULL, NULL};
  for (int c = 0; c < opt_inputs; c++) in[c] = jack_port_get_buffer(in_ports[c], n);
  cycle(f0, cur_us, n, in, out);
  uint64_t dt = now_ns() - t0;
  amax_u64(&max_callback_ns, dt);
  if (dt * (uint64_t)sample_rate > (uint64_t)n * 1000000000ull)
    atomic_fetch_add_explicit(&overrun_cycles, 1, memory_order_relaxed);
  if (jack_get_time() > next_us) atomic_fetch_add_explicit(&late_cycles, 1, memory_order_relaxed);
  return 0;
}

static int on_xrun(void *arg) {
  (void)arg;
  uint64_t k = atomic_fetch_add(&server_xruns, 1);
  float d = jack_get_xrun_delayed_usecs(client);
  if (d > xrun_delay_max_us) xrun_delay_max_us = d;
  if (k < MAX_XRUN_LOG) {
    xrun_pos[k] = atomic_load(&started) ? atomic_load(&pos_now) : UINT64_MAX;
    xrun_delay_us[k] = d;
  }
  return 0;
}

static void on_shutdown(void *arg) {
  (void)arg;
  atomic_store(&shutdown_flag, 1);
  sem_post(&ring_sem);
}

static void on_signal(int sig) {
  (void)sig;
  stop_req = 1;
}

/* ---------------------------------------------------------------- writer thread */
static FILE *rec_f, *played_f;
static uint64_t frames_recorded = 0, zero_filled = 0, write_errors = 0;
static atomic_int writer_quit = 0;

static void write_frames(const float *buf, uint64_t n) {
  /* buf: n frames of nch interleaved channels */
  static float tmp[4096 * MAX_CH];
  int nin = opt_inputs;
  uint64_t done_n = 0;
  while (done_n < n) {
    uint64_t k = n - done_n;
    if (k > 4096) k = 4096;
    const float *b = buf + done_n * (uint64_t)nch;
    if (rec_f) {
      if (nch == nin) {
        if (fwrite(b, sizeof(float) * nin, k, rec_f) != k) write_errors++;
      } else {
        for (uint64_t i = 0; i < k; i++)
          for (int c = 0; c < nin; c++) tmp[i * nin + c] = b[i * nch + c];
        if (fwrite(tmp, sizeof(float) * nin, k, rec_f) != k) write_errors++;
      }
    }
    if (played_f) {
      for (uint64_t i = 0; i < k; i++) tmp[i] = b[i * nch + nin];
      if (fwrite(tmp, sizeof(float), k, played_f) != k) write_errors++;
    }
    done_n += k;
  }
}

/* Placement (see the top): blocks wait in a queue of LOOKAHEAD until the frames read after them
 * bound their cycle's first frame. */
#define LOOKAHEAD 16
#define MAX_OFFSET_LOG 4096
typedef struct {
  block_hdr h;
  int64_t u; /* the frame read, unwrapped, relative to the first block's */
  float *data;
  size_t cap;
} queued;
static queued q[LOOKAHEAD];
static int q_head = 0, q_len = 0;
static int64_t last_u = 0;
static uint32_t last_frame = 0;
static int have_block = 0, have_origin = 0;
static int64_t origin = 0;      /* the first block's cycle, in unwrapped frames */
static int64_t next_t = 0;      /* the recording frame after the last block placed */
static int64_t last_offset = 0; /* played position - recording position, last block */
static uint64_t gap_cycles = 0, gap_frames = 0; /* holes in the recording: cycles we missed */
static int64_t offset_log[MAX_OFFSET_LOG][2];
static int n_offset_log = 0, offset_log_full = 0;
static float zeros[4096 * MAX_CH];

static void write_zeros(uint64_t k) {
  while (k > 0 && frames_recorded < total_frames) {
    uint64_t m = k > 4096 ? 4096 : k;
    if (frames_recorded + m > total_frames) m = total_frames - frames_recorded;
    write_frames(zeros, m);
    frames_recorded += m;
    zero_filled += m;
    k -= m;
  }
}

static void place_oldest(void) {
  queued *b = &q[q_head];
  int64_t f = b->u, ahead = 0;
  for (int i = 0; i < q_len; i++) {
    const queued *c = &q[(q_head + i) % LOOKAHEAD];
    if (c->u - ahead < f) f = c->u - ahead;
    ahead += c->h.n;
  }
  if (!have_origin) {
    origin = f;
    have_origin = 1;
  }
  int64_t t = f - origin;
  if (t < next_t) t = next_t; /* never before the block placed last: cycles only move on */
  if (t > next_t) {
    gap_cycles++;
    gap_frames += (uint64_t)(t - next_t);
    write_zeros((uint64_t)(t - next_t));
  }
  int64_t offset = (int64_t)b->h.pos - t;
  if (offset != last_offset) {
    if (n_offset_log < MAX_OFFSET_LOG) {
      offset_log[n_offset_log][0] = t;
      offset_log[n_offset_log][1] = offset;
      n_offset_log++;
    } else {
      offset_log_full = 1;
    }
    last_offset = offset;
  }
  uint64_t n = b->h.n;
  if ((uint64_t)t + n > total_frames) n = total_frames > (uint64_t)t ? total_frames - (uint64_t)t : 0;
  if (n) {
    write_frames(b->data, n);
    frames_recorded += n;
  }
  next_t = t + b->h.n;
  q_head = (q_head + 1) % LOOKAHEAD;
  q_len--;
}

static void *writer(void *arg) {
  (void)arg;
  for (;;) {
    size_t head = atomic_load_explicit(&ring_head, memory_order_acquire);
    size_t tail = atomic_load_explicit(&ring_tail, memory_order_relaxed);
    if (head == tail) {
      if (atomic_load(&writer_quit)) {
        while (q_len) place_oldest();
        /* the played position reached the end while the last blocks' places lag it (a late
         * read still ahead): the rest of the timeline went by unrecorded */
        if (atomic_load(&done) && have_origin && frames_recorded < total_frames)
          write_zeros(total_frames - frames_recorded);
        break;
      }
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 50 * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      sem_timedwait(&ring_sem, &ts);
      continue;
    }
    if (q_len == LOOKAHEAD) place_oldest();
    queued *b = &q[(q_head + q_len) % LOOKAHEAD];
    ring_get(tail, &b->h, sizeof b->h);
    size_t bytes = sizeof(float) * (size_t)b->h.n * (size_t)nch;
    if (bytes > b->cap) {
      free(b->data);
      b->data = malloc(bytes);
      b->cap = bytes;
    }
    ring_get(tail + sizeof b->h, b->data, bytes);
    atomic_store_explicit(&ring_tail, tail + sizeof b->h + bytes, memory_order_release);
    /* unwrapped: a read one period back is a small negative step, not a 2^32 jump */
    last_u = have_block ? last_u + (int32_t)(b->h.frame - last_frame) : 0;
    last_frame = b->h.frame;
    have_block = 1;
    b->u = last_u;
    q_len++;
  }
  for (int i = 0; i < LOOKAHEAD; i++) free(q[i].data);
  return NULL;
}

/* ---------------------------------------------------------------- source */
static uint32_t xs32(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int load_file(const char *path, uint32_t *rate_out) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "rtharness: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)sz);
  if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
    fprintf(stderr, "rtharness: cannot read %s\n", path);
    fclose(f);
    return -1;
  }
  fclose(f);
  *rate_out = 0;
  if (sz >= 12 && !memcmp(buf, "RIFF", 4) && !memcmp(buf + 8, "WAVE", 4)) {
    uint16_t fmt = 0, ch = 0, bits = 0;
    uint32_t rate = 0;
    const uint8_t *data = NULL;
    uint64_t dlen = 0;
    long off = 12;
    while (off + 8 <= sz) {
      uint32_t clen = rd32(buf + off + 4);
      const uint8_t *c = buf + off + 8;
      if (!memcmp(buf + off, "fmt ", 4) && clen >= 16) {
        fmt = rd16(c);
        ch = rd16(c + 2);
        rate = rd32(c + 4);
        bits = rd16(c + 14);
        if (fmt == 0xFFFE && clen >= 26) fmt = rd16(c + 24); /* extensible: sub-format */
      } else if (!memcmp(buf + off, "data", 4)) {
        data = c;
        dlen = clen;
        if ((long)(off + 8 + dlen) > sz) dlen = (uint64_t)(sz - off - 8);
      }
      off += 8 + (long)clen + (clen & 1);
    }
    if (!data || !ch || !(fmt == 1 || fmt == 3)) {
      fprintf(stderr, "rtharness: %s: unsupported WAV (need PCM 16/24/32 or float32)\n", path);
      return -1;
    }
    int bps = bits / 8;
    if (!((fmt == 1 && (bits == 16 || bits == 24 || bits == 32)) || (fmt == 3 && bits == 32))) {
      fprintf(stderr, "rtharness: %s: unsupported WAV sample format (%d bits)\n", path, bits);
      return -1;
    }
    src_len = dlen / ((uint64_t)bps * ch);
    src = malloc(sizeof(float) * (src_len ? src_len : 1));
    for (uint64_t i = 0; i < src_len; i++) {
      const uint8_t *p = data + i * (uint64_t)bps * ch; /* channel 0 */
      float v;
      if (fmt == 3) {
        uint32_t u = rd32(p);
        memcpy(&v, &u, 4);
      } else if (bits == 16) {
        v = (float)(int16_t)rd16(p) / 32768.0f;
      } else if (bits == 24) {
        int32_t x = (int32_t)((uint32_t)p[0] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 24);
        v = (float)(x >> 8) / 8388608.0f;
      } else {
        v = (float)((double)(int32_t)rd32(p) / 2147483648.0);
      }
      src[i] = v;
    }
    *rate_out = rate;
    if (ch > 1) fprintf(stderr, "rtharness: note: %s has %d channels; playing the first\n", path, ch);
  } else { /* raw mono float32, native endian */
    src_len = (uint64_t)sz / sizeof(float);
    src = malloc(sizeof(float) * (src_len ? src_len : 1));
    memcpy(src, buf, src_len * sizeof(float));
  }
  free(buf);
  return 0;
}

static int make_gen(const char *spec) {
  /* sine:FREQ[:AMP] (integer Hz: exactly periodic over one second), noise[:AMP], silence */
  if (!strncmp(spec, "sine", 4)) {
    double f = 1000, a = 0.5;
    if (spec[4] == ':') sscanf(spec + 5, "%lf:%lf", &f, &a);
    src_len = sample_rate;
    src = malloc(sizeof(float) * src_len);
    for (uint64_t i = 0; i < src_len; i++) src[i] = (float)(a * sin(2 * M_PI * f * (double)i / sample_rate));
  } else if (!strncmp(spec, "noise", 5)) {
    double a = 0.1;
    if (spec[5] == ':') sscanf(spec + 6, "%lf", &a);
    uint32_t s = 0x9e3779b9u;
    src_len = (uint64_t)sample_rate * 7 + 13; /* not a multiple of the marker period */
    src = malloc(sizeof(float) * src_len);
    for (uint64_t i = 0; i < src_len; i++)
      src[i] = (float)(a * ((double)(xs32(&s) >> 8) / 8388608.0 - 1.0));
  } else if (!strcmp(spec, "silence")) {
    src_len = 0;
  } else {
    fprintf(stderr, "rtharness: unknown --gen %s (sine:FREQ[:AMP], noise[:AMP], silence)\n", spec);
    return -1;
  }
  return 0;
}

static int dump(const char *path, const float *x, uint64_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "rtharness: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (n && fwrite(x, sizeof(float), n, f) != n) {
    fclose(f);
    return -1;
  }
  return fclose(f);
}

/* ---------------------------------------------------------------- connections */
static char conn_log[MAX_CONN * 3][512];
static int n_conn_log = 0;

static int wait_port(const char *name) {
  uint64_t until = now_ns() + (uint64_t)(opt_wait_ports * 1e9);
  for (;;) {
    if (jack_port_by_name(client, name)) return 0;
    if (now_ns() > until || stop_req) {
      fprintf(stderr, "rtharness: port %s did not appear\n", name);
      return -1;
    }
    usleep(20000);
  }
}

static void drop_others(const char *name, const char *keep) {
  jack_port_t *p = jack_port_by_name(client, name);
  if (!p) return;
  const char **c = jack_port_get_all_connections(client, p);
  if (!c) return;
  for (int i = 0; c[i]; i++) {
    if (keep && !strcmp(c[i], keep)) continue;
    int is_out = (jack_port_flags(p) & JackPortIsOutput) != 0;
    jack_disconnect(client, is_out ? name : c[i], is_out ? c[i] : name);
  }
  jack_free(c);
}

static int connect_pair(const char *from, const char *to) {
  if (wait_port(from) || wait_port(to)) return -1;
  if (opt_exclusive) {
    drop_others(from, to);
    drop_others(to, from);
  }
  int r = jack_connect(client, from, to);
  if (r != 0 && r != EEXIST) {
    fprintf(stderr, "rtharness: cannot connect %s -> %s (%d)\n", from, to, r);
    return -1;
  }
  if (n_conn_log < MAX_CONN * 3) snprintf(conn_log[n_conn_log++], 512, "%s -> %s", from, to);
  return 0;
}

/* ---------------------------------------------------------------- JSON */
static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

static void usage(void) {
  fprintf(stderr,
    "usage: rtharness [options]\n"
    "  -n, --name NAME          JACK client name (rtharness); ports NAME:out, NAME:in_1 [, NAME:in_2]\n"
    "  -S, --server NAME        JACK server (default $JACK_DEFAULT_SERVER)\n"
    "  -p, --play FILE          mono WAV (PCM16/24/32, float32) or raw float32 file to play\n"
    "  -g, --gen SPEC           generated source: sine:FREQ[:AMP], noise[:AMP], silence (default)\n"
    "      --gain G             gain on the source (1)\n"
    "      --once               play the source once, then silence (default: loop)\n"
    "      --marker-period S    a marker burst every S seconds (1; 0 = none)\n"
    "      --marker-len N       marker length in samples (1024)\n"
    "      --marker-amp A       marker amplitude (0.25)\n"
    "      --marker-seed N      marker PRNG seed\n"
    "  -d, --duration S         seconds to play and record (10)\n"
    "  -r, --record FILE        raw float32 recording (frames x inputs, interleaved)\n"
    "      --played FILE        also write the played signal (raw float32)\n"
    "  -i, --inputs 1|2         input ports (1)\n"
    "      --to PORT            connect NAME:out -> PORT (repeatable)\n"
    "      --from PORT          connect PORT -> NAME:in_1 (repeatable)\n"
    "      --from2 PORT         connect PORT -> NAME:in_2 (repeatable)\n"
    "      --exclusive          drop every other connection of the ports named above\n"
    "      --wait-ports S       wait up to S seconds for named ports to appear (10)\n"
    "      --ring S             recording ring size in seconds (20)\n"
    "      --dump-source FILE   write the source loop (after gain) as raw float32\n"
    "      --dump-marker FILE   write the marker burst as raw float32\n"
    "      --force-rate         play a file whose rate differs from the server's\n"
    "      --stall CYCLE:MS     sleep MS ms in the callback CYCLE periods after the reference:\n"
    "                           the server skips a cycle for every client (repeatable)\n"
    "      --stall-from start|connect  the reference: our start (default), or the first cycle\n"
    "                           in which a client is connected to NAME:out\n"
    "      --replay FILE        no JACK: run one cycle per line of FILE, each line the first\n"
    "                           frame that cycle read (decimal), input = what it played, at\n"
    "                           48 kHz (tests the timeline and the placement exactly)\n"
    "      --replay-period N    frames per replayed cycle (256)\n"
    "  -j, --json FILE          summary JSON (default stdout)\n");
}

static void write_summary(const char *me, jack_nframes_t bufsize, int realtime,
                          float max_delayed, int stopped_early, int rc) {
  FILE *jf = opt_json ? fopen(opt_json, "w") : stdout;
  if (!jf) {
    fprintf(stderr, "rtharness: cannot write %s\n", opt_json);
    jf = stdout;
  }
  uint64_t nx = atomic_load(&server_xruns);
  fprintf(jf, "{\n  \"client\": ");
  json_str(jf, me);
  fprintf(jf, ",\n  \"sample_rate\": %u,\n  \"buffer_size\": %u,\n  \"realtime\": %s,\n",
          sample_rate, bufsize, realtime ? "true" : "false");
  fprintf(jf, "  \"duration_s\": %.6f,\n  \"total_frames\": %" PRIu64 ",\n", opt_duration, total_frames);
  fprintf(jf, "  \"frames_played\": %" PRIu64 ",\n  \"frames_recorded\": %" PRIu64 ",\n",
          (uint64_t)atomic_load(&frames_played), frames_recorded);
  fprintf(jf, "  \"inputs\": %d,\n  \"started\": %s,\n  \"start_frame\": %u,\n  \"start_usecs\": %" PRIu64 ",\n",
          opt_inputs, atomic_load(&started) ? "true" : "false", start_frame, (uint64_t)start_usecs);
  fprintf(jf, "  \"cycles\": %" PRIu64 ",\n  \"gap_cycles\": %" PRIu64 ",\n  \"gap_frames\": %" PRIu64 ",\n",
          (uint64_t)atomic_load(&cycles), gap_cycles, gap_frames);
  fprintf(jf, "  \"late_reads\": %" PRIu64 ",\n  \"content_offsets_complete\": %s,\n  \"content_offsets\": [",
          (uint64_t)atomic_load(&late_reads), offset_log_full ? "false" : "true");
  for (int i = 0; i < n_offset_log; i++)
    fprintf(jf, "%s[%" PRId64 ", %" PRId64 "]", i ? ", " : "", offset_log[i][0], offset_log[i][1]);
  fprintf(jf, "],\n");
  fprintf(jf, "  \"late_cycles\": %" PRIu64 ",\n  \"max_callback_us\": %.1f,\n",
          (uint64_t)atomic_load(&late_cycles), atomic_load(&max_callback_ns) / 1000.0);
  fprintf(jf, "  \"ring_overflows\": %" PRIu64 ",\n  \"zero_filled_frames\": %" PRIu64 ",\n  \"write_errors\": %" PRIu64 ",\n",
          (uint64_t)atomic_load(&ring_overflows), zero_filled, write_errors);
  fprintf(jf, "  \"overrun_cycles\": %" PRIu64 ",\n", (uint64_t)atomic_load(&overrun_cycles));
  fprintf(jf, "  \"own_xruns\": %" PRIu64 ",\n",
          (uint64_t)(atomic_load(&overrun_cycles) + atomic_load(&ring_overflows)));
  fprintf(jf, "  \"server_xruns\": %" PRIu64 ",\n  \"max_delayed_usecs\": %.1f,\n  \"xrun_delay_max_us\": %.1f,\n",
          nx, max_delayed, xrun_delay_max_us);
  fprintf(jf, "  \"stall_reference_pos\": ");
  if (ref_pos == UINT64_MAX) fprintf(jf, "null"); else fprintf(jf, "%" PRIu64, ref_pos);
  fprintf(jf, ",\n  \"stalls\": [");
  for (int i = 0; i < n_stall; i++) {
    fprintf(jf, "%s{\"cycle\": %" PRId64 ", \"ms\": %.3f, \"pos\": ", i ? ", " : "",
            stall_cycle[i], stall_ms[i]);
    if (stall_done[i]) fprintf(jf, "%" PRIu64 "}", stall_pos[i]); else fprintf(jf, "null}");
  }
  fprintf(jf, "],\n  \"xrun_positions\": [");
  for (uint64_t k = 0; k < nx && k < MAX_XRUN_LOG; k++) {
    if (xrun_pos[k] == UINT64_MAX) fprintf(jf, "%snull", k ? ", " : "");
    else fprintf(jf, "%s%" PRIu64, k ? ", " : "", xrun_pos[k]);
  }
  fprintf(jf, "],\n  \"source\": {\"kind\": ");
  json_str(jf, opt_play ? "file" : (opt_gen ? opt_gen : "silence"));
  fprintf(jf, ", \"path\": ");
  if (opt_play) json_str(jf, opt_play); else fprintf(jf, "null");
  fprintf(jf, ", \"frames\": %" PRIu64 ", \"loop\": %s, \"gain\": %.9g},\n", src_len,
          opt_once ? "false" : "true", opt_gain);
  fprintf(jf, "  \"marker\": {\"period\": %" PRIu64 ", \"length\": %" PRIu64 ", \"amp\": %.9g, \"seed\": %u},\n",
          marker_period, marker_len, opt_marker_amp, opt_marker_seed);
  fprintf(jf, "  \"connections\": [");
  for (int i = 0; i < n_conn_log; i++) {
    if (i) fprintf(jf, ", ");
    json_str(jf, conn_log[i]);
  }
  fprintf(jf, "],\n  \"stopped_early\": %s,\n  \"error\": ", stopped_early ? "true" : "false");
  if (rc == 6) json_str(jf, "process callback stalled");
  else if (rc) json_str(jf, "could not connect ports");
  else if (atomic_load(&shutdown_flag)) json_str(jf, "JACK server shut down");
  else fprintf(jf, "null");
  fprintf(jf, "\n}\n");
  if (jf != stdout) fclose(jf);
}

/* the writer drains what is queued, places the last blocks and closes the files */
static void finish_writer(pthread_t wt) {
  atomic_store(&writer_quit, 1);
  sem_post(&ring_sem);
  pthread_join(wt, NULL);
  if (rec_f && fclose(rec_f)) write_errors++;
  if (played_f && fclose(played_f)) write_errors++;
}

/* --replay: the cycles a file lists, without JACK (see usage) */
static int replay(FILE *f, jack_nframes_t n, const char *me) {
  pthread_t wt;
  pthread_create(&wt, NULL, writer, NULL);
  atomic_store_explicit(&go, 1, memory_order_release);
  float *buf = calloc(n, sizeof(float));
  const float *in[2] = {buf, buf};
  unsigned long long frame;
  size_t need = 2 * (sizeof(block_hdr) + sizeof(float) * (size_t)n * (size_t)nch);
  while (!atomic_load(&done) && fscanf(f, "%llu", &frame) == 1) {
    while (ring_cap - (atomic_load(&ring_head) - atomic_load(&ring_tail)) < need) usleep(1000);
    cycle((jack_nframes_t)frame, 0, n, in, buf); /* plays into buf, then queues it as input */
  }
  fclose(f);
  free(buf);
  finish_writer(wt);
  write_summary(me, n, 0, 0.f, 0, 0);
  return write_errors || atomic_load(&ring_overflows) ? 7 : 0;
}

int main(int argc, char **argv) {
  enum { O_GAIN = 256, O_ONCE, O_MP, O_ML, O_MA, O_MS, O_PLAYED, O_TO, O_FROM, O_FROM2, O_EXCL,
         O_WAIT, O_RING, O_DS, O_DM, O_FORCE, O_STALL, O_STALL_FROM,
         O_REPLAY, O_REPLAY_PERIOD };
  static struct option lo[] = {
      {"name", 1, 0, 'n'}, {"server", 1, 0, 'S'}, {"play", 1, 0, 'p'}, {"gen", 1, 0, 'g'},
      {"gain", 1, 0, O_GAIN}, {"once", 0, 0, O_ONCE}, {"marker-period", 1, 0, O_MP},
      {"marker-len", 1, 0, O_ML}, {"marker-amp", 1, 0, O_MA}, {"marker-seed", 1, 0, O_MS},
      {"duration", 1, 0, 'd'}, {"record", 1, 0, 'r'}, {"played", 1, 0, O_PLAYED},
      {"inputs", 1, 0, 'i'}, {"to", 1, 0, O_TO}, {"from", 1, 0, O_FROM},
      {"from2", 1, 0, O_FROM2}, {"exclusive", 0, 0, O_EXCL}, {"wait-ports", 1, 0, O_WAIT},
      {"ring", 1, 0, O_RING}, {"dump-source", 1, 0, O_DS}, {"dump-marker", 1, 0, O_DM},
      {"force-rate", 0, 0, O_FORCE}, {"stall", 1, 0, O_STALL},
      {"stall-from", 1, 0, O_STALL_FROM}, {"replay", 1, 0, O_REPLAY},
      {"replay-period", 1, 0, O_REPLAY_PERIOD}, {"json", 1, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "n:S:p:g:d:r:i:j:h", lo, NULL)) != -1) {
    switch (o) {
      case 'n': opt_name = optarg; break;
      case 'S': opt_server = optarg; break;
      case 'p': opt_play = optarg; break;
      case 'g': opt_gen = optarg; break;
      case O_GAIN: opt_gain = atof(optarg); break;
      case O_ONCE: opt_once = 1; break;
      case O_MP: opt_marker_period = atof(optarg); break;
      case O_ML: opt_marker_len = atoi(optarg); break;
      case O_MA: opt_marker_amp = atof(optarg); break;
      case O_MS: opt_marker_seed = (uint32_t)strtoul(optarg, NULL, 0); break;
      case 'd': opt_duration = atof(optarg); break;
      case 'r': opt_record = optarg; break;
      case O_PLAYED: opt_played = optarg; break;
      case 'i': opt_inputs = atoi(optarg); break;
      case O_TO: if (n_to < MAX_CONN) conn_to[n_to++] = optarg; break;
      case O_FROM: if (n_from < MAX_CONN) conn_from[n_from++] = optarg; break;
      case O_FROM2: if (n_from2 < MAX_CONN) conn_from2[n_from2++] = optarg; break;
      case O_EXCL: opt_exclusive = 1; break;
      case O_WAIT: opt_wait_ports = atof(optarg); break;
      case O_RING: opt_ring_s = atof(optarg); break;
      case O_DS: opt_dump_source = optarg; break;
      case O_DM: opt_dump_marker = optarg; break;
      case O_FORCE: opt_force_rate = 1; break;
      case O_STALL: {
        long long c;
        double ms;
        if (n_stall >= MAX_STALL || sscanf(optarg, "%lld:%lf", &c, &ms) != 2 || c < 0 || ms <= 0) {
          fprintf(stderr, "rtharness: --stall CYCLE:MS (CYCLE >= 0, MS > 0, at most %d)\n", MAX_STALL);
          return 2;
        }
        stall_cycle[n_stall] = c;
        stall_ms[n_stall++] = ms;
        break;
      }
      case O_STALL_FROM:
        if (!strcmp(optarg, "connect")) opt_stall_from_connect = 1;
        else if (strcmp(optarg, "start")) { usage(); return 2; }
        break;
      case O_REPLAY: opt_replay = optarg; break;
      case O_REPLAY_PERIOD: opt_replay_period = atoi(optarg); break;
      case 'j': opt_json = optarg; break;
      case 'h': usage(); return 0;
      default: usage(); return 2;
    }
  }
  if (opt_inputs < 1 || opt_inputs > 2 || opt_duration <= 0 || opt_marker_len < 1 ||
      (opt_play && opt_gen) || opt_replay_period < 1 || opt_replay_period > 4096) {
    usage();
    return 2;
  }
  if (opt_marker_seed == 0) opt_marker_seed = 1;

  char me[256];
  jack_nframes_t bufsize;
  FILE *replay_f = NULL;
  if (opt_replay) {
    replay_f = fopen(opt_replay, "r");
    if (!replay_f) {
      fprintf(stderr, "rtharness: cannot read %s: %s\n", opt_replay, strerror(errno));
      return 4;
    }
    snprintf(me, sizeof me, "%s", opt_name);
    sample_rate = 48000;
    bufsize = (jack_nframes_t)opt_replay_period;
  } else {
    jack_status_t st;
    jack_options_t jo = JackNoStartServer | (opt_server ? JackServerName : 0);
    client = opt_server ? jack_client_open(opt_name, jo, &st, opt_server)
                        : jack_client_open(opt_name, jo, &st);
    if (!client) {
      fprintf(stderr, "rtharness: cannot connect to the JACK server (status 0x%x)\n", st);
      return 3;
    }
    if (st & JackNameNotUnique)
      fprintf(stderr, "rtharness: note: client name taken; using %s\n", jack_get_client_name(client));
    snprintf(me, sizeof me, "%s", jack_get_client_name(client)); /* freed by jack_client_close */
    sample_rate = jack_get_sample_rate(client);
    bufsize = jack_get_buffer_size(client);
  }

  if (opt_play) {
    uint32_t r;
    if (load_file(opt_play, &r)) return 4;
    if (r && r != sample_rate && !opt_force_rate) {
      fprintf(stderr, "rtharness: %s is %u Hz but the server runs at %u Hz (JACK does not "
              "resample; --force-rate plays it anyway)\n", opt_play, r, sample_rate);
      return 4;
    }
  } else if (make_gen(opt_gen ? opt_gen : "silence")) {
    return 2;
  }
  if (opt_gain != 1.0)
    for (uint64_t i = 0; i < src_len; i++) src[i] = src[i] * (float)opt_gain;
  marker_period = (uint64_t)llround(opt_marker_period * sample_rate);
  marker_len = (uint64_t)opt_marker_len;
  if (marker_period && marker_len > marker_period) marker_len = marker_period;
  marker = calloc(marker_len, sizeof(float));
  {
    uint32_t s = opt_marker_seed;
    for (uint64_t i = 0; i < marker_len; i++)
      marker[i] = (xs32(&s) & 0x80000000u) ? (float)opt_marker_amp : -(float)opt_marker_amp;
  }
  if ((opt_dump_source && dump(opt_dump_source, src, src_len)) ||
      (opt_dump_marker && dump(opt_dump_marker, marker, marker_len)))
    return 4;
  total_frames = (uint64_t)llround(opt_duration * sample_rate);
  nch = opt_inputs + (opt_played ? 1 : 0);

  /* ring: >= opt_ring_s seconds of blocks, a power of two, pre-faulted */
  size_t want = (size_t)(opt_ring_s * sample_rate) * (sizeof(float) * nch + sizeof(block_hdr)) + 65536;
  ring_cap = 1;
  while (ring_cap < want) ring_cap <<= 1;
  ring = malloc(ring_cap);
  if (!ring) return 5;
  memset(ring, 0, ring_cap);
  sem_init(&ring_sem, 0, 0);
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) { /* not fatal: non-root may not lock */
  }

  if (opt_record) {
    rec_f = fopen(opt_record, "wb");
    if (!rec_f) {
      fprintf(stderr, "rtharness: cannot write %s: %s\n", opt_record, strerror(errno));
      return 4;
    }
    setvbuf(rec_f, NULL, _IOFBF, 1 << 20);
  }
  if (opt_played) {
    played_f = fopen(opt_played, "wb");
    if (!played_f) {
      fprintf(stderr, "rtharness: cannot write %s: %s\n", opt_played, strerror(errno));
      return 4;
    }
    setvbuf(played_f, NULL, _IOFBF, 1 << 20);
  }

  if (replay_f) return replay(replay_f, bufsize, me);

  out_port = jack_port_register(client, "out", JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0);
  in_ports[0] = jack_port_register(client, "in_1", JACK_DEFAULT_AUDIO_TYPE, JackPortIsInput, 0);
  if (opt_inputs > 1)
    in_ports[1] = jack_port_register(client, "in_2", JACK_DEFAULT_AUDIO_TYPE, JackPortIsInput, 0);
  if (!out_port || !in_ports[0] || (opt_inputs > 1 && !in_ports[1])) {
    fprintf(stderr, "rtharness: cannot register ports\n");
    return 3;
  }
  jack_set_process_callback(client, process, NULL);
  jack_set_xrun_callback(client, on_xrun, NULL);
  jack_on_shutdown(client, on_shutdown, NULL);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  pthread_t wt;
  pthread_create(&wt, NULL, writer, NULL);
  if (jack_activate(client)) {
    fprintf(stderr, "rtharness: cannot activate\n");
    return 3;
  }

  int rc = 0;
  char my_out[320], my_in[2][320];
  snprintf(my_out, sizeof my_out, "%s:out", me);
  snprintf(my_in[0], sizeof my_in[0], "%s:in_1", me);
  snprintf(my_in[1], sizeof my_in[1], "%s:in_2", me);
  for (int i = 0; i < n_to && !rc; i++) rc = connect_pair(my_out, conn_to[i]);
  for (int i = 0; i < n_from && !rc; i++) rc = connect_pair(conn_from[i], my_in[0]);
  for (int i = 0; i < n_from2 && !rc && opt_inputs > 1; i++) rc = connect_pair(conn_from2[i], my_in[1]);
  uint64_t t_go = now_ns();
  if (!rc) atomic_store_explicit(&go, 1, memory_order_release);

  /* wait: done, a signal, server shutdown, or the duration plus a generous grace */
  uint64_t grace_ns = (uint64_t)((opt_duration + 10.0) * 1e9);
  while (!rc && !atomic_load(&done) && !stop_req && !atomic_load(&shutdown_flag)) {
    if (now_ns() - t_go > grace_ns) {
      fprintf(stderr, "rtharness: the process callback stalled\n");
      rc = 6;
      break;
    }
    usleep(10000);
  }
  int stopped_early = stop_req || atomic_load(&shutdown_flag);
  float max_delayed = jack_get_max_delayed_usecs(client);
  int realtime = jack_is_realtime(client);
  jack_deactivate(client);
  finish_writer(wt);
  jack_client_close(client);

  write_summary(me, bufsize, realtime, max_delayed, stopped_early, rc);
  if (!rc && (write_errors || atomic_load(&ring_overflows))) rc = 7;
  return rc;
}
