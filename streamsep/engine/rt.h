/* Shared by rt.c and the cffi declarations (rt_build.py reads this file): plain C only. */

typedef struct rt_ring {
    float *buf;
    int64_t capacity;
    int64_t write_pos;        /* producer: one past the newest sample (published, release) */
    int64_t read_pos;         /* playback consumer: next position to play */
    int64_t started;          /* playback: read_pos is valid */
    int64_t late_samples;     /* playback producer: samples that arrived after their slot */
    int64_t overflow_samples; /* playback producer: samples with no room (consumer stalled) */
} rt_ring;

typedef struct rt_snap {      /* (position, monotonic ns) under a sequence counter */
    int64_t seq;
    int64_t pos;
    int64_t ns;
} rt_snap;

typedef struct rt_in {
    rt_ring *ring;
    rt_snap snap;             /* write_pos after the newest input block, and when it came */
    int64_t judging;          /* the input's stream has an xrun to judge: a gap may be filled */
} rt_in;

typedef struct rt_out {
    rt_ring *ring;
    rt_in *input;             /* for the "dry" fill and an own-clock start; may be NULL */
    int64_t dry;              /* fill missing output with the input (overload policy "dry") */
    int64_t latency;          /* samples between an input position and its playback */
    int64_t delta;            /* playback position = input position + delta (drift, re-plan) */
    int64_t end;              /* underruns at or past this position are not counted */
    int64_t underrun;         /* samples played before they were ready */
    rt_snap snap;             /* position handed to the device, and when */
} rt_out;

typedef struct rt_stream {    /* userdata of one PortAudio stream */
    rt_in *source;            /* the engine's input (NULL for a player without one) */
    rt_out *sink;             /* the output this stream plays (NULL for input only) */
    int64_t feeds_input;      /* this stream's input writes source (else it only reads it) */
    int64_t in_channels;
    int64_t out_channels;
    int64_t sample_rate;
    int64_t blocks;
    int64_t xrun_events;      /* callbacks that carried any xrun flag: each event once */
    int64_t input_underflow;
    int64_t input_overflow;
    int64_t output_underflow;
    int64_t output_overflow;
    int64_t max_callback_ns;
    int64_t heartbeat_ns;     /* end of the newest callback: a watchdog sees a dead device */
    int64_t fill_gaps;        /* the host counts frames exactly (JACK): a cycle that never
                                 reached us is filled in, keeping positions on the device's
                                 clock (measured on frame_clock, else on the stream time) */
    void *frame_clock;        /* jack_last_frame_time of jack2's libjack, or NULL (rt_jack_frame_clock) */
    int64_t clock_last;       /* the frame clock at the previous callback (32 bits, wraps) */
    int64_t clock_frames;     /* frames the frame clock advanced since the first callback */
    double base_time;         /* stream time (currentTime) of the first callback, seconds */
    int64_t frames_seen;      /* frames delivered or filled in since then */
    int64_t devs[8];          /* recent (frame clock or stream time - frames_seen), frames */
    int64_t check_in;         /* callbacks until the deviations are judged (after an xrun) */
    int64_t floor_before;     /* the deviations' floor over the callbacks before that xrun */
    int64_t judge_from;       /* the input's write position when that judgement opened */
    int64_t gap_events;       /* callbacks that found frames missing before them */
    int64_t gap_frames;       /* frames filled in (input: silence; output: skipped) */
} rt_stream;

int64_t rt_now_ns(void);
void *rt_jack_frame_clock(void);
int64_t rt_load(const int64_t *p);
void rt_store(int64_t *p, int64_t v);
void rt_hist_write(rt_ring *r, const float *x, int64_t n, int64_t stride);
int64_t rt_hist_read(const rt_ring *r, int64_t start, float *out, int64_t n, int64_t stride);
void rt_play_start(rt_ring *r, int64_t pos);
void rt_play_write_at(rt_ring *r, int64_t pos, const float *x, int64_t n);
int64_t rt_play_read(rt_ring *r, float *out, int64_t n, int64_t stride, int64_t *start);
int rt_snap_read(const rt_snap *s, int64_t *pos, int64_t *ns);
void rt_in_feed(rt_in *in, const float *x, int64_t n, int64_t stride, int64_t now_ns);
int64_t rt_in_position_at(const rt_in *in, int64_t now_ns, int64_t sample_rate);
void rt_out_play(rt_out *o, float *out, int64_t n, int64_t stride, int64_t origin,
                 int64_t now_ns);
int rt_callback(const void *input, void *output, unsigned long frames, const void *time_info,
                unsigned long flags, void *userdata);
