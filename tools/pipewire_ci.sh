# pipewire_ci.sh -- start/stop a private, headless PipeWire with its PulseAudio layer, for the
# virtual-microphone tests (tests/test_virtual_mic.py). No systemd, no sound card: D-Bus (which
# WirePlumber needs), pipewire, wireplumber and pipewire-pulse, all under a private
# XDG_RUNTIME_DIR, plus a null sink "ci_speaker" as the default output (what --input monitor
# records). Recipe: shared/research/audio_io.md section 3. Installs nothing: .ci/run installs
# pipewire pipewire-pulse pipewire-jack wireplumber pulseaudio-utils libasound2-plugins dbus first
# (pipewire-jack: PipeWire's JACK layer, which run --virtual-mic uses; jack_rec needs jackd2's
# example clients).
# Usage (bash):
#   source tools/pipewire_ci.sh
#   pw_ci_start [DIR]     # exports XDG_RUNTIME_DIR, PULSE_SERVER, STREAMSEP_TEST_PULSE=1
#   trap pw_ci_stop EXIT  # stops the daemons by PID
# or as a command (the pytest fixture uses this): bash tools/pipewire_ci.sh start|stop DIR
pw_ci_start() {
  local dir="${1:-}"
  [ -n "$dir" ] || dir="$(mktemp -d "${TMPDIR:-/tmp}/streamsep-pw.XXXXXX")"
  mkdir -p "$dir" && chmod 700 "$dir"
  export XDG_RUNTIME_DIR="$dir"
  export DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/bus"
  export PULSE_SERVER="unix:$dir/pulse/native"
  # Tests may create nodes and change the defaults on this server: it is nobody's desktop.
  export STREAMSEP_TEST_PULSE=1
  # WirePlumber remembers default devices in its state folder: keep that private too, or a
  # test's virtual microphone could come back as someone's default.
  local env=(env XDG_STATE_HOME="$dir/state" XDG_CONFIG_HOME="$dir/config")
  : >"$dir/pids"
  "${env[@]}" dbus-daemon --session --address="$DBUS_SESSION_BUS_ADDRESS" --nofork --nopidfile \
      --nosyslog </dev/null >"$dir/dbus.log" 2>&1 &
  echo $! >>"$dir/pids"
  "${env[@]}" pipewire </dev/null >"$dir/pipewire.log" 2>&1 &
  echo $! >>"$dir/pids"
  local i
  for i in $(seq 1 200); do pw-cli info 0 >/dev/null 2>&1 && break; sleep 0.05; done
  "${env[@]}" wireplumber </dev/null >"$dir/wireplumber.log" 2>&1 &
  echo $! >>"$dir/pids"
  "${env[@]}" pipewire-pulse </dev/null >"$dir/pipewire-pulse.log" 2>&1 &
  echo $! >>"$dir/pids"
  for i in $(seq 1 200); do pactl info >/dev/null 2>&1 && break; sleep 0.05; done
  if ! pactl info >/dev/null 2>&1; then
    echo "PipeWire did not come up; logs:" >&2; tail -n 20 "$dir"/*.log >&2
    return 1
  fi
  pactl load-module module-null-sink sink_name=ci_speaker rate=48000 channels=1 \
      format=float32le sink_properties=device.description=CISpeaker >/dev/null || return 1
  pactl set-default-sink ci_speaker || return 1
  # WirePlumber sets the default once it has seen the sink: wait until the server says so.
  for i in $(seq 1 100); do
    pactl info 2>/dev/null | grep -q "^Default Sink: ci_speaker$" && return 0
    sleep 0.05
  done
  echo "PipeWire did not take ci_speaker as the default sink" >&2
  return 1
}

pw_ci_stop() {
  local dir="${1:-${XDG_RUNTIME_DIR:-}}" p i
  [ -n "$dir" ] && [ -f "$dir/pids" ] || return 0
  # pipewire-pulse, wireplumber and pipewire before D-Bus: the reverse of the start.
  for p in $(tac "$dir/pids"); do kill "$p" 2>/dev/null || true; done
  for p in $(tac "$dir/pids"); do
    wait "$p" 2>/dev/null || true  # our own children: reaped here
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -f "$dir/pids"
  # a folder pw_ci_start made itself goes too (logs included)
  case "$(basename "$dir")" in streamsep-pw.*) rm -rf "$dir" ;; esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  case "${1:-}" in
    start) pw_ci_start "${2:?DIR}" ;;
    stop) pw_ci_stop "${2:?DIR}" ;;
    *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
  esac
fi
