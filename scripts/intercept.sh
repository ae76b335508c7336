#!/usr/bin/env bash
# Shows loopchat's traffic on the loopback interface as it happens: one line per packet, with
# its direction, TCP flags, and payload as text, so you can see the bytes of the protocol.
#
#   scripts/intercept.sh [PORT] [SECONDS]
#
# PORT is the server's port (1234 by default), TCP and UDP alike. SECONDS stops the capture
# after that long; without it, Ctrl-C stops it, prints the packets not yet shown and exits 0.
# Needs tshark (Wireshark's command line) and the right to capture (root, or membership of the
# wireshark group). docs/capture.md explains the output and the same view in Wireshark.
set -euo pipefail

port="${1:-1234}"
seconds="${2:-0}"
case "$port$seconds" in
  *[!0-9]*) echo "usage: $0 [PORT] [SECONDS]" >&2; exit 2 ;;
esac

if ! command -v tshark >/dev/null 2>&1; then
  cat >&2 <<'MSG'
intercept.sh: tshark is not installed. Install it with one of:
  sudo apt-get install tshark        # Debian, Ubuntu
  sudo dnf install wireshark-cli     # Fedora
  brew install wireshark             # macOS
MSG
  exit 1
fi

# The loopback interface is lo on Linux, lo0 on macOS and the BSDs.
iface=lo
[ "$(uname -s)" = Linux ] || iface=lo0

limit=()
[ "$seconds" != 0 ] && limit=(-a "duration:$seconds")

stop="Ctrl-C stops it"
[ "$seconds" != 0 ] && stop="it stops after $seconds s"

# mawk, Debian's default awk, reads a pipe in blocks: without -W interactive no packet shows
# until kilobytes of them have piled up. gawk and BSD awk print each line as it comes.
awk=(awk)
case "$(awk -W version 2>&1 </dev/null || true)" in
  *mawk*) awk=(awk -W interactive) ;;
esac

# Ctrl-C reaches every process of the terminal's foreground group. tshark stops the capture on
# it, prints the packets it still holds and exits 0; what reads its output must outlive the
# signal to show them, ending when that output does.
outlive_ctrl_c() { trap '' INT; exec "$@"; }

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

echo "Capturing TCP and UDP port $port on $iface; $stop. Columns: seconds, from > to, protocol, TCP flags, payload." >&2
# This shell outlives Ctrl-C too, to wait for the pipeline's last lines and clean up.
trap : INT
# -d ...,data: show the payload as plain data whatever dissector usually owns the port.
# tshark's own messages go to stderr, and to a file for the diagnosis below. The filter is
# attached to the whole group, not to tshark, so that it is this shell's child and $! names it.
status=0
{
tshark -i "$iface" -l -n "${limit[@]}" -f "port $port" \
  -d "tcp.port==$port,data" -d "udp.port==$port,data" -o data.show_as_text:TRUE \
  -T fields -E separator=/t \
  -e frame.time_relative -e ip.src -e ipv6.src -e tcp.srcport -e udp.srcport \
  -e ip.dst -e ipv6.dst -e tcp.dstport -e udp.dstport -e tcp.flags.str -e data.text |
outlive_ctrl_c "${awk[@]}" -F'\t' -v port="$port" '
  function endpoint(ip4, ip6, p) {
    if (p == port) return "server"
    return (ip4 != "" ? ip4 : "[" ip6 "]") ":" p
  }
  # tcp.flags.str is 12 positions, a letter where a flag is set.
  function flags(str,    s, names, out, i) {
    s = str; gsub(/\302\267/, ".", s)   # the middle dot tshark uses for an unset flag
    split(":::::::ACK:PSH:RST:SYN:FIN", names, ":")
    out = ""
    for (i = 8; i <= 12; i++) if (substr(s, i, 1) != "." && substr(s, i, 1) != "") out = out (out ? "," : "") names[i]
    return out
  }
  {
    proto = ($4 != "" || $8 != "") ? "TCP" : "UDP"
    from = endpoint($2, $3, proto == "TCP" ? $4 : $5)
    to = endpoint($6, $7, proto == "TCP" ? $8 : $9)
    printf "%10.6f  %-21s > %-21s %s  %-11s %s\n", $1, from, to, proto, (proto == "TCP" ? flags($10) : ""), $11
    fflush()
  }' || status=$?
} 2> >(trap '' INT; tee "$errors" | grep --line-buffered -v -e "^Running as user" -e "could be dangerous" -e "MESSAGE] -- File:" -e "^tshark: *$" >&2)
# tshark's last words ("N packets captured", or why it failed) are printed, and in $errors,
# once the filter ends.
wait "$!" || true

if [ "$status" -ne 0 ]; then
  if grep -qi -e 'permission' -e 'not permitted' -e "don't have permission" "$errors"; then
    cat >&2 <<'MSG'
intercept.sh: this user may not capture packets. Run it with sudo, or allow your user:
  sudo dpkg-reconfigure wireshark-common   # answer Yes
  sudo usermod -aG wireshark "$USER"       # then log out and in again
MSG
  fi
  exit "$status"
fi
