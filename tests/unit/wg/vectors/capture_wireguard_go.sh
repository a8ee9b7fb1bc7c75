#!/bin/bash
set -u
# Regenerates wireguard_go_*.json (run as root; a throwaway netns, deleted on exit).
mkdir -p /tmp/wgsanity
HERE="$(cd "$(dirname "$0")" && pwd)"
NS=wgsanity$$
cleanup() { ip netns pids $NS 2>/dev/null | xargs -r kill 2>/dev/null; ip netns del $NS 2>/dev/null; rm -f /tmp/wgsanity/wgk; }
trap cleanup EXIT
ip netns add $NS
ip -n $NS link set lo up
ip netns exec $NS env WG_PROCESS_FOREGROUND=1 wireguard-go wgt0 >/tmp/wgsanity/wggo.log 2>&1 &
sleep 1
WGK=$(wg genkey); WGP=$(echo $WGK | wg pubkey)
K1=$(wg genkey); P1=$(echo $K1 | wg pubkey)
K2=$(wg genkey); P2=$(echo $K2 | wg pubkey)
echo $WGK > /tmp/wgsanity/wgk
ip netns exec $NS wg set wgt0 private-key /tmp/wgsanity/wgk listen-port 51000 \
  peer $P1 allowed-ips 10.9.0.2/32 endpoint 127.0.0.1:51001 \
  peer $P2 allowed-ips 10.9.0.3/32 endpoint 127.0.0.1:51002
ip -n $NS addr add 10.9.0.1/24 dev wgt0
ip -n $NS link set wgt0 up
cd "$HERE/../../../.."
ip netns exec $NS .venv/bin/python "$HERE"/capture_peer.py initiator $WGP 51001 $K1
ip netns exec $NS .venv/bin/python "$HERE"/capture_peer.py responder $WGP 51002 $K2 &
RP=$!
sleep 0.5
ip netns exec $NS ping -c 1 -W 5 10.9.0.3 && echo "PING_OK"
wait $RP
ip netns exec $NS wg show wgt0
echo "captures in /tmp/wgsanity/{initiator,responder}.json; copy them here (adding a SOURCE line) to update the vectors"
