#!/bin/sh
# Asterisk's copies of the secrets it shares with the gateway, written from the environment
# (docker-compose.yml gives both services gateway.env) before Asterisk starts: the AMI secret
# (manager-site.conf includes manager-secrets.conf) and the FastAGI key in the dialplan's AGI
# URLs (gateway-site.conf includes gateway-secrets.conf). Then runs its arguments (Asterisk).
# A missing or unusable secret stops here, with one line naming it: Asterisk never starts with
# a guessable one.
set -eu
dir=${ASTERISK_ETC_DIR:-/etc/asterisk}

usable() {  # NAME VALUE: it goes into a .conf value and a URL query, so no ; # = & space etc.
  case $2 in
    *[!A-Za-z0-9_-]*) ;;
    *) [ ${#2} -ge 16 ] && return 0 ;;
  esac
  echo "write-secrets.sh: $1 in gateway.env must be 16 or more letters, digits, - or _ (scripts/compose-env writes one)" >&2
  exit 1
}
usable GATEWAY_VOICE_AMI_SECRET "${GATEWAY_VOICE_AMI_SECRET:-}"
usable GATEWAY_VOICE_FASTAGI_SECRET "${GATEWAY_VOICE_FASTAGI_SECRET:-}"

umask 077
printf '[gateway](+)\nsecret=%s\n' "$GATEWAY_VOICE_AMI_SECRET" >"$dir/manager-secrets.conf"
printf 'GATEWAY_FASTAGI=agi://gateway:4573/din?key=%s\nGATEWAY_FASTAGI_OUTBOUND=agi://gateway:4573/outbound?key=%s\n' \
  "$GATEWAY_VOICE_FASTAGI_SECRET" "$GATEWAY_VOICE_FASTAGI_SECRET" >"$dir/gateway-secrets.conf"
# Asterisk reads its configs after dropping root (-U asterisk).
if [ "$(id -u)" = 0 ] && id asterisk >/dev/null 2>&1; then
  chown asterisk:asterisk "$dir/manager-secrets.conf" "$dir/gateway-secrets.conf"
fi
exec "$@"
