# jack_ci.sh -- start/stop a private JACK server (dummy backend) for the real-time audio tests.
# Installs nothing: .ci/run installs libportaudio2 and jackd2 first.
# Usage (bash):
#   source tools/jack_ci.sh
#   jack_ci_start                  # exports JACK_DEFAULT_SERVER and JACKD_PID; returns 1 on failure
#   trap jack_ci_stop EXIT         # stop by PID after every PortAudio client has exited
#   AUDIO_TESTS_REQUIRED=1 python -m pytest -q tests/test_jack_realtime.py
jack_ci_start() {
  export JACK_NO_AUDIO_RESERVATION=1            # never try D-Bus device reservation
  # A server killed with -9 (the fault tests do that) keeps its slot in JACK's 8-slot registry;
  # with no server running, every entry there is stale: clear them so a new server can start.
  if ! pgrep -x jackd >/dev/null 2>&1; then rm -rf /dev/shm/jack-* /dev/shm/jack_* 2>/dev/null; fi
  export JACK_DEFAULT_SERVER="streamsep_ci_$$"  # private server: PortAudio, jack_lsp and
                                                # jack_connect in this job all use it
  local rt=(); [ "$(id -u)" -eq 0 ] || rt=(--no-realtime)  # non-root cannot get SCHED_FIFO
  export JACKD_LOG="${TMPDIR:-/tmp}/jackd_${JACK_DEFAULT_SERVER}.log"
  jackd "${rt[@]}" -n "$JACK_DEFAULT_SERVER" -d dummy -r 48000 -p 256 \
        >"$JACKD_LOG" 2>&1 </dev/null &
  JACKD_PID=$!
  export JACKD_PID
  local i
  for i in $(seq 1 200); do                     # ready in ~0.15 s; give up after 10 s
    # jack_wait -c exits 0 even without a server, so poll jack_lsp (exits 1 when it is down)
    if jack_lsp >/dev/null 2>&1; then return 0; fi
    kill -0 "$JACKD_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "jackd did not come up; log:" >&2; cat "$JACKD_LOG" >&2
  return 1
}
jack_ci_stop() {
  if [ -n "${JACKD_PID:-}" ] && kill -0 "$JACKD_PID" 2>/dev/null; then
    kill "$JACKD_PID"; wait "$JACKD_PID" 2>/dev/null || true
  fi
  JACKD_PID=
}
