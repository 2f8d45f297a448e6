# Recaptures the cgroup v2 fixture tree (run by init.sh in capture mode; the host
# unpacks the tar written to /dev/vda into tests/fixtures/cgroup-v2-debian-6.1).
#
# demo/         memory.max 64 MiB, memory.low 8 MiB, memory.swap.max 32 MiB,
#               cpu.max "50000 100000", pids.max 40
# demo/holder/  one live shell holding 12 MiB of tmpfs (shmem) and an 8 MiB shell
#               variable, after burning CPU under demo's quota (throttled) and
#               writing 8 MiB to the capture disk then reading 4 MiB back, with
#               O_DIRECT (so io.stat counts them for the holder)
# demo/oomer/   memory.max 16 MiB; a process that tried to hold 60 MB was OOM-killed
set -u
C=/sys/fs/cgroup
fail() {
    echo "@@VMTEST CAPTURE-FAILED $*"
    exit 1
}

mkdir $C/demo || fail "mkdir demo"
echo 67108864 > $C/demo/memory.max || fail "demo memory.max"
echo "50000 100000" > $C/demo/cpu.max || fail "demo cpu.max"
echo 40 > $C/demo/pids.max || fail "demo pids.max"
echo 8388608 > $C/demo/memory.low || fail "demo memory.low"
echo 33554432 > $C/demo/memory.swap.max || fail "demo memory.swap.max"
for c in $CONTROLLERS; do
    echo "+$c" > $C/demo/cgroup.subtree_control || fail "demo +$c"
done
mkdir $C/demo/holder $C/demo/oomer || fail "mkdir holder/oomer"
echo 16777216 > $C/demo/oomer/memory.max || fail "oomer memory.max"
echo 0 > $C/demo/oomer/memory.swap.max || fail "oomer memory.swap.max"

# The capture disk (/dev/vda) takes the holder's direct I/O before it takes the tar.
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ -b /dev/vda ] && break
    sleep 0.5
done
[ -b /dev/vda ] || fail "no /dev/vda to write the capture to"

mkdir -p /holdfs && mount -t tmpfs -o size=32m holdfs /holdfs || fail "tmpfs for the holder"
mkfifo /run/holder.fifo || fail mkfifo
# The holder: burn CPU (throttled at half a CPU), fill 12 MiB of tmpfs, keep an
# 8 MiB variable, then block in the shell itself (read from a FIFO nobody opens for
# writing) so that it stays the cgroup's only process.
sh -c '
    echo $$ > /sys/fs/cgroup/demo/holder/cgroup.procs || exit 1
    timeout 3 sh -c "while :; do :; done"
    dd if=/dev/zero of=/dev/vda bs=1048576 count=8 oflag=direct 2>/dev/null || exit 1
    dd if=/dev/vda of=/dev/null bs=1048576 count=4 iflag=direct 2>/dev/null || exit 1
    dd if=/dev/zero of=/holdfs/blob bs=1048576 count=12 2>/dev/null || exit 1
    v=$(head -c 8388608 /dev/zero | tr "\0" x)
    : > /run/holder.ready
    read _ < /run/holder.fifo
    echo ${#v}
' &
holder=$!
i=0
while [ ! -e /run/holder.ready ]; do
    kill -0 $holder 2>/dev/null || fail "the holder died"
    i=$((i + 1))
    [ $i -gt 600 ] && fail "the holder was not ready in 60 s"
    sleep 0.1
done

# The oomer: dd allocates and fills a 60 MB buffer under a 16 MiB limit.
sh -c 'echo $$ > /sys/fs/cgroup/demo/oomer/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=60000000 count=1' 2>/dev/null
rc=$?
[ $rc -eq 137 ] || fail "the oomer was not OOM-killed (exit status $rc)"
sleep 1

grep -qx 'oom_kill 1' $C/demo/oomer/memory.events || fail "oomer memory.events has no 'oom_kill 1'"
[ "$(wc -l < $C/demo/holder/cgroup.procs)" -eq 1 ] || fail "holder does not hold exactly one process"
awk '$1 == "nr_throttled" && $2 > 0 { ok = 1 } END { exit !ok }' $C/demo/cpu.stat || fail "demo was never throttled"
grep -q 'wbytes=' $C/demo/holder/io.stat || fail "the holder's direct I/O is not in its io.stat"

# Copy every readable file (write-only ones such as cgroup.kill refuse to open).
copy_dir() {
    mkdir -p "$2"
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        cat "$f" > "$2/${f##*/}" 2>/dev/null || rm -f "$2/${f##*/}"
    done
}
out=/capture
mkdir -p $out/root $out/proc-self
copy_dir $C/demo $out/demo
copy_dir $C/demo/holder $out/demo/holder
copy_dir $C/demo/oomer $out/demo/oomer
for f in cgroup.controllers cpu.stat memory.stat io.stat; do
    cat $C/$f > $out/root/$f || fail "root $f"
done
cat /proc/self/cgroup > $out/proc-self/cgroup
cat /proc/self/mountinfo > $out/proc-self/mountinfo
uname -r > $out/uname
echo "@@VMTEST CAPTURE demo: $(tr '\n' ' ' < $C/demo/memory.events)"

kill $holder
tar -C $out -cf /dev/vda . || fail "writing the capture to /dev/vda"
