#!/bin/sh
# Runs inside the VM (make demo-c, from the repository root): the kernel's C ncdevmem receives 64 MiB
# from the peer netns into a udmabuf and validates every byte.
set -eu
: "${DEVMEM_C_NCDEVMEM:?the kernel build made no ncdevmem}"
port=5201
size=64M

# ncdevmem's own NIC setup wants ntuple rules, which netdevsim lacks: enable
# header split here (hdsplit, built by make demo-c next to vmexec), skip
# ncdevmem's setup (-n) and bind every rx queue.
"$(dirname "$0")/../../bin/hdsplit" "$DEVMEM_IFNAME" on
queues=$(ls -d /sys/class/net/"$DEVMEM_IFNAME"/queues/rx-* | wc -l)

"$DEVMEM_C_NCDEVMEM" -l -n -f "$DEVMEM_IFNAME" -s "$DEVMEM_ADDR4" -p $port \
	-t 0 -q "$queues" -v 7 >/tmp/ncdevmem.out 2>/tmp/ncdevmem.err &
server=$!
# Wait for the listener; a probe connection would be taken as the transfer.
hexport=$(printf '%04X' $port)
for _ in $(seq 200); do
	grep -qs ":$hexport [0:]* 0A" /proc/net/tcp /proc/net/tcp6 && break
	sleep 0.1
done

start=$(date +%s.%N)
# The pattern ncdevmem -v 7 checks: bytes 1..6 then '\n', repeating.
client=0
ip netns exec "$DEVMEM_PEER_NETNS" sh -c \
	"yes \"\$(printf '\\001\\002\\003\\004\\005\\006')\" | head -c $size | socat -u - TCP:$DEVMEM_ADDR4:$port" ||
	client=$?
status=0
wait $server || status=$?
end=$(date +%s.%N)
# ncdevmem prints a line per buffer and frag on stdout; show its stderr.
echo "demo: ncdevmem validated $(grep -c 'Validated buffer' /tmp/ncdevmem.out || true) buffers; its stderr ends:"
tail -n 10 /tmp/ncdevmem.err
[ $client -eq 0 ] || echo "demo: the sending socat failed with status $client"
if [ $status -eq 0 ] && [ $client -eq 0 ]; then
	echo "demo: ncdevmem received and validated $size in $(awk "BEGIN {printf \"%.2f\", $end - $start}") s"
else
	echo "demo: ncdevmem exited with status $status"
	[ $status -ne 0 ] || status=1
fi
exit $status
